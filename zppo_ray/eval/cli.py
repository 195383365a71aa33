"""`python -m zppo_ray.eval`: the command line of the evaluation harness (zppo_ray/eval/harness.py, whose
docstring describes every option). Every input is checked here, before any engine starts."""

from __future__ import annotations

import argparse
import datetime
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zppo_ray.config import ConfigError, load_config
from zppo_ray.data.loaders import PRESETS
from zppo_ray.errors import DataError, UsageError
from zppo_ray.eval.harness import (
    NATIVE,
    _check_model_path,
    config_benchmarks,
    eval_sampling,
    evaluate_checkpoint,
    load_benchmarks,
    parse_bench,
    parse_family,
    parse_ks,
    render_markdown,
    toy_benchmarks,
)
from zppo_ray.eval.passk import check_families, check_ks

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zppo_ray.eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF-format model directory, or a world's toy:student / smollm2:teacher ...")
    p.add_argument("--bench", action="append", default=[], metavar="NAME=PRESET:PATH",
                   help=f"a benchmark; PRESET one of {', '.join(PRESETS)}, {NATIVE} (repeatable)")
    p.add_argument("--toy", action="store_true", help="the toy world's held-out split, one benchmark per tier")
    p.add_argument("--family", action="append", default=[], metavar="NAME=B1,B2",
                   help="a named group of benchmarks whose scores are averaged (repeatable)")
    p.add_argument("--n", type=int, default=None, help="samples per question (default: eval.num_samples)")
    p.add_argument("--k", default="1", help="comma-separated k for pass@k, each <= n (default: 1)")
    p.add_argument("--out", default=None, help="output directory (default: runs/eval-<time>)")
    p.add_argument("--judge", default=None, help="judge model for free-form questions")
    p.add_argument("--limit", type=int, default=None, help="at most this many questions per benchmark")
    p.add_argument("--config", default=None, help="YAML run config whose eval/student/teacher/data.eval apply")
    for flag, tp, key in (("--max-new-tokens", int, "max_new_tokens"), ("--temperature", float, "temperature"),
                          ("--top-p", float, "top_p"), ("--top-k", int, "top_k"),
                          ("--presence-penalty", float, "presence_penalty")):
        p.add_argument(flag, type=tp, default=None, help=f"default: the config's eval.{key}")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (each request gets its own seed derived from it, zppo_ray/seeds.py)")
    p.add_argument("--dtype", default=None, help="engine dtype (default: the config's student.dtype)")
    p.add_argument("--max-model-len", type=int, default=None, help="default: the config's student.max_model_len")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size of the student engine")
    return p


def _resolve_model(path: str, cfg: Any, flag: str, tokenizer: str | None = None) -> str:
    from zppo_ray import worlds

    if not worlds.is_world_alias(path):
        _check_model_path(path, flag, tokenizer)
        return path
    try:
        return worlds.resolve_model(path, worlds.world_named(path.partition(":")[0], cfg))
    except ValueError as e:
        raise UsageError(f"{flag} {e}") from None


def _plan(args: argparse.Namespace) -> dict:
    """Every input check and every default, before any engine starts: the arguments of evaluate_checkpoint."""
    cfg = load_config(args.config, [])
    n = args.n if args.n is not None else cfg.eval.num_samples
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    ks = check_ks(parse_ks(args.k), n)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    sources: dict[str, Any] = {}
    families: dict[str, list[str]] = {}
    for text in args.bench:
        name, src = parse_bench(text)
        if name in sources:
            raise ValueError(f"--bench: benchmark name {name!r} given twice")
        sources[name] = src
    if args.toy:
        toy, toy_fams = toy_benchmarks(cfg.toy, args.limit)
        if set(toy) & set(sources):
            raise ValueError(f"--bench names {sorted(set(toy) & set(sources))} clash with the toy benchmarks")
        sources.update(toy)
        families.update(toy_fams)
    if not sources:
        sources, families = config_benchmarks(cfg, args.limit)
    families.update(parse_family(f) for f in args.family)
    questions = load_benchmarks(sources, args.limit)
    check_families(families, list(questions))
    sampling = eval_sampling(cfg.eval, args.seed)
    sampling.update({k: v for k, v in (("max_tokens", args.max_new_tokens), ("temperature", args.temperature),
                                       ("top_p", args.top_p), ("top_k", args.top_k),
                                       ("presence_penalty", args.presence_penalty)) if v is not None})
    free = any(q.kind == "free" for qs in questions.values() for q in qs)
    if free and args.judge is None:
        raise ValueError("free-form questions need a judge model: --judge PATH")
    return {
        "model": _resolve_model(args.model, cfg, "--model", cfg.student.tokenizer), "benchmarks": questions,
        "families": families,
        "n": n, "ks": ks, "sampling": sampling,
        "judge": _resolve_model(args.judge, cfg, "--judge", cfg.teacher.model.tokenizer) if free else None,
        "judge_max_tokens": cfg.teacher.judge_max_tokens, "templates": cfg.templates,
        "out_dir": args.out or f"runs/eval-{datetime.datetime.now():%Y%m%d-%H%M%S}",
        "engine_kwargs": _engine_kwargs(cfg.student, cfg.rollout, args.dtype, args.max_model_len, args.tp,
                                        args.seed),
        "judge_engine_kwargs": _engine_kwargs(cfg.teacher.model, cfg.teacher, None, None, cfg.teacher.tp, 0)}


def _engine_kwargs(model_cfg: Any, role_cfg: Any, dtype: str | None, max_model_len: int | None, tp: int,
                   seed: int) -> dict:
    return {"tokenizer": model_cfg.tokenizer, "dtype": dtype or model_cfg.dtype,
            "max_model_len": max_model_len or model_cfg.max_model_len, "tp": tp, "seed": seed,
            "kv_cache_gib": role_cfg.kv_cache_gib, "gpu_memory_utilization": role_cfg.gpu_memory_utilization,
            "trust_remote_code": model_cfg.trust_remote_code}


def main(argv: Sequence[str] | None = None) -> int:
    """Run through zppo_ray.cli.run_entry (`python -m zppo_ray.eval`): a bad input is one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        plan = _plan(args)
    except (ConfigError, DataError):
        raise
    except ValueError as e:  # _plan checks arguments only: a ValueError here is a bad argument
        raise UsageError(f"{e} (python -m zppo_ray.eval --help)") from None
    report = evaluate_checkpoint(**plan)
    print(render_markdown(report), end="")
    print(f"\nwrote {', '.join(Path(p).name for p in report['files'].values())} to {plan['out_dir']}")
    return 0
