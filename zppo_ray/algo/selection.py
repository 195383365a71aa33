"""Hard-question selection and the per-step caps (spec §2 steps 1, 3, 5, 6).

Pure functions over question ids (any hashable) and plain accuracies; the trainer feeds them the plain
rollouts' group means.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from fractions import Fraction
from typing import Literal

InstanceKind = Literal["bcq", "ncq"]


def floor_times(x: float, n: int) -> int:
    """floor(x * n) computed on the decimal value of `x`, not its binary approximation.

    Why: 0.29 * 100 is 28.999999999999996 in floats, so a naive floor would lose one item; a config
    value 0.29 means 29/100. `repr` gives the shortest decimal that round-trips, i.e. what was written.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return math.floor(Fraction(repr(float(x))) * n)


def aug_cap(rho_aug: float, n_new: int) -> int:
    """floor(rho_aug * |X_new|): the cap on kept hard questions and on BCQ+NCQ instances per step."""
    if rho_aug < 0:
        raise ValueError(f"rho_aug must be >= 0, got {rho_aug}")
    return floor_times(rho_aug, n_new)


def replay_count(rho_replay: float, n_new: int, available: int) -> int:
    """How many questions to draw from the buffer: floor(rho_replay * |X_new|), fewer if it holds fewer."""
    if rho_replay < 0 or available < 0:
        raise ValueError(f"need rho_replay >= 0 and available >= 0, got {rho_replay}, {available}")
    return min(floor_times(rho_replay, n_new), available)


def select_hardest(hard: Mapping[Hashable, float], k: int) -> list[Hashable]:
    """The `k` lowest-accuracy questions, hardest first.

    Ties keep the mapping's insertion order (Python's sort is stable), so the result is deterministic given
    the order the trainer builds the mapping in (new questions, then replayed ones, as drawn).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return sorted(hard, key=lambda q: hard[q])[:k]


def plan_instances(
    ordered_hard: Sequence[Hashable],
    has_teacher_positive: Mapping[Hashable, bool],
    has_student_wrong: Mapping[Hashable, bool],
    cap: int,
    enable_bcq: bool = True,
    enable_ncq: bool = True,
) -> list[tuple[Hashable, InstanceKind]]:
    """Which BCQ/NCQ instances to build, hardest first, at most `cap` of them.

    For each question: a BCQ if the teacher has a correct sample and the student a wrong one, then an NCQ
    if the student has a wrong one. The walk stops at the first instance that would overflow the cap, so a
    question may get its BCQ but not its NCQ, and nothing after it is considered (spec §2 step 6).
    Missing keys raise KeyError: a question without a verdict is a trainer bug, not "no".
    """
    if cap < 0:
        raise ValueError(f"cap must be >= 0, got {cap}")
    plan: list[tuple[Hashable, InstanceKind]] = []
    for q in ordered_hard:
        wrong = has_student_wrong[q]
        wanted: list[InstanceKind] = []
        if enable_bcq and wrong and has_teacher_positive[q]:
            wanted.append("bcq")
        if enable_ncq and wrong:
            wanted.append("ncq")
        for kind in wanted:
            if len(plan) >= cap:
                return plan
            plan.append((q, kind))
    return plan
