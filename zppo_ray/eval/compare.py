"""Method comparison from run directories: the numbers behind benchmarks/compare_methods.py.

Pure functions over what every run writes (`metrics.jsonl`, `summary.json`): held-out accuracy per tier
(mean ± spread over seeds), buffer fates and graduation rate, graduation rate by entry-accuracy bin,
BCQ/NCQ accuracy, wall-clock and its ratio to a baseline method. No Ray, no models.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from zppo_ray.observe.prometheus import entry_bin  # the same bins as the Prometheus labels


def read_run(run_dir: str | Path) -> dict:
    """{"steps": [...], "evals": [...], "fates": [...], "summary": {...} or None} of one run directory.

    A stopped run has no summary.json (None). A resumed run logs the steps after its checkpoint again: the
    later attempt replaces everything the abandoned one logged from that step on (its steps, evaluations
    and buffer fates), so every step appears once, as the run that continued saw it.
    """
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory: it has no metrics.jsonl")
    by_kind: dict[str, list[dict]] = defaultdict(list)
    last_step = 0
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:  # a run killed mid-write leaves one torn last line
            if n == len(lines):
                continue
            raise ValueError(f"{path}:{n} is not JSON: {line[:80]!r}") from None
        if r.get("kind") == "step":
            if r["step"] <= last_step:  # resumed from a checkpoint before this step
                for rows in by_kind.values():
                    rows[:] = [x for x in rows if x.get("step", 0) < r["step"]]
            last_step = r["step"]
        by_kind[r.get("kind", "?")].append(r)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return {"steps": by_kind["step"], "evals": by_kind["eval"], "fates": by_kind["fate"], "summary": summary}


def graduation(fates: Iterable[dict], group_size: int) -> dict:
    """Fate counts, the graduation rate graduated / (graduated + evicted), and the same per entry bin.
    A rate is None where no question left the buffer (nothing to divide)."""
    total = {"graduated": 0, "evicted": 0}
    bins: dict[str, dict[str, int]] = defaultdict(lambda: {"graduated": 0, "evicted": 0})
    for f in fates:
        total[f["fate"]] += 1
        bins[entry_bin(f["entry_accuracy"], group_size)][f["fate"]] += 1

    def rate(c: dict) -> float | None:
        n = c["graduated"] + c["evicted"]
        return c["graduated"] / n if n else None

    return {**total, "rate": rate(total),
            "by_bin": {b: {**c, "rate": rate(c)} for b, c in sorted(bins.items(), key=lambda kv: int(kv[0].split("/")[0]))}}


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation (0 for a single seed)."""
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def method_row(runs: list[dict], group_size: int) -> dict:
    """One method's numbers over its seeds."""
    tiers = sorted({t for r in runs for t in (r["summary"].get("eval_after") or {})})
    acc = {t: mean_spread([r["summary"]["eval_after"][t] for r in runs]) for t in tiers}
    before = {t: mean_spread([r["summary"]["eval_before"][t] for r in runs]) for t in tiers}
    fates = [f for r in runs for f in r["fates"]]

    def step_mean(key: str, weight: str) -> float | None:
        # weighted by how many groups of that kind each step had, so empty steps do not count as 0
        num = sum(s.get(key, 0.0) * s.get(weight, 0) for r in runs for s in r["steps"])
        den = sum(s.get(weight, 0) for r in runs for s in r["steps"])
        return num / den if den else None

    curve: dict[int, list[float]] = defaultdict(list)  # held-out accuracy (all tiers) at each evaluation
    for r in runs:
        for e in r["evals"]:
            curve[e["step"]].append(e["accuracy"]["all"])
    return {
        "seeds": len(runs),
        "curve": {s: mean_spread(v) for s, v in sorted(curve.items())},
        "before": before,
        "after": acc,
        "graduation": graduation(fates, group_size),
        "bcq_accuracy": step_mean("bcq_reward", "n_bcq"),
        "ncq_accuracy": step_mean("ncq_reward", "n_ncq"),
        "train_seconds": mean_spread([r["summary"]["train_seconds"] for r in runs]),
    }


def _fmt(ms: tuple[float, float], pct: bool = True) -> str:
    m, s = ms
    return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:.0f} ± {s:.0f}"


def markdown_table(rows: dict[str, dict], baseline: str = "grpo") -> str:
    """The comparison table: held-out accuracy per tier (after training), buffer fates, BCQ/NCQ accuracy,
    wall-clock and its ratio to `baseline` (measured in the same run of the script)."""
    tiers = sorted({t for r in rows.values() for t in r["after"]}, key=lambda t: (t == "all", t))
    base = rows.get(baseline, {}).get("train_seconds", (None, 0))[0]
    head = (["method", "seeds"] + [f"tier {t} %" if t != "all" else "all %" for t in tiers]
            + ["graduated", "evicted", "grad. rate", "BCQ acc", "NCQ acc", "train s", f"× {baseline}"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        g = r["graduation"]
        cells = [name, str(r["seeds"])] + [_fmt(r["after"][t]) for t in tiers] + [
            str(g["graduated"]), str(g["evicted"]), "–" if g["rate"] is None else f"{100 * g['rate']:.0f}%",
            "–" if r["bcq_accuracy"] is None else f"{100 * r['bcq_accuracy']:.0f}%",
            "–" if r["ncq_accuracy"] is None else f"{100 * r['ncq_accuracy']:.0f}%",
            _fmt(r["train_seconds"], pct=False),
            "–" if not base else f"{r['train_seconds'][0] / base:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bin_table(rows: dict[str, dict]) -> str:
    """Graduation rate by entry-accuracy bin, one column per method that has a buffer."""
    with_buffer = {n: r for n, r in rows.items() if r["graduation"]["by_bin"]}
    bins = sorted({b for r in with_buffer.values() for b in r["graduation"]["by_bin"]},
                  key=lambda b: int(b.split("/")[0]))
    lines = ["| entry accuracy | " + " | ".join(with_buffer) + " |", "|---|" + "---|" * len(with_buffer)]
    for b in bins:
        cells = []
        for r in with_buffer.values():
            c = r["graduation"]["by_bin"].get(b)
            cells.append("–" if not c or c["rate"] is None else
                         f"{100 * c['rate']:.0f}% ({c['graduated']}/{c['graduated'] + c['evicted']})")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve_table(rows: dict[str, dict]) -> str:
    """Held-out accuracy (all tiers, %) at every evaluation step, one row per method."""
    steps = sorted({s for r in rows.values() for s in r["curve"]})
    lines = ["| method | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{100 * r['curve'][s][0]:.1f}" if s in r["curve"] else "–" for s in steps) + " |")
    return "\n".join(lines)
