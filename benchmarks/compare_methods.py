"""Train several methods on the toy world with identical seeds, budget and hardware; write a table and plots.

    python benchmarks/compare_methods.py --methods grpo,grpo_buffer,zppo --seeds 0,1,2 --steps 20 \
        --out benchmarks/results/compare [key=value overrides for every run]

Every (method, seed) is one ordinary training run (`zppo_ray.launch.train`) in its own run directory under
OUT/runs/, one after the other in one Ray session, so wall-clock ratios compare like with like. The seed
sets trainer.seed, rollout.seed, teacher.seed and data.shuffle_seed together: two methods with the same seed
see the same questions in the same order. Results: OUT/table.md (+ .json), OUT/*.png, OUT/README.md with the
command line and the machine. A finished run directory is reused, so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from zppo_ray.eval.compare import bin_table, curve_table, markdown_table, method_row, read_run


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="grpo,grpo_buffer,zppo")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--baseline", default="grpo", help="wall-clock ratios are against this method")
    ap.add_argument("--out", default="benchmarks/results/compare")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides applied to every run")
    return ap.parse_args(argv)


def run_one(method: str, seed: int, args, out: Path) -> Path:
    """One ordinary run, exactly what `python -m zppo_ray.main <overrides>` does."""
    from zppo_ray.main import run

    run_dir = out / "runs" / f"{method}-s{seed}"
    if (run_dir / "summary.json").exists():
        print(f"[compare] {run_dir} done already: reused", flush=True)
        return run_dir
    print(f"[compare] {method} seed {seed} -> {run_dir}", flush=True)
    return run([f"algo.name={method}", f"trainer.steps={args.steps}", f"trainer.eval_every={args.eval_every}",
                f"trainer.seed={seed}", f"rollout.seed={seed}", f"teacher.seed={seed}", f"data.shuffle_seed={seed}",
                f"trainer.run_dir={run_dir}", "checkpoint.every=0", *args.overrides])


def plots(runs: dict[str, list[dict]], rows: dict[str, dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, rs in runs.items():  # held-out accuracy over steps, mean over seeds
        points: dict[int, list[float]] = {}
        for r in rs:
            for e in r["evals"]:
                points.setdefault(e["step"], []).append(e["accuracy"]["all"])
        steps = sorted(points)
        ax.plot(steps, [100 * sum(points[s]) / len(points[s]) for s in steps], marker="o", label=method)
    ax.set(xlabel="step", ylabel="held-out accuracy, all tiers (%)", title="Held-out accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy_over_steps.png", dpi=120)
    written.append("accuracy_over_steps.png")

    buffered = [m for m in ("zppo", "grpo_buffer") if m in rows and rows[m]["graduation"]["by_bin"]]
    if buffered:
        bins = sorted({b for m in buffered for b in rows[m]["graduation"]["by_bin"]}, key=lambda b: int(b.split("/")[0]))
        fig, ax = plt.subplots(figsize=(6, 4))
        width = 0.8 / len(buffered)
        for i, m in enumerate(buffered):
            by = rows[m]["graduation"]["by_bin"]
            ax.bar([k + i * width for k in range(len(bins))],
                   [100 * (by[b]["rate"] or 0) if b in by else 0 for b in bins], width, label=m)
        ax.set_xticks([k + width * (len(buffered) - 1) / 2 for k in range(len(bins))], bins)
        ax.set(xlabel="entry accuracy (correct of G_S)", ylabel="graduation rate (%)", title="Graduation by entry bin")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "graduation_by_entry_bin.png", dpi=120)
        written.append("graduation_by_entry_bin.png")

        fig, ax = plt.subplots(figsize=(6, 4))
        for m in buffered:
            steps = runs[m][0]["steps"]  # first seed
            x = [s["step"] for s in steps]
            grad, ev, g_cum, e_cum = [], [], 0, 0
            for s in steps:
                g_cum, e_cum = g_cum + s["graduated"], e_cum + s["evicted"]
                grad.append(g_cum)
                ev.append(e_cum)
            line, = ax.plot(x, [s["buffer_size"] for s in steps], label=f"{m}: size")
            ax.plot(x, grad, linestyle="--", color=line.get_color(), label=f"{m}: graduated (cum.)")
            ax.plot(x, ev, linestyle=":", color=line.get_color(), label=f"{m}: evicted (cum.)")
        ax.set(xlabel="step", ylabel="questions", title="Buffer size and fates (first seed)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "buffer_over_steps.png", dpi=120)
        written.append("buffer_over_steps.png")
    plt.close("all")
    return written


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
    args = parse(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    t0 = time.time()
    dirs = {m: [run_one(m, s, args, out) for s in seeds] for m in methods}
    runs = {m: [read_run(d) for d in ds] for m, ds in dirs.items()}
    from zppo_ray.config import load_config

    group_size = load_config(None, list(args.overrides)).rollout.group_size
    rows = {m: method_row(rs, group_size) for m, rs in runs.items()}
    table, bins, curve = markdown_table(rows, args.baseline), bin_table(rows), curve_table(rows)
    (out / "table.md").write_text(table + "\n\nHeld-out accuracy (all tiers, %) over steps\n\n" + curve
                                  + "\n\nGraduation rate by entry bin\n\n" + bins + "\n")
    (out / "table.json").write_text(json.dumps(rows, indent=2))
    pngs = plots(runs, rows, out)
    command = "python benchmarks/compare_methods.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "README.md").write_text(
        f"# Method comparison on the toy world\n\nCommand: `{command}`\n\nMachine: {machine()}\n\n"
        f"Date: {time.strftime('%Y-%m-%d')}; total {time.time() - t0:.0f} s\n\n"
        f"Held-out accuracy after training (mean ± spread over seeds), buffer fates, BCQ/NCQ accuracy, "
        f"wall-clock:\n\n{table}\n\nHeld-out accuracy (all tiers, %) over steps:\n\n{curve}\n\n"
        f"Graduation rate by entry bin:\n\n{bins}\n\n"
        + "".join(f"![{p}]({p})\n" for p in pngs))
    print(table + "\n\n" + curve + "\n\n" + bins, flush=True)


if __name__ == "__main__":
    main()
