import random

import pytest

from zppo_ray.worlds.toy.world import (
    Expr,
    ToySpec,
    expr_of,
    generate_split,
    mc_choices,
    parse_expr,
    precedence_value,
    solution_text,
    steps,
    value,
    wrong_solution,
)


def test_left_to_right_mod_10():
    e = parse_expr("3+8*2-5")
    assert steps(e) == [(3, "+", 8, 1), (1, "*", 2, 2), (2, "-", 5, 7)]
    assert value(e) == 7
    assert precedence_value(e) == 4  # 3 + 16 - 5 = 14 -> 4: the distractor, not the answer
    assert value(parse_expr("2-7")) == 5  # (2 - 7) mod 10
    assert value(parse_expr("9*9*9")) == 9  # 81 -> 1, 1*9
    assert value(parse_expr("7")) == 7


def test_solution_text_format():
    text, answer = solution_text(parse_expr("3+8*2-5"))
    assert text == "<think>3+8=1,1*2=2,2-5=7</think>\n\\boxed{7}"
    assert answer == "7"
    text, answer = solution_text(parse_expr("1+2"), choices=("7", "3", "1", "0"))
    assert answer == "B"
    assert text == "<think>1+2=3. A:7 vs 3 no, B:3 vs 3 yes</think>\n\\boxed{B}"
    # a value off the list: the scan ends with "none" and boxes the value (graded wrong for mc)
    text, answer = solution_text(parse_expr("1+2"), choices=("7", "4", "1", "0"))
    assert answer == "3" and text.endswith("D:0 vs 3 no, none</think>\n\\boxed{3}")


def test_wrong_solution_is_wrong_and_consistent():
    rng = random.Random(0)
    for _ in range(200):
        e = Expr(tuple(rng.randrange(10) for _ in range(4)), tuple(rng.choice("+-*") for _ in range(3)))
        text, answer = wrong_solution(e, rng)
        assert answer != str(value(e))
        written = text[len("<think>"):text.index("</think>")].split(",")
        assert len(written) == len(e.ops)
        # exactly one step is a slip; every step starts from the previous written result
        slips, prev = 0, str(e.nums[0])
        for step, op, n in zip(written, e.ops, e.nums[1:]):
            lhs, res = step.split("=")
            assert lhs == f"{prev}{op}{n}"
            slips += str(value(parse_expr(lhs))) != res
            prev = res
        assert slips == 1


def test_mc_choices_have_exactly_one_right_answer():
    rng = random.Random(1)
    for _ in range(100):
        e = Expr((rng.randrange(10), rng.randrange(10)), (rng.choice("+-*"),))
        choices, letter = mc_choices(e, rng)
        assert len(set(choices)) == 4
        assert choices["ABCD".index(letter)] == str(value(e))


def test_splits_deterministic_and_disjoint():
    spec = ToySpec(tiers=(2, 3, 5))
    ev = generate_split(spec, 40, 7, "eval")
    ev2 = generate_split(spec, 40, 7, "eval")
    assert ev == ev2
    tr = generate_split(spec, 300, 7, "train", exclude={q.extra["expr"] for q in ev})
    assert not {q.extra["expr"] for q in ev} & {q.extra["expr"] for q in tr}
    assert len({q.id for q in tr}) == len(tr)
    # tier 1 (2 operands) has only 300 distinct expressions: the train split fills what is left
    assert sum(q.tier == "1" for q in tr) == 300 - sum(q.tier == "1" for q in ev)
    assert {q.kind for q in tr} == {"math", "mc"}
    for q in tr[:50]:
        assert q.answer == (str(value(expr_of(q))) if q.kind == "math"
                            else "ABCD"[q.choices.index(str(value(expr_of(q))))])


def test_generate_split_other_seed_differs():
    spec = ToySpec()
    assert generate_split(spec, 20, 0, "eval") != generate_split(spec, 20, 1, "eval")


@pytest.mark.parametrize("text", ["3+8*2-5", "0", "9*9-1+2*3"])
def test_parse_roundtrip(text):
    assert str(parse_expr(text)) == text


def test_worked_solutions_grade_right_and_slips_grade_wrong_in_both_kinds():
    from zppo_ray.rewards import grade

    rng = random.Random(5)
    qs = generate_split(ToySpec(tiers=(2, 3, 5), mc_fraction=0.5), 30, 2, "eval")
    assert {q.kind for q in qs} == {"math", "mc"}
    for q in qs:
        e = expr_of(q)
        right, _ = solution_text(e, choices=q.choices)
        wrong, _ = wrong_solution(e, rng, q.choices)
        assert grade(right, q.answer, q.kind) == 1.0, (q, right)
        assert grade(wrong, q.answer, q.kind) == 0.0, (q, wrong)
