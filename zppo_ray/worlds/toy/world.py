"""The toy world: verifiable arithmetic questions small enough for CPU-trained models.

Questions are chains of operations on digits in arithmetic modulo 10, evaluated from left to right
("3+8*2-5" = ((3+8)*2)-5 mod 10 = 7). Worked solutions write one step per operation
("3+8=1,1*2=2,2-5=7"): each step needs only the previous result (two tokens back), the next operator and
operand of the question, and a lookup in a 300-entry table, which a tiny transformer learns in a few
minutes of CPU time. Difficulty grows with the number of operands because finding the next operand
needs an induction pattern and per-step errors compound. That gives what ZPPO needs: a student that
solves part of the easy tier and little of the hard one, and a teacher that solves nearly everything.

Everything here is pure and seeded: the same seed gives the same questions on every machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from zppo_ray.data.schema import Question

OPS = "+-*"
MOD = 10
LETTERS = "ABCD"


def apply(a: int, op: str, b: int) -> int:
    if op == "+":
        return (a + b) % MOD
    if op == "-":
        return (a - b) % MOD
    if op == "*":
        return (a * b) % MOD
    raise ValueError(f"unknown operator {op!r}")


@dataclass(frozen=True)
class Expr:
    """A flat expression: nums[0] ops[0] nums[1] ops[1] ... nums[-1]."""

    nums: tuple[int, ...]
    ops: tuple[str, ...]

    def __str__(self) -> str:
        out = [str(self.nums[0])]
        for op, n in zip(self.ops, self.nums[1:]):
            out += [op, str(n)]
        return "".join(out)


Step = tuple[int, str, int, int]  # (running value, operator, operand, result)


def steps(expr: Expr, error_at: int | None = None, rng: random.Random | None = None) -> list[Step]:
    """The left-to-right steps of a solution.

    With `error_at`, that step gets a wrong result digit and later steps continue consistently from it,
    the way a real wrong solution looks.
    """
    out: list[Step] = []
    v = expr.nums[0]
    for i, (op, n) in enumerate(zip(expr.ops, expr.nums[1:])):
        r = apply(v, op, n)
        if i == error_at:
            r = (r + (rng or random).randint(1, MOD - 1)) % MOD
        out.append((v, op, n, r))
        v = r
    return out


def value(expr: Expr) -> int:
    return steps(expr)[-1][3] if expr.ops else expr.nums[0]


def precedence_value(expr: Expr) -> int:
    """The value under the usual order of operations: the classic slip, used as a distractor."""
    nums, ops = list(expr.nums), list(expr.ops)
    while "*" in ops:
        i = ops.index("*")
        nums[i:i + 2] = [apply(nums[i], "*", nums[i + 1])]
        del ops[i]
    v = nums[0]
    for op, n in zip(ops, nums[1:]):
        v = apply(v, op, n)
    return v


def random_expr(n_operands: int, rng: random.Random) -> Expr:
    nums = tuple(rng.randrange(MOD) for _ in range(n_operands))
    ops = tuple(rng.choice(OPS) for _ in range(n_operands - 1))
    return Expr(nums, ops)


def question_text(expr: Expr, choices: tuple[str, ...] | None = None) -> str:
    text = f"In arithmetic modulo 10, compute {expr} from left to right."
    if choices:
        text += "\n" + "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))
    return text


def solution_text(expr: Expr, error_at: int | None = None, rng: random.Random | None = None,
                  choices: tuple[str, ...] | None = None) -> tuple[str, str]:
    """A worked solution in the project's answer format, and its final answer.

    Returns (text, final answer): "<think>3+8=1,1*2=2,2-5=7</think>\\n\\boxed{7}".
    Multiple choice scans the options in order until one equals the computed value:
    "<think>3+8=1,1*2=2,2-5=7. A:4 vs 7 no, B:7 vs 7 yes</think>\\n\\boxed{B}". Why a scan: every
    piece is then a copy at a fixed offset or keyed on a unique letter, which a tiny model learns; a
    direct "value -> letter" lookup is keyed on a digit that appears all over the prompt and was not
    learned in the pretraining budget. No option matching (a wrong solution can land off the list)
    ends the scan with "none" and boxes the value itself.
    """
    st = steps(expr, error_at, rng)
    result = str(st[-1][3]) if st else str(expr.nums[0])
    work = ",".join(f"{v}{op}{n}={r}" for v, op, n, r in st)
    answer = result
    if choices is not None:
        checks = []
        for letter, c in zip(LETTERS, choices):
            checks.append(f"{letter}:{c} vs {result} {'yes' if c == result else 'no'}")
            if c == result:
                answer = letter
                break
        work += ". " + ", ".join(checks) + ("" if answer != result else ", none")
    return f"<think>{work}</think>\n\\boxed{{{answer}}}", answer


def shortcut_solution(expr: Expr, keep: int = 2) -> str:
    """The toy student's bad habit on long chains: work the first `keep` steps, then box that running
    value as if the chain ended there ("<think>3+8=1,1*2=2</think>\\n\\boxed{2}" for 3+8*2-5+4). Wrong
    unless the rest of the chain happens to return to the same digit."""
    st = steps(expr)[:keep]
    work = ",".join(f"{v}{op}{n}={r}" for v, op, n, r in st)
    return f"<think>{work}</think>\n\\boxed{{{st[-1][3]}}}"


def wrong_solution(expr: Expr, rng: random.Random,
                   choices: tuple[str, ...] | None = None) -> tuple[str, str]:
    """A plausible solution with one arithmetic slip; its computed result is always wrong."""
    if not expr.ops:
        raise ValueError(f"a single number has no wrong solution: {expr}")
    right = value(expr)
    while True:  # a slip changes the final value unless a later "*0"-like step absorbs it: retry
        k = rng.randrange(len(expr.ops))
        st_seed = rng.random()
        st = steps(expr, k, random.Random(st_seed))
        if st[-1][3] != right:
            return solution_text(expr, k, random.Random(st_seed), choices)


def mc_choices(expr: Expr, rng: random.Random) -> tuple[tuple[str, ...], str]:
    """Four distinct digit choices, one right; distractors favour plausible slips."""
    right = value(expr)
    pool = [precedence_value(expr), (right + 1) % MOD, (right - 1) % MOD] + list(range(MOD))
    distractors: list[int] = []
    for d in pool:
        if d != right and d not in distractors:
            distractors.append(d)
    picked = rng.sample(distractors[:6], 3)
    options = picked + [right]
    rng.shuffle(options)
    return tuple(str(o) for o in options), LETTERS[options.index(right)]


@dataclass(frozen=True)
class ToySpec:
    """What the generator makes: operand counts per tier and the multiple-choice share."""

    tiers: tuple[int, ...] = (2, 3, 5)
    mc_fraction: float = 0.25


def skills(expr: Expr) -> list[str]:
    """The distinct steps a chain needs, as operator + operand ("*7"): what a question's results can be broken
    down by, and what a model's corpus can hold out (ToyModelConfig.held_out)."""
    return sorted({f"{op}{n}" for op, n in zip(expr.ops, expr.nums[1:])})


def make_question(expr: Expr, tier: int, idx: int, split: str, mc: bool,
                  rng: random.Random) -> Question:
    extra = {"expr": str(expr), "skills": skills(expr)}
    if mc:
        choices, letter = mc_choices(expr, rng)
        return Question(id=f"toy-{split}-t{tier}-{idx}", prompt=question_text(expr, choices),
                        answer=letter, kind="mc", choices=choices, source="toy", tier=str(tier), extra=extra)
    return Question(id=f"toy-{split}-t{tier}-{idx}", prompt=question_text(expr),
                    answer=str(value(expr)), kind="math", source="toy", tier=str(tier), extra=extra)


def parse_expr(text: str) -> Expr:
    nums, ops = [int(text[0])], []
    for i in range(1, len(text), 2):
        ops.append(text[i])
        nums.append(int(text[i + 1]))
    return Expr(tuple(nums), tuple(ops))


def generate_split(spec: ToySpec, n_per_tier: int, seed: int, split: str,
                   exclude: set[str] = frozenset()) -> list[Question]:
    """`n_per_tier` distinct questions per tier whose expressions are not in `exclude`.

    The held-out split is generated first and its expressions are excluded from training, so the
    two never share a question. A tier with fewer distinct expressions than asked is filled as far
    as it goes (tier 1 has only 300).
    """
    rng = random.Random(f"{seed}:{split}")
    out: list[Question] = []
    for tier_idx, n_operands in enumerate(spec.tiers, start=1):
        space = MOD ** n_operands * len(OPS) ** (n_operands - 1)
        target = min(n_per_tier, space - sum(1 for e in exclude if len(e) == 2 * n_operands - 1))
        seen: set[str] = set()
        attempts = 0
        while len(seen) < target and attempts < 50 * n_per_tier + 1000:
            attempts += 1
            expr = random_expr(n_operands, rng)
            key = str(expr)
            if key in seen or key in exclude:
                continue
            seen.add(key)
            mc = rng.random() < spec.mc_fraction
            out.append(make_question(expr, tier_idx, len(seen) - 1, split, mc, rng))
    return out


def expr_of(q: Question) -> Expr:
    return parse_expr(q.extra["expr"])
