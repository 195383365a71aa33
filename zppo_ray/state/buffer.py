"""The prompt replay buffer (spec section 2 steps 1 and 10, open points of section 8). Pure Python, no Ray.

Hard questions (plain accuracy < tau) enter the buffer and are re-served as replay prompts until they
*graduate* (plain accuracy >= tau on a later visit) or are FIFO-*evicted* when the buffer is full. Every
question that leaves gets a `Fate` record; the paper's headline diagnostic is the graduation rate of
leaving questions, overall and for those that entered at 0% accuracy (section 7).

Only plain rollouts may update the buffer: BCQ/NCQ rollouts see candidate solutions in the prompt, so
their accuracy says nothing about whether the student can solve the question alone. `refresh` therefore
takes plain accuracies only; keeping that promise is the caller's job.

The buffer stores `Question` objects as they are (images by reference: paths or bytes are never copied).
It is checkpointed with `snapshot`/`restore` (JSON, exact round trip) and moved between processes with
`state_dict`/`load_state_dict`.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Optional

from zppo_ray.data.schema import Question
from zppo_ray.state.codec import decode, encode

FORMAT_VERSION = 2  # 2: the shared tagged-JSON codec (zppo_ray/state/codec.py)


@dataclass
class BufferConfig:
    """Buffer policy (the run config's `buffer` section too). Paper values where the paper gives one; the rest
    are open points (spec section 8). `problems()` says what is wrong with a setting; the buffer refuses to
    start with any, the config names them with their key."""

    capacity: int = 10_000
    """Paper value. FIFO eviction beyond it bounds memory and the age of replayed questions."""
    tau: float = 0.5
    """Paper value: hard means plain accuracy < tau; a buffered question graduates at accuracy >= tau."""
    sample_with_replacement: bool = False
    """Open point; default without: a duplicate replay prompt in one batch costs a second group of rollouts
    and double-weights that question, for no new information."""
    refresh_position_on_revisit: bool = False
    """Open point; default no: the paper says FIFO, i.e. by admission. Moving a still-hard question to the
    back on every visit would let unsolvable questions live forever while newer ones get evicted."""
    graduation: Literal["single", "ema"] = "single"
    """"single" (paper): graduate on this step's plain accuracy. "ema": on an exponential moving average of
    the plain accuracies observed while buffered, which damps graduation by one lucky group of 8."""
    ema_alpha: float = 0.5
    """Weight of the newest accuracy in the EMA. 0.5 lets a jump from 0/8 to 8/8 graduate at once
    (0.5 >= tau) while a single 4/8 after 0/8 (EMA 0.25) does not."""
    max_visits: Optional[int] = None
    """Optional cap on replay visits: a question still hard after this many is evicted (reason
    "max_visits"). None (paper): only FIFO eviction removes unsolved questions."""

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not isinstance(self.capacity, int) or isinstance(self.capacity, bool) or self.capacity < 1:
            out.append(("capacity", f"must be an int >= 1 (to run without a buffer, disable it), got {self.capacity!r}"))
        if not isinstance(self.tau, (int, float)) or not 0.0 < self.tau <= 1.0:
            out.append(("tau", f"must be in (0, 1], got {self.tau!r}"))
        if self.graduation not in ("single", "ema"):
            out.append(("graduation", f"must be 'single' or 'ema', got {self.graduation!r}"))
        if not isinstance(self.ema_alpha, (int, float)) or not 0.0 < self.ema_alpha <= 1.0:
            out.append(("ema_alpha", f"must be in (0, 1], got {self.ema_alpha!r}"))
        if self.max_visits is not None and (not isinstance(self.max_visits, int) or self.max_visits < 1):
            out.append(("max_visits", f"must be None or an int >= 1, got {self.max_visits!r}"))
        return out


@dataclass
class BufferEntry:
    """Per-question state while buffered."""

    question: Question
    entry_step: int
    entry_accuracy: float
    visits: int = 0  # steps in which it was served as replay
    last_accuracy: float = 0.0  # latest plain accuracy observed (admission included)
    smoothed_accuracy: float = 0.0  # EMA of the plain accuracies observed (admission included)
    order: int = 0  # FIFO sequence number: admission order, or last revisit if positions refresh


@dataclass(frozen=True)
class Fate:
    """What happened to one question that left the buffer.

    `exit_accuracy` is the last plain accuracy observed (the graduating one, or for an eviction the
    latest one seen, possibly from an earlier step). `reason` says why it left: "accuracy" (graduated),
    "capacity" (FIFO) or "max_visits".
    """

    qid: str
    entry_step: int
    exit_step: int
    entry_accuracy: float
    exit_accuracy: float
    visits: int
    steps_in_buffer: int
    fate: Literal["graduated", "evicted"]
    reason: Literal["accuracy", "capacity", "max_visits"]
    tier: str
    source: str


@dataclass(frozen=True)
class RefreshResult:
    """Outcome of one `refresh`: counts for metrics and the fate records produced in this step."""

    admitted: int
    graduated: int
    evicted: int
    size: int
    fates: tuple[Fate, ...] = ()
    replayed_not_buffered: int = 0  # replayed ids that were no longer in the buffer (diagnostic)
    admitted_ids: tuple[str, ...] = ()  # for the controller's question ledger (zppo_ray/state/ledger.py)


@dataclass(frozen=True)
class BufferStats:
    """Lifetime counters. Rates are None while no question has left (the ratio is undefined)."""

    size: int
    admitted: int
    graduated: int
    evicted: int
    left: int
    graduation_rate: float | None
    zero_entry_left: int
    zero_entry_graduated: int
    zero_entry_graduation_rate: float | None


def _check_accuracy(qid: str, acc: Any) -> float:
    number = isinstance(acc, (int, float)) and not isinstance(acc, bool)
    if not number or not math.isfinite(acc) or not 0 <= acc <= 1:
        raise ValueError(f"plain accuracy of {qid!r} must be a number in [0, 1], got {acc!r}")
    return float(acc)


class PromptReplayBuffer:
    """FIFO buffer of hard questions with graduation; see the module docstring for the policy."""

    def __init__(self, config: BufferConfig | None = None) -> None:
        self.config = config or BufferConfig()
        if problems := self.config.problems():
            raise ValueError("buffer config: " + "; ".join(f"{k} {m}" for k, m in problems))
        self._entries: OrderedDict[str, BufferEntry] = OrderedDict()
        self.fates: list[Fate] = []
        self._next_order = 0
        self._last_step: int | None = None
        self._admitted_total = 0

    # ---- queries -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, qid: object) -> bool:
        return qid in self._entries

    def ids(self) -> list[str]:
        """Buffered question ids, oldest (next to be evicted) first."""
        return list(self._entries)

    def entry(self, qid: str) -> BufferEntry:
        """A copy of the state of a buffered question (KeyError if absent)."""
        return replace(self._entries[qid])

    # ---- step 1: replay sampling ---------------------------------------------------------------
    def sample(self, k: int, rng: random.Random) -> list[Question]:
        """Draw ``min(k, len(self))`` questions uniformly (spec: "fewer while the buffer is small").

        Without replacement (default) no question repeats; if fewer than ``k`` are buffered, all of them
        come back in a random order. With replacement, ``min(k, len(self))`` independent draws. Sampling
        does not count a visit: `refresh` does, for the ids actually rolled out.
        """
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ValueError(f"k must be an int >= 0, got {k!r}")
        if not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random, got {type(rng).__name__}")
        ids = list(self._entries)
        n = min(k, len(ids))
        if self.config.sample_with_replacement:
            picked = [rng.choice(ids) for _ in range(n)]
        else:
            picked = rng.sample(ids, n)
        return [self._entries[qid].question for qid in picked]

    # ---- step 10: refresh ------------------------------------------------------------------------
    def refresh(
        self,
        step: int,
        plain_accuracy: dict[str, float],
        questions: dict[str, Question],
        replayed_ids: set[str] | frozenset[str] = frozenset(),
    ) -> RefreshResult:
        """Apply one step's PLAIN accuracies: count replay visits, graduate, admit, then FIFO-evict.

        ``plain_accuracy`` maps every question of this step's batch (new and replayed) to its plain group
        mean; ``questions`` must hold each of those ids; ``replayed_ids`` (subset of the batch) are the
        ids served as replay this step. Order: visits are counted first, so a question replayed and
        graduating in the same step leaves with that visit counted. New questions are admitted in the
        iteration order of ``plain_accuracy``; eviction removes the lowest FIFO order first.
        """
        accs, replayed = self._validate(step, plain_accuracy, questions, replayed_ids)
        cfg = self.config
        missing = 0
        for qid in replayed:
            if qid in self._entries:
                self._entries[qid].visits += 1
            else:
                missing += 1
        produced: list[Fate] = []
        admitted: list[str] = []
        for qid, acc in accs.items():
            entry = self._entries.get(qid)
            if entry is None:
                if acc < cfg.tau:
                    self._admit(step, questions[qid], acc)
                    admitted.append(qid)
                continue
            entry.last_accuracy = acc
            entry.smoothed_accuracy = cfg.ema_alpha * acc + (1 - cfg.ema_alpha) * entry.smoothed_accuracy
            score = entry.smoothed_accuracy if cfg.graduation == "ema" else acc
            if score >= cfg.tau:
                produced.append(self._remove(qid, step, "graduated", "accuracy"))
            elif cfg.max_visits is not None and entry.visits >= cfg.max_visits:
                produced.append(self._remove(qid, step, "evicted", "max_visits"))
            elif cfg.refresh_position_on_revisit:
                entry.order = self._take_order()
                self._entries.move_to_end(qid)
        while len(self._entries) > cfg.capacity:
            oldest = next(iter(self._entries))
            produced.append(self._remove(oldest, step, "evicted", "capacity"))
        self._last_step = step
        return RefreshResult(
            admitted=len(admitted),
            graduated=sum(f.fate == "graduated" for f in produced),
            evicted=sum(f.fate == "evicted" for f in produced),
            size=len(self._entries),
            fates=tuple(produced),
            replayed_not_buffered=missing,
            admitted_ids=tuple(admitted),
        )

    def _validate(self, step, plain_accuracy, questions, replayed_ids) -> tuple[dict[str, float], set[str]]:
        """Check everything before mutating anything, so a bad call leaves the buffer untouched."""
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"refresh steps must increase: got step {step} after step {self._last_step}")
        accs = {qid: _check_accuracy(qid, acc) for qid, acc in plain_accuracy.items()}
        for qid in accs:
            q = questions.get(qid)
            if q is None:
                raise ValueError(f"question {qid!r} has a plain accuracy but is missing from `questions`")
            if q.id != qid:
                raise ValueError(f"questions[{qid!r}] holds question {q.id!r}")
        replayed = set(replayed_ids)
        stray = replayed - accs.keys()
        if stray:
            raise ValueError(f"replayed ids without a plain accuracy this step: {sorted(stray)[:5]}")
        return accs, replayed

    def _take_order(self) -> int:
        self._next_order += 1
        return self._next_order - 1

    def _admit(self, step: int, question: Question, acc: float) -> None:
        self._entries[question.id] = BufferEntry(
            question=question, entry_step=step, entry_accuracy=acc, last_accuracy=acc,
            smoothed_accuracy=acc, order=self._take_order(),
        )
        self._admitted_total += 1

    def _remove(self, qid: str, step: int, fate: str, reason: str) -> Fate:
        e = self._entries.pop(qid)
        record = Fate(
            qid=qid, entry_step=e.entry_step, exit_step=step, entry_accuracy=e.entry_accuracy,
            exit_accuracy=e.last_accuracy, visits=e.visits, steps_in_buffer=step - e.entry_step,
            fate=fate, reason=reason, tier=e.question.tier, source=e.question.source,
        )  # fmt: skip
        self.fates.append(record)
        return record

    # ---- diagnostics ----------------------------------------------------------------------------
    def stats(self) -> BufferStats:
        """Graduation rate of leaving questions, overall and for those that entered at 0% accuracy."""
        graduated = sum(f.fate == "graduated" for f in self.fates)
        zero = [f for f in self.fates if f.entry_accuracy == 0.0]
        zero_grad = sum(f.fate == "graduated" for f in zero)
        return BufferStats(
            size=len(self._entries),
            admitted=self._admitted_total,
            graduated=graduated,
            evicted=len(self.fates) - graduated,
            left=len(self.fates),
            graduation_rate=graduated / len(self.fates) if self.fates else None,
            zero_entry_left=len(zero),
            zero_entry_graduated=zero_grad,
            zero_entry_graduation_rate=zero_grad / len(zero) if zero else None,
        )

    # ---- state transfer and checkpoints ---------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this buffer exactly (entries in FIFO order, fates, counters).

        Entries are copied, Questions and Fates are immutable and shared: the result is independent of
        later mutations of the buffer and picklable for in-memory transfer.
        """
        return {
            "format_version": FORMAT_VERSION,
            "config": asdict(self.config),
            "entries": [replace(e) for e in self._entries.values()],
            "fates": list(self.fates),
            "next_order": self._next_order,
            "last_step": self._last_step,
            "admitted_total": self._admitted_total,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this buffer's contents with ``state`` (from `state_dict`); the configs must agree."""
        if state.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported buffer format_version {state.get('format_version')!r}")
        config = BufferConfig(**state["config"])
        if config != self.config:
            raise ValueError(f"buffer state was saved with {config}, this buffer has {self.config}")
        self._entries = OrderedDict((e.question.id, replace(e)) for e in state["entries"])
        self.fates = list(state["fates"])
        self._next_order = state["next_order"]
        self._last_step = state["last_step"]
        self._admitted_total = state["admitted_total"]

    def snapshot(self, path: str | os.PathLike) -> None:
        """Write the state as JSON, atomically (temp file in the same folder, fsync, os.replace).

        JSON because every value here round-trips exactly through it (floats via their shortest repr)
        and it is inspectable; bytes become base64 and tuples are tagged so types come back unchanged.
        """
        text = json.dumps(_encode_state(self.state_dict()), ensure_ascii=True, separators=(",", ":"))
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".buffer-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def restore(cls, path: str | os.PathLike) -> PromptReplayBuffer:
        """Rebuild a buffer (config included) from a `snapshot` file."""
        with open(path, encoding="ascii") as f:
            state = _decode_state(json.load(f))
        buf = cls(BufferConfig(**state["config"]))
        buf.load_state_dict(state)
        return buf


def _encode_question(q: Question) -> dict[str, Any]:
    try:
        return {f.name: encode(getattr(q, f.name)) for f in fields(Question)}
    except TypeError as e:
        raise TypeError(f"cannot snapshot question {q.id!r}: {e}") from None


def _encode_state(state: dict[str, Any]) -> dict[str, Any]:
    out = dict(state)
    out["entries"] = [
        {**{f.name: getattr(e, f.name) for f in fields(BufferEntry) if f.name != "question"},
         "question": _encode_question(e.question)}
        for e in state["entries"]
    ]  # fmt: skip
    out["fates"] = [asdict(f) for f in state["fates"]]
    return out


def _decode_state(raw: dict[str, Any]) -> dict[str, Any]:
    state = dict(raw)
    state["entries"] = [
        BufferEntry(**{**e, "question": Question(**{k: decode(v) for k, v in e["question"].items()})})
        for e in raw["entries"]
    ]
    state["fates"] = [Fate(**f) for f in raw["fates"]]
    return state


__all__ = ["BufferConfig", "BufferEntry", "BufferStats", "Fate", "PromptReplayBuffer", "RefreshResult"]
