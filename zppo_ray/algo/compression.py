"""What counts as a faithful summary of a candidate, and how a candidate is cut to the caps (spec §3).

Pure functions: the teacher actor asks its engine for summaries and applies `summary_rejection`; the
controller applies `cap_candidate` when it falls back to raw truncation. Both sides of one BCQ must look
alike (both summaries or both raw-truncated), or the student could tell the teacher's candidate from the
student's by its form alone; the controller enforces that per instance (`uniform_form`).

Why the answer is checked before any cut: a summary longer than the line cap would lose its final
`\\boxed{}` line, and the check would then reject a good summary (or accept a summary whose answer was
cut away). Why a candidate without a final answer can still be compressed: wrong rollouts cut at the token
limit often have none; the summary must then have none either (an invented answer could make a wrong
candidate right, or put an answer into an NCQ that is not known to be wrong).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from zppo_ray.rewards import last_boxed

_BOXED = re.compile(r"\\boxed\s*\{")


def final_answer(text: str) -> str | None:
    """The last `\\boxed{}` content with whitespace normalised (both sides of a comparison alike)."""
    answer = last_boxed(text)
    return None if answer is None else " ".join(answer.split())


def summary_rejection(summary: str, candidate: str) -> str | None:
    """Why `summary` must not stand for `candidate` (None = use it): "empty"; "no_boxed" (the candidate
    has a final answer, the summary lost it); "answer_added" (the candidate has none, the summary made one
    up); "answer_changed" (both have one and they differ). Checked on the whole summary, before capping."""
    if not summary.strip():
        return "empty"
    got, want = final_answer(summary), final_answer(candidate)
    if got is None and want is None:
        return None
    if got is None:
        return "no_boxed"
    if want is None:
        return "answer_added"
    return None if got == want else "answer_changed"


def _answer_line(lines: Sequence[str]) -> int | None:
    hits = [i for i, line in enumerate(lines) if _BOXED.search(line)]
    return hits[-1] if hits else None


def cap_lines(text: str, max_lines: int) -> str:
    """At most `max_lines` lines; when lines must go, the line with the final `\\boxed{}` stays last."""
    lines = text.strip().splitlines()
    if len(lines) <= max_lines:
        return "\n".join(lines)
    keep = _answer_line(lines)
    if max_lines < 1:
        return ""
    if keep is None or keep < max_lines:
        return "\n".join(lines[:max_lines])
    return "\n".join(lines[:max_lines - 1] + [lines[keep]])


def cap_tokens(text: str, max_tokens: int, encode: Callable[[str], list[int]],
               decode: Callable[[list[int]], str]) -> str:
    """At most `max_tokens` tokens; the final-answer line is kept whole when it fits on its own."""
    ids = encode(text)
    if len(ids) <= max_tokens:
        return text
    lines = text.splitlines()
    keep = _answer_line(lines)
    if keep is not None:
        tail = "\n" + lines[keep]
        room = max_tokens - len(encode(tail))
        if room > 0:
            head = decode(encode("\n".join(lines[:keep]))[:room]).rstrip()
            out = head + tail
            if len(encode(out)) <= max_tokens:
                return out
    return decode(ids[:max_tokens]).strip()


def cap_candidate(text: str, max_lines: int, max_tokens: int, encode: Callable[[str], list[int]],
                  decode: Callable[[list[int]], str]) -> str:
    """The line cap, then the token cap, both keeping the final answer where they can."""
    return cap_tokens(cap_lines(text, max_lines), max_tokens, encode, decode)


def uniform_form(summaries: Sequence[str | None]) -> bool:
    """True when every candidate of one instance got an accepted summary: only then are summaries shown;
    otherwise every candidate of the instance is shown raw-truncated."""
    return all(s is not None for s in summaries)
