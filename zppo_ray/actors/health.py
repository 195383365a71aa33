"""The health state machine of one engine replica (rollout worker or teacher replica). Pure: no Ray.

    healthy --failure--> suspect --failure--> dead --restart--> restarting --up--> stale --weights--> healthy
       ^                    |                   ^                    |                  |
       +-----success--------+                   +------ failure -----+------------------+

* healthy: serves requests.
* suspect: one infrastructure failure (a timeout: the replica may only be slow). It does not get new work;
  its next success makes it healthy again, its next failure makes it dead. A failure that proves the
  process is gone (the actor died) skips suspect and makes it dead at once.
* dead: the process is gone or no longer trusted; it is killed and will be replaced.
* restarting: a replacement actor is starting (a vLLM engine takes seconds to minutes).
* stale: the replacement is up but holds the weights it started from. A rollout worker must not serve
  before it has the current policy, so only a weight push makes it healthy; a frozen teacher has nothing
  to receive and becomes healthy as soon as it is up.
* a replica whose restarts are spent stays dead (`gave_up`): the role goes on with the others, and fails
  with a clear error only when none is left.

`Fleet` holds one `ReplicaHealth` per slot and answers the questions the pools ask: who may serve, who
must be restarted, who waits for weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class State(str, Enum):
    HEALTHY = "healthy"
    SUSPECT = "suspect"
    DEAD = "dead"
    RESTARTING = "restarting"
    STALE = "stale"


class IllegalTransition(RuntimeError):
    """A pool called the machine in an order that cannot happen (a bug in the caller)."""


@dataclass
class ReplicaHealth:
    name: str
    max_restarts: int
    needs_weights: bool = True  # rollout workers: True; the frozen teacher: False
    state: State = State.HEALTHY
    restarts: int = 0
    failures: int = 0
    history: list[tuple[str, str]] = field(default_factory=list)  # (event, state after), for logs and tests

    @property
    def serving(self) -> bool:
        return self.state is State.HEALTHY

    @property
    def gave_up(self) -> bool:
        return self.state is State.DEAD and self.restarts >= self.max_restarts

    def _go(self, event: str, state: State) -> State:
        self.state = state
        self.history.append((event, state.value))
        return state

    def success(self) -> State:
        """A call on this replica finished."""
        if self.state in (State.HEALTHY, State.SUSPECT):
            return self._go("success", State.HEALTHY)
        return self.state  # a late answer from a replica already written off changes nothing

    def failure(self, fatal: bool) -> State:
        """An infrastructure failure on this replica; `fatal`: the process is certainly gone."""
        self.failures += 1
        if self.state is State.HEALTHY and not fatal:
            return self._go("failure", State.SUSPECT)
        if self.state is State.DEAD:
            return self.state
        return self._go("fatal" if fatal else "failure", State.DEAD)

    def restart(self) -> State:
        if self.state is not State.DEAD:
            raise IllegalTransition(f"{self.name}: restart from {self.state.value} (only a dead replica restarts)")
        if self.gave_up:
            raise IllegalTransition(f"{self.name}: restart budget of {self.max_restarts} spent")
        self.restarts += 1
        return self._go("restart", State.RESTARTING)

    def up(self) -> State:
        """The replacement answered: stale until it gets the current weights (healthy if it needs none)."""
        if self.state is not State.RESTARTING:
            raise IllegalTransition(f"{self.name}: up from {self.state.value}")
        return self._go("up", State.STALE if self.needs_weights else State.HEALTHY)

    def weights(self) -> State:
        """The replica confirmed the current policy version."""
        if self.state not in (State.STALE, State.HEALTHY):
            raise IllegalTransition(f"{self.name}: weights pushed to a {self.state.value} replica")
        return self._go("weights", State.HEALTHY)


class Fleet:
    """The health of every slot of one role (slot i = the i-th actor handle of the pool)."""

    def __init__(self, names: list[str], max_restarts: int, needs_weights: bool):
        self.replicas = [ReplicaHealth(n, max_restarts, needs_weights) for n in names]

    def __getitem__(self, i: int) -> ReplicaHealth:
        return self.replicas[i]

    def __len__(self) -> int:
        return len(self.replicas)

    def in_state(self, *states: State) -> list[int]:
        return [i for i, r in enumerate(self.replicas) if r.state in states]

    def serving(self) -> list[int]:
        return self.in_state(State.HEALTHY)

    def to_restart(self) -> list[int]:
        """Dead slots with restarts left."""
        return [i for i in self.in_state(State.DEAD) if not self.replicas[i].gave_up]

    def recoverable(self) -> bool:
        """Some slot serves now or may serve later."""
        return any(not r.gave_up for r in self.replicas)

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in State}
        for r in self.replicas:
            out[r.state.value] += 1
        return out
