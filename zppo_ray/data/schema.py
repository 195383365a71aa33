"""The question record every part of the system passes around."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

KINDS = ("math", "mc", "free")
MC_LETTERS = "ABCDEFGHIJ"
"""Option letters an mc gold may use: the ones the grader reads (rewards.choice), so a gold it could never
match is a load-time error rather than a crash at grading time."""
MAX_ANSWER_CHARS = 1000
"""Longest math gold: the grader compares nothing longer (rewards.math_grader.MAX_MATH_CHARS is this)."""


@dataclass(frozen=True)
class Question:
    """One verifiable question.

    `prompt` is either plain text or a list of chat messages ({"role", "content"}).
    `images` holds paths or raw bytes; they travel by reference (the buffer never copies pixels).
    `answer` is the gold short answer: a number/expression for "math", a letter for "mc",
    free text for "free" (graded by the teacher acting as judge).
    """

    id: str
    prompt: str | tuple[dict, ...]
    answer: str
    kind: str = "math"
    choices: tuple[str, ...] | None = None
    images: tuple[str | bytes, ...] = ()
    source: str = ""
    tier: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Question {self.id!r}: kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def text(self) -> str:
        """The question text (the last user message for chat prompts; its text parts if multimodal)."""
        if isinstance(self.prompt, str):
            return self.prompt
        users = [m["content"] for m in self.prompt if m.get("role") == "user"]
        if not users:
            return ""
        content = users[-1]
        if isinstance(content, str):
            return content
        return "\n".join(p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str))
