"""The records of one training step: its phase timer and what its named calls produced (zppo_ray/trainer.py)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field

from zppo_ray.algo.zppo import Group
from zppo_ray.data.schema import Question
from zppo_ray.observe.runlog import timed
from zppo_ray.types import Sample

TIMERS = ("generate", "grade", "teacher", "compress", "learn", "push", "buffer")
ROLES = ("rollout", "teacher", "learner")


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


class RoleClock:
    """When each role (rollout, teacher, learner) had work from this controller, across threads, so each step
    can report how long each role sat idle during it. A role is busy from the moment a call is dispatched to
    it until its result is collected: for the rollout and teacher pools that is an upper bound on their real
    work (a result may wait a little before the controller collects it)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._done: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._open: dict[int, tuple[str, float]] = {}
        self._next = 0

    def start(self, role: str) -> int:
        with self._lock:
            self._next += 1
            self._open[self._next] = (role, time.perf_counter())
            return self._next

    def stop(self, key: int) -> None:
        """End a span (again: a no-op, so failure paths may stop what a success path stopped already)."""
        with self._lock:
            span = self._open.pop(key, None)
            if span is not None:
                self._done[span[0]].append((span[1], time.perf_counter()))

    @contextmanager
    def busy(self, role: str):
        key = self.start(role)
        try:
            yield
        finally:
            self.stop(key)

    def idle(self, a: float, b: float) -> dict[str, float]:
        """Per role, the seconds of [a, b] during which it had nothing to do; forgets what ended before a."""
        with self._lock:
            spans = {r: [x for x in self._done[r] if x[1] > a] for r in ROLES}
            self._done = defaultdict(list, spans)
            for role, t0 in self._open.values():
                spans[role] = spans[role] + [(t0, b)]
        return {r: (b - a) - _union(spans[r], a, b) for r in ROLES}


def _union(spans: list[tuple[float, float]], a: float, b: float) -> float:
    """Length of the union of `spans` clipped to [a, b]."""
    total, end = 0.0, a
    for t0, t1 in sorted((min(max(t0, a), b), min(t1, b)) for t0, t1 in spans):
        if t1 > end:
            total += t1 - max(t0, end)
            end = t1
    return total


@dataclass
class Step:
    """What one step has produced so far (filled in by the named calls of `Trainer.train_step`)."""

    timer: StepTimer
    at: int = 0  # steps completed before this one: its number is at + 1 (seeds and logs use it)
    epoch: int = 0
    items: list = field(default_factory=list)  # the learner's batch (step 8)
    new: list[Question] = field(default_factory=list)
    replay: list[Question] = field(default_factory=list)
    batch: list[Question] = field(default_factory=list)
    by_id: dict[str, Question] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # questions whose rollouts could not be produced
    plain: dict[str, Group] = field(default_factory=dict)
    plain_samples: dict[str, list[Sample]] = field(default_factory=dict)
    teacher_calls: list = field(default_factory=list)
    early: list = field(default_factory=list)  # (texts, clock key, teacher call): compressions started per chunk
    teacher: dict[str, Group] = field(default_factory=dict)
    hard: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    requests: list = field(default_factory=list)  # (uid, question, GenRequest) of the extra groups
    injected: dict[str, Sample] = field(default_factory=dict)
    reform: list = field(default_factory=list)  # (uid, Group, samples) of the extra groups
    dropped: int = 0
    compress: dict[str, int] = field(default_factory=lambda: {"compress_fallbacks": 0, "raw_instances": 0})
