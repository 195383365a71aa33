"""Mathematical equivalence of a predicted and a gold short answer, via math-verify.

Paper rule (spec section 4): compare the last boxed answer with the gold allowing mathematical
equivalence (1/2 = 0.5 = \\frac{1}{2}); if that fails, strip degree and percent markers from both sides
and compare once more. The comparison itself is math-verify's (``parse`` + ``verify``), not ours.

Time bounds. math-verify limits each parse/compare with ``signal.alarm`` (``parsing_timeout`` /
``timeout_seconds``), which raises ``ValueError`` off the main thread. So:

* on the main thread (sync Ray actor, process-pool worker, plain script) the alarm stays on as the hard
  bound (``timeout_s``, default 5 s per math-verify call);
* off the main thread the alarm is disabled (``None``) and replaced by three cheap, deterministic caps
  that also apply on the main thread, so the grade never depends on the calling thread:
  1. each side at most ``MAX_MATH_CHARS`` characters (longer → not equal);
  2. bracket nesting at most ``MAX_NESTING`` (the parser is super-linear in nesting depth);
  3. the parsed, still unevaluated SymPy tree must pass ``too_costly`` (huge integers such as
     ``9^{9^{9}}``, ``(10)!!``, ``\\binom{10^9}{10^5}`` or large expansions such as ``(x+1)^{1000}``
     would otherwise make ``verify`` run for minutes).
  Measured on the dev machine, the worst 1000-character input we found still parses in ~3 s; the caps
  are a best effort, the alarm is the guarantee. Grade on a main thread when a hard bound matters.
"""

from __future__ import annotations

import logging
import math
import re
import threading

import sympy
from math_verify import parse, verify
from sympy import Basic

from zppo_ray.data.schema import MAX_ANSWER_CHARS

MAX_MATH_CHARS = MAX_ANSWER_CHARS  # 1000; the data loader refuses longer math golds with the same constant
"""Longest answer (either side) compared; equals the extraction cap of ``last_boxed``."""
MAX_NESTING = 32
"""Deepest bracket nesting accepted before parsing; real answers stay far below."""
DEFAULT_TIMEOUT_S = 5
"""math-verify's own default alarm, used only on the main thread."""


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once per process that we disabled its alarm; we did so on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


_DEGREE_PERCENT = re.compile(
    r"\^\s*\{\s*\\circ\s*\}"  # ^{\circ}
    r"|\^\s*\\circ(?![A-Za-z])"  # ^\circ
    r"|\\circ(?![A-Za-z])"  # a bare \circ left over, e.g. 30\circ
    r"|\\degree(?![A-Za-z])"
    r"|°"
    r"|\\%"
    r"|%"
)
_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def strip_degree_percent(text: str) -> str:
    """Remove degree (``^\\circ``, ``^{\\circ}``, ``°``, ``\\degree``) and percent (``\\%``, ``%``) marks."""
    return _DEGREE_PERCENT.sub("", text).strip()


def _unwrap(text: str) -> str:
    """Strip whitespace and one pair of enclosing math delimiters (golds sometimes carry ``$...$``)."""
    text = text.strip()
    for left, right in _DELIMITERS:
        if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
            inner = text[len(left) : len(text) - len(right)]
            if left not in inner:  # "$5$ and $6$" is two formulas, not one wrapped one
                return inner.strip()
    return text


def _nesting_depth(text: str) -> int:
    """Maximum bracket nesting of ``([{`` (escaped or not); unmatched closers are ignored."""
    depth = best = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            best = max(best, depth)
        elif ch in ")]}" and depth:
            depth -= 1
    return best


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _parse(answer: str, timeout: int | None) -> list:
    """math-verify parse of one short answer; wrapped in ``\\boxed{}`` so its boxed extractor owns it."""
    return parse("\\boxed{" + answer + "}", parsing_timeout=timeout)


def _compare(pred: str, gold: str, timeout: int | None) -> bool:
    """One math-verify comparison with the caps of the module docstring applied first."""
    if not pred or not gold or _nesting_depth(pred) > MAX_NESTING or _nesting_depth(gold) > MAX_NESTING:
        return False
    gold_parsed = _parse(gold, timeout)
    pred_parsed = _parse(pred, timeout)
    if not gold_parsed or not pred_parsed:
        return False
    if any(too_costly(x) for x in gold_parsed) or any(too_costly(x) for x in pred_parsed):
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def check_gold(gold: str) -> None:
    """Raise for a gold answer no prediction can be compared with (a data error, not a wrong answer)."""
    if not isinstance(gold, str):
        raise TypeError(f"gold answer must be str, got {type(gold).__name__}")
    if not gold.strip():
        raise ValueError("gold answer is empty")
    if len(gold) > MAX_MATH_CHARS:
        raise ValueError(f"gold answer is {len(gold)} chars, longer than MAX_MATH_CHARS={MAX_MATH_CHARS}")


def math_equal(pred: str, gold: str, *, timeout_s: int | None = DEFAULT_TIMEOUT_S) -> bool:
    """True when ``pred`` (an extracted short answer) is mathematically equal to ``gold``.

    First a plain math-verify comparison; if that fails, both sides are stripped of degree and percent
    markers and compared once more (``30^\\circ`` = ``30``, ``50\\%`` = ``50``). An over-long or
    too-costly prediction is simply unequal; an empty or over-long gold is a data error and raises.
    ``timeout_s`` is math-verify's alarm, used on the main thread only (see module docstring);
    ``None`` disables it everywhere.
    """
    if not isinstance(pred, str):
        raise TypeError(f"math_equal expects a str prediction, got {type(pred).__name__}")
    check_gold(gold)
    if timeout_s is not None and (not isinstance(timeout_s, int) or timeout_s <= 0):
        raise ValueError(f"timeout_s must be a positive int (seconds) or None, got {timeout_s!r}")
    if len(pred) > MAX_MATH_CHARS:
        return False
    timeout = timeout_s if _on_main_thread() else None
    pred, gold = _unwrap(pred), _unwrap(gold)
    if _compare(pred, gold, timeout):
        return True
    pred2, gold2 = strip_degree_percent(pred), strip_degree_percent(gold)
    if (pred2, gold2) == (pred, gold):
        return False
    return _compare(pred2, gold2, timeout)


# ---------------------------------------------------------------------------------------------------
# Cost guard: a cheap upper bound on the numbers SymPy would build while comparing an expression.
# It counts a symbol as magnitude 10 and propagates bounds bottom-up in log10 space; every node's bound
# is at least its children's, so one check at the root covers the whole tree.
# ---------------------------------------------------------------------------------------------------
MAX_DIGITS = 5000
"""Largest number of decimal digits an intermediate integer may have. Python 3.11 refuses to print ints
beyond 4300 digits by default anyway, so math-verify could not compare such answers as strings."""
MAX_EXPANSION_TERMS = 500
"""Most terms a power of a sum may expand into; (x+1)^{1000} (1001 terms) already costs ~4 s."""
MAX_NODES = 2000
"""Most tree nodes inspected; the 1000-character input cap keeps real answers far below."""
MAX_DEPTH = 200
"""Deepest tree inspected (recursion bound); deeper trees are judged too costly."""

_LOG10_2 = math.log10(2)
_INF = math.inf
_FACTORIAL_LIKE = (
    sympy.factorial,
    sympy.factorial2,
    sympy.subfactorial,
    sympy.gamma,
    sympy.RisingFactorial,
    sympy.FallingFactorial,
)


class _Budget:
    """Node counter shared by one traversal."""

    def __init__(self) -> None:
        self.nodes = 0


def _int_log10(value: int) -> float:
    """log10(max(|value|, 1)) without converting huge ints to float."""
    value = abs(value)
    return 0.0 if value <= 1 else value.bit_length() * _LOG10_2


def _pow10(exponent_log10: float) -> float:
    """10**x as an upper bound on a number whose log10 is x; inf instead of overflow."""
    return _INF if exponent_log10 > 300 else 10.0**exponent_log10


def _expansion_terms(n_float: float, k: int) -> float:
    """Number of monomials of (a_1 + ... + a_k)^n, or inf when n is not a small integer."""
    if n_float > 10**6:
        return _INF
    n = int(n_float)
    return float(math.comb(n + k - 1, k - 1))


def _own_log10(node: Basic, child_logs: list[float]) -> float:
    """Upper bound on log10 |value| of ``node`` given its children's bounds."""
    if node.is_Integer:
        return _int_log10(int(node))
    if node.is_Rational:
        return max(_int_log10(int(node.p)), _int_log10(int(node.q)))
    if node.is_Float:
        try:
            return math.log10(max(abs(float(node)), 1.0))
        except (OverflowError, ValueError):
            return _INF
    if node.is_Atom:
        return 1.0  # symbols, pi, E, I, oo: treated as magnitude 10
    if isinstance(node, sympy.Add):
        return max(child_logs) + math.log10(len(child_logs))
    if isinstance(node, sympy.Mul):
        return sum(child_logs)
    if isinstance(node, sympy.Pow):
        base, exp = node.args
        log_base, log_exp = child_logs
        if base.is_Number and abs(base) == 1 or base == 0:
            return 0.0
        if isinstance(base, sympy.Add) and exp.is_Integer and exp > 0:
            if _expansion_terms(float(exp), len(base.args)) > MAX_EXPANSION_TERMS:
                return _INF
        return _pow10(log_exp) * max(log_base, 0.1)
    if isinstance(node, sympy.exp):
        return _pow10(child_logs[0]) * math.log10(math.e)
    if isinstance(node, _FACTORIAL_LIKE):
        n = _pow10(max(child_logs))
        return n * max(math.log10(n), 1.0) if n != _INF else _INF
    if isinstance(node, sympy.binomial):
        return _pow10(child_logs[0]) * _LOG10_2
    if isinstance(node, sympy.Product):
        limit_log = max(child_logs[1:])
        return _pow10(limit_log) * (child_logs[0] + limit_log)
    return 0.0  # other functions (sin, log, Abs, ...), relations, sets: bounded by their children


def _log10_bound(node: object, depth: int, budget: _Budget) -> float:
    """Bound for ``node`` and everything below it (never smaller than any child's bound)."""
    if not isinstance(node, Basic):
        return 0.0  # plain matrices, strings: nothing SymPy would evaluate eagerly
    budget.nodes += 1
    if depth > MAX_DEPTH or budget.nodes > MAX_NODES:
        return _INF
    child_logs = [_log10_bound(arg, depth + 1, budget) for arg in node.args]
    if any(c == _INF for c in child_logs):
        return _INF
    own = _own_log10(node, child_logs)
    return max([own, *child_logs])


def too_costly(expr: object) -> bool:
    """True when comparing ``expr`` could make SymPy build huge numbers or expansions."""
    try:
        return _log10_bound(expr, 0, _Budget()) > MAX_DIGITS
    except (TypeError, ValueError, OverflowError, AttributeError):
        return True  # an expression we cannot even inspect is not worth a verify call
