"""Row checks: turn one raw row into a `Question`, or say precisely why it cannot be one.

Why strict: a bad row found at step 150 (an mc answer "E" with four choices, an image that is not there)
costs a multi-node run; found at load time it costs a second. Every rejection carries a reason code, so
`on_bad_row="skip"` can count them (`LoadReport`) and "error" can name file, row and reason (`DataError`).
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zppo_ray.data.schema import KINDS, MAX_ANSWER_CHARS, MC_LETTERS, Question
from zppo_ray.errors import DataError

log = logging.getLogger(__name__)

# Reason codes of rejected rows (LoadReport.skipped keys).
REASONS = (
    "bad_json", "not_a_record", "missing_id", "missing_prompt", "missing_answer", "wrong_type", "bad_answer",
    "unknown_kind", "bad_choices", "bad_mc_answer", "missing_image", "prompt_too_long",
)
ROLES = ("system", "user", "assistant")
MAX_CHOICES = 26


class BadRow(Exception):
    """One row rejected for `reason` (a REASONS code); `detail` says what was found."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class LoadReport:
    """What one load did: rows read, questions kept, skipped rows by reason (with the first few places)."""

    origin: str
    rows: int = 0
    loaded: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> the first skipped row and what was wrong
    where: dict[str, list[str]] = field(default_factory=dict)  # reason -> the first FIRST_PLACES rows skipped

    FIRST_PLACES = 3

    def skip(self, reason: str, where: str, detail: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, f"{where}: {detail}")
        places = self.where.setdefault(reason, [])
        if len(places) < self.FIRST_PLACES:
            places.append(where)

    def summary(self) -> str:
        """'skipped 3 of 10 rows (missing_answer=3 at line 2, line 5, line 9 ...); first: line 2: ...'"""
        reasons = ", ".join(f"{r}={n} at {', '.join(self._short(w) for w in self.where[r])}"
                            f"{' ...' if n > len(self.where[r]) else ''}" for r, n in sorted(self.skipped.items()))
        return (f"skipped {sum(self.skipped.values())} of {self.rows} rows ({reasons}); "
                f"first: {'; '.join(self.examples.values())}")

    def _short(self, where: str) -> str:
        """'data/x.jsonl line 3' -> 'line 3' when the report is of that one file (named once, in front)."""
        return where.removeprefix(f"{self.origin} ")

    def log(self) -> None:
        if self.skipped:
            log.warning("%s: %s", self.origin, self.summary())
        log.info("%s: loaded %d questions", self.origin, self.loaded)


@dataclass(frozen=True)
class RowContext:
    """Where a row came from and what the source config says about it."""

    where: str  # "file.jsonl line 3" / "file.parquet row 2": for messages and Question.extra["origin"]
    derived_id: str  # used when the data has no id column
    default_kind: str
    source: str
    base_dir: Path | None  # relative image paths resolve against it
    render_choices: bool = True
    tokenizer: Any = None
    max_prompt_tokens: int | None = None


def build_question(row: Mapping, cmap: Any, ctx: RowContext, transform: Callable | None) -> Question:
    """Map and check one row (cmap: a loaders.ColumnMap). Raises BadRow."""
    if not isinstance(row, Mapping):
        raise BadRow("not_a_record", f"expected an object/record, got {type(row).__name__}")
    qid = _id(row, cmap.id, ctx.derived_id)
    prompt = _prompt(row.get(cmap.prompt), cmap.prompt)
    kind = _kind(row, cmap.kind, ctx.default_kind)
    choices = _choices(row.get(cmap.choices) if cmap.choices else None, kind)
    raw = row.get(cmap.answer)
    # NaN is how pandas/parquet spell a missing number: it must not become the gold "nan".
    if raw is None or (isinstance(raw, str) and not raw.strip()) or (isinstance(raw, float) and math.isnan(raw)):
        raise BadRow("missing_answer", f"column {cmap.answer!r} is empty or absent")
    answer = raw
    if transform is not None:
        try:
            answer = transform(raw, row, choices)
        except (ValueError, TypeError) as e:
            raise BadRow("bad_answer", f"{cmap.answer_transform}: {e}") from None
    answer = _answer(answer, kind, choices)
    images = _images(row.get(cmap.images) if cmap.images else None, ctx.base_dir)
    if choices and kind == "mc" and ctx.render_choices:
        prompt = _append_text(prompt, render_choices(choices))
    if ctx.tokenizer is not None and ctx.max_prompt_tokens:
        n = count_tokens(ctx.tokenizer, prompt)
        if n > ctx.max_prompt_tokens:
            raise BadRow("prompt_too_long", f"{n} tokens > max_prompt_tokens {ctx.max_prompt_tokens}")
    mapped = {c for c in (cmap.id, cmap.prompt, cmap.answer, cmap.kind, cmap.choices, cmap.images,
                          cmap.source, cmap.tier) if c}
    extra: dict[str, Any] = {"origin": ctx.where}
    extra.update({k: v for k, v in row.items() if k not in mapped and isinstance(v, (str, int, float, bool))})
    if transform is not None:
        extra["raw_answer"] = raw
    return Question(
        id=qid, prompt=prompt, answer=answer, kind=kind, choices=choices, images=images,
        source=_text(row.get(cmap.source)) if cmap.source and row.get(cmap.source) is not None else ctx.source,
        tier=_text(row.get(cmap.tier)) if cmap.tier and row.get(cmap.tier) is not None else "",
        extra=extra,
    )


def render_choices(choices: tuple[str, ...]) -> str:
    """The one rendering of options every consumer sees: "(A) first\\n(B) second"."""
    return "\n".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(choices))


def count_tokens(tokenizer: Any, prompt: str | tuple[dict, ...]) -> int:
    """Tokens of the question text (chat: all text contents joined); template overhead not included."""
    text = prompt if isinstance(prompt, str) else "\n".join(_message_text(m) for m in prompt)
    if hasattr(tokenizer, "encode"):
        try:
            return len(tokenizer.encode(text, add_special_tokens=False))
        except TypeError:
            return len(tokenizer.encode(text))
    return len(tokenizer(text)["input_ids"])


def ensure_unique_ids(questions: list[Question]) -> None:
    """Ids must be unique across everything a run loads; name both rows of the first clash."""
    seen: dict[str, str] = {}
    for q in questions:
        where = q.extra.get("origin", "?")
        if q.id in seen:
            raise DataError(f"duplicate id {q.id!r}: {seen[q.id]} and {where}", origin=where,
                            reason="duplicate_id")
        seen[q.id] = where


# ---------------------------------------------------------------------------------------------- fields


def _text(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


def _id(row: Mapping, column: str | None, derived: str) -> str:
    if not column or column not in row:
        return derived
    v = row[column]
    if v is None or (isinstance(v, str) and not v.strip()):
        raise BadRow("missing_id", f"id column {column!r} is empty")
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise BadRow("wrong_type", f"id must be a string or integer, got {type(v).__name__}")
    return str(v)


def _prompt(v: Any, column: str) -> str | tuple[dict, ...]:
    if v is None or (isinstance(v, str) and not v.strip()):
        raise BadRow("missing_prompt", f"column {column!r} is empty or absent")
    if isinstance(v, str):
        return v
    if not isinstance(v, (list, tuple)):
        raise BadRow("wrong_type", f"prompt must be text or a list of chat messages, got {type(v).__name__}")
    if not v:
        raise BadRow("missing_prompt", "empty message list")
    messages = []
    for i, m in enumerate(v):
        content = m.get("content") if isinstance(m, Mapping) else None
        ok = isinstance(m, Mapping) and m.get("role") in ROLES and (
            isinstance(content, str) or isinstance(content, list) and all(isinstance(p, Mapping) for p in content))
        if not ok:
            raise BadRow("wrong_type", f"message {i} must be {{role: {'|'.join(ROLES)}, content: text|parts}}")
        messages.append(dict(m))
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        raise BadRow("missing_prompt", "chat prompt without a user message")
    if not _message_text(users[-1]).strip():  # Question.text: what every BCQ/NCQ prompt quotes
        raise BadRow("missing_prompt", "the last user message has no text")
    return tuple(messages)


def _message_text(m: Mapping) -> str:
    c = m.get("content")
    if isinstance(c, str):
        return c
    return "\n".join(p.get("text", "") for p in c if isinstance(p, Mapping) and isinstance(p.get("text"), str))


def _append_text(prompt: str | tuple[dict, ...], text: str) -> str | tuple[dict, ...]:
    if isinstance(prompt, str):
        return f"{prompt}\n\n{text}"
    messages = [dict(m) for m in prompt]
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    content = messages[last]["content"]
    if isinstance(content, str):
        messages[last]["content"] = f"{content}\n\n{text}"
    else:
        messages[last]["content"] = [*content, {"type": "text", "text": text}]
    return tuple(messages)


def _kind(row: Mapping, column: str | None, default: str) -> str:
    v = row.get(column) if column else None
    kind = default if v is None or v == "" else v
    if kind not in KINDS:
        raise BadRow("unknown_kind", f"kind {kind!r} not in {KINDS}")
    return kind


def _choices(v: Any, kind: str) -> tuple[str, ...] | None:
    if v is None:
        if kind == "mc":
            raise BadRow("bad_choices", "mc question without choices")
        return None
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
        raise BadRow("bad_choices", f"choices must be a list of strings, got {type(v).__name__}")
    if not v or len(v) > MAX_CHOICES:
        raise BadRow("bad_choices", f"need 1..{MAX_CHOICES} choices, got {len(v)}")
    if not all(isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in v):
        raise BadRow("bad_choices", "every choice must be text")
    return tuple(_text(c) for c in v)


def _answer(v: Any, kind: str, choices: tuple[str, ...] | None) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise BadRow("wrong_type", f"answer must be text, got {type(v).__name__}")
    if isinstance(v, float) and not math.isfinite(v):
        raise BadRow("bad_answer", f"answer must be a finite number, got {v!r}")
    if kind != "math" and not isinstance(v, str):
        raise BadRow("wrong_type", f"a {kind} answer must be text, got {type(v).__name__} {v!r}"
                     + (" (an index? use answer_transform: mmlu_index_to_letter)" if kind == "mc" else ""))
    text = _text(v).strip()
    if not text:
        raise BadRow("missing_answer", "answer is blank")
    if kind == "mc":
        letter = text.strip("().").strip().upper()
        n = len(choices or ())
        valid = [chr(65 + i) for i in range(n)][:len(MC_LETTERS)]  # the grader reads A..J only
        if letter not in valid:
            raise BadRow("bad_mc_answer",
                         f"answer {text!r} is not a letter in {valid[0]}..{valid[-1]} ({n} choices)")
        return letter
    if kind == "math" and len(text) > MAX_ANSWER_CHARS:
        raise BadRow("bad_answer", f"answer is {len(text)} chars, longer than {MAX_ANSWER_CHARS} (the grader's cap)")
    return text


def _images(v: Any, base_dir: Path | None) -> tuple[str | bytes, ...]:
    if v is None:
        return ()
    items = v if isinstance(v, (list, tuple)) else [v]
    out: list[str | bytes] = []
    for item in items:
        if isinstance(item, Mapping):  # HF Image feature: {"bytes": ..., "path": ...}
            item = item.get("bytes") or item.get("path")
        if isinstance(item, (bytes, bytearray)):
            if not item:
                raise BadRow("missing_image", "empty image bytes")
            out.append(bytes(item))
        elif isinstance(item, str) and item:
            out.append(_image_path(item, base_dir))
        else:
            raise BadRow("wrong_type", f"an image must be a path or bytes, got {type(item).__name__}")
    return tuple(out)


def _image_path(item: str, base_dir: Path | None) -> str:
    """The resolved path of a readable image file. A path the OS refuses (too long, NUL byte, "~nouser/")
    is a missing image of this row, not a crash of the whole load."""
    try:
        path = Path(item).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if path.is_file() and os.access(path, os.R_OK):
            return str(path)
        shown = str(path)
    except (OSError, ValueError, RuntimeError):
        shown = item
    raise BadRow("missing_image", f"unreadable image path {shown[:300]!r}")
