"""Student rollout workers: `RolloutWorker` (one vLLM engine in a Ray actor) and `RolloutPool` (N of them).

The actor is a shell over `zppo_ray.engine.vllm_engine.VLLMEngine`; all sampling and weight-loading logic lives there.

Versioning and atomic pushes (docs/stack.md lesson 2). The pool is driven by ONE controller (the trainer
loop), and every call it makes is synchronous from the controller's point of view:

* `push_weights` takes the learner's object-store reference (or puts bytes once), sends it to every serving worker, and returns
  when each confirmed the new version. A worker that dies during the push is written off (and replaced,
  below); a worker that answers with another version, or a push no worker took, leaves the pool broken
  (WeightPushError): it refuses to generate until a push succeeds, so a mixed-version pool never serves.
* a lock serialises `generate` dispatch and `push_weights`, and `push_weights` refuses to start while an
  async generate (`generate_async`) is still uncollected: no generate runs while weights change.
* every generate call checks that all returned samples carry the pool's current version.

Failures (`zppo_ray.actors.replicas`, `zppo_ray.actors.health`): a worker that dies mid-call has its requests
re-sent to the others (same seeds, so the same samples a healthy worker would have drawn) and is replaced
in the background (`rollout.max_restarts` per slot); the replacement loads the current weights before it
serves. A request the engine rejects on its own (e.g. a prompt over the model length) is skipped: its
result is an empty list and `PendingGenerate.skipped` says why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ray

from zppo_ray.actors.engine_actor import (
    EngineActor,
    actor_options,
    engine_kwargs,
    gpu_tp_engine_kwargs,
    sampling_kwargs,
)
from zppo_ray.actors.replicas import SKIPPED, Gather, ReplicaSet, balanced_split
from zppo_ray.errors import boundary
from zppo_ray.observe import prometheus
from zppo_ray.seeds import seeds_for_part
from zppo_ray.types import GenRequest, Sample
from zppo_ray.worlds import is_world_alias

__all__ = ["MixedVersionError", "RolloutPool", "RolloutWorker", "WeightPushError", "balanced_split"]

class WeightPushError(RuntimeError):
    """A weight push did not reach every worker; the pool does not serve until a push succeeds."""


class MixedVersionError(RuntimeError):
    """One generate call came back with samples of more than one policy version (never trained on)."""


@ray.remote
class RolloutWorker(EngineActor):
    """One student vLLM engine. Owns nothing but the engine and its version."""

    @boundary("rollout")
    def generate(self, requests: list[GenRequest], sampling: dict) -> list[list[Sample]]:
        return self._generate(requests, sampling)

    def _observe_generate(self, n_requests: int, tokens: int, seconds: float) -> None:
        prometheus.record_generate(self.name, n_requests, tokens, seconds, self.engine.version)

    @boundary("rollout")
    def update_weights(self, blob: bytes, version: int) -> int:
        """Load a safetensors blob of the full state dict; returns the version now served."""
        self.last_push_seconds = self.engine.load_weights_from_bytes(blob, version)
        prometheus.record("zppo_rollout_policy_version", self.engine.version, worker=self.name)
        return self.engine.version


@dataclass
class PendingGenerate:
    """An async generate: `refs()` can be passed to `ray.wait`; `RolloutPool.collect` returns the samples."""

    gather: Gather
    version: int
    done: bool = field(default=False)

    def refs(self) -> list:
        return self.gather.refs()

    @property
    def skipped(self) -> dict[int, str]:
        """Request index -> why it was skipped (filled by `collect`)."""
        return self.gather.skipped


class RolloutPool:
    """N rollout workers behind one controller-facing API (see module doc for the push protocol)."""

    def __init__(self, workers: Sequence[Any], placement_groups: Sequence[Any] = (), timeout_s: float | None = None,
                 factory=None, max_restarts: int = 0, names: Sequence[str] | None = None):
        if not workers:
            raise ValueError("a RolloutPool needs at least one worker")
        names = list(names) if names else [f"rollout-{i}" for i in range(len(workers))]
        self.replicas = ReplicaSet("rollout", workers, names, factory, max_restarts, needs_weights=True,
                                   placement_groups=placement_groups)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._version = 0
        self._broken: str | None = None
        self._pending: list[PendingGenerate] = []
        self.last_push_seconds: float | None = None

    @classmethod
    def create(cls, rollout_cfg: Any, model_cfg: Any, model_path: str | None = None) -> RolloutPool:
        """Start `rollout_cfg.num_workers` workers (model_path overrides model_cfg.path, e.g. a resolved toy dir)."""
        path = model_path or model_cfg.path
        if is_world_alias(path):
            raise ValueError(f"model path {path!r} is a world alias: pass the world's model directory as model_path")

        def start(i: int) -> tuple[Any, Any]:
            opts, pg = actor_options(rollout_cfg.cpus_per_worker, rollout_cfg.gpus_per_worker, rollout_cfg.tp)
            kw = engine_kwargs(model_cfg, tp=rollout_cfg.tp, seed=rollout_cfg.seed + i,
                               kv_cache_gib=rollout_cfg.kv_cache_gib,
                               gpu_memory_utilization=rollout_cfg.gpu_memory_utilization,
                               max_num_seqs=rollout_cfg.max_num_seqs,
                               enable_sleep_mode=bool(rollout_cfg.colocate_with_learner),
                               **gpu_tp_engine_kwargs(rollout_cfg.gpus_per_worker, rollout_cfg.tp))
            return RolloutWorker.options(**opts).remote(str(path), kw, f"rollout-{i}"), pg

        started = [start(i) for i in range(rollout_cfg.num_workers)]
        pool = cls([h for h, _ in started], [pg for _, pg in started], rollout_cfg.request_timeout_s,
                   factory=start, max_restarts=rollout_cfg.max_restarts)
        pool.versions()  # wait until every engine is up (surfaces start errors here, not at first use)
        return pool

    @property
    def version(self) -> int:
        return self._version

    @property
    def workers(self) -> list:
        return self.replicas.handles

    # ------------------------------------------------------------------------------------ generate

    def generate_async(self, requests: Sequence[GenRequest], sampling: dict) -> PendingGenerate:
        """Dispatch a generate across serving workers (balanced by total n) and return without waiting."""
        sampling = sampling_kwargs(sampling)

        def call(worker: Any, chunk: list, idx: list[int]) -> Any:  # seeds follow the request, not the worker
            return worker.generate.remote(chunk, seeds_for_part(sampling, idx))

        with self._lock:
            if self._broken:
                raise WeightPushError(f"pool not serving: {self._broken}")
            g = self.replicas.dispatch("generate", requests, [r.n for r in requests], call, self.timeout_s)
            pending = PendingGenerate(g, self._version)
            self._pending.append(pending)
            return pending

    def collect(self, pending: PendingGenerate) -> list[list[Sample]]:
        """Samples of an async generate, in request order ([] for a skipped request); one version only."""
        try:
            out = self.replicas.gather(pending.gather)
        finally:
            with self._lock:
                pending.done = True
                self._pending = [p for p in self._pending if not p.done]
        versions = {s.version for group in out if group is not SKIPPED for s in group}
        if not versions <= {pending.version}:  # a real check, not an assert: `python -O` must not drop it
            raise MixedVersionError(f"one generate call returned samples of policy versions {sorted(versions)}, "
                                    f"expected only {pending.version}")
        return [[] if o is SKIPPED else o for o in out]

    def generate(self, requests: Sequence[GenRequest], sampling: dict) -> list[list[Sample]]:
        """`n` samples per request, in request order, all produced by the pool's current version."""
        if not requests:
            return []
        return self.collect(self.generate_async(requests, sampling))

    # ------------------------------------------------------------------------------------ weights

    def push_weights(self, weights: Any, version: int, rollback: bool = False) -> float:
        """Move every serving worker to `version`; returns seconds. Raises WeightPushError on failure.
        `weights`: an object-store reference to a safetensors blob (what `LearnerGroup.publish_weights`
        gives: the driver never holds the bytes), or the bytes themselves (tests, tools).
        Versions only grow, except when a run rolls back to a checkpoint (`rollback=True`)."""
        with self._lock:
            if self._pending:
                raise WeightPushError(f"{len(self._pending)} generate call(s) still in flight: collect them "
                                      "before pushing weights")
            if version <= self._version and not self._broken and not rollback:
                raise ValueError(f"new version {version} must exceed the current version {self._version}")
            t0 = time.perf_counter()
            # one copy in the object store, shared by all workers (and by replacements)
            ref = weights if isinstance(weights, ray.ObjectRef) else ray.put(weights)
            slots = self.replicas.serving()
            refs = [self.replicas.handles[i].update_weights.remote(ref, version) for i in slots]
            ray.wait(refs, num_returns=len(refs), timeout=self.timeout_s)
            took = []
            for i, r in zip(slots, refs):
                try:
                    got = ray.get(r, timeout=0)
                except ray.exceptions.RayActorError:  # died during the push: replaced, gets `ref` when back
                    self.replicas.fleet[i].failure(fatal=True)
                    continue
                except Exception as e:  # noqa: BLE001 - anything else leaves the pool in an unknown state
                    self._broken = f"weight push to version {version} failed on {self.replicas.names[i]}: {e}"
                    raise WeightPushError(self._broken) from e
                if got != version:
                    self._broken = f"{self.replicas.names[i]} reports version {got} after pushing {version}"
                    raise WeightPushError(self._broken)
                took.append(i)
            if not took:
                self._broken = f"no rollout worker took version {version}"
                raise WeightPushError(self._broken)
            self.replicas.weights_ref = (ref, version)
            self._broken = None
            self._version = version
            self.last_push_seconds = time.perf_counter() - t0
            return self.last_push_seconds

    def sleep(self, level: int = 1) -> None:
        """Colocated with the learner (rollout.colocate_with_learner): free the GPU for the learner phase
        (vLLM sleep level 1: weights offloaded, KV cache dropped). On CPU the engines log that sleep mode
        does not exist there."""
        with self._lock:
            self._each("sleep", level)

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Re-allocate what `sleep` freed: ["weights"] before a push, ["kv_cache"] after it (vLLM's order)."""
        with self._lock:
            self._each("wake_up", tags)

    def _each(self, verb: str, *args) -> None:
        refs = [getattr(self.replicas.handles[i], verb).remote(*args) for i in self.replicas.serving()]
        ray.get(refs, timeout=self.timeout_s)

    def versions(self) -> list[int]:
        return ray.get([w.version.remote() for w in self.workers], timeout=self.timeout_s)

    def health(self) -> list[dict]:
        """Each serving worker's own report, plus the state the pool's health machine gives every slot."""
        return self.replicas.health()

    def shutdown(self, grace_s: float = 30.0) -> None:
        """Stop the engines cleanly (bounded by grace_s), then kill the actors and free placement groups."""
        self.replicas.shutdown(grace_s)
