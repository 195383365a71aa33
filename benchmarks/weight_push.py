"""Weight push learner → rollout engine vs model size: seconds and peak memory of each process.

    python benchmarks/weight_push.py [--sizes 10m,135m,500m,toy] [--pushes 3] [--out benchmarks/results/weight_push/after.json]

For each model (Qwen3 architecture built from a config with random weights, bf16, plus the toy world's
student in its own fp32): one DeepSpeed learner rank and one vLLM rollout worker as Ray actors, then
`--pushes` pushes of the learner's weights into the worker, each timed end to end from the driver. While a
push runs, a sampler reads every 10 ms the resident memory of the driver process, the learner rank's process
and the rollout worker's process with its vLLM engine-core children; the table reports each one's growth over
its level just before the push (the push's extra memory) and the growth of the whole machine's used memory
(which includes the object store's shared memory).

The same script measures the code before issue 16 (one safetensors blob of the whole model, put into the
object store by the learner, loaded through /dev/shm above 512 MB): run it from a checkout of that commit
with this file copied in. `--compare before.json after.json` prints the table of both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_model import machine  # noqa: E402

# Qwen3 shapes (hidden, layers, heads, kv heads, intermediate, vocab): head_dim 64 (vLLM's CPU attention).
SIZES = {"10m": (256, 6, 4, 2, 768, 16384), "135m": (576, 30, 9, 3, 1536, 49152),
         "500m": (896, 24, 14, 2, 4864, 151936)}


def build(size: str, root: Path, tokenizer_dir: str) -> tuple[str, int]:
    """A random-weight Qwen3 model of the named size in bf16, with the toy tokenizer; (dir, parameters)."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    hidden, layers, heads, kv, inter, vocab = SIZES[size]
    cfg = Qwen3Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                      head_dim=64, intermediate_size=inter, vocab_size=vocab, max_position_embeddings=512,
                      tie_word_embeddings=True, torch_dtype="bfloat16")
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    d = root / size
    model.save_pretrained(d)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(d)
    return str(d), sum(p.numel() for p in model.parameters())


class PeakRSS:
    """Peak resident memory growth per named process group while the block runs (sampled every 10 ms)."""

    def __init__(self, pids: dict[str, int], with_children: tuple[str, ...] = ("engine",)):
        """`with_children`: groups whose child processes count too (the vLLM engine core under the rollout
        actor); never the driver, whose children are the local Ray cluster itself."""
        import psutil

        self.procs = {k: psutil.Process(p) for k, p in pids.items()}
        self.with_children = with_children
        self._vm = psutil.virtual_memory

    def _rss(self) -> dict[str, int]:
        out = {}
        for name, p in self.procs.items():
            try:
                kids = p.children(recursive=True) if name in self.with_children else []
                out[name] = p.memory_info().rss + sum(c.memory_info().rss for c in kids)
            except Exception:  # noqa: BLE001 - a child that just exited
                out[name] = out.get(name, 0)
        return out

    def __enter__(self):
        self.base, self.peak = self._rss(), self._rss()
        self.machine_base = self.machine_peak = self._vm().used
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.01):
            for k, v in self._rss().items():
                self.peak[k] = max(self.peak[k], v)
            self.machine_peak = max(self.machine_peak, self._vm().used)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.growth_mb = {k: round((self.peak[k] - self.base[k]) / 2**20, 1) for k in self.base}
        self.growth_mb["machine"] = round((self.machine_peak - self.machine_base) / 2**20, 1)


def pusher(learner, pool):
    """`push(version)` for whichever code this checkout has (the sync of issue 16, or the single blob)."""
    if hasattr(learner, "publish_weights"):  # the code before issue 16
        def push(v):
            ref, _ = learner.publish_weights()
            pool.push_weights(ref, v)
            del ref
        return push, "single blob (before issue 16)"
    from zppo_ray.config import RolloutConfig
    from zppo_ray.weights.object_store import ObjectStoreSync

    sync = ObjectStoreSync(int(RolloutConfig().weight_bucket_mb * 2**20))
    sync.init(learner, pool)
    return (lambda v: sync.push(v)), f"object-store buckets of {RolloutConfig().weight_bucket_mb:g} MB"


def measure(path: str, params: int, dtype: str, pushes: int) -> dict:
    import ray

    from zppo_ray.actors.learner import LearnerGroup
    from zppo_ray.actors.rollout import RolloutPool
    from zppo_ray.config import AlgoConfig, LearnerConfig, ModelConfig, RolloutConfig

    precision = "bf16" if dtype == "bfloat16" else "fp32"
    learner = LearnerGroup(path, LearnerConfig(precision=precision), AlgoConfig())
    pool = RolloutPool.create(RolloutConfig(num_workers=1), ModelConfig(path=path, dtype=dtype, max_model_len=256))
    try:
        push, how = pusher(learner, pool)
        pids = {"driver": os.getpid(),
                "learner": ray.get(learner.actors[0].__ray_call__.remote(lambda self: os.getpid())),
                "engine": ray.get(pool.workers[0].__ray_call__.remote(lambda self: os.getpid()))}
        runs = []
        for v in range(1, pushes + 1):
            with PeakRSS(pids) as mem:
                t0 = time.perf_counter()
                push(v)
                seconds = time.perf_counter() - t0
            runs.append({"seconds": round(seconds, 3), **{f"{k}_mb": g for k, g in mem.growth_mb.items()}})
            print(f"  push {v}: {runs[-1]}", flush=True)
        return {"params": params, "dtype": dtype, "how": how,
                "seconds_median": round(statistics.median(r["seconds"] for r in runs), 3),
                **{f"{k}_mb_max": max(r[f"{k}_mb"] for r in runs) for k in ("driver", "learner", "engine", "machine")},
                "pushes": runs}
    finally:
        pool.shutdown()
        learner.shutdown()


def compare(before: dict, after: dict) -> str:
    """Markdown: push seconds (median) and each process's extra memory, first push / median of the others."""
    def mem(r, who):
        if not r:
            return "-"
        runs = r["pushes"]
        later = statistics.median(p[f"{who}_mb"] for p in runs[1:]) if len(runs) > 1 else runs[0][f"{who}_mb"]
        return f"{runs[0][f'{who}_mb']:.0f} / {later:.0f}"

    who = ("driver", "learner", "engine")
    rows = ["| model | push s before | push s after | " + " | ".join(f"{w} MB before | {w} MB after" for w in who) + " |",
            "|---" * (3 + 2 * len(who)) + "|"]
    for name, a in after["models"].items():
        b = before["models"].get(name)
        cells = [f"{name} ({a['params'] / 1e6:.1f}M, {a['dtype']})", str(b["seconds_median"] if b else "-"),
                 str(a["seconds_median"])]
        for w in who:
            cells += [mem(b, w), mem(a, w)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10m,135m,500m,toy")
    ap.add_argument("--pushes", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/weight_push/after.json"))
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args(argv)
    if args.compare:
        print(compare(*(json.loads(p.read_text()) for p in args.compare)))
        return

    import ray

    from zppo_ray.config import load_config
    from zppo_ray.worlds.toy.bootstrap import ensure_toy_world

    toy = ensure_toy_world(load_config(None, []).toy)
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    report = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "models": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="zppo_push_bench_") as root:
            for size in args.sizes.split(","):
                if size == "toy":
                    path, dtype = str(toy.student), "float32"
                    from transformers import AutoModelForCausalLM

                    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(path).parameters())
                else:
                    (path, params), dtype = build(size, Path(root), str(toy.student)), "bfloat16"
                print(f"{size}: {params / 1e6:.1f}M parameters ({dtype})", flush=True)
                report["models"][size] = measure(path, params, dtype, args.pushes)
    finally:
        ray.shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "pushes"} for k, v in report["models"].items()},
                     indent=2))


if __name__ == "__main__":
    from zppo_ray.cli import run_entry

    sys.exit(run_entry(main))
