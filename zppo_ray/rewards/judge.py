"""Strict parsing of the LLM judge's verdict for free-form answers.

The judge is the teacher (temperature 0, at most 512 new tokens) and must answer exactly
``{"verdict": "correct"}`` or ``{"verdict": "wrong"}``; anything malformed counts as wrong (spec §4).
Being strict matters: a lenient parser (substring "correct", first JSON-looking thing) turns judge
chatter such as "not correct" into reward, and the student learns to game the judge.

Accepted wrapping, and nothing else:

* surrounding whitespace;
* an optional reasoning prefix ending in ``</think>``: either ``<think>...</think>`` or, as emitted by
  chat templates that pre-fill ``<think>``, text followed by ``</think>``. Everything up to the FIRST
  ``</think>`` is dropped; a ``<think>`` without a closing tag is malformed;
* an optional Markdown fence: ```` ```json ```` (or a bare ```` ``` ````) ... ```` ``` ````.

What remains must be one JSON object with exactly one key ``verdict`` whose value is exactly
``"correct"`` or ``"wrong"`` (lower case). Extra keys, duplicate keys, other values, trailing text,
arrays, or several objects are all rejected (→ wrong): the schema is closed, so an extra key means the
judge did not follow the protocol, and we do not guess what it meant.
"""

from __future__ import annotations

import json

JUDGE_SCHEMA = (
    '{"type": "object", "properties": {"verdict": {"type": "string", "enum": ["correct", "wrong"]}}, '
    '"required": ["verdict"], "additionalProperties": false}'
)
"""JSON Schema of the verdict, as text: usable for guided decoding and quoted in the judge prompt."""

MAX_JUDGE_CHARS = 200_000
"""Longer outputs are rejected without parsing (512 new tokens of JSON are a few KB; the cap only
bounds the work on a runaway reasoning prefix)."""

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    """json object hook: ``{"verdict": "wrong", "verdict": "correct"}`` must not read as correct."""
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise _DuplicateKey("duplicate key in judge output")
    return dict(pairs)


def _strip_think(text: str) -> str | None:
    close = text.find(_THINK_CLOSE)
    if close >= 0:
        return text[close + len(_THINK_CLOSE) :].strip()
    if _THINK_OPEN in text:
        return None  # reasoning never closed: truncated judge output
    return text


def _strip_fence(text: str) -> str | None:
    if not text.startswith("```"):
        return text
    if not text.endswith("```") or len(text) < 6:
        return None
    body = text[3:-3]
    newline = body.find("\n")
    if newline < 0:
        return None
    tag = body[:newline].strip()
    if tag not in ("", "json"):
        return None
    return body[newline + 1 :].strip()


def read_verdict(text: str) -> bool | None:
    """The judge's verdict in three states: True ("correct"), False ("wrong"), None (malformed: anything
    but exactly one well-formed verdict object). The reward treats None as wrong; reports count it apart."""
    if not isinstance(text, str) or len(text) > MAX_JUDGE_CHARS:
        return None
    body = _strip_think(text.strip())
    if body is None:
        return None
    body = _strip_fence(body)
    if body is None:
        return None
    try:
        obj = json.loads(body, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):  # JSONDecodeError, _DuplicateKey, "[[[[..." nesting
        return None
    if not (isinstance(obj, dict) and set(obj) == {"verdict"} and obj["verdict"] in ("correct", "wrong")):
        return None
    return obj["verdict"] == "correct"


def parse_verdict(text: str) -> bool:
    """True only for a well-formed ``{"verdict": "correct"}``; every other output is False (wrong)."""
    return read_verdict(text) is True


def grade_judged(judge_output: str) -> float:
    """Reward for a free-form answer from the judge's raw output: 1.0 if judged correct, else 0.0."""
    return 1.0 if parse_verdict(judge_output) else 0.0
