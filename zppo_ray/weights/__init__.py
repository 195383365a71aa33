"""Learner → rollout weight sync: one interface, two transports, chosen by `rollout.weight_sync`.

    object_store   the CPU path (and any machine): the learner's rank 0 gathers one bucket of layers at a
                   time (`zppo_ray.weights.buckets`), puts it into Ray's object store from its own process,
                   and every rollout worker loads it through vLLM's layer-wise reload before the next
                   bucket exists. The driver only passes object references and versions.
    nccl / ipc     the GPU path: vLLM's native weight transfer (NCCL broadcast from the learner's rank 0
                   to every engine worker, or CUDA IPC handles when the engines share the learner's GPUs),
                   driven by the learner itself; the driver only starts it and commits the version.

Lifecycle of a `WeightSync` (the trainer and zppo_ray/launch.py follow it):
    1. `make_weight_sync(rollout_cfg)` builds it; nothing is connected yet.
    2. `init(learner, rollout)` once both groups are up: registers itself with the pool as the source a
       replacement worker loads from (the GPU transports open their group on the first push, and again
       whenever the set of engines changed).
    3. `push(version)` after every learner phase, with no generate in flight; returns when every serving
       engine committed `version` (`PushReport`), or raises and leaves the pool refusing to serve until a
       push succeeds. `rollback=True` allows an older version (resuming from a checkpoint).
    4. `shutdown()` before either side goes away; after a learner group is rebuilt, `init` again.

Every push streams the learner's *current* weights; a replacement worker therefore loads only while the
learner still holds the version the pool serves, and otherwise waits (stale, not serving) for the next push.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

WEIGHT_SYNCS = ("object_store", "nccl", "ipc")


@dataclass(frozen=True)
class PushReport:
    seconds: float  # the push as the pool saw it, begin to last commit
    bytes: int  # the full weights' size (what every engine received)
    buckets: int  # transfer units (object-store buckets; 0 where the transport chunks on its own)


class WeightSync(Protocol):
    def init(self, learner: Any, rollout: Any) -> None: ...
    def push(self, version: int, rollback: bool = False) -> PushReport: ...
    def shutdown(self) -> None: ...


class PoolSync(ABC):
    """What both transports share: the pool commits each push (zppo_ray/actors/rollout.py
    `update_weights`), the learner records which version its weights are, and a replacement worker loads
    through the same transfer while that is the pool's version. Subclasses move the bytes (`_transfer`)."""

    learner: Any = None
    rollout: Any = None
    last_buckets = 0
    # False with asynchronous rollouts: a replacement worker then waits for the next push instead of
    # streaming from a learner the controller may be training at that moment (the version check and the
    # stream would race with the update and could label new weights with the old version).
    reload_replacements = True

    def init(self, learner: Any, rollout: Any) -> None:
        self.learner, self.rollout = learner, rollout
        sizes = learner.weight_sizes()
        self.names = [n for n, _ in sizes]
        self.total_bytes = sum(b for _, b in sizes)
        rollout.weight_source = self._reload

    def push(self, version: int, rollback: bool = False) -> PushReport:
        t0 = time.perf_counter()
        self.rollout.update_weights(version, self._transfer, rollback=rollback)
        self.learner.weights_version = version
        return PushReport(time.perf_counter() - t0, self.total_bytes, self.last_buckets)

    @abstractmethod
    def _transfer(self, calls: Any) -> None:
        """Move the learner's current weights to the workers in `calls` (a `SlotCalls`)."""

    def _reload(self, slot: int) -> bool | None:
        """A replacement worker: the learner's weights to it alone, if they are the pool's version."""
        if (not self.reload_replacements or self.learner is None
                or self.learner.weights_version != self.rollout.version):
            return None
        return self.rollout.reload_slot(slot, self._transfer)

    def shutdown(self) -> None:
        if self.rollout is not None:
            self.rollout.weight_source = None
        self.learner = self.rollout = None


def make_weight_sync(rollout_cfg: Any, reload_replacements: bool = True) -> WeightSync:
    """The implementation `rollout.weight_sync` names (config checks reject a GPU backend without GPUs).
    `reload_replacements`: see PoolSync (False with asynchronous rollouts)."""
    kind = rollout_cfg.weight_sync
    bucket_bytes = int(rollout_cfg.weight_bucket_mb * 2**20)
    if kind == "object_store":
        from zppo_ray.weights.object_store import ObjectStoreSync

        sync = ObjectStoreSync(bucket_bytes)
    elif kind in ("nccl", "ipc"):
        from zppo_ray.weights.vllm_transfer import VllmTransferSync

        sync = VllmTransferSync(kind, bucket_bytes, rollout_cfg.request_timeout_s)
    else:
        raise ValueError(f"rollout.weight_sync must be one of {', '.join(WEIGHT_SYNCS)}; got {kind!r}")
    sync.reload_replacements = reload_replacements
    return sync
