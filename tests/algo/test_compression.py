"""What counts as a faithful summary, and caps that keep the final answer (zppo_ray/algo/compression.py)."""

import pytest

from zppo_ray.algo.compression import cap_candidate, cap_lines, final_answer, summary_rejection, uniform_form


@pytest.mark.parametrize("summary, candidate, reason", [
    ("3+4=7\n\\boxed{7}", "<think>long</think>\\boxed{7}", None),
    ("3+4=7\n\\boxed{ 7 }", "\\boxed{7}", None),  # like with like: whitespace normalised on both sides
    ("", "\\boxed{7}", "empty"),
    ("3+4=7", "\\boxed{7}", "no_boxed"),
    ("\\boxed{8}", "\\boxed{7}", "answer_changed"),
    # a candidate cut at the token limit has no final answer: its summary must have none either
    ("3+4=7, then 7*2=", "<think>3+4=7, then 7*2=", None),
    ("3+4=7\n\\boxed{4}", "<think>3+4=7, then 7*2=", "answer_added"),
])
def test_summary_rejection(summary, candidate, reason):
    assert summary_rejection(summary, candidate) == reason


def test_the_answer_is_checked_before_the_line_cap():
    """The old check ran on the summary cut to 5 lines: a 7-line summary lost its \\boxed line and was
    rejected (or, worse, judged on what was left). Now: check the whole summary, cut keeping the answer."""
    summary = "\n".join(f"step {i}" for i in range(6)) + "\nso \\boxed{7}"
    assert summary_rejection(summary, "\\boxed{7}") is None
    capped = cap_lines(summary, 5)
    assert capped.splitlines() == ["step 0", "step 1", "step 2", "step 3", "so \\boxed{7}"]
    assert final_answer(capped) == "7"
    assert cap_lines("a\nb\nc", 2) == "a\nb"  # no answer line: the head
    assert cap_lines("a\n\\boxed{1}\nc", 2) == "a\n\\boxed{1}"  # the answer line is inside the head


def test_token_cap_keeps_the_answer_line():
    enc = lambda t: list(t)  # noqa: E731 - one token per character
    dec = "".join
    text = "x" * 50 + "\n\\boxed{42}"
    out = cap_candidate(text, 5, 20, enc, dec)
    assert len(out) <= 20 and out.endswith("\n\\boxed{42}") and final_answer(out) == "42"
    assert cap_candidate("y" * 50, 5, 10, enc, dec) == "y" * 10  # no answer: the head


def test_uniform_form():
    assert uniform_form(["a", "b"]) and not uniform_form(["a", None]) and not uniform_form([None, None])
