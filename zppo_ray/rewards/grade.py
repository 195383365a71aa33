"""The binary reward: one entry point per question kind (spec section 4).

``math``: last ``\\boxed{}`` of the response vs the gold answer by mathematical equivalence (no box → 0).
``mc``: option letter match. ``free``: needs the LLM judge, which is the teacher model and therefore
lives in an actor, not here; ``grade`` refuses it loudly instead of returning a silent 0, and the judge's
raw output is turned into a reward by ``grade_judged``.
"""

from __future__ import annotations

from collections.abc import Sequence

from zppo_ray.data.schema import KINDS

from .choice import choice_equal
from .extract import last_boxed
from .judge import grade_judged
from .math_grader import check_gold, math_equal

GRADABLE_KINDS = ("math", "mc")


def grade(response: str, gold: str, kind: str = "math") -> float:
    """1.0 if ``response`` answers ``gold`` correctly for a question of ``kind``, else 0.0."""
    if not isinstance(response, str):
        raise TypeError(f"response must be str, got {type(response).__name__}")
    if kind == "math":
        check_gold(gold)  # first: a broken gold must fail on every response, not only on boxed ones
        pred = last_boxed(response)
        return 1.0 if pred is not None and math_equal(pred, gold) else 0.0
    if kind == "mc":
        return 1.0 if choice_equal(response, gold) else 0.0
    if kind == "free":
        raise ValueError(
            "free-form answers need the LLM judge (the teacher model): ask the judge with JUDGE_SCHEMA "
            "and pass its raw output to grade_judged()"
        )
    raise ValueError(f"unknown question kind {kind!r}; allowed kinds are {KINDS} ('free' via grade_judged)")


def grade_batch(
    responses: Sequence[str], golds: Sequence[str], kinds: Sequence[str] | str = "math"
) -> list[float]:
    """``grade`` over aligned sequences; ``kinds`` may be one kind for all. Lengths must match."""
    if isinstance(kinds, str):
        kinds = [kinds] * len(responses)
    if not (len(responses) == len(golds) == len(kinds)):
        raise ValueError(
            f"grade_batch needs aligned inputs: {len(responses)} responses, {len(golds)} golds, "
            f"{len(kinds)} kinds"
        )
    return [grade(r, g, k) for r, g, k in zip(responses, golds, kinds)]


__all__ = ["GRADABLE_KINDS", "grade", "grade_batch", "grade_judged"]
