"""parse_verdict: only a well-formed {"verdict": "correct"} is a correct verdict."""

import json

import pytest

from zppo_ray.rewards import JUDGE_SCHEMA, grade_judged, parse_verdict


@pytest.mark.parametrize(
    "text",
    [
        '{"verdict": "correct"}',
        '  {"verdict":"correct"}\n',
        '```json\n{"verdict": "correct"}\n```',
        '```\n{"verdict": "correct"}\n```',
        '<think>The student wrote 0.5, gold is 1/2.</think>\n{"verdict": "correct"}',
        'The student wrote 0.5, gold is 1/2.\n</think>\n\n```json\n{"verdict": "correct"}\n```',
    ],
)
def test_correct(text):
    assert parse_verdict(text) is True
    assert grade_judged(text) == 1.0


@pytest.mark.parametrize(
    "text",
    [
        '{"verdict": "wrong"}',
        '{"verdict": "Correct"}',
        '{"verdict": "correct "}',
        '{"verdict": true}',
        '{"verdict": "correct", "reason": "same"}',  # closed schema: extra keys are malformed
        '{"verdict": "wrong", "verdict": "correct"}',  # duplicate keys must not read as correct
        '{"verdict": "correct"} {"verdict": "correct"}',
        '{"verdict": "correct"} trailing',
        'The verdict is {"verdict": "correct"}',
        '[{"verdict": "correct"}]',
        '"correct"',
        "correct",
        "not correct",
        "",
        "<think>still thinking about it",
        '<think>unclosed {"verdict": "correct"}',
        '```python\n{"verdict": "correct"}\n```',
        '```json\n{"verdict": "correct"}',
        '```json {"verdict": "correct"}```',
        "{'verdict': 'correct'}",
        "[" * 100_000,
        "{" * 1_000_000,
        "\x00" * 1000,
        '{"verdict": "correct"}' + " " * 300_000 + "x",
    ],
)
def test_wrong_or_malformed(text):
    assert parse_verdict(text) is False
    assert grade_judged(text) == 0.0


def test_non_string_is_wrong():
    assert parse_verdict(None) is False  # type: ignore[arg-type]


def test_schema_is_valid_json_schema_text():
    schema = json.loads(JUDGE_SCHEMA)
    assert schema["properties"]["verdict"]["enum"] == ["correct", "wrong"]
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["verdict"]


def test_read_verdict_has_three_states():
    from zppo_ray.rewards import read_verdict

    assert read_verdict('{"verdict": "correct"}') is True
    assert read_verdict('<think>hm</think>\n```json\n{"verdict": "wrong"}\n```') is False
    for malformed in ('{"verdict": "maybe"}', "correct", '{"verdict": "wrong", "x": 1}', "", None):
        assert read_verdict(malformed) is None, malformed
