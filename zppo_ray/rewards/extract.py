"""Final-answer extraction: the content of the last ``\\boxed{...}``.

Responses are untrusted model output (up to 12k tokens, sometimes garbage), and extraction runs on every
rollout, so it must be linear in the response length and bounded on adversarial input:

* the last ``\\boxed`` / ``\\fbox`` is located with ``str.rfind`` (C speed, right to left);
* only that occurrence is brace-matched, and the matcher stops after ``max_chars`` characters of
  content. A final answer longer than that is not a short answer, so the result is ``None``.

Choices (documented because the paper is silent):

* The *last* box is the one whose ``\\boxed`` starts last. In ``\\boxed{\\boxed{3}}`` that is the inner
  one, which yields the cleaner answer ``3``.
* If the last box is unclosed (a truncated response) the result is ``None``; we do not fall back to an
  earlier box, because the model's final answer is the broken one.
* Only the braced form is recognised (``\\boxed{x}``, ``\\boxed {x}``, ``\\fbox{x}``), not ``\\boxed 5``.
* ``\\{`` and ``\\}`` inside the box are literal braces (sets) and do not count for nesting.
"""

from __future__ import annotations

DEFAULT_MAX_CHARS = 1000
"""Longest box content accepted. Gold short answers are far shorter; the cap bounds the work done on
adversarial input here and, more importantly, in the math-verify parser downstream."""

_MARKERS = ("\\boxed", "\\fbox")


class _MarkerScanner:
    """Yields marker positions right to left.

    Each marker's own ``rfind`` resumes where it stopped, so the total work over all calls stays
    O(len(text)) even when many markers are rejected (e.g. a million bare ``\\boxed`` without braces).
    """

    def __init__(self, text: str):
        self._text = text
        self._pos = {m: text.rfind(m) for m in _MARKERS}

    def next_before(self, end: int) -> tuple[int, int]:
        """Start and length of the right-most marker that begins before ``end``; (-1, 0) if none."""
        best, length = -1, 0
        for marker, pos in self._pos.items():
            if pos >= end:
                pos = self._text.rfind(marker, 0, end)
                self._pos[marker] = pos
            if pos > best:
                best, length = pos, len(marker)
        return best, length


def _open_brace_after(text: str, pos: int) -> int:
    """Index of the ``{`` that opens the box whose marker ends at ``pos``, or -1.

    Whitespace between marker and brace is allowed. A letter right after the marker means another
    command (``\\boxedfoo``) and anything else means no braced argument.
    """
    n = len(text)
    while pos < n and text[pos].isspace():
        pos += 1
    return pos if pos < n and text[pos] == "{" else -1


def _match_brace(text: str, open_pos: int, max_chars: int) -> str | None:
    """Content between ``text[open_pos] == '{'`` and its matching ``}``, or None.

    None when the brace is unclosed or the content would exceed ``max_chars``; at most
    ``max_chars + 1`` characters are examined either way.
    """
    depth = 0
    i = open_pos + 1
    stop = min(len(text), i + max_chars + 1)
    while i < stop:
        ch = text[i]
        if ch == "\\":
            i += 2  # escaped char, incl. \{ and \} (literal set braces) and \\ (a line break)
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                return text[open_pos + 1 : i]
            depth -= 1
        i += 1
    return None


def last_boxed(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, stripped; None if absent.

    Returns None as well when the last box is unclosed or its content is longer than ``max_chars``.
    Runs in O(len(text)) time (``rfind`` plus at most ``max_chars`` steps of brace matching).
    """
    if not isinstance(text, str):
        raise TypeError(f"last_boxed expects str, got {type(text).__name__}")
    if max_chars < 0:
        raise ValueError(f"max_chars must be >= 0, got {max_chars}")
    scanner = _MarkerScanner(text)
    end = len(text)
    while True:
        start, length = scanner.next_before(end)
        if start < 0:
            return None
        after = start + length
        if after < len(text) and (text[after].isalpha() or text[after] == "@"):
            end = start  # a longer command name such as \boxedsymbol: keep looking leftwards
            continue
        brace = _open_brace_after(text, after)
        if brace < 0:
            end = start  # marker without a braced argument: not a box
            continue
        content = _match_brace(text, brace, max_chars)
        return None if content is None else content.strip()
