"""PromptReplayBuffer: hand-walked scenarios of spec section 2 steps 1 and 10 and the section 8 options."""

import json
import math
import os
import random
from collections import Counter

import pytest

from zppo_ray.data.schema import Question
from zppo_ray.state.buffer import BufferConfig, Fate, PromptReplayBuffer


def q(name: str, **kw) -> Question:
    kw.setdefault("tier", "easy" if name < "m" else "hard")
    kw.setdefault("source", "toy")
    return Question(id=name, prompt=f"What is {name}?", answer="1", **kw)


POOL = {name: q(name) for name in "abcdefghij"}


def refresh(buf, step, accs, replayed=(), pool=POOL):
    return buf.refresh(step, dict(accs), {k: pool[k] for k in accs}, set(replayed))


def test_admit_replay_graduate():
    buf = PromptReplayBuffer()
    r0 = refresh(buf, 0, {"a": 0.0, "b": 0.75, "c": 0.25})
    assert (r0.admitted, r0.graduated, r0.evicted, r0.size, r0.fates) == (2, 0, 0, 2, ())
    assert buf.ids() == ["a", "c"]
    e = buf.entry("a")
    assert (e.entry_step, e.entry_accuracy, e.visits, e.last_accuracy) == (0, 0.0, 0, 0.0)

    assert set(x.id for x in buf.sample(5, random.Random(0))) == {"a", "c"}
    r1 = refresh(buf, 1, {"a": 0.25, "c": 0.125, "d": 1.0}, replayed={"a", "c"})
    assert (r1.admitted, r1.graduated, r1.evicted, r1.size) == (0, 0, 0, 2)
    assert buf.entry("a").visits == 1 and buf.entry("a").last_accuracy == 0.25
    assert "d" not in buf  # easy new questions never enter

    r2 = refresh(buf, 2, {"a": 0.5}, replayed={"a"})  # accuracy == tau graduates (r >= tau)
    assert (r2.admitted, r2.graduated, r2.evicted, r2.size) == (0, 1, 0, 1)
    assert r2.fates == (
        Fate(qid="a", entry_step=0, exit_step=2, entry_accuracy=0.0, exit_accuracy=0.5, visits=2,
             steps_in_buffer=2, fate="graduated", reason="accuracy", tier="easy", source="toy"),
    )
    assert buf.fates == list(r2.fates)
    assert buf.ids() == ["c"] and buf.entry("c").visits == 1


def test_replayed_and_graduating_in_the_same_step_counts_the_visit():
    buf = PromptReplayBuffer()
    refresh(buf, 3, {"a": 0.125})
    r = refresh(buf, 4, {"a": 0.875, "b": 0.0}, replayed={"a"})
    (fate,) = r.fates
    assert (fate.qid, fate.fate, fate.visits, fate.entry_step, fate.exit_step, fate.steps_in_buffer) == (
        "a", "graduated", 1, 3, 4, 1)
    assert (fate.entry_accuracy, fate.exit_accuracy) == (0.125, 0.875)
    assert buf.ids() == ["b"] and (r.admitted, r.graduated) == (1, 1)


def test_fifo_eviction_capacity_two():
    buf = PromptReplayBuffer(BufferConfig(capacity=2))
    refresh(buf, 0, {"a": 0.25})
    refresh(buf, 1, {"b": 0.0})
    r = refresh(buf, 2, {"c": 0.125})
    assert buf.ids() == ["b", "c"]
    assert (r.admitted, r.graduated, r.evicted, r.size) == (1, 0, 1, 2)
    assert r.fates == (
        Fate(qid="a", entry_step=0, exit_step=2, entry_accuracy=0.25, exit_accuracy=0.25, visits=0,
             steps_in_buffer=2, fate="evicted", reason="capacity", tier="easy", source="toy"),
    )


def test_three_admissions_in_one_step_evict_the_first_admitted():
    buf = PromptReplayBuffer(BufferConfig(capacity=2))
    r = refresh(buf, 7, {"c": 0.0, "a": 0.0, "b": 0.0})  # admission follows the dict order
    assert buf.ids() == ["a", "b"]
    assert [(f.qid, f.steps_in_buffer, f.fate) for f in r.fates] == [("c", 0, "evicted")]


@pytest.mark.parametrize(("refresh_position", "survivors", "evicted"), [(False, ["b", "c"], "a"), (True, ["a", "c"], "b")])
def test_refresh_position_on_revisit(refresh_position, survivors, evicted):
    buf = PromptReplayBuffer(BufferConfig(capacity=2, refresh_position_on_revisit=refresh_position))
    refresh(buf, 0, {"a": 0.0})
    refresh(buf, 1, {"b": 0.0})
    r = refresh(buf, 2, {"a": 0.25, "c": 0.0}, replayed={"a"})  # a still hard, revisited
    assert buf.ids() == survivors
    assert [f.qid for f in r.fates] == [evicted]
    if refresh_position:
        assert buf.entry("a").order == 2 and buf.entry("a").entry_step == 0  # a=0, b=1, a moved=2, c=3


def test_ema_graduation():
    single = PromptReplayBuffer(BufferConfig(graduation="single"))
    ema = PromptReplayBuffer(BufferConfig(graduation="ema", ema_alpha=0.5))
    for buf in (single, ema):
        refresh(buf, 0, {"a": 0.0})
        refresh(buf, 1, {"a": 0.5}, replayed={"a"})
    assert "a" not in single  # single visit: 0.5 >= tau
    assert "a" in ema and ema.entry("a").smoothed_accuracy == 0.25  # 0.5*0.5 + 0.5*0.0
    r = refresh(ema, 2, {"a": 0.75}, replayed={"a"})  # 0.5*0.75 + 0.5*0.25 = 0.5 >= tau
    (fate,) = r.fates
    assert (fate.fate, fate.visits, fate.exit_accuracy, fate.steps_in_buffer) == ("graduated", 2, 0.75, 2)


def test_ema_alpha_one_is_single_visit():
    buf = PromptReplayBuffer(BufferConfig(graduation="ema", ema_alpha=1.0))
    refresh(buf, 0, {"a": 0.0})
    assert refresh(buf, 1, {"a": 0.5}, replayed={"a"}).graduated == 1


def test_max_visits_evicts_a_question_that_stays_hard():
    buf = PromptReplayBuffer(BufferConfig(max_visits=2))
    refresh(buf, 0, {"a": 0.0})
    refresh(buf, 1, {"a": 0.0}, replayed={"a"})
    assert "a" in buf
    (fate,) = refresh(buf, 2, {"a": 0.125}, replayed={"a"}).fates
    assert (fate.fate, fate.reason, fate.visits, fate.exit_accuracy) == ("evicted", "max_visits", 2, 0.125)


def test_visits_count_only_replay_and_missing_replays_are_reported():
    buf = PromptReplayBuffer()
    refresh(buf, 0, {"a": 0.0, "b": 0.0})
    r = refresh(buf, 1, {"a": 0.0, "b": 0.0, "c": 0.75}, replayed={"b", "c"})
    assert buf.entry("a").visits == 0  # seen again as a new question: observed, not a replay visit
    assert buf.entry("a").last_accuracy == 0.0 and buf.entry("b").visits == 1
    assert r.replayed_not_buffered == 1  # "c" was replayed but is not buffered


def test_sampling_k_larger_than_size_returns_all_in_random_order():
    buf = PromptReplayBuffer()
    refresh(buf, 0, {k: 0.0 for k in "abcde"})
    orders = set()
    for seed in range(20):
        got = [x.id for x in buf.sample(8, random.Random(seed))]
        assert sorted(got) == list("abcde")
        orders.add(tuple(got))
    assert len(orders) > 1  # the order is random, not FIFO
    assert buf.sample(0, random.Random(0)) == []
    assert PromptReplayBuffer().sample(4, random.Random(0)) == []


def test_sampling_without_replacement_never_repeats_and_is_uniform():
    buf = PromptReplayBuffer()
    refresh(buf, 0, {k: 0.0 for k in "abcdefghij"})
    rng = random.Random(123)
    counts = Counter()
    for _ in range(2000):
        got = [x.id for x in buf.sample(3, rng)]
        assert len(set(got)) == 3
        counts.update(got)
    assert set(counts) == set("abcdefghij")
    assert all(500 <= c <= 700 for c in counts.values()), counts  # expected 600 each
    assert [x.id for x in buf.sample(4, random.Random(9))] == [x.id for x in buf.sample(4, random.Random(9))]


def test_sampling_with_replacement_can_repeat():
    buf = PromptReplayBuffer(BufferConfig(sample_with_replacement=True))
    refresh(buf, 0, {k: 0.0 for k in "abcd"})
    draws = [buf.sample(4, random.Random(s)) for s in range(10)]
    assert all(len(d) == 4 for d in draws)
    assert any(len({x.id for x in d}) < 4 for d in draws)
    assert len(buf.sample(9, random.Random(0))) == 4  # never more than the buffer holds


def test_stats_numbers():
    buf = PromptReplayBuffer(BufferConfig(capacity=3))
    empty = buf.stats()
    assert empty.graduation_rate is None and empty.zero_entry_graduation_rate is None
    refresh(buf, 0, {"a": 0.0, "b": 0.0, "c": 0.25, "d": 0.125})  # a evicted at once (capacity 3)
    refresh(buf, 1, {"b": 1.0, "c": 0.5, "d": 0.0}, replayed={"b", "c", "d"})
    s = buf.stats()
    assert [(f.qid, f.fate) for f in buf.fates] == [("a", "evicted"), ("b", "graduated"), ("c", "graduated")]
    assert (s.size, s.admitted, s.graduated, s.evicted, s.left) == (1, 4, 2, 1, 3)
    assert s.graduation_rate == pytest.approx(2 / 3)
    assert (s.zero_entry_left, s.zero_entry_graduated, s.zero_entry_graduation_rate) == (2, 1, 0.5)


def rich_pool():
    chat = (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Angle ABC in °? ☃"}]},
    )
    return {
        "a": Question(id="a", prompt=chat, answer="30", kind="math", images=(b"\x89PNG\x00\xff", "img/a.png"),
                      source="geo", tier="t1", extra={"difficulty": 1 / 3, "tags": ("x", "y"), 7: None,
                                                       "__tuple__": [1], "raw": b"\x00"}),
        "b": Question(id="b", prompt="Which?", answer="C", kind="mc", choices=("1", "2", "3"), source="mc",
                      tier="t2", extra={"nested": {"__bytes__": "not bytes"}}),
        "c": Question(id="c", prompt="Capital of France?", answer="Paris", kind="free", source="free"),
        "d": q("d"),
        "e": q("e"),
    }


def build_rich_buffer(graduation="single"):
    pool = rich_pool()
    buf = PromptReplayBuffer(BufferConfig(capacity=3, graduation=graduation, refresh_position_on_revisit=True))
    refresh(buf, 0, {"d": 0.0, "a": 0.0, "b": 1 / 3, "c": 0.1}, pool=pool)  # d evicted
    refresh(buf, 1, {"b": 0.2, "c": 0.9, "e": 0.0}, replayed={"b", "c"}, pool=pool)  # c graduates, b moves
    return buf, pool


def strict(value):
    """A structure where type differences (tuple/list, bytes/str) make values unequal."""
    if isinstance(value, dict):
        return ("dict", tuple((strict(k), strict(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(strict(v) for v in value))
    return (type(value).__name__, value)


def assert_same_buffer(x: PromptReplayBuffer, y: PromptReplayBuffer):
    sx, sy = x.state_dict(), y.state_dict()
    assert sx == sy  # config, entries (incl. FIFO order and counters), fates
    assert x.ids() == y.ids() and x.stats() == y.stats()
    for ex, ey in zip(sx["entries"], sy["entries"]):
        for name in ("prompt", "choices", "images", "extra"):  # extra is compare=False in Question
            assert strict(getattr(ex.question, name)) == strict(getattr(ey.question, name)), name


@pytest.mark.parametrize("graduation", ["single", "ema"])
def test_snapshot_round_trip_is_exact(tmp_path, graduation):
    buf, pool = build_rich_buffer(graduation)
    assert buf.fates and len(buf) == 3
    path = tmp_path / "buffer.json"
    buf.snapshot(path)
    again = PromptReplayBuffer.restore(path)
    assert_same_buffer(buf, again)
    restored_a = next(e.question for e in again.state_dict()["entries"] if e.question.id == "a")
    assert isinstance(restored_a.prompt, tuple) and restored_a.images[0] == b"\x89PNG\x00\xff"
    assert restored_a.extra[7] is None and restored_a.extra["tags"] == ("x", "y")
    assert restored_a.extra["difficulty"] == 1 / 3
    # both continue identically
    assert buf.sample(2, random.Random(5)) == again.sample(2, random.Random(5))
    accs = {"a": 0.75, "d": 0.0, "b": 0.0}
    assert refresh(buf, 2, accs, {"a"}, pool) == refresh(again, 2, accs, {"a"}, pool)
    assert_same_buffer(buf, again)
    # overwrite in place, atomically: no temp files remain
    buf.snapshot(path)
    assert os.listdir(tmp_path) == ["buffer.json"]
    assert json.loads(path.read_text())["format_version"] == 2


def test_failed_snapshot_keeps_the_previous_file(tmp_path):
    buf, _ = build_rich_buffer()
    path = tmp_path / "buffer.json"
    buf.snapshot(path)
    before = path.read_bytes()
    bad = Question(id="z", prompt="?", answer="1", extra={"obj": object()})
    refresh(buf, 5, {"z": 0.0}, pool={"z": bad})
    with pytest.raises(TypeError, match="question 'z'"):
        buf.snapshot(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["buffer.json"]


def test_state_dict_transfer_is_independent():
    buf, pool = build_rich_buffer()
    state = buf.state_dict()
    other = PromptReplayBuffer(buf.config)
    other.load_state_dict(state)
    assert_same_buffer(buf, other)
    refresh(buf, 2, {"e": 0.0}, replayed={"e"}, pool=pool)  # mutate the source afterwards
    assert other.entry("e").visits == 0 and buf.entry("e").visits == 1
    with pytest.raises(ValueError, match="saved with"):
        PromptReplayBuffer(BufferConfig(capacity=4)).load_state_dict(state)
    with pytest.raises(ValueError, match="format_version"):
        other.load_state_dict({**state, "format_version": 99})


@pytest.mark.parametrize(
    ("accs", "questions", "replayed", "match"),
    [
        ({"a": 1.5}, {"a": POOL["a"]}, set(), "'a'.*\\[0, 1\\]"),
        ({"a": -0.1}, {"a": POOL["a"]}, set(), "\\[0, 1\\]"),
        ({"a": math.nan}, {"a": POOL["a"]}, set(), "\\[0, 1\\]"),
        ({"a": "0.5"}, {"a": POOL["a"]}, set(), "\\[0, 1\\]"),
        ({"a": True}, {"a": POOL["a"]}, set(), "\\[0, 1\\]"),
        ({"a": 0.0}, {}, set(), "missing from `questions`"),
        ({"a": 0.0}, {"a": POOL["b"]}, set(), "holds question 'b'"),
        ({"a": 0.0}, {"a": POOL["a"]}, {"b"}, "replayed ids without a plain accuracy"),
    ],
)
def test_bad_refresh_input_raises_and_leaves_the_buffer_untouched(accs, questions, replayed, match):
    buf = PromptReplayBuffer()
    refresh(buf, 0, {"c": 0.0})
    before = buf.state_dict()
    with pytest.raises(ValueError, match=match):
        buf.refresh(1, accs, questions, replayed)
    assert buf.state_dict() == before


def test_bad_step_sample_and_config_arguments():
    buf = PromptReplayBuffer()
    refresh(buf, 3, {"a": 0.0})
    with pytest.raises(ValueError, match="must increase"):
        refresh(buf, 3, {"b": 0.0})
    with pytest.raises(ValueError, match="step"):
        PromptReplayBuffer().refresh(-1, {}, {}, set())
    with pytest.raises(ValueError, match="k must be"):
        buf.sample(-1, random.Random(0))
    with pytest.raises(TypeError, match="random.Random"):
        buf.sample(1, 42)
    for bad in [dict(capacity=0), dict(tau=0.0), dict(tau=1.5), dict(graduation="mean"), dict(ema_alpha=0.0),
                dict(max_visits=0)]:
        assert BufferConfig(**bad).problems()
        with pytest.raises(ValueError, match="buffer config"):
            PromptReplayBuffer(BufferConfig(**bad))
