"""Train several methods on the toy world with identical seeds, budget and hardware; write a table and plots.

    python benchmarks/compare_methods.py --methods grpo,grpo_buffer,zppo --seeds 0,1,2 --steps 20 \
        --out benchmarks/results/compare [key=value overrides for every run]

Every (method, seed) is one ordinary training run (`zppo_ray.launch.train`) in its own run directory under
OUT/runs/, one after the other in one Ray session, so wall-clock ratios compare like with like. The seed
sets trainer.seed, rollout.seed, teacher.seed and data.shuffle_seed together: two methods with the same seed
see the same questions in the same order. Results: OUT/table.md (+ .json) over every seed, OUT/*.png
(zppo_ray/plot.py, one colour per method, its first seed), OUT/README.md with the command line and the
machine. A finished run directory is reused, so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from zppo_ray.eval.compare import bin_table, claims_table, curve_table, markdown_table, method_row, read_run
from zppo_ray.observe import progress
from zppo_ray.plot import plot


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="a config file under every run (e.g. configs/zone.yaml); default: the toy world")
    ap.add_argument("--methods", default="grpo,grpo_buffer,zppo")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--baseline", default="grpo", help="wall-clock ratios are against this method")
    ap.add_argument("--out", default="benchmarks/results/compare")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides applied to every run")
    return ap.parse_args(argv)


def run_one(method: str, seed: int, args, out: Path) -> Path:
    """One ordinary run, exactly what `python -m zppo_ray.main <overrides>` does (without per-run plots: the
    comparison draws all runs together)."""
    from zppo_ray.main import run

    run_dir = out / "runs" / f"{method}-s{seed}"
    if (run_dir / "summary.json").exists():
        print(f"[compare] {run_dir} done already: reused", flush=True)
        return run_dir
    print(f"[compare] {method} seed {seed} -> {run_dir}", flush=True)
    return run([*([args.config] if args.config else []), f"algo.name={method}", f"trainer.steps={args.steps}", f"trainer.eval_every={args.eval_every}",
                f"trainer.seed={seed}", f"rollout.seed={seed}", f"teacher.seed={seed}", f"data.shuffle_seed={seed}",
                f"trainer.run_dir={run_dir}", "checkpoint.every=0", "metrics.plots=false", *args.overrides])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPU cores ({cpu}), {mem:.0f} GiB RAM, no GPU, {platform.platform()}"


def main(argv=None) -> None:
    from zppo_ray.algo.methods import METHODS
    from zppo_ray.errors import UsageError

    args = parse(argv if argv is not None else sys.argv[1:])
    unknown = sorted(set(args.methods.split(",")) - set(METHODS))
    if unknown:
        raise UsageError(f"--methods: unknown method(s) {unknown}; known: {', '.join(sorted(METHODS))}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    t0 = time.time()
    dirs: dict[str, list[Path]] = {m: [] for m in methods}
    with progress.bar(len(methods) * len(seeds), "method comparison", unit="run") as bar:
        for m in methods:
            for s in seeds:
                bar.set_postfix_str(f"{m} seed {s}")
                dirs[m].append(run_one(m, s, args, out))
                bar.update()
    runs = {m: [read_run(d) for d in ds] for m, ds in dirs.items()}
    from zppo_ray.config import load_config

    group_size = load_config(args.config, list(args.overrides)).rollout.group_size
    rows = {m: method_row(rs, group_size) for m, rs in runs.items()}
    sections = [("Held-out accuracy after training (mean ± spread over seeds), buffer fates (visits: mean replay "
                 "visits before leaving), BCQ/NCQ accuracy, wall-clock", markdown_table(rows, args.baseline)),
                ("Held-out accuracy (all, %, mean over seeds) over steps", curve_table(rows))]
    if any("skill:missing" in r["curves"] for r in rows.values()):
        sections.append(("Held-out accuracy on the questions that need the missing skill (%) over steps",
                         curve_table(rows, "skill:missing")))
    sections.append(("Graduation rate by entry bin (graduated / left the buffer)", bin_table(rows)))
    sections.append(("Each claim of the paper against these runs (accuracy: mean ± spread over seeds; 'yes' only "
                     "when the gap exceeds both spreads)", claims_table(rows)))
    body = "\n\n".join(f"{title}:\n\n{text}" for title, text in sections)
    (out / "table.md").write_text(body + "\n")
    (out / "table.json").write_text(json.dumps(rows, indent=2))
    # one line per method (its first seed): legible with many methods; the tables hold every seed
    pngs = [p.name for p in plot([ds[0] for ds in dirs.values()], out)]
    command = "python benchmarks/compare_methods.py " + " ".join(argv if argv is not None else sys.argv[1:])
    train_s = sum(r["summary"]["train_seconds"] for rs in runs.values() for r in rs)
    (out / "README.md").write_text(
        f"# Method comparison on {args.config or 'the toy world'}\n\nCommand: `{command}`\n\nMachine: {machine()}\n\n"
        f"Date: {time.strftime('%Y-%m-%d')}; this invocation {time.time() - t0:.0f} s (a reused run costs nothing); "
        f"training time of all runs {train_s:.0f} s\n\n{body}\n\n" + "".join(f"![{p}]({p})\n" for p in pngs))
    print(body, flush=True)

if __name__ == "__main__":
    from zppo_ray.cli import run_entry

    sys.exit(run_entry(main))
