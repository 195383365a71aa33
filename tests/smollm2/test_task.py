"""The smollm2 world's generated task: worked solutions that are right step by step, disjoint splits."""

import re

import pytest

from zppo_ray.rewards import grade
from zppo_ray.worlds.smollm2.task import splits, worked_solution


@pytest.mark.parametrize("a,b", [(3, 5), (7, 8), (47, 38), (999, 1), (505, 495), (10, 90)])
def test_a_worked_solution_is_right_at_every_column_and_graded_right(a, b):
    sol = worked_solution(a, b)
    assert grade(sol, str(a + b), "math") == 1.0
    digits, carry = [], 0
    for dx, dy, c, total, w in re.findall(r": (\d) \+ (\d)(?: \+ (\d))? = (\d+), write (\d)", sol):
        assert int(c or 0) == carry and int(dx) + int(dy) + carry == int(total) and int(w) == int(total) % 10
        digits.append(w)
        carry = int(total) // 10
    lead = re.search(r"The carry (\d) leads", sol)
    assert int((lead.group(1) if lead else "") + "".join(reversed(digits))) == a + b


def test_splits_are_disjoint_tiered_and_deterministic():
    train, held = splits(60, 20, 3, 0, "train"), splits(60, 20, 3, 0, "eval")
    assert {q.extra["sum"] for q in train}.isdisjoint(q.extra["sum"] for q in held)
    assert sorted({q.tier for q in train}) == ["1", "2", "3"] and len(held) == 60
    assert [q.id for q in splits(60, 20, 3, 0, "train")] == [q.id for q in train]
    with pytest.raises(ValueError, match="'test'"):
        splits(60, 20, 3, 0, "test")


def test_a_small_tier_keeps_two_thirds_of_its_sums_for_training():
    from zppo_ray.worlds.smollm2.task import tier_size

    held, train = splits(200, 50, 2, 0, "eval"), splits(200, 50, 2, 0, "train")
    t1_held = {q.extra["sum"] for q in held if q.tier == "1"}
    t1_train = {q.extra["sum"] for q in train if q.tier == "1"}
    assert len(t1_held) == tier_size(1) // 3 == 27 and len(t1_train) == 54 and t1_held.isdisjoint(t1_train)
    assert sum(q.tier == "2" for q in held) == 50  # a large tier is not capped


def test_the_teacher_pool_weighs_every_tier_equally():
    from zppo_ray.worlds.smollm2.models import _balanced
    from zppo_ray.worlds.smollm2.task import generate

    pool = _balanced(generate(300, 2, 0, "sft"), 300)
    assert [sum(q.tier == t for q in pool) for t in ("1", "2")] == [300, 300]
    assert len({q.extra["sum"] for q in pool if q.tier == "1"}) == 81


@pytest.mark.parametrize("a,b,carry", [(3, 5, False), (7, 8, True), (45, 54, False), (45, 55, True), (909, 91, True),
                                       (100, 899, False)])
def test_a_carry_is_any_column_summing_past_nine(a, b, carry):
    from zppo_ray.worlds.smollm2.task import carries

    assert carries(a, b) is carry and ("carry" in worked_solution(a, b)) is carry
