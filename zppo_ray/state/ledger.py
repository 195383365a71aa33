"""Where every training question is, at any time: the question ledger and its audit. Pure, no Ray.

A question of the training set is in exactly one state:

    not_served   the data cursor has not reached it yet
    in_flight    in a step now running (served as new or as replay, not yet settled); with asynchronous
                 rollouts two steps run at once, and a question can be in flight in both
    trained      its rollouts went into a completed step and it is not in the buffer
    in_buffer    hard, waiting in the replay buffer
    graduated    left the buffer by reaching accuracy >= tau
    evicted      left the buffer unsolved (capacity, max visits)
    skipped      its input could not be processed (retried, then skipped: counted and logged)

The controller moves questions between states (`Ledger.serve` at the start of a step, `Ledger.settle` at
its end) and checkpoints the ledger with the rest of its state, so a run rolled back to a checkpoint
rolls the ledger back with it. `audit` then checks the ledger against two sources kept by other parts of
the system: the replay buffer's own contents and fate records, and the stream of questions the data cursor
must have served. A question the system dropped (served but never settled, settled twice by the cursor,
buffered without the controller knowing, ...) makes the audit fail and says which.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

STATES = ("not_served", "in_flight", "trained", "in_buffer", "graduated", "evicted", "skipped")


def count_states(states: Iterable[str]) -> dict[str, int]:
    """Questions per state, every state listed (in STATES order)."""
    c = Counter(states)
    return {s: c.get(s, 0) for s in STATES}


class Ledger:
    def __init__(self, ids: Iterable[str], states: Mapping[str, str] | None = None):
        self.state = {qid: "not_served" for qid in ids}
        # step -> its questions: settle checks these, not the whole set. With asynchronous rollouts the next
        # step is served while this one is still being trained on, so each step settles its own.
        self._served: dict[int, list[str]] = {}
        self._before: dict[int, dict[str, str]] = {}  # step -> the states its questions had when served
        if states:
            unknown = set(states) - set(self.state)
            if unknown:
                raise ValueError(f"ledger names {len(unknown)} question(s) not in the training set, "
                                 f"e.g. {sorted(unknown)[:3]}")
            bad = {s for s in states.values() if s not in STATES}
            if bad:
                raise ValueError(f"ledger has unknown state(s) {sorted(bad)}; known: {', '.join(STATES)}")
            self.state.update(states)

    def counts(self) -> dict[str, int]:
        return count_states(self.state.values())

    def serve(self, ids: Iterable[str], step: int = 0) -> None:
        for qid in ids:
            self._before.setdefault(step, {})[qid] = self.state[self._known(qid)]
            self.state[qid] = "in_flight"
            self._served.setdefault(step, []).append(qid)

    def settled(self) -> dict[str, str]:
        """Every question's state as of the last settled step: one served by a step still in flight shows the
        state it had before (what a checkpoint saves: resuming serves that step again)."""
        out = dict(self.state)
        for before in self._before.values():
            out.update(before)
        return out

    def in_flight(self) -> set[str]:
        """Questions served and not settled yet (of every step in progress)."""
        return {q for qs in self._served.values() for q in qs}

    def settle(self, plain_ids: Iterable[str], skipped: Iterable[str], buffered: Iterable[str],
               fates: Iterable[Mapping], step: int = 0) -> None:
        """End of a step: every in-flight question gets its outcome.

        `plain_ids`: questions whose plain group was graded (trained on); `skipped`: served but not
        processable; `buffered`: questions of this step in the buffer after its refresh (admitted or still
        hard); `fates`: buffer exits of this step (a capacity eviction can hit a question not served now).
        Later outcomes override earlier ones: trained, then buffered, then left the buffer."""
        outcome: dict[str, str] = {}
        for qid in plain_ids:
            outcome[self._known(qid)] = "trained"
        for qid in buffered:
            outcome[self._known(qid)] = "in_buffer"
        for f in fates:
            outcome[self._known(f["qid"])] = f["fate"]
        for qid in skipped:
            outcome.setdefault(self._known(qid), "skipped")
        served = self._served.pop(step, [])
        self._before.pop(step, None)
        # Asynchronous rollouts: a question of this step may already be in flight again in the next one (a
        # new question after the data wrapped around, a buffer exit the next step had drawn). It stays in
        # flight; its outcome here is what it returns to should that step be dropped (settled()).
        later = {q: k for k, qs in self._served.items() for q in qs}
        for qid, state in outcome.items():
            if qid in later:
                self._before[later[qid]][qid] = state
            else:
                self.state[qid] = state
        stuck = [q for q in served if q not in outcome]
        if stuck:
            raise RuntimeError(f"{len(stuck)} question(s) served this step have no outcome, e.g. {stuck[:3]}")

    def _known(self, qid: str) -> str:
        if qid not in self.state:
            raise KeyError(f"question {qid!r} is not in the training set")
        return qid

    def save(self, path: str | os.PathLike) -> None:
        tmp = Path(f"{path}.tmp")
        tmp.write_text(json.dumps({q: s for q, s in self.settled().items() if s != "not_served"}))
        os.replace(tmp, path)

    @classmethod
    def load(cls, ids: Iterable[str], path: str | os.PathLike) -> Ledger:
        return cls(ids, json.loads(Path(path).read_text()))


# ------------------------------------------------------------------------------------------------ audit

@dataclass
class Audit:
    counts: dict[str, int]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def audit(ledger: Mapping[str, str], served_log: Mapping[int, Mapping], expected_new: list[list[str]],
          buffer_ids: Iterable[str], fates: Iterable[Mapping]) -> Audit:
    """Check that no question was lost, between steps (nothing may be in flight).

    `served_log`: step -> {"new": ids, "replay": ids, "skipped": ids} as the controller logged it (the last
    record of a step wins: a rolled-back step is served again); `expected_new[s-1]`: the new questions the
    data cursor must serve at step s (`DataCursor` replayed from its seed); `buffer_ids`, `fates`: the
    buffer actor's contents and exit records."""
    a = Audit(count_states(ledger.values()))
    counts = a.counts
    p = a.problems
    if counts["in_flight"]:
        p.append(f"{counts['in_flight']} question(s) still in flight between steps")
    steps = sorted(served_log)
    if steps != list(range(1, len(expected_new) + 1)):
        missing = sorted(set(range(1, len(expected_new) + 1)) - set(steps))
        p.append(f"served log covers steps {steps[:1]}..{steps[-1:]} (missing {missing[:5]}), expected 1.."
                 f"{len(expected_new)}")
    for s in steps:
        if s <= len(expected_new) and list(served_log[s]["new"]) != list(expected_new[s - 1]):
            p.append(f"step {s} served new questions {list(served_log[s]['new'])[:3]}..., the data cursor's "
                     f"order says {expected_new[s - 1][:3]}...")
    served = {q for s in steps for q in served_log[s]["new"]}
    unserved_but_settled = [q for q, st in ledger.items() if st != "not_served" and q not in served]
    if unserved_but_settled:
        p.append(f"{len(unserved_but_settled)} question(s) have an outcome but were never served, "
                 f"e.g. {unserved_but_settled[:3]}")
    lost = [q for q in served if ledger.get(q, "not_served") in ("not_served", "in_flight")]
    if lost:
        p.append(f"{len(lost)} served question(s) have no outcome (lost), e.g. {lost[:3]}")
    buffered = set(buffer_ids)
    ledger_buffered = {q for q, st in ledger.items() if st == "in_buffer"}
    if buffered != ledger_buffered:
        p.append(f"buffer holds {len(buffered)} question(s), the ledger says {len(ledger_buffered)}: only in the "
                 f"buffer {sorted(buffered - ledger_buffered)[:3]}, only in the ledger "
                 f"{sorted(ledger_buffered - buffered)[:3]}")
    last_served: dict[str, int] = {}
    for s in steps:
        for q in (*served_log[s]["new"], *served_log[s]["replay"]):
            last_served[q] = s
    for f in fates:  # a fate at or after the question's last serve is its current state
        q = f["qid"]
        if q not in buffered and f["exit_step"] >= last_served.get(q, 0) and ledger.get(q) != f["fate"]:
            p.append(f"question {q!r} left the buffer {f['fate']} at step {f['exit_step']}, the ledger says "
                     f"{ledger.get(q)!r}")
    skipped_logged = {q for s in steps for q in served_log[s].get("skipped", ())}
    skipped_ledger = {q for q, st in ledger.items() if st == "skipped"}
    if not skipped_ledger <= skipped_logged:
        p.append(f"{len(skipped_ledger - skipped_logged)} question(s) marked skipped without a logged skip")
    return a
