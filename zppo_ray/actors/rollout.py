"""Student rollout workers: `RolloutWorker` (one vLLM engine in a Ray actor) and `RolloutPool` (N of them).

The actor is a shell over `zppo_ray.engine.vllm_engine.VLLMEngine`; all sampling and weight-loading logic lives there.

Versioning and atomic pushes (docs/stack.md lesson 2). The pool is driven by the controller (the trainer
loop) and, with asynchronous rollouts, by its producer thread too (zppo_ray/lookahead.py):

* `update_weights(version, transfer)` lets a weight sync (zppo_ray/weights) move the bytes to every serving
  (or stale) worker, then commits the version on each, and returns when each confirmed it. A worker that
  dies during the push is written off (and replaced, below); any other failure, a worker that answers with
  another version, or a push no worker took, leaves the pool broken (WeightPushError or the transfer's own
  error): it refuses to generate until a push succeeds, so a mixed-version pool never serves.
* a lock serialises `generate` dispatch and `update_weights`, and no generate runs while weights change: a
  push waits until the generate calls other threads have in flight are collected (asynchronous rollouts:
  the producer thread's calls), holding back new ones from threads with none in flight (a thread that has
  some may finish sending its batch: the push waits for it anyway), and refuses to start while its own
  thread has one uncollected (it would wait for itself). A call its caller gives up on is `abandon`ed.
* every generate call checks that all returned samples carry the pool's current version.

Failures (`zppo_ray.actors.replicas`, `zppo_ray.actors.health`): a worker that dies mid-call has its requests
re-sent to the others (same seeds, so the same samples a healthy worker would have drawn) and is replaced
in the background (`rollout.max_restarts` per slot); the replacement loads the current weights before it
serves (from the learner through `weight_source`, or with the next push when the learner has moved on).
A request the engine rejects on its own (e.g. a prompt over the model length) is skipped: its
result is an empty list and `PendingGenerate.skipped` says why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray

from zppo_ray.actors.engine_actor import (
    EngineActor,
    actor_options,
    engine_kwargs,
    sampling_kwargs,
    tp_engine_kwargs,
)
from zppo_ray.actors.health import State
from zppo_ray.actors.replicas import SKIPPED, Gather, ReplicaSet, balanced_split
from zppo_ray.errors import LearnerLost, boundary
from zppo_ray.observe import prometheus
from zppo_ray.seeds import seeds_for_part
from zppo_ray.types import GenRequest, Sample
from zppo_ray.worlds import is_world_alias

__all__ = ["MixedVersionError", "RolloutPool", "RolloutWorker", "SlotCalls", "WeightPushError", "balanced_split"]

log = logging.getLogger(__name__)


class WeightPushError(RuntimeError):
    """A weight push did not reach every worker; the pool does not serve until a push succeeds."""


class WorkersLost(WeightPushError):
    """Every worker a push went to died during it: the push can start over on their replacements."""


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

    # A push (zppo_ray/weights): begin_weights → load_bucket × buckets → commit_weights, or, on the GPU
    # path, the learner's sender calling weight_transfer directly; then commit_weights.
    @boundary("rollout")
    def begin_weights(self, names: list[str]) -> int:
        self.engine.begin_weights(names)
        return len(names)

    @boundary("rollout")
    def load_bucket(self, blob: bytes) -> int:
        return self.engine.load_bucket(blob)

    @boundary("rollout")
    def weight_transfer(self, method: str, payload: Any = None) -> None:
        self.engine.weight_transfer(method, payload)

    @boundary("rollout")
    def commit_weights(self, version: int) -> int:
        """The push is complete on every worker of this engine: serve `version`; returns it."""
        self.last_push_seconds = self.engine.commit_weights(version)
        prometheus.record("zppo_rollout_policy_version", self.engine.version, worker=self.name)
        return self.engine.version


@dataclass
class PendingGenerate:
    """An async generate: `refs()` can be passed to `ray.wait`; `RolloutPool.collect` returns the samples."""

    gather: Gather
    version: int
    done: bool = field(default=False)
    thread: int = field(default_factory=threading.get_ident)

    def refs(self) -> list:
        return self.gather.refs()

    @property
    def skipped(self) -> dict[int, str]:
        """Request index -> why it was skipped (filled by `collect`)."""
        return self.gather.skipped


class SlotCalls:
    """One method called on a set of worker slots at once, during a weight push. A slot whose actor died
    is written off (its health machine records a fatal failure, so it gets replaced) and leaves the set;
    any other error is raised, naming the worker."""

    def __init__(self, replicas: ReplicaSet, slots: Sequence[int], timeout_s: float | None):
        self.replicas, self.slots, self.timeout_s = replicas, list(slots), timeout_s

    @property
    def handles(self) -> list:
        return [self.replicas.handles[i] for i in self.slots]

    def identity(self) -> tuple:
        """Which actors these are: (slot, generation) pairs, changed by a death or a replacement."""
        return tuple((i, self.replicas.gens[i]) for i in self.slots)

    def each(self, verb: str, *args: Any) -> dict[int, Any]:
        """`verb(*args)` on every slot still in the set; {slot: result} of those that answered."""
        refs = {i: getattr(self.replicas.handles[i], verb).remote(*args) for i in self.slots}
        ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.timeout_s)
        out = {}
        for i, ref in refs.items():
            try:
                out[i] = ray.get(ref, timeout=0)
            except ray.exceptions.RayActorError:
                log.warning("rollout %s died during a weight push (%s); it will be replaced", self.replicas.names[i], verb)
                self.replicas.fleet[i].failure(fatal=True)
                self.slots.remove(i)
            except ray.exceptions.GetTimeoutError:
                raise WeightPushError(f"{self.replicas.names[i]} did not answer {verb} within {self.timeout_s}s") from None
            except Exception as e:
                raise WeightPushError(f"{verb} failed on {self.replicas.names[i]}: {e}") from e
        if not self.slots:
            raise WorkersLost(f"every rollout worker died during the weight push ({verb})")
        return out


class RolloutPool:
    """N rollout workers behind one controller-facing API (see module doc for the push protocol)."""

    def __init__(self, workers: Sequence[Any], placement_groups: Sequence[Any] = (), timeout_s: float | None = None,
                 factory=None, max_restarts: int = 0, names: Sequence[str] | None = None, tp: int = 1):
        if not workers:
            raise ValueError("a RolloutPool needs at least one worker")
        names = list(names) if names else [f"rollout-{i}" for i in range(len(workers))]
        self.replicas = ReplicaSet("rollout", workers, names, factory, max_restarts, needs_weights=True,
                                   placement_groups=placement_groups)
        self.timeout_s = timeout_s
        self.tp = tp  # vLLM workers per engine (the GPU weight transfer's group size)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a generate call collected, or a push ended
        self._pushing = False
        self._version = 0
        self._broken: str | None = None
        self._pending: list[PendingGenerate] = []
        self.last_push_seconds: float | None = None
        # Set by the weight sync (zppo_ray/weights): loads the current weights into one replacement slot,
        # or returns None when it cannot now (the slot then waits for the next push).
        self.weight_source: Callable[[int], bool | None] | None = None
        self.replicas.reload = self._reload

    @classmethod
    def create(cls, rollout_cfg: Any, model_cfg: Any, model_path: str | None = None,
               resources: dict | None = None) -> RolloutPool:
        """Start `rollout_cfg.num_workers` workers (model_path overrides model_cfg.path, e.g. a resolved toy dir;
        `resources`: the config's placement.rollout)."""
        path = model_path or model_cfg.path
        if is_world_alias(path):
            raise ValueError(f"model path {path!r} is a world alias: pass the world's model directory as model_path")

        def start(i: int) -> tuple[Any, Any]:
            opts, pg = actor_options(rollout_cfg.cpus_per_worker, rollout_cfg.gpus_per_worker, rollout_cfg.tp,
                                     resources)
            if rollout_cfg.omp_threads:  # else Ray sets OMP_NUM_THREADS to num_cpus (see RolloutConfig)
                opts["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": str(rollout_cfg.omp_threads)}}
            kw = engine_kwargs(model_cfg, tp=rollout_cfg.tp, seed=rollout_cfg.seed + i,
                               kv_cache_gib=rollout_cfg.kv_cache_gib,
                               gpu_memory_utilization=rollout_cfg.gpu_memory_utilization,
                               max_num_seqs=rollout_cfg.max_num_seqs,
                               enable_sleep_mode=bool(rollout_cfg.colocate_with_learner),
                               weight_transfer=None if rollout_cfg.weight_sync == "object_store" else rollout_cfg.weight_sync,
                               **tp_engine_kwargs(rollout_cfg.gpus_per_worker, rollout_cfg.tp))
            return RolloutWorker.options(**opts).remote(str(path), kw, f"rollout-{i}"), pg

        started = [start(i) for i in range(rollout_cfg.num_workers)]
        pool = cls([h for h, _ in started], [pg for _, pg in started], rollout_cfg.request_timeout_s,
                   factory=start, max_restarts=rollout_cfg.max_restarts, tp=rollout_cfg.tp)
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

        me = threading.get_ident()
        with self._lock:
            # a push waits for the calls in flight; new ones wait for the push, except from a thread that has
            # calls in flight already (it sends the rest of its batch, then collects, which ends the wait)
            while self._pushing and not any(p.thread == me for p in self._pending):
                self._changed.wait()
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
                self._changed.notify_all()
        versions = {s.version for group in out if group is not SKIPPED for s in group}
        if not versions <= {pending.version}:  # a real check, not an assert: `python -O` must not drop it
            raise MixedVersionError(f"one generate call returned samples of policy versions {sorted(versions)}, "
                                    f"expected only {pending.version}")
        return [[] if o is SKIPPED else o for o in out]

    def abandon(self, pending: PendingGenerate) -> None:
        """Give up on an async generate (its caller failed before collecting it): it no longer holds back a
        push. The workers finish it on their own; its samples are dropped."""
        with self._lock:
            pending.done = True
            self._pending = [p for p in self._pending if not p.done]
            self._changed.notify_all()

    def generate(self, requests: Sequence[GenRequest], sampling: dict) -> list[list[Sample]]:
        """`n` samples per request, in request order, all produced by the pool's current version."""
        if not requests:
            return []
        return self.collect(self.generate_async(requests, sampling))

    # ------------------------------------------------------------------------------------ weights

    def update_weights(self, version: int, transfer: Callable[[SlotCalls], None], rollback: bool = False) -> float:
        """Move every serving worker to `version`; returns seconds. `transfer(calls)` moves the bytes (one of
        the `zppo_ray.weights` implementations: it may fan calls out through `calls`, or have the learner
        reach the workers itself); the pool then commits the version on every worker that is still alive.
        A worker that dies during the push is written off and replaced (the replacement gets the current
        weights through `reload_slot` before it serves). Any other failure, or a push no worker took, leaves
        the pool broken: it refuses to generate until a push succeeds, so mixed weights never serve.
        Versions only grow, except when a run rolls back to a checkpoint (`rollback=True`)."""
        with self._lock:
            mine = [p for p in self._pending if p.thread == threading.get_ident()]
            if mine:
                raise WeightPushError(f"{len(mine)} generate call(s) of this thread still in flight: collect them "
                                      "before pushing weights")
            if version <= self._version and not self._broken and not rollback:
                raise ValueError(f"new version {version} must exceed the current version {self._version}")
            self._pushing = True
            try:
                while self._pending:  # another thread's calls (asynchronous rollouts) end on the old version
                    if not self._changed.wait(timeout=self.timeout_s):
                        raise WeightPushError(f"{len(self._pending)} generate call(s) of another thread did not "
                                              f"finish within {self.timeout_s}s; the push did not start")
                return self._push(version, transfer)
            finally:
                self._pushing = False
                self._changed.notify_all()

    def _push(self, version: int, transfer: Callable[[SlotCalls], None]) -> float:
        """The push itself, under the pool's lock with nothing in flight."""
        t0 = time.perf_counter()
        self._broken = f"weight push to version {version} did not finish"  # until it did
        try:
            got = self._push_until_taken(version, transfer)
        except WeightPushError as e:
            self._broken = str(e)
            raise
        except Exception as e:
            self._broken = f"weight push to version {version} failed: {type(e).__name__}: {e}"
            raise
        wrong = {self.replicas.names[i]: v for i, v in got.items() if v != version}
        if wrong or not got:
            self._broken = (f"workers report versions {wrong} after pushing {version}" if wrong else
                            f"no rollout worker took version {version}")
            raise WeightPushError(self._broken)
        for i in got:
            if self.replicas.fleet[i].state is State.STALE:  # a replacement that waited for this push
                self.replicas.fleet[i].weights()
        self._broken = None
        self._version = version
        self.last_push_seconds = time.perf_counter() - t0
        return self.last_push_seconds

    def _reload(self, i: int) -> bool | None:
        if self._version == 0 and not self._broken:
            return True  # still the checkpoint every worker starts from
        return self.weight_source(i) if self.weight_source is not None else None

    def _push_until_taken(self, version: int, transfer: Callable[[SlotCalls], None]) -> dict[int, Any]:
        """One push to every serving or stale slot; if every one of them died during it (a lost node), the
        push starts over on their replacements (`serving` waits for them, and raises once no slot can come
        back)."""
        while True:
            calls = SlotCalls(self.replicas, self.replicas.serving(stale_too=True), self.timeout_s)
            try:
                transfer(calls)
                return calls.each("commit_weights", version)
            except WorkersLost as e:
                log.warning("%s; pushing version %d again to their replacements", e, version)

    def reload_slot(self, i: int, transfer: Callable[[SlotCalls], None]) -> bool:
        """A replacement worker in slot `i` gets the pool's current weights through `transfer` and commits
        the pool's version; False if it failed (the slot counts a failure). Called from the pool's upkeep,
        so it must not take the lock."""
        calls = SlotCalls(self.replicas, [i], self.replicas.start_timeout_s)
        try:
            transfer(calls)
            got = calls.each("commit_weights", self._version)
        except LearnerLost:  # the source died, not the worker: the run rebuilds the learner, then pushes
            raise
        except Exception as e:  # noqa: BLE001 - a replacement that cannot load is dead again
            log.warning("rollout %s could not load version %d: %s", self.replicas.names[i], self._version, e)
            return False
        return got.get(i) == self._version

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
