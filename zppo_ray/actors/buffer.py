"""The replay-buffer actor: the only owner of question state, a thin shell over `PromptReplayBuffer`.

The policy (admit / graduate / evict / sample) lives in `zppo_ray.state.buffer` and is tested without Ray.
This shell adds what only a long-lived actor needs: the sampling RNG whose state travels with the
snapshot (so a resumed run replays the same questions), and a cursor over the fate records so the
controller can export only what is new each step.

Surviving its own death (README "Recovery"). After every refresh the actor writes a *live snapshot*
(`run_dir/buffer_live/`, atomic files) that includes the step of that refresh, and `refresh` is
idempotent per step (a second call for a step already applied returns the first result). `BufferClient`,
the driver's handle, rebuilds a dead actor from the live snapshot and repeats the call that failed, so a
buffer death loses nothing: the refresh of the current step is either in the snapshot or repeated from the
controller's copy of the step's accuracies. Only a live snapshot that cannot be read falls back to the
last checkpoint's buffer; the refreshes lost that way are counted (zppo_buffer_lost_refreshes_total) and
logged.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import ray

from zppo_ray.data.schema import Question
from zppo_ray.observe import prometheus
from zppo_ray.state.buffer import BufferConfig, PromptReplayBuffer
from zppo_ray.state.checkpoint import rng_from_json, rng_to_json

log = logging.getLogger("zppo_ray.state.buffer")


class ReplayBufferShell:
    def __init__(self, config: BufferConfig, seed: int, live_dir: str | None = None):
        self.buffer = PromptReplayBuffer(config)
        self.rng = random.Random(seed)
        self.live_dir = live_dir  # written after every refresh (None: no live snapshot, e.g. unit tests)
        self.last_step = 0  # the step of the last refresh applied
        self.last_result: dict | None = None

    def sample(self, k: int) -> list[Question]:
        return self.buffer.sample(k, self.rng) if k > 0 else []

    def refresh(self, step: int, plain_accuracy: dict[str, float], questions: dict[str, Question],
                replayed_ids: list[str], group_size: int = 0) -> dict:
        if step <= self.last_step:  # a repeated call (the first answer was lost with a dead actor)
            if step == self.last_step and self.last_result is not None:
                return self.last_result
            raise ValueError(f"buffer refresh for step {step} after step {self.last_step} was applied")
        before = set(self.buffer.ids())
        result = self.buffer.refresh(step, plain_accuracy, questions, set(replayed_ids))
        out = asdict(result)
        out["fates"] = [asdict(f) for f in result.fates]
        out["admitted_ids"] = list(result.admitted_ids)  # JSON-shaped: the live snapshot holds this dict
        out["buffered"] = [q for q in plain_accuracy if q in self.buffer]  # for the controller's ledger
        self.last_step, self.last_result = step, out
        if self.live_dir:
            self.snapshot(self.live_dir)
        if group_size:  # Prometheus (no-op outside Ray): the entry bins need G_S
            admitted = [self.buffer.entry(q).entry_accuracy for q in self.buffer.ids() if q not in before]
            oldest = min((self.buffer.entry(q).entry_step for q in self.buffer.ids()), default=None)
            prometheus.record_buffer_refresh(out, admitted, group_size, None if oldest is None else step - oldest)
        return out

    def size(self) -> int:
        return len(self.buffer)

    def ids(self) -> list[str]:
        return self.buffer.ids()

    def stats(self) -> dict:
        return asdict(self.buffer.stats())

    def fates(self) -> list[dict]:
        return [asdict(f) for f in self.buffer.fates]

    def snapshot(self, directory: str) -> None:
        """buffer.json (contents, fates) and shell.json (the sampler, the last refresh), each atomic.
        shell.json is written last: a snapshot is whole when its step there matches buffer.json's."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.buffer.snapshot(d / "buffer.json")
        tmp = d / "shell.json.tmp"
        tmp.write_text(json.dumps({"rng": rng_to_json(self.rng), "last_step": self.last_step,
                                   "last_result": self.last_result, "buffer_size": len(self.buffer)}))
        os.replace(tmp, d / "shell.json")

    def restore(self, directory: str) -> int:
        """Load a snapshot; returns the step of its last refresh."""
        d = Path(directory)
        restored = PromptReplayBuffer.restore(d / "buffer.json")
        if restored.config != self.buffer.config:
            raise ValueError(f"buffer snapshot in {d} was written with {restored.config}, "
                             f"this run uses {self.buffer.config}")
        shell = json.loads((d / "shell.json").read_text())
        if shell["buffer_size"] != len(restored):
            raise ValueError(f"buffer snapshot in {d} is torn: shell.json says {shell['buffer_size']} entries, "
                             f"buffer.json holds {len(restored)}")
        self.buffer = restored
        rng_from_json(self.rng, shell["rng"])
        self.last_step, self.last_result = int(shell["last_step"]), shell["last_result"]
        if self.live_dir:  # the live snapshot now describes this state, not a later one of a previous life
            self.snapshot(self.live_dir)
        return self.last_step


# Questions and fate records are small; the actor needs no CPU reservation of its own.
ReplayBufferActor = ray.remote(num_cpus=0)(ReplayBufferShell)


class BufferClient:
    """The driver's side of the buffer actor: every call goes through `_call`, which rebuilds a dead actor
    from the live snapshot (or `fallback_dir`, the last checkpoint's buffer) and repeats the call once."""

    def __init__(self, start: Callable[[], Any], live_dir: str, fallback_dir: Callable[[], str | None]):
        self.start, self.live_dir, self.fallback_dir = start, live_dir, fallback_dir
        self.handle = start()
        self.restarts = 0
        self.lost_refreshes = 0
        self.step_applied = 0  # the last step the controller saw refreshed (to measure what a rebuild lost)

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return ray.get(getattr(self.handle, method).remote(*args))
        except ray.exceptions.RayActorError as e:
            log.warning("replay-buffer actor died during %s (%s): rebuilding it from its snapshot", method,
                        type(e).__name__)
            self._rebuild()
            return ray.get(getattr(self.handle, method).remote(*args))

    def _rebuild(self) -> None:
        try:
            ray.kill(self.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.handle = self.start()
        self.restarts += 1
        prometheus.record("zppo_actor_restarts", 1, role="buffer")
        step = None
        for source in (self.live_dir, self.fallback_dir()):
            if source and (Path(source) / "shell.json").exists():
                try:
                    step = ray.get(self.handle.restore.remote(source))
                    break
                except Exception as e:  # noqa: BLE001 - a torn or unreadable snapshot: try the next source
                    log.error("buffer snapshot %s unusable (%s); trying the next one", source, e)
        lost = self.step_applied - (step or 0)
        if lost > 0:
            self.lost_refreshes += lost
            prometheus.record("zppo_buffer_lost_refreshes", lost)
            log.error("replay buffer rebuilt at step %s, %d refresh(es) behind the controller: the questions "
                      "they admitted, graduated or evicted are lost from the buffer's state", step, lost)
        else:
            log.warning("replay buffer rebuilt from its snapshot of step %s: nothing lost", step)

    def refresh(self, step: int, *args: Any) -> dict:
        out = self._call("refresh", step, *args)
        self.step_applied = step
        return out

    def restore(self, directory: str) -> int:
        self.step_applied = self._call("restore", directory)
        return self.step_applied

    def __getattr__(self, method: str) -> Callable[..., Any]:  # size, sample, stats, fates, snapshot, ids
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args: self._call(method, *args)
