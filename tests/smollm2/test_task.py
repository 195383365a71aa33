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
