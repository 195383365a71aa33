"""The smollm2 world's task: column addition in tiers, every question with a worked solution.

SmolLM2-135M-Instruct adds one-digit numbers now and then and fails longer sums ("12 + 7 = 9"), and it rarely
follows the paper's answer format; a teacher fine-tuned on the worked solutions below does both. Tiers grow
with the number of digits (tier 1: one digit, tier 2: two, tier 3: three), so carries and their cascades
are the skill that separates them. Every solution step is checkable from the question and the step before
(one column, its carry), which is what makes a worked candidate readable in a BCQ prompt.

Questions are generated, not downloaded: a held-out split ("eval") first, then "train" without any of its
sums, so the two never share a question.
"""

from __future__ import annotations

import random

from zppo_ray.data.schema import Question

VERSION = 2  # bump when questions or worked solutions change: the teacher cache key includes it
COLUMNS = ("units", "tens", "hundreds", "thousands", "ten-thousands")


def question_text(a: int, b: int) -> str:
    return f"What is {a} + {b}?"


def worked_solution(a: int, b: int) -> str:
    """Column by column from the units, each step naming its carry; the answer boxed after the reasoning,
    in the format the paper's closer asks for."""
    steps, carry, i = [], 0, 0
    x, y = a, b
    while x or y or carry or i == 0:
        dx, dy = x % 10, y % 10
        total = dx + dy + carry
        plus_carry = f" + {carry}" if carry else ""
        carry_text = f", carry {total // 10}" if total >= 10 else ""
        steps.append(f"{COLUMNS[i].capitalize()}: {dx} + {dy}{plus_carry} = {total}, write {total % 10}{carry_text}.")
        carry, x, y, i = total // 10, x // 10, y // 10, i + 1
        if not (x or y) and carry:  # the last carry becomes the leading digit
            steps.append(f"The carry {carry} leads.")
            break
    return f"<think>{' '.join(steps)} So {a} + {b} = {a + b}.</think>\n\\boxed{{{a + b}}}"


def carries(a: int, b: int) -> bool:
    """Whether adding a and b carries in any column (the skill the warmed-up student never saw)."""
    while a or b:
        if a % 10 + b % 10 >= 10:
            return True
        a, b = a // 10, b // 10
    return False


def has_carry(q: Question) -> bool:
    a, b = map(int, q.extra["sum"].split("+"))
    return carries(a, b)


def _operands(tier: int, rng: random.Random) -> tuple[int, int]:
    lo, hi = (1, 9) if tier == 1 else (10 ** (tier - 1), 10 ** tier - 1)
    return rng.randint(lo, hi), rng.randint(lo, hi)


def tier_size(tier: int) -> int:
    """How many distinct sums a tier has (tier 1: 9 x 9 = 81)."""
    return 81 if tier == 1 else (9 * 10 ** (tier - 1)) ** 2


def generate(n_per_tier: int, tiers: int, seed: int, split: str, exclude: frozenset[str] = frozenset(),
             max_share: float = 1.0) -> list[Question]:
    """`n_per_tier` distinct sums per tier, none in `exclude`; at most `max_share` of a tier's sums (fewer
    where the tier has fewer left: tier 1 has 81 in all)."""
    rng = random.Random(f"{seed}:{split}")
    out: list[Question] = []
    for tier in range(1, tiers + 1):
        want = min(n_per_tier, int(tier_size(tier) * max_share))
        seen: set[str] = set()
        for _ in range(50 * want + 1000):
            if len(seen) >= want:
                break
            a, b = _operands(tier, rng)
            key = f"{a}+{b}"
            if key in seen or key in exclude:
                continue
            seen.add(key)
            out.append(Question(id=f"smollm2-{split}-t{tier}-{len(seen) - 1}", prompt=question_text(a, b),
                                answer=str(a + b), kind="math", source="smollm2", tier=str(tier),
                                extra={"sum": key, "solution": worked_solution(a, b),
                                       "skills": ["carry"] if carries(a, b) else []}))
    return out


def splits(n_train: int, n_eval: int, tiers: int, seed: int, split: str) -> list[Question]:
    """The held-out split ("eval", at most a third of any tier, so that a small tier keeps sums to train on)
    and "train" (none of its sums held out)."""
    held_out = generate(n_eval, tiers, seed, "eval", max_share=1 / 3)
    if split == "eval":
        return held_out
    if split == "train":
        return generate(n_train, tiers, seed, "train", frozenset(q.extra["sum"] for q in held_out))
    raise ValueError(f"smollm2 split must be 'train' or 'eval', got {split!r}")
