"""Pictures of a run, or of several side by side:

    python -m zppo_ray.plot RUN_DIR [RUN_DIR ...] [--out DIR]

Writes PNGs of held-out accuracy (and, in a world with a skill gap, on the missing skill), plain reward, hard
questions with BCQ/NCQ accuracy, buffer size with admissions/graduations/evictions, graduation rate by entry
bin, replay visits before leaving, the learning signal (positive-advantage share, entropy) and the step-time
breakdown, all from the run directory's `metrics.jsonl` (a stopped or resumed run works:
zppo_ray/eval/compare.py `read_run`).
One run: into RUN_DIR/plots/ (a training run writes them there when it ends, `metrics.plots`); several:
into --out (default ./plots), one colour per run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from zppo_ray.errors import RunDirError, UsageError
from zppo_ray.eval.compare import graduation, read_run
from zppo_ray.observe.runlog import accuracy_label

log = logging.getLogger(__name__)

TIME_PARTS = ("buffer", "generate", "grade", "teacher", "compress", "learn", "push", "idle")


def _group_size(run_dir: Path) -> int | None:
    from omegaconf import OmegaConf

    cfg = run_dir / "config.yaml"
    return int(OmegaConf.load(cfg).rollout.group_size) if cfg.exists() else None


def _labels(dirs: list[Path]) -> list[str]:
    names = [d.name for d in dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in dirs]


def _figure(plt, title: str, ylabel: str, rows: int = 1):
    fig, axes = plt.subplots(rows, 1, figsize=(7, 3.2 * rows + 0.6), sharex=True, squeeze=False)
    axes[0][0].set_title(title)
    for ax in axes[:, 0]:
        ax.grid(alpha=0.3)
    axes[-1][0].set_xlabel("step")
    axes[0][0].set_ylabel(ylabel)
    return fig, [a[0] for a in axes]


def _series(steps: list[dict], key: str, when: str | None = None) -> tuple[list[int], list[float]]:
    """(step, value) of every step record, or only of those where the count `when` is non-zero."""
    pts = [(s["step"], s.get(key, 0.0)) for s in steps if when is None or s.get(when, 0)]
    return [p[0] for p in pts], [p[1] for p in pts]


def _accuracy(plt, runs: dict, single: bool):
    """Overall held-out accuracy (one run: each tier too); below it, in a world with a skill gap, the
    accuracy on the questions that need the missing skill (one run: and on the others)."""
    skill_keys = sorted({k for r in runs.values() for e in r["evals"] for k in e["accuracy"] if k.startswith("skill:")})
    fig, axes = _figure(plt, "Held-out accuracy", "accuracy (%)", 2 if skill_keys else 1)
    for name, r in runs.items():
        evals = sorted(r["evals"], key=lambda e: e["step"])
        x = [e["step"] for e in evals]
        line, = axes[0].plot(x, [100 * e["accuracy"]["all"] for e in evals], marker="o",
                             label=f"{name}: all" if single else name)
        tiers = sorted({t for e in evals for t in e["accuracy"] if t != "all" and t not in skill_keys}) if single else []
        for j, t in enumerate(tiers):  # one run: each tier too
            axes[0].plot(x, [100 * e["accuracy"].get(t, float("nan")) for e in evals],
                         linestyle=("--", ":", "-.")[j % 3], marker=".", label=accuracy_label(t))
        mine = sorted({k for e in evals for k in e["accuracy"] if k in skill_keys})
        for j, k in enumerate(mine if single else [k for k in mine if k == "skill:missing"]):
            axes[1].plot(x, [100 * e["accuracy"].get(k, float("nan")) for e in evals], marker="o",
                         linestyle=("-", "--")[j % 2], color=None if single else line.get_color(),
                         label=accuracy_label(k) if single else name)
    if skill_keys:
        axes[1].set_ylabel("accuracy (%)")
        axes[1].set_title("by skill" if single else "questions that need the missing skill", fontsize=9)
    return fig


def _signal(plt, runs: dict, single: bool):
    fig, (top, bottom) = _figure(plt, "Learning signal: rollouts with a positive advantage, policy entropy",
                                 "positive advantage (share)", 2)
    bottom.set_ylabel("entropy (nats/token)")
    for name, r in runs.items():
        adv = [s for s in r["steps"] if "pos_adv_frac" in s]  # distillation steps have no advantages
        top.plot([s["step"] for s in adv], [s["pos_adv_frac"] for s in adv], label=name)
        learned = [s for s in r["steps"] if "entropy" in (s.get("learn") or {})]
        bottom.plot([s["step"] for s in learned], [s["learn"]["entropy"] for s in learned], label=name)
    return fig


def _visits(plt, runs: dict, single: bool):
    """How many replay visits a question had when it left the buffer, graduated vs evicted."""
    left = {n: r["fates"] for n, r in runs.items() if r["fates"]}
    if not left:
        return None
    fig, axes = _figure(plt, "Replay visits before leaving the buffer", "questions", 2)
    top_v = max(f["visits"] for fs in left.values() for f in fs)
    width = 0.8 / len(left)
    for ax, fate in zip(axes, ("graduated", "evicted")):
        ax.set_title(fate, fontsize=9)
        for i, (name, fates) in enumerate(left.items()):
            counts = [sum(1 for f in fates if f["fate"] == fate and f["visits"] == v) for v in range(top_v + 1)]
            ax.bar([v + i * width for v in range(top_v + 1)], counts, width, label=name)
    axes[-1].set_xlabel("replay visits")
    return fig


def _reward(plt, runs: dict, single: bool):
    fig, (ax,) = _figure(plt, "Plain reward (mean over the step's student groups)", "reward")
    for name, r in runs.items():
        ax.plot(*_series(r["steps"], "plain_reward"), label=name)
        if single:
            ax.plot(*_series(r["steps"], "replay_reward", "n_replay"), linestyle="--", marker=".",
                    label="replayed questions only")
    return fig


def _hard(plt, runs: dict, single: bool):
    fig, (top, bottom) = _figure(plt, "Hard questions and reformulated-question accuracy", "hard questions", 2)
    bottom.set_ylabel("accuracy")
    for name, r in runs.items():
        line, = top.plot(*_series(r["steps"], "n_hard"), label=f"{name}: hard")
        c = line.get_color()
        top.plot(*_series(r["steps"], "n_bcq"), color=c, linestyle="--", label=f"{name}: BCQ groups")
        top.plot(*_series(r["steps"], "n_ncq"), color=c, linestyle=":", label=f"{name}: NCQ groups")
        bottom.plot(*_series(r["steps"], "bcq_reward", "n_bcq"), color=c, marker="o", label=f"{name}: BCQ")
        bottom.plot(*_series(r["steps"], "ncq_reward", "n_ncq"), color=c, marker="x", linestyle="--",
                    label=f"{name}: NCQ")
    return fig


def _buffer(plt, runs: dict, single: bool):
    buffered = {n: r for n, r in runs.items() if any(s.get("admitted") or s.get("buffer_size") for s in r["steps"])}
    if not buffered:
        return None
    fig, (ax,) = _figure(plt, "Replay buffer: size, and admissions / graduations / evictions so far", "questions")
    for name, r in buffered.items():
        steps = r["steps"]
        x = [s["step"] for s in steps]
        line, = ax.plot(x, [s["buffer_size"] for s in steps], linewidth=2, label=f"{name}: size")
        for key, style in (("admitted", "-."), ("graduated", "--"), ("evicted", ":")):
            total, cum = 0, []
            for s in steps:
                total += s.get(key, 0)
                cum.append(total)
            ax.plot(x, cum, color=line.get_color(), linestyle=style, label=f"{name}: {key}")
    return fig


def _graduation(plt, runs: dict, group_sizes: dict, single: bool):
    tables = {n: graduation(r["fates"], group_sizes[n]) for n, r in runs.items() if r["fates"] and group_sizes[n]}
    if not tables:
        return None
    bins = sorted({b for t in tables.values() for b in t["by_bin"]}, key=lambda b: int(b.split("/")[0]))
    fig, (ax,) = _figure(plt, "Graduation rate by entry accuracy (correct of G_S)", "graduated (%)")
    width = 0.8 / len(tables)
    for i, (name, t) in enumerate(tables.items()):
        xs = [k + i * width for k in range(len(bins))]
        rates = [100 * (t["by_bin"][b]["rate"] or 0) if b in t["by_bin"] else 0 for b in bins]
        bars = ax.bar(xs, rates, width, label=name)
        for b_, bin_ in zip(bars, bins):  # n = questions that left the buffer from that bin
            c = t["by_bin"].get(bin_)
            if c:
                ax.annotate(f"n={c['graduated'] + c['evicted']}", (b_.get_x() + b_.get_width() / 2, b_.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks([k + width * (len(tables) - 1) / 2 for k in range(len(bins))], bins)
    ax.set_xlabel("entry accuracy")
    return fig


def _step_time(plt, runs: dict, single: bool):
    fig, (ax,) = _figure(plt, "Where a step's time goes", "seconds")
    if single:
        (name, r), = runs.items()
        x = [s["step"] for s in r["steps"]]
        parts = [[s["time"].get(p, 0.0) for s in r["steps"]] for p in TIME_PARTS]
        other = [max(0.0, s["time"]["total"] - sum(s["time"].get(p, 0.0) for p in TIME_PARTS)) for s in r["steps"]]
        ax.stackplot(x, *parts, other, labels=[*TIME_PARTS, "other"])
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: the areas fill the plot
        return fig
    names = list(runs)
    left = [0.0] * len(names)
    for p in TIME_PARTS:  # several runs: mean seconds per part, one bar per run
        means = [sum(s["time"].get(p, 0.0) for s in r["steps"]) / max(1, len(r["steps"])) for r in runs.values()]
        ax.barh(names, means, left=left, label=p)
        left = [a + b for a, b in zip(left, means)]
    ax.set_xlabel("mean seconds per step")
    return fig


def plot(run_dirs: list[str | Path], out: str | Path | None = None) -> list[Path]:
    """Write the PNGs for one run or a comparison of several; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise UsageError("plot needs at least one run directory")
    runs = {name: read_run(d) for name, d in zip(_labels(dirs), dirs)}
    empty = [n for n, r in runs.items() if not r["steps"]]
    if len(empty) == len(runs):
        raise RunDirError(f"no training steps logged yet in {', '.join(map(str, dirs))}: nothing to plot")
    for n in empty:
        log.warning("%s has no training steps logged yet: left out of the step plots", n)
    group_sizes = {n: _group_size(d) for n, d in zip(runs, dirs)}
    out = Path(out) if out else (dirs[0] / "plots" if len(dirs) == 1 else Path("plots"))
    out.mkdir(parents=True, exist_ok=True)
    single = len(runs) == 1
    # more runs than the default cycle's 10 colours would give two runs one colour
    colours = plt.get_cmap("tab20").colors if len(runs) > 10 else plt.rcParams["axes.prop_cycle"].by_key()["color"]
    with plt.rc_context({"axes.prop_cycle": plt.cycler(color=colours)}):
        return _draw(plt, runs, group_sizes, out, single)


def _draw(plt, runs: dict, group_sizes: dict, out: Path, single: bool) -> list[Path]:
    figures = {
        "heldout_accuracy": _accuracy(plt, runs, single),
        "plain_reward": _reward(plt, runs, single),
        "hard_questions": _hard(plt, runs, single),
        "buffer": _buffer(plt, runs, single),
        "graduation_by_entry_bin": _graduation(plt, runs, group_sizes, single),
        "visits_before_leaving": _visits(plt, runs, single),
        "learning_signal": _signal(plt, {n: r for n, r in runs.items() if r["steps"]}, single),
        "step_time": _step_time(plt, {n: r for n, r in runs.items() if r["steps"]}, single),
    }
    why_not = {"buffer": "no run has a replay buffer with questions in it",
               "graduation_by_entry_bin": "no question has left a replay buffer yet",
               "visits_before_leaving": "no question has left a replay buffer yet"}
    written = []
    for name, fig in figures.items():
        if fig is None:
            log.info("no %s plot: %s (%s)", name, why_not[name], ", ".join(runs))
            continue
        for ax in fig.axes:
            if ax.get_legend() is None and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        written.append(out / f"{name}.png")
    plt.close("all")
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m zppo_ray.plot", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+", type=Path, help="run directories (each with a metrics.jsonl)")
    ap.add_argument("--out", type=Path, help="where the PNGs go (one run: RUN_DIR/plots; several: ./plots)")
    args = ap.parse_args(argv)
    for f in plot(args.run_dirs, args.out):
        print(f)


if __name__ == "__main__":
    from zppo_ray.cli import run_entry

    sys.exit(run_entry(main, log_format="%(message)s"))
