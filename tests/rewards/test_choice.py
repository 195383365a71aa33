"""choice_letter / choice_equal: the answer forms, the order of evidence, and articles that are not answers."""

import pytest

from zppo_ray.rewards import choice_equal, choice_letter, grade


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(B)", "B"),
        ("B.", "B"),
        ("B)", "B"),
        ("B", "B"),
        ("b", "B"),
        ("\\boxed{B}", "B"),
        ("\\boxed{(B)}", "B"),
        ("\\boxed{b}", "B"),
        ("\\boxed{\\text{C}}", "C"),
        ("\\boxed{D. 42}", "D"),
        ("The answer is B", "B"),
        ("The answer is B.", "B"),
        ("answer: b", "B"),
        ("Answer: J", "J"),
        ("**Answer:** D", "D"),
        ("The correct answer is (C).", "C"),
        ("The final answer is: E", "E"),
        ("the answer is option G, clearly", "G"),
        ("So the answer is $F$.", "F"),
        ("The answer is A because the train is faster.", "A"),
        ("The answer is I.", "I"),
        ("The answer is (a)", "A"),
        ("Reasoning...\nFinal choice:\n\n(H)\n", "H"),
    ],
)
def test_choice_letter_forms(text, expected):
    assert choice_letter(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "A train leaves the station at 3 pm.",
        "The answer is a prime number.",
        "I think so.",
        "The answer is Both of them",
        "answer is 42",
        "Option K",
        "\\boxed{42}",
        "",
        "The answer is an integer",
    ],
)
def test_no_letter(text):
    assert choice_letter(text) is None


def test_order_of_evidence():
    # the last box wins over an earlier phrase and over a later phrase
    assert choice_letter("The answer is A. Actually \\boxed{C}") == "C"
    assert choice_letter("\\boxed{C}. Hmm, the answer is D") == "C"
    # the last phrase wins over an earlier one and over a lone final line
    assert choice_letter("The answer is A. No wait, the answer is B.") == "B"
    assert choice_letter("The answer is B.\nC") == "B"
    # a box without a letter falls through to the phrase
    assert choice_letter("The answer is E. \\boxed{42}") == "E"


def test_choice_equal_and_grade():
    assert choice_equal("The answer is (B).", "B")
    assert choice_equal("\\boxed{b}", "(B)")
    assert not choice_equal("The answer is C", "B")
    assert not choice_equal("A train leaves...", "A")
    assert grade("answer: b", "B", "mc") == 1.0
    assert grade("answer: c", "B", "mc") == 0.0
    with pytest.raises(ValueError, match="gold letter"):
        choice_equal("B", "K")
    with pytest.raises(ValueError, match="gold letter"):
        choice_equal("B", "Paris")


def test_adversarial_choice_inputs_return():
    texts = [
        "answer is " * 500_000,
        "(" * 5_000_000,
        "\\boxed{" * 500_000,
        "answer:" + " " * 5_000_000 + "B",
        "answer: " + " " * 5_000_000 + ".",  # cubic backtracking with non-possessive whitespace runs
        ("answer is " + " " * 1000 + "option " + " " * 1000) * 2000,
        "The answer is" + " \\text{" * 500_000,
        "\x00" * 1_000_000 + "answer: C",
    ]
    for text in texts:
        result = choice_letter(text)
        assert result is None or result in "ABCDEFGHIJ"
    assert choice_letter("\x00" * 1000 + " answer: C") == "C"
