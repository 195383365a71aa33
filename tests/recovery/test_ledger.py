"""The question ledger and its audit (zppo_ray/state/ledger.py)."""

import pytest

from zppo_ray.state.ledger import STATES, Ledger, audit


def _fate(qid, fate, step):
    return {"qid": qid, "fate": fate, "exit_step": step}


def _run():
    """Two steps over q0..q5 (2 new per step): q1 hard -> buffer; step 2 replays q1, which graduates."""
    ids = [f"q{i}" for i in range(6)]
    led = Ledger(ids)
    led.serve(["q0", "q1"])
    assert led.counts()["in_flight"] == 2
    led.settle(["q0", "q1"], [], ["q1"], [])
    led.serve(["q2", "q3", "q1"])
    led.settle(["q2", "q1"], ["q3"], [], [_fate("q1", "graduated", 2)])
    log = {1: {"new": ["q0", "q1"], "replay": [], "skipped": []},
           2: {"new": ["q2", "q3"], "replay": ["q1"], "skipped": ["q3"]}}
    return led, log, [["q0", "q1"], ["q2", "q3"]]


def test_every_question_is_in_exactly_one_state():
    led, log, expected = _run()
    c = led.counts()
    assert sum(c.values()) == 6 and list(c) == list(STATES)
    assert c == {"not_served": 2, "in_flight": 0, "trained": 2, "in_buffer": 0, "graduated": 1, "evicted": 0,
                 "skipped": 1}
    a = audit(led.state, log, expected, [], [_fate("q1", "graduated", 2)])
    assert a.ok, a.problems


def test_settle_refuses_to_lose_an_in_flight_question():
    led = Ledger(["a", "b"])
    led.serve(["a", "b"])
    with pytest.raises(RuntimeError, match="no outcome"):
        led.settle(["a"], [], [], [])
    with pytest.raises(KeyError, match="not in the training set"):
        led.serve(["zzz"])


def test_ledger_round_trip_and_bad_files(tmp_path):
    led, _, _ = _run()
    led.save(tmp_path / "ledger.json")
    back = Ledger.load(led.state, tmp_path / "ledger.json")
    assert back.state == led.state
    with pytest.raises(ValueError, match="not in the training set"):
        Ledger(["q0"], {"q9": "trained"})
    with pytest.raises(ValueError, match="unknown state"):
        Ledger(["q0"], {"q0": "vanished"})


@pytest.mark.parametrize("damage,message", [
    (lambda led, log, exp, buf, fates: log.pop(2), "missing"),
    (lambda led, log, exp, buf, fates: log[2].update(new=["q3", "q2"]), "data cursor"),
    (lambda led, log, exp, buf, fates: led.state.update(q0="not_served"), "lost"),
    (lambda led, log, exp, buf, fates: led.state.update(q5="trained"), "never served"),
    (lambda led, log, exp, buf, fates: buf.append("q0"), "buffer holds"),
    (lambda led, log, exp, buf, fates: fates.append(_fate("q2", "evicted", 2)), "left the buffer"),
    (lambda led, log, exp, buf, fates: log[2].update(skipped=[]), "without a logged skip"),
    (lambda led, log, exp, buf, fates: led.state.update(q4="in_flight"), "in flight"),
])
def test_audit_catches_each_kind_of_loss(damage, message):
    led, log, expected = _run()
    buffer_ids, fates = [], [_fate("q1", "graduated", 2)]
    damage(led, log, expected, buffer_ids, fates)
    a = audit(led.state, log, expected, buffer_ids, fates)
    assert not a.ok and any(message in p for p in a.problems), a.problems


def test_a_question_trained_again_after_graduating_is_trained():
    """Epoch 2: q1 graduated at step 2, served again at step 3 and easy: its fate is history."""
    led, log, expected = _run()
    led.serve(["q4", "q1"])
    led.settle(["q4", "q1"], [], [], [])
    log[3] = {"new": ["q4", "q1"], "replay": [], "skipped": []}
    assert audit(led.state, log, expected + [["q4", "q1"]], [], [_fate("q1", "graduated", 2)]).ok


def test_a_question_in_flight_in_two_steps_keeps_the_later_step_and_checkpoints_its_earlier_outcome():
    """Asynchronous rollouts: step 2 serves q1 (the data wrapped around) while step 1, which also holds it,
    trains. Settling step 1 leaves q1 in flight for step 2; a checkpoint then shows step 1's outcome."""
    from zppo_ray.state.ledger import Ledger

    led = Ledger(["q0", "q1", "q2"])
    led.serve(["q0", "q1"], 1)
    led.serve(["q1", "q2"], 2)
    assert led.in_flight() == {"q0", "q1", "q2"}
    led.settle(["q0", "q1"], [], ["q1"], [], 1)
    assert led.state == {"q0": "trained", "q1": "in_flight", "q2": "in_flight"}
    assert led.settled() == {"q0": "trained", "q1": "in_buffer", "q2": "not_served"}
    led.settle(["q1", "q2"], [], [], [{"qid": "q1", "fate": "graduated"}], 2)
    assert led.state == {"q0": "trained", "q1": "graduated", "q2": "trained"} and not led.in_flight()


def test_role_clock_reports_idle_seconds_as_the_complement_of_the_busy_union():
    from zppo_ray.step import _union

    assert _union([(1.0, 3.0), (2.0, 4.0), (6.0, 7.0)], 0.0, 10.0) == pytest.approx(4.0)
    assert _union([(-5.0, 1.0), (9.0, 20.0)], 0.0, 10.0) == pytest.approx(2.0)  # clipped to the window
    assert _union([(11.0, 12.0)], 0.0, 10.0) == 0.0  # began after the window: no negative length
