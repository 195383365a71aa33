"""The records of one training step: its phase timer and what its named calls produced (zppo_ray/trainer.py)."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from zppo_ray.algo.zppo import Group
from zppo_ray.data.schema import Question
from zppo_ray.observe.runlog import timed
from zppo_ray.types import Sample

TIMERS = ("generate", "grade", "teacher", "compress", "learn", "push", "buffer")


@dataclass
class StepTimer:
    """Seconds per phase of one step (a phase may be entered several times: the times add up)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    start: float = field(default_factory=time.perf_counter)

    def __call__(self, name: str):
        return timed(lambda s: self.seconds.__setitem__(name, self.seconds[name] + s))

    def seconds_of_step(self) -> dict[str, float]:
        """Every phase (0 when unused), the step's total, and `idle`: what no phase accounts for."""
        out = {k: self.seconds.get(k, 0.0) for k in TIMERS}
        out["total"] = time.perf_counter() - self.start
        out["idle"] = max(0.0, out["total"] - sum(out[k] for k in TIMERS))
        return out


@dataclass
class Step:
    """What one step has produced so far (filled in by the named calls of `Trainer.train_step`)."""

    timer: StepTimer
    new: list[Question] = field(default_factory=list)
    replay: list[Question] = field(default_factory=list)
    batch: list[Question] = field(default_factory=list)
    by_id: dict[str, Question] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # questions whose rollouts could not be produced
    plain: dict[str, Group] = field(default_factory=dict)
    plain_samples: dict[str, list[Sample]] = field(default_factory=dict)
    teacher_calls: list = field(default_factory=list)
    teacher: dict[str, Group] = field(default_factory=dict)
    hard: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    requests: list = field(default_factory=list)  # (uid, question, GenRequest) of the extra groups
    injected: dict[str, Sample] = field(default_factory=dict)
    reform: list = field(default_factory=list)  # (uid, Group, samples) of the extra groups
    dropped: int = 0
    compress: dict[str, int] = field(default_factory=lambda: {"compress_fallbacks": 0, "raw_instances": 0})
