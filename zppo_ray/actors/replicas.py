"""One role's engine actors with their health: dispatch work, gather it, retry and replace what failed.

Shared by the rollout pool and the teacher group. The decisions are `zppo_ray.actors.health` (pure, unit-tested)
and `zppo_ray.errors.classify`; this module only carries them out with Ray:

* a part of a call whose actor failed for an infrastructure reason is sent again to the serving replicas
  (at most `infra_retries` times per item); the failed actor is killed and a replacement started in the
  background (`max_restarts` per slot);
* a part that failed for a data reason is split and every item retried alone once: an item that fails
  alone again is skipped (its result is `SKIPPED`, with the reason in `Gather.skipped`), the rest go on;
* a replacement serves only after `maintain` saw it up and, for rollout workers, after it confirmed the
  current weights (the pool's `reload`, or the next push), so no stale policy ever samples;
* a suspect replica (it timed out once) is probed with a short `health` call before it gets work again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray

from zppo_ray.actors.health import Fleet, State
from zppo_ray.errors import InfraError, classify, remote_cause
from zppo_ray.observe import prometheus

log = logging.getLogger("zppo_ray.replicas")

SKIPPED = object()  # an item's result when its input could not be processed (see Gather.skipped)

# A factory starts the actor of slot i: returns (handle, placement group or None).
Factory = Callable[[int], tuple[Any, Any]]
# A call sends items (with their indices in the whole request) to one actor: returns an ObjectRef.
Call = Callable[[Any, list, list[int]], Any]


def balanced_split(weights: Sequence[int], parts: int) -> list[list[int]]:
    """Indices of `weights` split into `parts` groups with near-equal sums (longest-first greedy).

    Each group keeps ascending index order, so results can be put back in request order. Empty groups
    are possible when there are fewer items than parts.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    groups: list[list[int]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for i in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        g = min(range(parts), key=lambda g: (loads[g], g))
        groups[g].append(i)
        loads[g] += max(1, int(weights[i]))
    return [sorted(g) for g in groups]


@dataclass
class Part:
    slot: int
    gen: int  # the slot's actor generation it was sent to: news about a replaced actor is not news about the slot
    indices: list[int]
    ref: Any
    alone: bool = False  # a data-failure retry of a single item


@dataclass
class Gather:
    """A dispatched call: its parts in flight, and what the gather learned."""

    verb: str
    items: list
    weights: list[int]
    call: Call
    timeout_s: float | None  # per attempt: a retry after a timeout gets a fresh deadline
    parts: list[Part] = field(default_factory=list)
    deadline: float | None = None
    results: list = field(default_factory=list)
    tries: list[int] = field(default_factory=list)  # dispatches per item
    skipped: dict[int, str] = field(default_factory=dict)  # item index -> why
    failed_on: set[int] = field(default_factory=set)  # slots that failed a part of this call: retries avoid them
    retried: int = 0  # items sent again after an infrastructure failure

    def __post_init__(self) -> None:
        self.results = [None] * len(self.items)
        self.tries = [0] * len(self.items)
        self.deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s

    def refs(self) -> list:
        return [p.ref for p in self.parts]


class ReplicaSet:
    def __init__(self, role: str, handles: Sequence[Any], names: Sequence[str], factory: Factory | None,
                 max_restarts: int, needs_weights: bool, placement_groups: Sequence[Any] = (),
                 infra_retries: int = 2, probe_timeout_s: float = 10.0, start_timeout_s: float = 900.0):
        self.role = role
        self.handles = list(handles)
        self.names = list(names)
        self.pgs = list(placement_groups) or [None] * len(self.handles)
        self.factory = factory
        self.fleet = Fleet(self.names, max_restarts if factory else 0, needs_weights)
        self.infra_retries = infra_retries
        self.probe_timeout_s = probe_timeout_s
        self.start_timeout_s = start_timeout_s
        self.gens = [0] * len(self.handles)  # bumped when a slot gets a new actor
        self._starting: dict[int, Any] = {}  # slot -> ref that resolves when the replacement is up
        self._probes: dict[int, tuple[Any, float]] = {}  # suspect slot -> (health ref, sent at)
        # Set by the owner (the rollout pool): hands a stale replacement in slot i the current weights;
        # returns True (loaded), False (failed: the slot is dead again) or None (not possible now: the slot
        # stays stale and the next push includes it). None here: every replica starts current.
        self.reload: Callable[[int], bool | None] | None = None

    # ------------------------------------------------------------------------------------ dispatch

    def dispatch(self, verb: str, items: Sequence[Any], weights: Sequence[int], call: Call,
                 timeout_s: float | None = None) -> Gather:
        g = Gather(verb, list(items), list(weights), call, timeout_s)
        self._send(g, list(range(len(items))))
        return g

    def _send(self, g: Gather, indices: list[int], alone: bool = False) -> None:
        slots = self.serving()
        slots = [s for s in slots if s not in g.failed_on] or slots  # prefer replicas that have not failed it
        if alone:
            groups = [[i] for i in indices]
            slots = [slots[k % len(slots)] for k in range(len(groups))]
        else:
            groups = [[indices[j] for j in grp] for grp in balanced_split([g.weights[i] for i in indices],
                                                                           len(slots))]
        for slot, grp in zip(slots, groups):
            if grp:
                for i in grp:
                    g.tries[i] += 1
                ref = g.call(self.handles[slot], [g.items[i] for i in grp], grp)
                g.parts.append(Part(slot, self.gens[slot], grp, ref, alone))

    def serving(self, stale_too: bool = False) -> list[int]:
        """Serving slots (and stale ones, waiting for weights, with `stale_too`: the slots a weight push goes
        to); waits for a replacement when there is none; InfraError when none will ever come."""
        states = (State.HEALTHY, State.STALE) if stale_too else (State.HEALTHY,)
        self.maintain()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.fleet.in_state(*states):
            if not self.fleet.recoverable():
                raise InfraError(f"every {self.role} replica is dead and its restart budget "
                                 f"({self.fleet[0].max_restarts}) is spent: {self.fleet.counts()}")
            if time.monotonic() > deadline:
                raise InfraError(f"no {self.role} replica came back within {self.start_timeout_s:g}s")
            self.maintain(block_s=5.0)
        return self.fleet.in_state(*states)

    # ------------------------------------------------------------------------------------ gather

    def gather(self, g: Gather, on_timeout: Callable[[list[str]], Exception] | None = None) -> list:
        """Per-item results in item order (SKIPPED for skipped items), retrying what failed."""
        while g.parts:
            remaining = None if g.deadline is None else max(0.0, g.deadline - time.monotonic())
            ready, _ = ray.wait(g.refs(), num_returns=1, timeout=remaining)
            if not ready:
                self._timed_out(g, on_timeout)
                continue
            part = next(p for p in g.parts if p.ref == ready[0])
            g.parts.remove(part)
            try:
                out = ray.get(part.ref)
            except Exception as e:  # noqa: BLE001 - classified below; a bug re-raises
                self._failed(g, part, e)
                continue
            if len(out) != len(part.indices):
                raise RuntimeError(f"{self.role} {g.verb!r}: {self.names[part.slot]} returned {len(out)} results "
                                   f"for {len(part.indices)} items")
            if self._current(part):
                self.fleet[part.slot].success()
            for i, r in zip(part.indices, out):
                g.results[i] = r
        return g.results

    def _current(self, part: Part) -> bool:
        """Whether the part ran on the slot's present actor; news about a replaced actor says nothing about
        its replacement (a second call that failed on the same dead actor must not kill the new one)."""
        return part.gen == self.gens[part.slot]

    def _failed(self, g: Gather, part: Part, e: Exception) -> None:
        kind = classify(e)
        name = self.names[part.slot]
        prometheus.record("zppo_actor_failures", 1, role=self.role, kind=kind)
        if kind == "bug":
            raise e
        if kind == "data":
            if self._current(part):
                self.fleet[part.slot].success()  # the replica answered: it is fine, the input is not
            if part.alone:
                i = part.indices[0]
                g.skipped[i] = str(remote_cause(e))
                g.results[i] = SKIPPED
                log.warning("%s %s: item %d skipped after a retry on its own: %s", self.role, g.verb, i,
                            remote_cause(e))
            else:
                log.warning("%s %s on %s failed on its input (%s); retrying its %d item(s) one by one",
                            self.role, g.verb, name, remote_cause(e), len(part.indices))
                self._send(g, part.indices, alone=True)
            return
        if self._current(part):
            self.fleet[part.slot].failure(fatal=isinstance(e, ray.exceptions.RayActorError))
        g.failed_on.add(part.slot)
        log.warning("%s %s on %s failed (%s: %s); its %d item(s) go to the other replicas (state %s)",
                    self.role, g.verb, name, type(e).__name__, remote_cause(e), len(part.indices),
                    self.fleet[part.slot].state.value)
        self._retry(g, part.indices, f"{type(e).__name__} on {name}")

    def _retry(self, g: Gather, indices: list[int], why: str) -> None:
        over = [i for i in indices if g.tries[i] > self.infra_retries]
        if over:
            raise InfraError(f"{self.role} {g.verb!r}: {len(over)} item(s) failed {g.tries[over[0]]} times "
                             f"(last: {why}); retry budget infra_retries={self.infra_retries} spent")
        g.retried += len(indices)
        prometheus.record("zppo_requests_retried", len(indices), role=self.role)
        self._send(g, indices)

    def _timed_out(self, g: Gather, on_timeout: Callable[[list[str]], Exception] | None) -> None:
        late = list(g.parts)
        g.parts.clear()
        names = [self.names[p.slot] for p in late]
        for p in late:
            try:
                ray.cancel(p.ref)  # drops queued work; a running sync-actor task keeps running
            except Exception:  # noqa: BLE001 - best effort
                pass
            if self._current(p):
                self.fleet[p.slot].failure(fatal=False)
            g.failed_on.add(p.slot)
        prometheus.record("zppo_actor_failures", len(late), role=self.role, kind="timeout")
        indices = [i for p in late for i in p.indices]
        if any(g.tries[i] > self.infra_retries for i in indices) or not self.fleet.serving():
            raise (on_timeout(names) if on_timeout else InfraError(f"{self.role} {g.verb!r} timed out on {names}"))
        log.warning("%s %s timed out on %s; retrying %d item(s) on the other replicas", self.role, g.verb,
                    ", ".join(names), len(indices))
        g.deadline = time.monotonic() + g.timeout_s
        self._retry(g, indices, "timeout")

    # ------------------------------------------------------------------------------------ upkeep

    def maintain(self, block_s: float = 0.0) -> None:
        """Advance every slot's machine: probe suspects, replace the dead, take in replacements that are
        up (waiting at most `block_s` for one), hand stale ones the current weights."""
        for i in self.fleet.in_state(State.SUSPECT):
            self._probe(i)
        for i in self.fleet.to_restart():
            self._replace(i)
        if self._starting:
            refs = list(self._starting.values())
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=block_s)
            for i in [s for s, r in self._starting.items() if r in ready]:
                ref = self._starting.pop(i)
                try:
                    ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a replacement that cannot start is dead again
                    log.warning("%s replacement %s failed to start: %s", self.role, self.names[i], remote_cause(e))
                    self.fleet[i].failure(fatal=True)
                    continue
                self.fleet[i].up()
                log.info("%s %s is up again (restart %d)", self.role, self.names[i], self.fleet[i].restarts)
        for i in self.fleet.in_state(State.STALE):
            self._refresh_weights(i)
        for state, n in self.fleet.counts().items():
            prometheus.record("zppo_replicas", n, role=self.role, state=state)

    def _probe(self, i: int) -> None:
        """Non-blocking: a suspect answers a `health` call (queued behind whatever it is busy with) within
        probe_timeout_s of it being sent, or it is dead."""
        if i not in self._probes:
            self._probes[i] = (self.handles[i].health.remote(), time.monotonic())
            return
        ref, sent = self._probes[i]
        if not ray.wait([ref], timeout=0)[0]:
            if time.monotonic() - sent > self.probe_timeout_s:
                del self._probes[i]
                self.fleet[i].failure(fatal=False)
                log.warning("%s %s did not answer its health probe in %gs: replacing it", self.role, self.names[i],
                            self.probe_timeout_s)
            return
        del self._probes[i]
        try:
            ray.get(ref)
            self.fleet[i].success()
        except Exception as e:  # noqa: BLE001 - any failure to answer a probe
            self.fleet[i].failure(fatal=True)
            log.warning("%s %s failed its health probe (%s): replacing it", self.role, self.names[i], type(e).__name__)

    def _replace(self, i: int) -> None:
        self.kill(i)
        self.fleet[i].restart()
        prometheus.record("zppo_actor_restarts", 1, role=self.role)
        self.handles[i], self.pgs[i] = self.factory(i)
        self.gens[i] += 1
        self._starting[i] = self.handles[i].version.remote()
        log.warning("%s %s: starting a replacement (restart %d of %d)", self.role, self.names[i],
                    self.fleet[i].restarts, self.fleet[i].max_restarts)

    def _refresh_weights(self, i: int) -> None:
        loaded = self.reload(i) if self.reload is not None else True
        if loaded is None:
            return
        if not loaded:
            self.fleet[i].failure(fatal=True)
            return
        self.fleet[i].weights()
        log.info("%s %s serves the current weights after its restart", self.role, self.names[i])

    def health(self) -> list[dict]:
        """Each slot's health-machine state, plus its actor's own report when it serves (asked all at once)."""
        serving = self.fleet.serving()
        reports = dict(zip(serving, ray.get([self.handles[i].health.remote() for i in serving],
                                            timeout=self.probe_timeout_s)))
        return [{"name": self.names[i], "state": r.state.value, "restarts": r.restarts, "failures": r.failures,
                 **reports.get(i, {})} for i, r in enumerate(self.fleet.replicas)]

    def kill(self, i: int) -> None:
        try:
            ray.kill(self.handles[i], no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        if self.pgs[i] is not None:
            try:
                ray.util.remove_placement_group(self.pgs[i])
            except Exception:  # noqa: BLE001
                pass
            self.pgs[i] = None

    def shutdown(self, grace_s: float) -> None:
        """Ask every live actor to stop (bounded by grace_s), then kill them all and free their groups."""
        live = [h for i, h in enumerate(self.handles) if self.fleet[i].state is not State.DEAD]
        if live:
            ray.wait([h.shutdown.remote() for h in live], num_returns=len(live), timeout=grace_s)
        for i in range(len(self.handles)):
            self.kill(i)
        self.handles = []
