"""Fixtures that write small parquet/jsonl files into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest


def _write_jsonl(path: Path, rows: list, raw_lines: dict[int, str] | None = None) -> Path:
    """rows as JSON lines; raw_lines {index: text} replaces line `index` (0-based) verbatim."""
    lines = [json.dumps(r) for r in rows]
    for i, text in (raw_lines or {}).items():
        lines[i] = text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


class WordTokenizer:
    """Counts whitespace-separated words: enough to test the prompt-length check."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(range(len(text.split())))


@pytest.fixture
def write_jsonl():
    return _write_jsonl


@pytest.fixture
def write_parquet():
    return _write_parquet


@pytest.fixture
def word_tokenizer():
    return WordTokenizer()
