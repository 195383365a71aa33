"""The question record every part of the system passes around."""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("math", "mc", "free")


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
        """The question text (the last user message for chat prompts)."""
        if isinstance(self.prompt, str):
            return self.prompt
        users = [m["content"] for m in self.prompt if m.get("role") == "user"]
        return users[-1] if users else ""
