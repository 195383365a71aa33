"""Keep credentials out of logs and saved configs (README "Security").

The run never needs a secret in its config, but users put them where they are convenient: a data URL with
`user:password@`, an `hf_...` token in a path, `api_key=...` in an override. Everything this project writes
for humans (the console and log lines of the `zppo_ray` loggers, the resolved `config.yaml` of a run)
passes through `redact_text` first.
"""

from __future__ import annotations

import logging
import re

MASK = "***"
_PATTERNS = [
    (re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), r"\g<scheme>" + MASK + "@"),
    (re.compile(r"\b(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16})\b"), MASK),
    (re.compile(r"(?i)\b((?:[a-z0-9]+_)*(?:token|secret|password|passwd|api[_-]?key|access[_-]?key)"
                r"(?:_[a-z0-9]+)*)(\s*[=:]\s*)(['\"]?)[^\s'\",}]+\3"), r"\1\2\3" + MASK + r"\3"),
]


def redact_text(text: str) -> str:
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that formats the message and masks credentials in it (args included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def install_log_redaction() -> None:
    """Mask credentials in every record that reaches the root handlers (call after logging is configured)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
