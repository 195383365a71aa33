"""Hard set, hardest-first selection, instance planning with the first-overflow stop, caps."""

import pytest

from zppo_ray.algo import aug_cap, floor_times, plan_instances, replay_count, select_hardest


def test_select_hardest_ascending_ties_stable():
    hard = {"q1": 0.25, "q2": 0.0, "q3": 0.125, "q4": 0.0, "q5": 0.25}
    assert select_hardest(hard, 10) == ["q2", "q4", "q3", "q1", "q5"]
    assert select_hardest(hard, 3) == ["q2", "q4", "q3"]
    assert select_hardest({"q4": 0.0, "q2": 0.0}, 1) == ["q4"]
    assert select_hardest(hard, 0) == []
    with pytest.raises(ValueError):
        select_hardest(hard, -1)


ORDER = ["a", "b", "c", "d"]
POS = {"a": True, "b": False, "c": True, "d": True}
WRONG = {"a": True, "b": True, "c": True, "d": False}


def test_plan_instances_without_cap_pressure():
    assert plan_instances(ORDER, POS, WRONG, cap=10) == [
        ("a", "bcq"), ("a", "ncq"), ("b", "ncq"), ("c", "bcq"), ("c", "ncq")]


def test_plan_instances_stops_at_first_overflow():
    # cap 4: a.bcq, a.ncq, b.ncq, c.bcq -> c's NCQ is the first overflow; nothing after it.
    want = [("a", "bcq"), ("a", "ncq"), ("b", "ncq"), ("c", "bcq")]
    assert plan_instances(ORDER, POS, WRONG, cap=4) == want
    # cap 1: a question can get its BCQ without its NCQ.
    assert plan_instances(ORDER, POS, WRONG, cap=1) == [("a", "bcq")]
    assert plan_instances(ORDER, POS, WRONG, cap=0) == []


def test_plan_instances_toggles():
    want = [("a", "ncq"), ("b", "ncq"), ("c", "ncq")]
    assert plan_instances(ORDER, POS, WRONG, cap=3, enable_bcq=False) == want
    assert plan_instances(ORDER, POS, WRONG, cap=9, enable_ncq=False) == [("a", "bcq"), ("c", "bcq")]
    # with BCQ off the teacher verdicts are never consulted
    assert plan_instances(["x"], {}, {"x": True}, cap=1, enable_bcq=False) == [("x", "ncq")]


def test_plan_instances_missing_verdict_is_an_error():
    with pytest.raises(KeyError):
        plan_instances(["x"], {"x": True}, {}, cap=2)
    with pytest.raises(ValueError):
        plan_instances(ORDER, POS, WRONG, cap=-1)


def test_caps():
    assert aug_cap(0.25, 384) == 96
    assert aug_cap(0.25, 10) == 2  # floor(2.5)
    assert aug_cap(0.0, 384) == 0
    assert replay_count(0.25, 384, available=1000) == 96
    assert replay_count(0.25, 384, available=40) == 40
    assert replay_count(0.25, 384, available=0) == 0
    assert floor_times(0.29, 100) == 29  # 0.29 * 100 == 28.999999999999996 in floats
    with pytest.raises(ValueError):
        aug_cap(-0.1, 10)
    with pytest.raises(ValueError):
        replay_count(0.25, 10, available=-1)
