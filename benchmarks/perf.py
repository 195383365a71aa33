"""Throughput of the system on this machine, as ratios measured in one run (`make bench-perf`).

    python benchmarks/perf.py [--sections rollout,steps] [--config CONFIG] [--steps 12] [--seeds 0]
        [--out benchmarks/results/perf]

rollout  tokens/s through the `RolloutPool` (a Ray actor around vLLM) / raw `vllm.LLM.generate`, on the same
         token ids, sampling, seeds and engine settings, rounds alternating so machine noise hits both. The
         pool runs twice: as Ray starts an actor (OMP_NUM_THREADS = the actor's num_cpus) and with the
         threads the raw engine has (`rollout.omp_threads`), which is what the gap turned out to be.
steps    seconds per step of ZPPO and GRPO† (GRPO with the replay buffer), synchronous and asynchronous
         (trainer.max_staleness=1, algo.tis_cap=2), each an ordinary run with the same seed: per-phase
         breakdown, idle time per role, the tokens each method trains on (cost per trained token), and the
         held-out accuracy after the same number of steps.

Writes OUT/perf.json and OUT/table.md; the README's performance section quotes them with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")

from real_model import machine  # noqa: E402  (same folder)


def toy_setup(config: str | None, overrides: list[str]):
    from transformers import AutoTokenizer

    from zppo_ray import worlds
    from zppo_ray.config import load_config
    from zppo_ray.launch import load_split, model_paths

    cfg = load_config(config, overrides)
    world = worlds.for_config(cfg)
    if world is not None:
        world.ensure()
    student, _ = model_paths(cfg, world)
    tokenizer = AutoTokenizer.from_pretrained(cfg.student.tokenizer or student)
    return cfg, student, load_split(cfg, "train", tokenizer, world)


def real_setup(dtype: str | None):
    """SmolLM2-135M-Instruct as packaged (no fine-tune: throughput does not depend on it) and its world's sums.
    `dtype`: overrides the config's bfloat16 (a CPU without AVX-512 BF16 emulates it, about 10x slower)."""
    from zppo_ray.config import load_config
    from zppo_ray.worlds.smollm2 import Smollm2World
    from zppo_ray.worlds.smollm2.acquire import ensure_smollm2

    cfg = load_config("configs/smollm2.yaml", [f"student.dtype={dtype}"] if dtype else [])
    return cfg, str(ensure_smollm2(cfg.smollm2.cache_dir)), Smollm2World(cfg.smollm2, cfg.templates).questions("train")[::37]


# ------------------------------------------------------------------------------------------- rollout

def rollout(cfg, student: str, questions, rounds: int, prompts: int) -> dict:
    """Pool / raw tokens per second, per pool variant (see the module doc)."""
    import ray
    from omegaconf import OmegaConf
    from vllm import SamplingParams

    from zppo_ray.actors.engine_actor import engine_kwargs
    from zppo_ray.actors.rollout import RolloutPool
    from zppo_ray.algo.reformulate import question_prompt
    from zppo_ray.engine.vllm_engine import VLLMEngine
    from zppo_ray.seeds import request_seeds
    from zppo_ray.types import GenRequest

    r = cfg.rollout
    kw = engine_kwargs(cfg.student, tp=1, seed=r.seed, kv_cache_gib=r.kv_cache_gib,
                       gpu_memory_utilization=r.gpu_memory_utilization, max_num_seqs=r.max_num_seqs)
    raw = VLLMEngine(student, **kw)
    requests = [GenRequest(question_prompt(q.text, cfg.templates), n=r.group_size) for q in questions[:prompts]]
    ids = [raw.prompt_ids(req.prompt) for req in requests]
    import torch

    variants = {"pool (Ray default threads)": 0, "pool (rollout.omp_threads = raw's)": torch.get_num_threads()}
    out: dict = {"prompts": len(requests), "samples_per_prompt": r.group_size, "max_new_tokens": r.max_new_tokens,
                 "raw_torch_threads": torch.get_num_threads(), "rounds": rounds, "variants": {}}
    try:
        for name, threads in variants.items():
            ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
            pool = RolloutPool.create(OmegaConf.merge(r, {"omp_threads": threads}), cfg.student, student)
            rates: dict[str, list[float]] = {"raw": [], "pool": []}
            try:
                for k in range(rounds + 1):  # round 0 warms both up and is not counted
                    seeds = request_seeds(2000 + k, len(requests))
                    t0 = time.perf_counter()
                    outs = raw.llm.generate(
                        [{"prompt_token_ids": p} for p in ids],
                        [SamplingParams(n=r.group_size, temperature=r.temperature, top_p=r.top_p,
                                        max_tokens=r.max_new_tokens, seed=s, logprobs=0, detokenize=False)
                         for s in seeds], use_tqdm=False)
                    raw_rate = sum(len(c.token_ids) for o in outs for c in o.outputs) / (time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    got = pool.generate(requests, {"temperature": r.temperature, "top_p": r.top_p,
                                                   "max_tokens": r.max_new_tokens, "seed": seeds})
                    pool_rate = sum(len(s.completion_ids) for g in got for s in g) / (time.perf_counter() - t0)
                    print(f"[rollout] {name} round {k}: raw {raw_rate:.0f} tok/s, pool {pool_rate:.0f} tok/s"
                          + ("  (warm-up)" if k == 0 else ""), flush=True)
                    if k:
                        rates["raw"].append(raw_rate)
                        rates["pool"].append(pool_rate)
            finally:
                pool.shutdown()
                ray.shutdown()
            out["variants"][name] = {"omp_threads": threads,
                                     **{f"{k}_tokens_per_s": [round(x, 1) for x in v] for k, v in rates.items()},
                                     "pool_over_raw": round(statistics.median(rates["pool"])
                                                            / statistics.median(rates["raw"]), 3)}
    finally:
        raw.shutdown()
    return out


# ------------------------------------------------------------------------------------------- steps

VARIANTS = (("grpo_buffer", 0), ("zppo", 0), ("grpo_buffer", 1), ("zppo", 1))  # (method, max_staleness)
PHASES = ("generate", "grade", "teacher", "compress", "learn", "push", "buffer")
IDLE = ("idle_rollout", "idle_teacher", "idle_learner")


def steps(config: str | None, n_steps: int, seeds: list[int], out: Path, overrides: list[str],
          variants=VARIANTS) -> dict:
    """One ordinary run per (method, mode, seed), one after the other in this process (one Ray session)."""
    from zppo_ray.eval.compare import read_run
    from zppo_ray.main import run

    runs: dict[str, list[dict]] = {}
    for method, k in variants:
        name = f"{method} {'async' if k else 'sync'}"
        for seed in seeds:
            run_dir = out / "runs" / f"{method}-{'async' if k else 'sync'}-s{seed}"
            if not (run_dir / "summary.json").exists():
                print(f"[steps] {name} seed {seed} -> {run_dir}", flush=True)
                run([*([config] if config else []), f"algo.name={method}", f"trainer.steps={n_steps}",
                     "trainer.eval_every=0", f"trainer.seed={seed}", f"rollout.seed={seed}", f"teacher.seed={seed}",
                     f"data.shuffle_seed={seed}", f"trainer.max_staleness={k}", *(["algo.tis_cap=2"] if k else []),
                     f"trainer.run_dir={run_dir}", "checkpoint.every=0", "metrics.plots=false", *overrides])
            runs.setdefault(name, []).append(summarize(read_run(run_dir)))
    return {name: merge(rs) for name, rs in runs.items()}


def summarize(r: dict) -> dict:
    """Means over steps 2.. (step 1 compiles, and nothing overlaps it even in asynchronous mode)."""
    rows = r["steps"][1:]

    def mean(f):
        xs = [f(m) for m in rows]
        return sum(xs) / len(xs) if xs else 0.0

    ev = (r["summary"] or {}).get("eval_after") or {}
    return {"step_s": mean(lambda m: m["time"]["total"]),
            **{f"{k}_s": mean(lambda m, k=k: m["time"].get(k, 0.0)) for k in PHASES + IDLE},
            "trained_tokens": mean(lambda m: (m.get("learn") or {}).get("tokens", 0.0)),
            "trained_samples": mean(lambda m: (m.get("learn") or {}).get("items", 0.0)),
            "rollout_kl": mean(lambda m: (m.get("learn") or {}).get("rollout_kl", 0.0)),
            "sample_age": mean(lambda m: (m.get("learn") or {}).get("sample_age_mean", 0.0)),
            "accuracy_after": ev.get("all"), "accuracy_before": ((r["summary"] or {}).get("eval_before") or {}).get("all")}


def merge(rs: list[dict]) -> dict:
    """Mean over seeds, and each seed's held-out accuracy (the spread is what learning is judged against)."""
    out = {k: sum(r[k] for r in rs) / len(rs) for k in rs[0] if k not in ("accuracy_after", "accuracy_before")}
    out["accuracy_after"] = [r["accuracy_after"] for r in rs]
    out["accuracy_before"] = rs[0]["accuracy_before"]
    return out


def table(report: dict) -> str:
    lines = []
    if "rollout" in report or "rollout_real" in report:
        lines += ["| model | pool variant | raw tokens/s | pool tokens/s | pool / raw (median) | target |",
                  "|---|---|---|---|---|---|"]
        for key, model in (("rollout", "toy student"), ("rollout_real", "SmolLM2-135M-Instruct")):
            for name, v in (report.get(key) or {}).get("variants", {}).items():
                lines.append(f"| {model} | {name} | {' / '.join(f'{x:.0f}' for x in v['raw_tokens_per_s'])} | "
                             f"{' / '.join(f'{x:.0f}' for x in v['pool_tokens_per_s'])} | {v['pool_over_raw']:.2f} | >= 0.95 |")
        lines.append("")
    st = report.get("steps")
    if st:
        lines += ["| run | s/step | generate | teacher | compress | learn | push | idle rollout / teacher / learner | "
                  "trained tokens/step | s per 1k trained tokens | held-out accuracy after (per seed) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, v in st.items():
            acc = ", ".join(f"{a:.1%}" for a in v["accuracy_after"] if a is not None)
            lines.append(f"| {name} | {v['step_s']:.2f} | {v['generate_s']:.2f} | {v['teacher_s']:.2f} | "
                         f"{v['compress_s']:.2f} | {v['learn_s']:.2f} | {v['push_s']:.2f} | {v['idle_rollout_s']:.2f} / "
                         f"{v['idle_teacher_s']:.2f} / {v['idle_learner_s']:.2f} | {v['trained_tokens']:.0f} | "
                         f"{1000 * v['step_s'] / max(v['trained_tokens'], 1):.2f} | {acc} |")
        lines.append("")
        ratio = report.get("ratios", {})
        lines += ["| ratio | measured | target |", "|---|---|---|"]
        for key, target in (("zppo/grpo_buffer sync", "(paper: 1.1-1.2)"), ("zppo/grpo_buffer async", "<= 1.2"),
                            ("zppo async/sync", "< 1"), ("grpo_buffer async/sync", "< 1"),
                            ("zppo/grpo_buffer per trained token, sync", ""),
                            ("zppo/grpo_buffer per trained token, async", "")):
            if key in ratio:
                lines.append(f"| {key} step time | {ratio[key]:.2f} | {target} |")
    return "\n".join(lines) + "\n"


def ratios(st: dict) -> dict:
    out = {}
    for mode in ("sync", "async"):
        z, g = st.get(f"zppo {mode}"), st.get(f"grpo_buffer {mode}")
        if z and g:
            out[f"zppo/grpo_buffer {mode}"] = round(z["step_s"] / g["step_s"], 3)
            out[f"zppo/grpo_buffer per trained token, {mode}"] = round(
                (z["step_s"] / max(z["trained_tokens"], 1)) / (g["step_s"] / max(g["trained_tokens"], 1)), 3)
    for m in ("zppo", "grpo_buffer"):
        a, s = st.get(f"{m} async"), st.get(f"{m} sync")
        if a and s:
            out[f"{m} async/sync"] = round(a["step_s"] / s["step_s"], 3)
    return out


SECTIONS = ("rollout", "rollout_real", "steps")


def main(argv=None) -> None:
    from zppo_ray.errors import UsageError

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="rollout,steps")
    ap.add_argument("--config", default=None, help="default: the toy world")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--methods", default="grpo_buffer,zppo", help="steps: each runs synchronous and asynchronous")
    ap.add_argument("--real-dtype", default=None, help="rollout_real: the engine's dtype (default: the config's)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/perf"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    sections = args.sections.split(",")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise UsageError(f"--sections: unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "perf.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report.update(machine=machine(), date=time.strftime("%Y-%m-%d %H:%M"), command=" ".join(sys.argv))
    if "rollout" in sections:
        cfg, student, questions = toy_setup(args.config, args.overrides)
        report["rollout"] = rollout(cfg, student, questions, args.rounds, args.prompts)
        path.write_text(json.dumps(report, indent=2) + "\n")
    if "rollout_real" in sections:  # needs make setup-real
        cfg, student, questions = real_setup(args.real_dtype)
        report["rollout_real"] = {"dtype": cfg.student.dtype,
                                  **rollout(cfg, student, questions, args.rounds, min(args.prompts, 16))}
        path.write_text(json.dumps(report, indent=2) + "\n")
    if "steps" in sections:
        variants = [(m, k) for k in (0, 1) for m in args.methods.split(",")]
        report["steps"] = steps(args.config, args.steps, [int(x) for x in args.seeds.split(",")], args.out,
                                args.overrides, variants)
        report["ratios"] = ratios(report["steps"])
        path.write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "table.md").write_text(table(report))
    print(table(report))


if __name__ == "__main__":
    from zppo_ray.cli import run_entry

    sys.exit(run_entry(main))
