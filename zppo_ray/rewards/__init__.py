"""Binary rewards for ZPPO (spec section 4): boxed-answer extraction, math equivalence via math-verify,
multiple-choice letters, and the strict JSON verdict of the LLM judge."""

from .choice import LETTERS, choice_equal, choice_letter, normalize_gold_letter
from .extract import DEFAULT_MAX_CHARS, last_boxed
from .grade import GRADABLE_KINDS, grade, grade_batch
from .judge import JUDGE_SCHEMA, grade_judged, parse_verdict, read_verdict
from .math_grader import MAX_MATH_CHARS, check_gold, math_equal, strip_degree_percent, too_costly

__all__ = [
    "DEFAULT_MAX_CHARS",
    "GRADABLE_KINDS",
    "JUDGE_SCHEMA",
    "LETTERS",
    "MAX_MATH_CHARS",
    "check_gold",
    "choice_equal",
    "choice_letter",
    "grade",
    "grade_batch",
    "grade_judged",
    "last_boxed",
    "math_equal",
    "normalize_gold_letter",
    "parse_verdict",
    "read_verdict",
    "strip_degree_percent",
    "too_costly",
]
