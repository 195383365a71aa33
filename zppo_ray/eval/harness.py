"""Evaluate a checkpoint: pass@1 / pass@k per benchmark and per family, on any HF-format model.

    python -m zppo_ray.eval --model PATH --bench NAME=PRESET:PATH [--bench ...] [--family NAME=B1,B2 ...]
                            [--n 4] [--k 1,4] [--out DIR] [--judge PATH] [--limit N] [--config YAML]
                            [--max-new-tokens N] [--temperature T] [--top-p P] [--top-k K]
                            [--presence-penalty X] [--seed S] [--dtype D] [--max-model-len L] [--tp T]
    python -m zppo_ray.eval --model toy:student --toy --n 4 --k 1,4 --out runs/eval-toy

Benchmarks (repeat --bench; each is scored on its own, families average them):
* `--bench NAME=PRESET:PATH`: PRESET is a loader preset for a public layout (gsm8k, math, mmlu, mmlu_pro:
  see zppo_ray/data/loaders.py) or `native`, the project's own columns (id, prompt, answer, kind, choices,
  images), the layout that can hold free-form `kind: free` questions. PATH is a .jsonl/.parquet file, a
  directory of them, or hf:DIR.
* `--toy`: the toy world's held-out split, one benchmark per tier (toy_t1, toy_t2, ...) in family `toy`.
* neither: the `data.eval` sources of `--config` (by default the toy held-out split); that is also the way
  to pick a `split:` of a directory or hf:DIR, or a custom column map.
`--model` / `--judge` accept `toy:student` / `toy:teacher`, the cached toy models (built on first use).

Settings not given on the command line come from the config (`--config`, else the embedded defaults): the
`eval` section for decoding (spec §6: temperature 0.6, top-p 0.95, top-k 20, presence penalty, max new
tokens, `num_samples` as the default n), `student` for the engine (dtype, max_model_len) and `teacher` for
the judge engine (its model settings, kv cache, judge_max_tokens). The prompt is the question text plus the
format closer (`question_prompt`, directives stripped), exactly as in training and in the trainer's evaluation;
decoding is seeded (each request's seed is derived from the run seed, zppo_ray/seeds.py), so a rerun on the
same machine reproduces the samples.

Free-form questions (`kind: free`) are graded by an LLM judge (`--judge`, temperature 0, strict JSON
verdict, spec §4); its engine starts only when a free question is present, after the student's engine has
been shut down (one model in memory at a time). A malformed verdict, or a judge prompt that does not fit
the judge, scores 0 and is counted (`judge_unparseable`, `judge_too_long`).

Outputs in --out (default runs/eval-<time>): `results.json` (settings, per-benchmark and per-family scores,
one record per question with its per-sample rewards and extracted answers), `samples.jsonl` (the prompt
and every response text per question, plus the judge's raw outputs), `results.md` (the table, also
printed). Scores and the "no answer" count are defined in zppo_ray/eval/passk.py.

Library use (a notebook, a benchmark script): `evaluate_checkpoint(model, {name: questions or source}, ...)`
where `model` is a path (an engine is started and shut down) or any object with
`.generate(requests, sampling) -> list[list[Sample]]`: a RolloutPool, a TeacherGroup, or a running
VLLMEngine (wrapped automatically).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from zppo_ray import sampling
from zppo_ray.algo.reformulate import (
    DEFAULT_TEMPLATES,
    Templates,
    build_judge_prompt,
    question_prompt,
)
from zppo_ray.config import EvalConfig
from zppo_ray.data.loaders import PRESETS, load_questions
from zppo_ray.data.schema import Question
from zppo_ray.errors import DataError
from zppo_ray.eval.passk import (
    QuestionResult,
    benchmark_summary,
    check_families,
    check_ks,
    family_summary,
    markdown_table,
)
from zppo_ray.observe import progress
from zppo_ray.rewards import choice_letter, grade, last_boxed, read_verdict
from zppo_ray.seeds import seeds_for_part
from zppo_ray.types import GenRequest, Sample

log = logging.getLogger(__name__)

NATIVE = "native"  # --bench preset name for the project's own column names (identity column map)
JUDGE_MAX_TOKENS = 512  # spec §4: the judge decodes at temperature 0 with at most 512 new tokens


class Generator(Protocol):
    def generate(self, requests: list[GenRequest], sampling: dict) -> list[list[Sample]]: ...


class EngineGenerator:
    """A VLLMEngine behind the actors' call shape `generate(requests, sampling_dict)`."""

    def __init__(self, engine: Any):
        self.engine = engine

    def generate(self, requests: list[GenRequest], sampling: dict) -> list[list[Sample]]:
        return self.engine.generate(requests, **sampling)


def eval_sampling(eval_cfg: EvalConfig | None = None, seed: int = 0) -> dict:
    """The evaluation decoding of a config's `eval` section, as a sampling dict."""
    return sampling.evaluation(eval_cfg or EvalConfig(), seed)


# ---------------------------------------------------------------------------------------------- benchmarks


def _is_questions(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(q, Question) for q in value)


def _source_dict(source: Any, limit: int | None) -> dict:
    """A source spec (path, mapping or SourceConfig) as a mapping, with `limit` applied at load time so
    that a large file is not read to the end for a short run."""
    if isinstance(source, (str, Path)):
        spec = {"path": str(source)}
    elif dataclasses.is_dataclass(source):
        spec = dataclasses.asdict(source)
    elif isinstance(source, Mapping):
        spec = dict(source)
    else:
        raise ValueError(f"a benchmark is a list of Questions or a data source, got {type(source).__name__}")
    if limit is not None:
        spec["limit"] = min(limit, spec.get("limit") or limit)
    return spec


def load_benchmarks(sources: Mapping[str, Any], limit: int | None = None) -> dict[str, list[Question]]:
    """{name: questions}; a value is a list of Questions (used as is) or a source for `load_questions`.
    Errors name the benchmark: a missing file, an unknown preset, a benchmark without questions."""
    if not sources:
        raise ValueError("no benchmark to evaluate")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    out = {}
    for name, source in sources.items():
        try:
            qs = list(source) if _is_questions(source) else load_questions(_source_dict(source, limit))
        except DataError as e:  # a bad file or row: still a data error, with the benchmark it belongs to
            raise DataError(f"benchmark {name!r}: {e}", origin=e.origin, reason=e.reason) from e
        except ValueError as e:  # an unknown preset, a bad column map: prefix the benchmark
            raise ValueError(f"benchmark {name!r}: {e}") from e
        if not qs:
            raise ValueError(f"benchmark {name!r} has no questions")
        out[name] = qs[:limit] if limit else qs
    return out


def parse_bench(text: str) -> tuple[str, dict]:
    """`NAME=PRESET:PATH` -> (name, source mapping). The path may itself hold ':' (hf:DIR)."""
    name, eq, rest = text.partition("=")
    preset, colon, path = rest.partition(":")
    if not (eq and colon and name.strip() and path.strip()):
        raise ValueError(f"--bench {text!r}: expected NAME=PRESET:PATH, e.g. gsm8k=gsm8k:data/gsm8k/test.jsonl")
    if preset not in (*PRESETS, NATIVE):
        raise ValueError(f"--bench {text!r}: unknown preset {preset!r}; allowed: {', '.join(PRESETS)}, {NATIVE}")
    return name.strip(), {"path": path.strip(), "column_map": None if preset == NATIVE else preset,
                          "name": name.strip()}


def parse_family(text: str) -> tuple[str, list[str]]:
    """`NAME=B1,B2` -> (name, [b1, b2])."""
    name, eq, members = text.partition("=")
    benches = [b.strip() for b in members.split(",") if b.strip()]
    if not (eq and name.strip() and benches):
        raise ValueError(f"--family {text!r}: expected NAME=BENCH1,BENCH2, e.g. math=gsm8k,math")
    return name.strip(), benches


def parse_ks(text: str) -> list[int]:
    try:
        return [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise ValueError(f"--k {text!r}: expected comma-separated integers, e.g. 1,4") from None


def world_benchmarks(world: Any, limit: int | None = None,
                     split: str = "eval") -> tuple[dict[str, list[Question]], dict[str, list[str]]]:
    """A world's questions as one benchmark per tier (`toy_t1`, `smollm2_t2`, ...) and a family named after it."""
    by_tier: dict[str, list[Question]] = {}
    for q in world.questions(split):
        by_tier.setdefault(f"{world.name}_t{q.tier}", []).append(q)
    benches = {name: qs[:limit] if limit else qs for name, qs in by_tier.items()}  # tier order
    return benches, {world.name: list(benches)}


def toy_benchmarks(toy_cfg: Any, limit: int | None = None,
                   split: str = "eval") -> tuple[dict[str, list[Question]], dict[str, list[str]]]:
    """The toy world's questions as one benchmark per tier (`toy_t1`, ...) and the family `toy`."""
    from zppo_ray.worlds.toy import ToyWorld

    return world_benchmarks(ToyWorld(toy_cfg), limit, split)


def config_benchmarks(cfg: Any, limit: int | None = None) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The config's `data.eval` sources: a world's source (toy, smollm2) expands into its tiers, a file source
    is one benchmark named by `name:` or the file stem."""
    from zppo_ray.worlds import for_config

    benches: dict[str, Any] = {}
    families: dict[str, list[str]] = {}
    world = for_config(cfg)
    for src in cfg.data.eval:
        if world is not None and src.path == world.name:
            found, fams = world_benchmarks(world, min((x for x in (limit, src.limit) if x), default=None),
                                           src.split or "eval")
            families.update(fams)
        else:
            found = {src.name or Path(src.path.removeprefix("hf:")).stem: src}
        clash = set(found) & set(benches)
        if clash:
            raise ValueError(f"data.eval: two sources are both named {sorted(clash)}; set `name:` on one of them")
        benches.update(found)
    return benches, families


# ---------------------------------------------------------------------------------------------- engines


def _first_text(samples: list[Sample]) -> str | None:
    """The text of a one-sample group; None when the generator skipped the request (judged "too long")."""
    return samples[0].text if samples else None


def _check_model_path(model: Any, what: str, tokenizer: Any = None) -> None:
    """Fail before minutes of engine start (or of student generation, for the judge) on a bad path.
    `tokenizer`: the directory the engine takes the tokenizer from, when it is not the model's."""
    if isinstance(model, (str, Path)):
        from zppo_ray.preflight import check_model_dir

        check_model_dir(model, what, tokenizer_key=f"{what} tokenizer", tokenizer_dir=tokenizer)


def _as_generator(model: Any) -> Generator:
    # Light import: vllm itself is imported only when an engine starts.
    from zppo_ray.engine.vllm_engine import VLLMEngine

    return EngineGenerator(model) if isinstance(model, VLLMEngine) else model


@contextmanager
def _opened(model: Any, engine_kwargs: Mapping | None) -> Iterator[Generator]:
    """`model` itself when it can generate; else a VLLMEngine on the path, shut down on exit."""
    if hasattr(model, "generate"):
        yield _as_generator(model)
        return
    from zppo_ray.engine.vllm_engine import VLLMEngine

    engine = VLLMEngine(str(Path(model).expanduser()), **dict(engine_kwargs or {}))
    try:
        yield EngineGenerator(engine)
    finally:
        engine.shutdown()


def _prompt_fits(gen: Generator, prompt: str) -> bool:
    """Whether a judge prompt leaves room for an answer; only checkable when the engine is at hand (else
    the generator itself rejects it)."""
    engine = getattr(gen, "engine", gen)
    if not (hasattr(engine, "prompt_ids") and hasattr(engine, "max_model_len")):
        return True
    return len(engine.prompt_ids(prompt)) < engine.max_model_len - 1


# ---------------------------------------------------------------------------------------------- grading


def _requests(benches: Mapping[str, list[Question]], n: int, templates: Templates) -> list[GenRequest]:
    return [GenRequest(question_prompt(q.text, templates), n=n, images=tuple(q.images), tag=f"eval:{b}:{q.id}")
            for b, qs in benches.items() for q in qs]


def _extract(text: str, kind: str) -> str | None:
    """The final answer a response commits to, as the grader reads it (None: nothing extractable)."""
    return choice_letter(text) if kind == "mc" else last_boxed(text)


def _grade(bench: str, q: Question, samples: list[Sample]) -> QuestionResult:
    """Rule-based rewards; free-form samples stay 0 here and are filled in by the judge."""
    texts = [s.text for s in samples]
    rewards = [0.0 if q.kind == "free" else grade(t, q.answer, q.kind) for t in texts]
    return QuestionResult(benchmark=bench, id=q.id, kind=q.kind, gold=q.answer, rewards=rewards,
                          answers=[_extract(t, q.kind) for t in texts], tier=q.tier,
                          truncated=sum(s.finish_reason == "length" for s in samples))


def _judge(judge: Any, records: list[QuestionResult], items: list[tuple[int, int, Question, str]],
           max_tokens: int, engine_kwargs: Mapping | None, templates: Templates) -> list[str | None]:
    """Judge each (record index, sample index, question, response): sets the record's reward and counters
    in place; returns the raw outputs (None where the prompt did not fit the judge)."""
    prompts = [build_judge_prompt(q.text, q.answer, text, templates) for _, _, q, text in items]
    with _opened(judge, engine_kwargs) as gen:
        fits = [_prompt_fits(gen, p) for p in prompts]
        reqs = [GenRequest(p, n=1, tag=f"judge:{i}", thinking=False)
                for i, (p, ok) in enumerate(zip(prompts, fits)) if ok]
        outs = iter(gen.generate(reqs, sampling.greedy(max_tokens)))
        raw = [_first_text(next(outs)) if ok else None for ok in fits]
    for (j, i, q, _), text in zip(items, raw):
        rec = records[j]
        verdict = None if text is None else read_verdict(text)
        rec.rewards[i] = 1.0 if verdict else 0.0
        if text is None:
            rec.judge_too_long += 1
        elif verdict is None:
            rec.judge_unparseable += 1
            log.warning("judge verdict unparseable for %s/%s sample %d (scored wrong): %.200r",
                        rec.benchmark, q.id, i, text)
    return raw


def _generate(gen: Generator, requests: list[GenRequest], sampling: Mapping[str, Any]) -> list:
    """Every request's samples; in ten parts behind a progress bar when a bar is shown. Each request keeps the
    seed of its position in the whole call (seeds_for_part), so the samples are the same either way."""
    if not progress.enabled() or len(requests) < 2:
        return gen.generate(requests, dict(sampling))
    size = -(-len(requests) // 10)
    out: list = []
    with progress.bar(len(requests), "evaluation", unit="question") as b:
        for i in range(0, len(requests), size):
            idx = list(range(i, min(i + size, len(requests))))
            out += gen.generate(requests[i:i + size], seeds_for_part(dict(sampling), idx))
            b.update(len(idx))
    return out


def score_questions(gen: Generator, questions: Mapping[str, list[Question]], n: int, sampling: Mapping[str, Any],
                    templates: Templates, judge: Any = None, judge_max_tokens: int = JUDGE_MAX_TOKENS,
                    judge_engine_kwargs: Mapping | None = None) -> tuple[list, list, list[QuestionResult], list, list]:
    """Generate `n` samples per question with `gen`, grade them (free-form answers through `judge`): the one
    scoring path of `evaluate_checkpoint` and of the trainer's periodic evaluation.

    A question whose request the generator skipped (an empty group: the rollout pool could not process it
    after a retry) is left out, with a warning; any other group size is an error.
    Returns (flat (benchmark, question) pairs, their samples, their records, judged items, raw judge outputs).
    """
    requests = _requests(questions, n, templates)
    samples = _generate(gen, requests, sampling)
    if len(samples) != len(requests) or any(len(ss) not in (0, n) for ss in samples):
        got = sorted({len(ss) for ss in samples})
        raise RuntimeError(f"the generator returned {len(samples)} groups of sizes {got} for {len(requests)} "
                           f"requests of n={n}")
    flat = [(b, q) for b, qs in questions.items() for q in qs]
    skipped = [q.id for (_, q), ss in zip(flat, samples) if not ss]
    if skipped:
        log.warning("evaluation: %d question(s) skipped by the generator: %s", len(skipped), skipped[:5])
        kept = [(fq, ss) for fq, ss in zip(flat, samples) if ss]
        flat, samples = [fq for fq, _ in kept], [ss for _, ss in kept]
    records = [_grade(b, q, ss) for (b, q), ss in zip(flat, samples)]
    items = [(j, i, q, s.text) for j, ((_, q), ss) in enumerate(zip(flat, samples)) if q.kind == "free"
             for i, s in enumerate(ss)]
    raw_judge = _judge(judge, records, items, judge_max_tokens, judge_engine_kwargs, templates) if items else []
    return flat, samples, records, items, raw_judge


# ---------------------------------------------------------------------------------------------- entry point


def evaluate_checkpoint(
    model: str | Path | Generator,
    benchmarks: Mapping[str, Any],
    *,
    families: Mapping[str, Sequence[str]] | None = None,
    n: int = 1,
    ks: Sequence[int] = (1,),
    sampling: Mapping[str, Any] | None = None,
    judge: str | Path | Generator | None = None,
    judge_max_tokens: int = JUDGE_MAX_TOKENS,
    limit: int | None = None,
    out_dir: str | Path | None = None,
    engine_kwargs: Mapping[str, Any] | None = None,
    judge_engine_kwargs: Mapping[str, Any] | None = None,
    templates: Templates = DEFAULT_TEMPLATES,
) -> dict:
    """Generate `n` samples per question, grade them, aggregate; write the files when `out_dir` is given.

    `benchmarks`: {name: list of Questions, or a source spec for load_questions (path, mapping, SourceConfig)}.
    `sampling`: overrides of `eval_sampling()` (EvalConfig defaults, seed 0). `engine_kwargs` /
    `judge_engine_kwargs`: VLLMEngine arguments when `model` / `judge` are paths. Every input is checked
    before an engine starts. Returns the content of results.json (see the module docstring).
    """
    if n < 1:
        raise ValueError(f"n (samples per question) must be >= 1, got {n}")
    ks = check_ks(list(ks), n)
    questions = load_benchmarks(benchmarks, limit)
    families = check_families(families or {}, list(questions))
    _check_model_path(model, "model", (engine_kwargs or {}).get("tokenizer"))
    free = [b for b, qs in questions.items() if any(q.kind == "free" for q in qs)]
    if free:
        if judge is None:
            raise ValueError(f"benchmark(s) {free} hold free-form questions: they need a judge model (--judge)")
        _check_model_path(judge, "judge", (judge_engine_kwargs or {}).get("tokenizer"))
    sampling = {**eval_sampling(), **dict(sampling or {})}
    t0 = time.perf_counter()
    with _opened(model, engine_kwargs) as gen:
        t1 = time.perf_counter()  # generation only; "total" adds engine start/stop and the judge
        scored = score_questions(gen, questions, n, sampling, templates, judge, judge_max_tokens,
                                 judge_engine_kwargs)
        t_gen = time.perf_counter() - t1
    flat, samples, records, items, raw_judge = scored
    report = _report(model, judge if items else None, n, ks, sampling, questions, families, records,
                     {"generate": round(t_gen, 2), "total": round(time.perf_counter() - t0, 2)})
    if out_dir is not None:
        judged: dict[int, list[str | None]] = {}
        for (j, i, _, _), raw in zip(items, raw_judge):
            judged.setdefault(j, [None] * n)[i] = raw
        write_results(report, _sample_rows(flat, samples, judged, templates), out_dir)
    return report


def _label(model: Any) -> str:
    if isinstance(model, (str, Path)):
        return str(model)
    engine = getattr(model, "engine", model)
    return str(getattr(engine, "model_path", type(model).__name__))


def _report(model: Any, judge: Any, n: int, ks: list[int], sampling: dict, questions: Mapping[str, list],
            families: Mapping[str, list[str]], records: list[QuestionResult], seconds: dict) -> dict:
    per_bench = {b: benchmark_summary(b, [r for r in records if r.benchmark == b], ks) for b in questions}
    for b, s in per_bench.items():
        if s["no_answer_samples"]:
            log.info("%s: %d of %d samples have no extractable answer (%d questions)", b,
                     s["no_answer_samples"], s["samples"], s["no_answer_questions"])
    return {"model": _label(model), "judge": None if judge is None else _label(judge), "n": n, "k": ks,
            "sampling": sampling, "seconds": seconds, "benchmarks": per_bench,
            "families": family_summary(per_bench, families, ks),
            "questions": [r.to_json(ks) for r in records]}


def _sample_rows(flat: list[tuple[str, Question]], samples: list[list[Sample]],
                 judged: Mapping[int, list[str | None]], templates: Templates) -> list[dict]:
    """One samples.jsonl row per question: what was asked, every response, the judge's raw outputs."""
    rows = []
    for j, ((b, q), ss) in enumerate(zip(flat, samples)):
        row = {"benchmark": b, "id": q.id, "prompt": question_prompt(q.text, templates),
               "responses": [s.text for s in ss], "finish_reasons": [s.finish_reason for s in ss]}
        if j in judged:
            row["judge_outputs"] = judged[j]
        rows.append(row)
    return rows


def write_results(report: dict, sample_rows: list[dict], out_dir: str | Path) -> dict[str, Path]:
    """results.json, samples.jsonl and results.md in `out_dir` (created); returns their paths, which are
    also recorded in `report["files"]` (so results.json names its companions)."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "samples": out / "samples.jsonl", "markdown": out / "results.md"}
    report["files"] = {k: str(v) for k, v in paths.items()}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    with paths["samples"].open("w") as f:
        for row in sample_rows:
            f.write(json.dumps(row) + "\n")
    paths["markdown"].write_text(render_markdown(report))
    return paths


def render_markdown(report: dict) -> str:
    s = report["sampling"]
    head = (f"Model `{report['model']}`, n={report['n']} samples per question, temperature {s['temperature']}, "
            f"top-p {s['top_p']}, top-k {s['top_k']}, presence penalty {s['presence_penalty']}, "
            f"max {s['max_tokens']} new tokens, seed {s['seed']}. Scores in %.\n\n")
    return head + markdown_table(report["benchmarks"], report["families"], report["k"])
