"""The run log: one JSON line per event in `run_dir/metrics.jsonl`, and a readable console line.

Events are flat dicts with a `kind` ("step", "eval", "summary") so that `jq`, pandas or a notebook read
them without a schema. The log is appended to (a resumed run continues the same file) and flushed
every line so a killed run loses nothing it logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from zppo_ray.observe.loggers import namespaced

log = logging.getLogger("zppo_ray.trainer")


def read_records(path: Path) -> list[dict]:
    """The records of a run log. A run killed mid-write leaves one torn last line, which is passed over; a line
    that does not parse anywhere else is a DataError naming it."""
    from zppo_ray.errors import DataError

    lines = path.read_text().splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines):
                continue
            raise DataError(f"{path} line {n} is not JSON: {line[:80]!r} (only a torn last line, from a run killed "
                            "mid-write, is passed over)", origin=f"{path} line {n}") from None
    return out


@contextmanager
def timed(report: Callable[[float], None]) -> Iterator[None]:
    """Time the block and hand the seconds to `report`, also when the block raises."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        report(time.perf_counter() - t0)


class RunLog:
    """`metrics.jsonl`, and the same records for any `sinks` (TensorBoard, W&B: observe/loggers.py)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, sinks: list | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self._f = self.path.open("a") if enabled else None
        self.sinks = list(sinks or [])

    def write(self, kind: str, **fields) -> None:
        record = {"kind": kind, "time": round(time.time(), 3), **fields}
        if self._f is not None:
            self._f.write(json.dumps(record, default=float) + "\n")
            self._f.flush()
        if self.sinks and (series := namespaced(json.loads(json.dumps(record, default=float)))) is not None:
            for sink in self.sinks:
                sink.write(*series)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            try:
                sink.close()
            except Exception:  # noqa: BLE001 - a logger failing to close must not hide the run's own outcome
                log.exception("closing %s failed", type(sink).__name__)


def step_line(m: dict) -> str:
    """One console line per step: what a user watches while the run trains."""
    t = m["time"]
    return (f"step {m['step']:>4} | reward {m['plain_reward']:.3f} | hard {m['n_hard']:>3}/{m['n_prompts']:<3}"
            f" | bcq {m['n_bcq']:>2} acc {m['bcq_reward']:.2f} | ncq {m['n_ncq']:>2} acc {m['ncq_reward']:.2f}"
            f" | buffer {m['buffer_size']:>4} +{m['admitted']} grad {m['graduated']} evict {m['evicted']}"
            f" | {t['total']:.1f}s (gen {t['generate']:.1f} teach {t['teacher']:.1f} learn {t['learn']:.1f}"
            f" push {t['push']:.2f})")


def accuracy_label(key: str) -> str:
    """How an evaluation's accuracy key reads: a tier ("2"), "all", or a skill group ("skill:missing", the
    questions that need a skill the student's corpus left out; worlds/toy/bootstrap.py toy_questions)."""
    if key == "all":
        return "all"
    return f"{key.removeprefix('skill:')} skill" if key.startswith("skill:") else f"tier {key}"


def eval_line(label: str, acc: dict[str, float]) -> str:
    cells = "  ".join(f"{accuracy_label(k)}: {v:.1%}" for k, v in sorted(acc.items()) if k != "all")
    return f"eval {label:<7} held-out accuracy  all: {acc.get('all', 0.0):.1%}  {cells}"
