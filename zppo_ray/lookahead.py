"""Asynchronous rollouts (`trainer.max_staleness >= 1`): step t+1 is produced on a background thread while
the controller trains on step t (zppo_ray/trainer.py).

One step ahead, never more: the controller starts producing step t+1 only after step t-1 was trained and
its buffer refresh done, so every replay draw sees every refresh but the one still being trained (the
issue's rule "step t's refresh happens before step t+2 draws"). The controller draws the prompts itself
(`Trainer._prompts`) and hands the step over; this thread samples, grades and asks the teacher. A
producer's error (a teacher timeout, a broken pool) is raised in the controller when it takes the step;
its uncollected generate calls are abandoned first, so they never hold back a weight push.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

log = logging.getLogger(__name__)


class Lookahead:
    def __init__(self):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zppo-rollouts")
        self._future: Future | None = None
        self.before = None  # the controller state before the step in flight drew anything

    @property
    def in_flight(self) -> bool:
        return self._future is not None

    def start(self, produce: Callable, step, before) -> None:
        """`produce(step)` in the background; `before` is what a checkpoint taken meanwhile saves (resuming
        from it draws that step again: nothing is lost or doubled)."""
        if self._future is not None:
            raise RuntimeError("a step is already being produced")
        self.before = before
        self._future = self._executor.submit(produce, step)

    def take(self):
        """The step produced in the background (waiting for it), or None when none was started."""
        if self._future is None:
            return None
        f, self._future, self.before = self._future, None, None
        return f.result()

    def wait(self) -> None:
        """Let the step in flight finish (it stays to be taken): nothing else then uses the rollout pool."""
        if self._future is not None:
            wait([self._future])

    def discard(self) -> None:
        """Drop the step in flight (a rollback or a stop): wait until it is produced, then forget it."""
        f, self._future, self.before = self._future, None, None
        if f is not None:
            try:
                f.result()
            except Exception as e:  # noqa: BLE001 - the step is dropped either way; the error is the caller's
                log.warning("the step produced in the background failed and is dropped: %s: %s",
                            type(e).__name__, e)

    def close(self) -> None:
        self.discard()
        self._executor.shutdown(wait=True)
