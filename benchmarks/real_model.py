"""Real-model performance on this machine: SmolLM2-135M-Instruct (configs/smollm2.yaml), one process, one run.

    python benchmarks/real_model.py [--rounds 3] [--out benchmarks/results/smollm2/bench.json]

1. Rollout throughput: the project's `RolloutPool` (a Ray actor around vLLM) against raw `vllm.LLM.generate` on
   the same token ids, the same sampling (n, temperature, max_tokens, one seed per request) and the same engine
   settings. Rounds alternate (raw, pool, raw, pool, ...) so machine noise hits both; the ratio of the medians
   is the pool's efficiency (target >= 0.95). A second raw engine in float32 gives the dtype choice's ratio
   (configs/smollm2.yaml serves bfloat16).
2. Weight push: a DeepSpeed learner group of the config (one rank) pushes its weights into the pool through the
   config's weight sync (zppo_ray/weights): seconds per push, weight size, and the machine's peak memory growth
   during the push (all processes, sampled every 10 ms). Results committed before issue 16 measured the single
   blob that preceded the bucketed sync.
3. Learner: tokens/s of one optimizer step (forward + backward + AdamW over the minibatch) and of the forward
   pass alone (the old-logprob recompute), on the pool's own rollouts of the config's lengths.
Needs the real-model extra (make setup-real). Ratios are what compare across machines; seconds are this machine's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("DS_ACCELERATOR", "cpu")


class PeakMemory:
    """Peak growth of the machine's used memory while the block runs (psutil, sampled every 10 ms)."""

    def __enter__(self):
        import psutil

        self._vm, self.base, self.peak, self._stop = psutil.virtual_memory, 0, 0, threading.Event()
        self.base = self.peak = self._vm().used
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._vm().used)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.growth_mb = round((self.peak - self.base) / 2**20, 1)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else ""
    return f"{os.cpu_count()} cores, {model}, {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB"


def rollout_ratio(cfg, student: str, questions, rounds: int) -> tuple[dict, object, list]:
    """The throughput report, and the pool and requests it used (the push and learner sections reuse them)."""
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
    raw = VLLMEngine(student, **kw)  # its .llm is a plain vllm.LLM built with the pool's engine settings
    raw32 = VLLMEngine(student, **{**kw, "dtype": "float32"})
    pool = RolloutPool.create(r, cfg.student, student)
    requests = [GenRequest(question_prompt(q.text, cfg.templates), n=r.group_size) for q in questions]
    ids = [raw.prompt_ids(req.prompt) for req in requests]
    n_tokens: dict[str, list] = {"raw": [], "pool": [], "raw_fp32": []}
    seconds: dict[str, list] = {"raw": [], "pool": [], "raw_fp32": []}
    try:
        for k in range(rounds + 1):  # round 0 warms both up and is not counted
            seeds = request_seeds(1000 + k, len(requests))
            params = [SamplingParams(n=r.group_size, temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens,
                                     seed=s, logprobs=0, detokenize=False) for s in seeds]
            prompts = [{"prompt_token_ids": p} for p in ids]
            measured = {}
            for name, eng in (("raw", raw), ("raw_fp32", raw32)):
                t0 = time.perf_counter()
                outs = eng.llm.generate(prompts, params, use_tqdm=False)
                measured[name] = (sum(len(c.token_ids) for o in outs for c in o.outputs), time.perf_counter() - t0)
            t0 = time.perf_counter()
            got = pool.generate(requests, {"temperature": r.temperature, "top_p": r.top_p,
                                           "max_tokens": r.max_new_tokens, "seed": seeds})
            measured["pool"] = (sum(len(s.completion_ids) for g in got for s in g), time.perf_counter() - t0)
            print(f"round {k}: " + ", ".join(f"{name} {tok / sec:.0f} tok/s ({tok} tokens)"
                                             for name, (tok, sec) in measured.items())
                  + ("  (warm-up)" if k == 0 else ""), flush=True)
            if k:
                for name, (tok, sec) in measured.items():
                    n_tokens[name].append(tok)
                    seconds[name].append(sec)
    finally:
        raw.shutdown()
        raw32.shutdown()
    rate = {name: [t / s for t, s in zip(n_tokens[name], seconds[name])] for name in n_tokens}
    return ({"prompts": len(requests), "samples_per_prompt": r.group_size, "max_new_tokens": r.max_new_tokens,
            "dtype": cfg.student.dtype, "rounds": rounds,
            **{f"{name}_tokens_per_s": [round(x, 1) for x in v] for name, v in rate.items()},
            "same_tokens": n_tokens["raw"] == n_tokens["pool"],
            "pool_over_raw": round(statistics.median(rate["pool"]) / statistics.median(rate["raw"]), 3),
            "raw_bf16_over_fp32": round(statistics.median(rate["raw"]) / statistics.median(rate["raw_fp32"]), 3)},
            pool, requests)


def push_and_learn(cfg, student: str, pool, requests, pushes: int) -> dict:
    from zppo_ray.actors.learner import LearnerGroup
    from zppo_ray.types import TrainItem
    from zppo_ray.weights import make_weight_sync

    learner = LearnerGroup(student, cfg.learner, cfg.algo)
    sync = make_weight_sync(cfg.rollout)
    sync.init(learner, pool)
    try:
        groups = pool.generate(requests, {"temperature": cfg.rollout.temperature,
                                          "max_tokens": cfg.rollout.max_new_tokens, "seed": 7})
        items = [TrainItem(prompt_ids=s.prompt_ids, completion_ids=s.completion_ids, advantage=(-1.0) ** j,
                           old_logprobs=s.logprobs) for g in groups for j, s in enumerate(g)]
        tokens = sum(len(it.prompt_ids) + len(it.completion_ids) for it in items)
        t0 = time.perf_counter()
        learner.compute_logprobs(items)
        fwd_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        learner.train_minibatch(items)
        step_s = time.perf_counter() - t0
        push = []
        for v in range(1, pushes + 1):
            with PeakMemory() as mem:
                report = sync.push(v)
            push.append({"push_s": round(report.seconds, 2), "buckets": report.buckets,
                         "peak_memory_growth_mb": mem.growth_mb})
            print(f"push {v}: {push[-1]}", flush=True)
    finally:
        sync.shutdown()
        learner.shutdown()
    return {"learner": {"precision": cfg.learner.precision, "micro_batch_size": cfg.learner.micro_batch_size,
                        "rollouts": len(items), "tokens": tokens,
                        "train_step_s": round(step_s, 2), "train_tokens_per_s": round(tokens / step_s, 1),
                        "forward_s": round(fwd_s, 2), "forward_tokens_per_s": round(tokens / fwd_s, 1)},
            "push": {"weights_mb": round(report.bytes / 2**20, 1), "pushes": push}}


def main(argv=None) -> None:
    import ray

    from zppo_ray.config import load_config
    from zppo_ray.worlds.smollm2 import Smollm2World
    from zppo_ray.worlds.smollm2.acquire import ensure_smollm2

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/smollm2.yaml")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pushes", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/smollm2/bench.json"))
    args = ap.parse_args(argv)
    cfg = load_config(args.config, [])
    student = str(ensure_smollm2(cfg.smollm2.cache_dir))
    questions = Smollm2World(cfg.smollm2, cfg.templates).questions("train")[::37][:args.prompts]
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        rollout, pool, requests = rollout_ratio(cfg, student, questions, args.rounds)
        rest = push_and_learn(cfg, student, pool, requests, args.pushes)
        pool.shutdown()
    finally:
        ray.shutdown()
    report = {"machine": machine(),
              "date": time.strftime("%Y-%m-%d %H:%M"), "model": "SmolLM2-135M-Instruct", "rollout": rollout, **rest}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    from zppo_ray.cli import run_entry

    sys.exit(run_entry(main))
