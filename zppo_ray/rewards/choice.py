"""Multiple-choice grading: find the option letter (A–J) a response commits to.

Order of evidence, strongest first (spec section 4 only says "letter match"; the order is ours):

1. the last ``\\boxed{...}``: ``\\boxed{B}``, ``\\boxed{(B)}``, ``\\boxed{\\text{B}}``, ``\\boxed{B. 42}``;
2. the last explicit phrase: "The answer is B", "answer: b", "the correct option is (C)", "**Answer:** D";
3. a lone letter on the final line: "(B)", "B.", "B)", "B".

Articles and pronouns must not count: "A train leaves..." and "the answer is a prime" are not answers.
Hence, inside a phrase, a lowercase letter and the uppercase words "A"/"I" only count when bracketed or
followed by punctuation/end of text ("answer: b", "answer is A.") or by a connective ("answer is A
because ..."); other uppercase letters only need a word boundary. A box without a letter (e.g. the option
text) falls through to the next rule rather than failing.
"""

from __future__ import annotations

import re

from zppo_ray.data.schema import MC_LETTERS

from .extract import last_boxed

LETTERS = MC_LETTERS  # one list for the loader's gold check and the grader

_WRAPPERS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_BOXED_LETTER = re.compile(r"[(\[]?\s*([A-Ja-j])\s*[)\]]?(?:[.:)]|\s|$)")
_LONE_LETTER = re.compile(r"[(\[]?\s*([A-Ja-j])\s*[)\]]?[.:]?")
# Possessive quantifiers (*+) keep this linear: plain `\s*` runs next to optional tokens backtrack
# cubically on "answer:" followed by a long run of spaces.
_PHRASE = re.compile(
    r"\b(?:answer|option|choice)\b[^\S\n]*+(?:is|:|=)[^\S\n]*+:?+"
    r"[^\S\n]*+(?:(?:option|choice|letter)\b[^\S\n]*+)?+"
    r"(?:\*{1,2}|\$|\\text(?:bf)?\{|\\mathrm\{)?+"
    r"(?P<open>[(\[])?+[^\S\n]*+(?P<letter>[A-J])(?P<close>[)\]])?(?=(?P<after>[^\n]{0,16}))",
    re.IGNORECASE,
)
_DECORATION = re.compile(r"[*_`$]+")
_CONNECTIVES = ("because", "since", "as", "which", "and", "with", "for", "from", "is")


def _clean(text: str) -> str:
    """Drop markdown/LaTeX decoration around a letter: ``**B**``, ``$B$``, ``\\text{B}``."""
    return _DECORATION.sub("", _WRAPPERS.sub(r"\1", text)).strip()


def _from_box(text: str) -> str | None:
    content = last_boxed(text)
    if content is None:
        return None
    m = _BOXED_LETTER.match(_clean(content))
    return m.group(1).upper() if m else None


def _phrase_ok(m: re.Match) -> bool:
    """Whether a phrase match names an option rather than an article/pronoun (see module docstring)."""
    if m.group("open") and m.group("close"):
        return True
    after = m.group("after")
    if not after:
        return True  # end of text: "answer: b"
    if after[0].isalnum():
        return False  # the word goes on: "answer is Both"
    if not after[0].isspace():
        return True  # punctuation or decoration: "answer is B.", "answer is **B**"
    next_word = after.split()[0] if after.split() else ""
    if not next_word[:1].islower():
        return True
    letter = m.group("letter")
    weak = letter in "AI" or letter.islower()
    return not weak or next_word.strip(".,;:") in _CONNECTIVES


def _from_phrase(text: str) -> str | None:
    found = None
    for m in _PHRASE.finditer(text):
        if _phrase_ok(m):
            found = m.group("letter").upper()
    return found


_MAX_LONE_LINE = 64  # a final line holding only a letter is short; longer lines are not inspected


def _from_lone_line(text: str) -> str | None:
    stripped = text.rstrip()
    last_line = stripped[stripped.rfind("\n") + 1 :]
    if len(last_line) > _MAX_LONE_LINE:
        return None
    m = _LONE_LETTER.fullmatch(_clean(last_line))
    return m.group(1).upper() if m else None


def choice_letter(text: str) -> str | None:
    """The option letter (upper case, A–J) ``text`` commits to, or None."""
    if not isinstance(text, str):
        raise TypeError(f"choice_letter expects str, got {type(text).__name__}")
    for finder in (_from_box, _from_phrase, _from_lone_line):
        letter = finder(text)
        if letter is not None:
            return letter
    return None


def normalize_gold_letter(gold_letter: str) -> str:
    """``"b"``, ``"(B)"``, ``" B. "`` → ``"B"``; anything else is a data error."""
    if not isinstance(gold_letter, str):
        raise TypeError(f"gold letter must be str, got {type(gold_letter).__name__}")
    m = _LONE_LETTER.fullmatch(_clean(gold_letter))
    if not m:
        raise ValueError(f"gold letter must be one of {LETTERS} (optionally bracketed), got {gold_letter!r}")
    return m.group(1).upper()


def choice_equal(response: str, gold_letter: str) -> bool:
    """True when the letter the response commits to equals the gold letter."""
    return choice_letter(response) == normalize_gold_letter(gold_letter)
