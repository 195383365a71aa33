"""last_boxed: exact extractions and adversarial inputs sized so that a quadratic scan would take minutes."""

import pytest

from zppo_ray.rewards import last_boxed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is \\boxed{42}.", "42"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed {7}", "7"),
        ("\\boxed\n{7}", "7"),
        ("\\fbox{x+1}", "x+1"),
        ("\\boxed{1} and finally \\fbox{3}", "3"),
        ("\\fbox{1} and finally \\boxed{3}", "3"),
        ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
        ("\\boxed{ 5 }", "5"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped set braces do not close the box
        ("\\boxed{a \\\\ {b}}", "a \\\\ {b}"),  # \\ is a line break, the { after it is a real group
        ("\\boxed{\\boxed{3}}", "3"),  # the box that starts last is the inner one
        ("$\\boxed{\\dfrac{1}{2}}$", "\\dfrac{1}{2}"),
        ("\\boxed{}", ""),
        ("no box here", None),
        ("", None),
        ("\\boxed{unclosed", None),
        ("\\boxed{1} but then \\boxed{2", None),  # a truncated final box does not fall back
        ("\\boxed 5", None),  # only the braced form counts
        ("\\boxedsymbol{3} and \\boxed{4}", "4"),
        ("\\boxed{4} and \\boxedsymbol{3}", "4"),  # another command is skipped, not treated as a box
        ("\\boxed{x} \\boxed", "x"),  # a trailing bare marker is not a box
    ],
)
def test_last_boxed_cases(text, expected):
    assert last_boxed(text) == expected


def test_max_chars_caps_the_answer_length():
    assert last_boxed("\\boxed{" + "1" * 1000 + "}") == "1" * 1000
    assert last_boxed("\\boxed{" + "1" * 1001 + "}") is None
    assert last_boxed("\\boxed{12345}", max_chars=4) is None
    assert last_boxed("\\boxed{1234}", max_chars=4) == "1234"


def test_bad_arguments():
    with pytest.raises(TypeError):
        last_boxed(None)
    with pytest.raises(ValueError):
        last_boxed("\\boxed{1}", max_chars=-1)


MB = 1_000_000


@pytest.mark.parametrize(
    "text",
    [
        "{" * (5 * MB),
        "\\boxed{" + "{" * (5 * MB),
        "\\boxed{" * (MB // 2),  # half a million unclosed boxes
        "\\boxed " * (MB // 2) + "\\fbox{1}" + "\\boxed " * (MB // 2),  # many rejected markers
        "\\boxed{" + "{" * 100_000 + "}" * 100_000 + "}",  # 100k nesting
        "}" * (5 * MB) + "\\boxed{",
        "\\" * (5 * MB),
        "\x00" * MB + "\\boxed{\x00}",
        "\u202e\u200b😀" * (MB // 2) + "\\boxed{½}",
    ],
    ids=["5MB-open", "box+5MB-open", "500k-boxes", "1M-bare-markers", "100k-nested", "5MB-close",
         "5MB-backslash", "NUL", "unicode"],
)
def test_adversarial_inputs_return(text):
    result = last_boxed(text)
    assert result is None or isinstance(result, str)


def test_adversarial_values():
    assert last_boxed("\x00" * 1000 + "\\boxed{\x00}") == "\x00"
    assert last_boxed("😀" * 1000 + "\\boxed{½}") == "½"
    assert last_boxed("\\boxed " * 100_000 + "\\fbox{1}" + "\\boxed " * 100_000) == "1"
    assert last_boxed("\\boxed{" * 100_000) is None
