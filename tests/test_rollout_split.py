"""How a rollout pool splits a call's requests over its workers (zppo_ray/actors/rollout.py)."""

from zppo_ray.actors.rollout import balanced_split


def test_balanced_split():
    groups = balanced_split([8, 8, 1, 1, 4, 4, 2], 3)
    assert sorted(i for g in groups for i in g) == list(range(7))
    loads = [sum([8, 8, 1, 1, 4, 4, 2][i] for i in g) for g in groups]
    assert max(loads) - min(loads) <= 2 and all(g == sorted(g) for g in groups)
    assert balanced_split([1], 3) == [[0], [], []]
