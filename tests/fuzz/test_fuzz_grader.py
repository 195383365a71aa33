"""Fuzzing the binary grader (zppo_ray.rewards): any response, any gold, any kind.

Contract under test (rewards/grade.py, extract.py, math_grader.py, choice.py):

* ``grade`` returns exactly 0.0 or 1.0, or raises a ValueError/TypeError that names the bad input: the
  kind ("unknown question kind", "judge" for free), or the gold (empty / longer than MAX_MATH_CHARS / not
  an option letter). Whether it raises depends on the gold and kind only, never on the response: a broken
  gold must not hide behind responses that happen to have no box.
* a response that is exactly ``\\boxed{gold}`` grades 1.0 for a well-formed gold;
* huge and deeply nested responses return promptly (math-verify's own SIGALRM limit is on, as the tests run
  on the main thread; the caps of math_grader bound the rest).
"""

from __future__ import annotations

import faulthandler
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zppo_ray.rewards import LETTERS, choice_letter, grade, last_boxed, math_equal, normalize_gold_letter
from zppo_ray.rewards.math_grader import MAX_MATH_CHARS

SCALE = int(os.environ.get("ZPPO_FUZZ_SCALE", "1"))

# Pieces that matter to the extractors and parsers, mixed with arbitrary text.
FRAGMENTS = [
    "\\boxed{", "\\boxed", "\\fbox{", "\\boxed {", "{", "}", "\\{", "\\}", "\\", "\\\\", "$", "$$", "\\(", "\\)",
    "\\frac{1}{2}", "0.5", "1/2", "-", "^", "^\\circ", "°", "%", "\\%", "\\text{", "\\sqrt{", "(", ")", "[", "]",
    ",", "=", "x", "3", "A", "b", "(C)", "D.", "answer", "answer is ", "Answer: ", "option ", "the answer is ",
    "\n", " ", "\t", "**", "<think>", "</think>", "\x00", "😀", "\u202e", "ı", "Ⅷ", "١",
]
fragment_text = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=40).map("".join)
any_text = st.text(max_size=120) | fragment_text
any_kind = st.sampled_from(["math", "mc", "free"]) | st.text(max_size=6) | st.none() | st.integers()
any_gold = any_text | st.sampled_from(["", " ", "1" * (MAX_MATH_CHARS + 1), "B", "(c)", "K", "5"])


def _expected_error(gold: object, kind: object) -> tuple[type, str] | None:
    """What grade must raise for this gold and kind, whatever the response (None: must not raise)."""
    if kind == "free":
        return ValueError, "judge"
    if kind not in ("math", "mc"):
        return ValueError, "unknown question kind"
    if not isinstance(gold, str):
        return TypeError, "gold"
    if kind == "mc":
        try:
            normalize_gold_letter(gold)
        except ValueError:
            return ValueError, "gold letter"
        return None
    if not gold.strip():
        return ValueError, "gold answer is empty"
    if len(gold) > MAX_MATH_CHARS:
        return ValueError, "MAX_MATH_CHARS"
    return None


@settings(max_examples=150 * SCALE)
@given(response=any_text, gold=any_gold, kind=any_kind)
@example(response="no box at all", gold="", kind="math")  # a blank gold is a data error with or without a box
@example(response="no box at all", gold="1" * (MAX_MATH_CHARS + 1), kind="math")
@example(response="\\boxed{5}", gold=5, kind="math")
@example(response="nothing", gold="K", kind="mc")
def test_grade_is_binary_or_names_the_bad_input(response, gold, kind):
    want = _expected_error(gold, kind)
    if want is None:
        reward = grade(response, gold, kind)
        assert type(reward) is float and reward in (0.0, 1.0)
        return
    exc, words = want
    with pytest.raises(exc, match=words):
        grade(response, gold, kind)


# ----------------------------------------------------------------------------------- well-formed golds


def _num(draw_int: int, draw_frac: int) -> str:
    return f"{draw_int}.{draw_frac:02d}" if draw_frac else str(draw_int)


small_int = st.integers(-999, 999).map(str)
decimal = st.builds(_num, st.integers(-99, 99), st.integers(0, 99))
atom = st.one_of(
    small_int,
    decimal,
    st.integers(2, 50).map(lambda n: f"\\sqrt{{{n}}}"),
    st.tuples(st.integers(-50, 50), st.integers(1, 50)).map(lambda t: f"\\frac{{{t[0]}}}{{{t[1]}}}"),
    st.tuples(st.integers(1, 9), st.integers(2, 30)).map(lambda t: f"{t[0]}\\sqrt{{{t[1]}}}"),
    st.sampled_from(["\\pi", "2\\pi", "x", "y", "e", "\\infty"]),
)


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, st.sampled_from(["+", "-", "\\cdot "]), children).map(lambda t: f"{t[0]}{t[1]}{t[2]}"),
        st.tuples(children, st.integers(1, 50)).map(lambda t: f"\\frac{{{t[0]}}}{{{t[1]}}}"),
        st.tuples(children, st.integers(0, 3)).map(lambda t: f"({t[0]})^{{{t[1]}}}"),
        children.map(lambda c: f"-({c})"),
    )


expression = st.recursive(atom, _combine, max_leaves=4)
structured = st.one_of(
    st.tuples(st.integers(-20, 20), st.integers(1, 20), st.sampled_from("[("), st.sampled_from("])")).map(
        lambda t: f"{t[2]}{t[0]}, {t[0] + t[1]}{t[3]}"),  # an interval with lo < hi
    st.lists(small_int, min_size=1, max_size=4, unique=True).map(lambda xs: "\\{" + ", ".join(xs) + "\\}"),
    st.lists(small_int, min_size=2, max_size=3).map(lambda xs: "(" + ", ".join(xs) + ")"),
    st.integers(0, 360).map(lambda n: f"{n}^\\circ"),
    st.integers(0, 100).map(lambda n: f"{n}\\%"),
    expression.map(lambda e: f"x = {e}"),
)
well_formed_gold = st.one_of(expression, structured)


@settings(max_examples=60 * SCALE)
@given(gold=well_formed_gold, pad=st.sampled_from(["", " ", "\n"]))
@example(gold="\\frac{1}{2}", pad="")
@example(gold="\\infty", pad="")
def test_boxed_gold_grades_one(gold, pad):
    assert grade(f"\\boxed{{{pad}{gold}{pad}}}", gold, "math") == 1.0


@settings(max_examples=40 * SCALE)
@given(gold=well_formed_gold)
def test_grading_does_not_depend_on_the_thread(gold):
    """math_grader promises the same grade on and off the main thread (alarm vs deterministic caps)."""
    response = f"so \\boxed{{{gold}}}"
    assert threading.current_thread() is threading.main_thread()
    here = grade(response, gold, "math")
    with ThreadPoolExecutor(1) as pool:
        there = pool.submit(grade, response, gold, "math").result()
    assert here == there == 1.0


mc_gold = st.tuples(st.sampled_from(LETTERS + LETTERS.lower()), st.sampled_from(
    ["{}", "({})", "{}.", "[{}]", "{})", "\\text{{{}}}", "${}$", "**{}**", " {} ", "({}).", "\\textbf{{{}}}"]
)).map(lambda t: t[1].format(t[0]))


@settings(max_examples=60 * SCALE)
@given(gold=mc_gold, other=st.sampled_from(LETTERS))
def test_boxed_mc_gold_grades_one_and_other_letters_zero(gold, other):
    letter = normalize_gold_letter(gold)
    assert grade(f"\\boxed{{{gold}}}", gold, "mc") == 1.0
    assert grade(f"The answer is \\boxed{{{other}}}", gold, "mc") == (1.0 if other == letter else 0.0)


@settings(max_examples=100 * SCALE)
@given(text=any_text)
def test_choice_letter_is_a_valid_letter_or_none(text):
    letter = choice_letter(text)
    assert letter is None or (len(letter) == 1 and letter in LETTERS)


@settings(max_examples=100 * SCALE)
@given(prefix=any_text, content=any_text, suffix=any_text)
def test_last_boxed_finds_an_appended_balanced_box(prefix, content, suffix):
    """A closed box appended last is the one extracted, whatever precedes it."""
    extracted = last_boxed(prefix + "\\boxed{" + content + "}" + suffix)
    if "\\boxed" in suffix or "\\fbox" in suffix or "\\" in content or "{" in content or "}" in content:
        assert extracted is None or isinstance(extracted, str)  # nesting/escapes/later boxes: other rules
    else:
        assert extracted == content.strip()


@settings(max_examples=60 * SCALE)
@given(pred=any_text, gold=well_formed_gold)
def test_math_equal_never_raises_for_a_valid_gold(pred, gold):
    """Any prediction against a valid gold is a bool (never an exception from math-verify or SymPy)."""
    assert math_equal(pred[:MAX_MATH_CHARS], gold) in (True, False)


# ----------------------------------------------------------------------------------- huge / nested input

HUGE_PIECES = ["{", "}", "\\boxed{", "\\boxed ", "\\fbox{", "(", "\\frac{1}{", "^{", "answer: ", "answer is ",
               " ", "\\", "$", "\\text{", "x^", "9^{9^{", "\\sqrt{", "10^{10^{", "(x+1)^{1000}", "!"]


@st.composite
def huge_response(draw) -> str:
    piece = draw(st.sampled_from(HUGE_PIECES) | st.text(min_size=1, max_size=3))
    n = draw(st.integers(1_000, 100_000 // len(piece)))
    head = draw(st.sampled_from(["", "\\boxed{", "The answer is ", "\\boxed{\\frac{"]))
    tail = draw(st.sampled_from(["", "}", "\\boxed{5}", "5}" * 3, "\\boxed{" + "{" * 40 + "5" + "}" * 40 + "}",
                                 "\\boxed{" + "(" * 200 + "5" + ")" * 200 + "}", "answer: B", "\\boxed{9^{9^{9}}}"]))
    return head + piece * n + tail


@contextmanager
def hang_guard(seconds: float = 120):
    """Kill the process with every thread's traceback if the block runs longer than `seconds`: a hang must
    fail loudly, not stall the suite. A watchdog thread, not a signal: math-verify owns SIGALRM."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@settings(max_examples=25 * SCALE)
@given(response=huge_response(), kind=st.sampled_from(["math", "mc"]))
def test_huge_and_nested_responses_return_promptly(response, kind):
    gold = "5" if kind == "math" else "B"
    start = time.monotonic()
    with hang_guard():
        reward = grade(response, gold, kind)
    elapsed = time.monotonic() - start
    assert reward in (0.0, 1.0)
    assert elapsed < 20, f"{elapsed:.1f} s for a {len(response)}-char response"
