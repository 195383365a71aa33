"""math_equal / grade(kind="math"): equivalences through math-verify, the degree/percent second pass,
the cost caps, and grading off the main thread (threads and worker processes)."""

import threading
from concurrent.futures import ProcessPoolExecutor

import pytest

from zppo_ray.rewards import grade, grade_batch, math_equal, strip_degree_percent, too_costly
from zppo_ray.rewards.math_grader import MAX_MATH_CHARS

EQUAL = [
    ("1/2", "\\frac{1}{2}"),
    ("0.5", "\\frac{1}{2}"),
    ("\\dfrac12", "1/2"),
    ("\\frac{1}{2}", "0.5"),
    ("3.0", "3"),
    ("3", "3.0"),
    ("30^\\circ", "30"),
    ("30^{\\circ}", "30"),
    ("30°", "30"),  # math-verify alone does not parse this one: the second pass does
    ("30\\degree", "30"),
    ("50\\%", "50"),
    ("50%", "50"),
    ("50", "50\\%"),
    ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}"),
    ("2\\sqrt{3}", "\\sqrt{12}"),
    ("\\{1,2\\}", "\\{2,1\\}"),  # sets are unordered
    ("[1,2)", "[1, 2)"),
    ("x=3", "3"),
    ("1,000", "1000"),
    ("x^2+2x+1", "(x+1)^2"),
    ("$\\frac{1}{2}$", "0.5"),
    ("\\frac{1}{2}", "$0.5$"),
]

NOT_EQUAL = [
    ("-2", "2"),
    ("(1,2]", "[1,2]"),  # interval ends matter
    ("\\{1,2\\}", "\\{1,3\\}"),
    ("3", "4"),
    ("\\frac{\\sqrt{3}}{2}", "0.866"),  # 3-digit rounding is not equality
    ("", "3"),
    ("%", "3"),
    ("\\pm 2", "2"),
]


@pytest.mark.parametrize(("pred", "gold"), EQUAL)
def test_equal(pred, gold):
    assert math_equal(pred, gold)


@pytest.mark.parametrize(("pred", "gold"), NOT_EQUAL)
def test_not_equal(pred, gold):
    assert not math_equal(pred, gold)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30^\\circ", "30"), ("30^{\\circ}", "30"), ("30 ^ { \\circ }", "30"), ("30°", "30"),
     ("30\\degree", "30"), ("50\\%", "50"), ("50%", "50"), ("\\circledast", "\\circledast")],
)
def test_strip_degree_percent(text, expected):
    assert strip_degree_percent(text) == expected


@pytest.mark.parametrize(
    ("response", "gold", "reward"),
    [
        ("... so the answer is \\boxed{\\frac{1}{\\sqrt{2}}}.", "\\frac{\\sqrt{2}}{2}", 1.0),
        ("first \\boxed{3} then corrected: \\boxed{4}", "4", 1.0),
        ("first \\boxed{4} then corrected: \\boxed{3}", "4", 0.0),
        ("The answer is 4.", "4", 0.0),  # no box → 0
        ("\\boxed{0.5}", "1/2", 1.0),
        ("\\boxed{-2}", "2", 0.0),
        ("<think>maybe \\boxed{1}</think> \\boxed{30^\\circ}", "30", 1.0),
    ],
)
def test_grade_math(response, gold, reward):
    assert grade(response, gold, "math") == reward


def test_grade_batch_and_errors():
    assert grade_batch(["\\boxed{1}", "\\boxed{2}", "B"], ["1", "3", "B"], ["math", "math", "mc"]) == [1.0, 0.0, 1.0]
    assert grade_batch(["\\boxed{1}", "x"], ["1", "1"], "math") == [1.0, 0.0]
    with pytest.raises(ValueError, match="aligned"):
        grade_batch(["\\boxed{1}"], ["1", "2"], "math")
    with pytest.raises(ValueError, match="judge"):
        grade("anything", "Paris", "free")
    with pytest.raises(ValueError, match="allowed kinds"):
        grade("\\boxed{1}", "1", "essay")
    with pytest.raises(ValueError, match="empty"):
        math_equal("1", " ")
    with pytest.raises(ValueError, match="MAX_MATH_CHARS"):
        math_equal("1", "1" * (MAX_MATH_CHARS + 1))
    with pytest.raises(TypeError):
        math_equal(1, "1")
    with pytest.raises(ValueError, match="timeout_s"):
        math_equal("1", "1", timeout_s=0)


# Answers that make SymPy build astronomically large integers or expansions: with math-verify's alarm
# disabled (off the main thread) each of these ran for minutes or never finished before the cost guard.
EXPLOSIVE = [
    "10^{10^{10}}",
    "9^{9^{9}}",
    "(10)!!",
    "\\Gamma(10^{10})",
    "\\binom{10^{9}}{10^{5}}",
    "123456789123456789^{123456789}",
    "\\log(10^{10^{10}})",
    "1^{10^{10^{10}}}",
    "(a+b+c+d+e+f)^{15}",
    "(x+1)^{1000}",
    "\\prod_{k=1}^{10^{6}} k",
    "\\int_0^{10^{10}} x^{10^5} dx",
    "^".join(["2"] * 300),
]


@pytest.mark.parametrize("pred", EXPLOSIVE)
def test_explosive_answers_are_rejected_quickly(pred):
    assert not math_equal(pred, "5", timeout_s=None)


def test_cost_guard_keeps_ordinary_answers():
    from math_verify import parse

    for ok in ["\\frac{1}{2}", "2^{100}", "10^{1000}", "1000!", "\\binom{10}{3}", "(x+1)^{10}",
               "6.02\\times10^{23}", "e^{i\\pi}", "[1,2)", "x=3"]:
        assert not any(too_costly(x) for x in parse("\\boxed{" + ok + "}", parsing_timeout=None)), ok
    assert math_equal("2^{10}", "1024")
    assert math_equal("5!", "120")


@pytest.mark.parametrize(
    "pred",
    [
        "{" * 1000,
        "(" * 500 + "1" + ")" * 500,
        "\\frac{1}{" * 100 + "2" + "}" * 100,
        "x^" * 499 + "2",
        "1\x002",
        "\u202e3\u200b",
        "😀" * 300,
        "\\" * 1000,
        "$" * 1000,
        "1" * (MAX_MATH_CHARS + 1),
    ],
    ids=["braces", "parens", "deep-frac", "pow-chain", "NUL", "bidi", "emoji", "backslashes", "dollars",
         "too-long"],
)
def test_adversarial_predictions_are_wrong(pred):
    assert not math_equal(pred, "5", timeout_s=None)


def test_adversarial_responses_through_grade():
    assert grade("{" * 5_000_000, "5") == 0.0
    assert grade("\\boxed{" + "{" * 100_000 + "5" + "}" * 100_000 + "}", "5") == 0.0
    assert grade("\x00" * 100_000 + "\\boxed{5}", "5") == 1.0


CASES = [("\\boxed{\\frac{1}{2}}", "0.5", 1.0), ("\\boxed{30^\\circ}", "30", 1.0), ("\\boxed{-2}", "2", 0.0),
         ("\\boxed{9^{9^{9}}}", "5", 0.0)]


def test_grading_from_a_thread():
    """Off the main thread math-verify's signal.alarm cannot be used; grading must still work."""
    results: list = []
    errors: list = []

    def work():
        try:
            results.extend(grade(r, g) for r, g, _ in CASES)
        except BaseException as exc:  # surfaced below: a thread swallows exceptions otherwise
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert not errors, errors
    assert results == [want for _, _, want in CASES]


def _grade_case(case):
    response, gold, _ = case
    return grade(response, gold)


def test_grading_in_worker_processes():
    """A process-pool worker runs tasks on its main thread, where math-verify's alarm is allowed."""
    with ProcessPoolExecutor(max_workers=2) as pool:
        assert list(pool.map(_grade_case, CASES)) == [want for _, _, want in CASES]
