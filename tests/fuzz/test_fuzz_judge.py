"""Fuzzing the judge verdict parser (zppo_ray.rewards.judge): any text in, 0.0/1.0 out, and 1.0 only for
the one well-formed verdict of the module's contract:

    [whitespace] [reasoning ending in the FIRST "</think>" | "<think>...</think>"]
    [```json / ``` fence on its own line ... ```] {"verdict": "correct"} [whitespace]

where the JSON is exactly one object with exactly one key "verdict" whose value is exactly "correct". A
"<think>" never closed, extra or duplicate keys, other values, a second object, trailing text or an
unknown fence tag all read as wrong. Text before the first "</think>" is reasoning and is ignored, so a
verdict there does not count either way (documented: "Everything up to the FIRST </think> is dropped").
"""

from __future__ import annotations

import json
import os

from hypothesis import example, given, settings
from hypothesis import strategies as st

from zppo_ray.rewards import grade_judged, parse_verdict
from zppo_ray.rewards.judge import MAX_JUDGE_CHARS

SCALE = int(os.environ.get("ZPPO_FUZZ_SCALE", "1"))

WORDS = ["correct", "Correct", "CORRECT", "wrong", "not correct", "verdict", '"verdict"', '"correct"', "{", "}",
         ":", ",", "[", "]", "```", "```json\n", "\n```", "<think>", "</think>", "json", " ", "\n", "\\", '"', "null",
         "true", "\x00", "😀", "\ufeff"]
any_text = st.text(max_size=200) | st.lists(st.sampled_from(WORDS) | st.text(max_size=3), max_size=30).map("".join)


@settings(max_examples=300 * SCALE)
@given(text=any_text)
@example(text="correct")
@example(text='The verdict is "correct".')
@example(text='{"verdict": "wrong"} {"verdict": "correct"}')
def test_any_text_is_binary(text):
    reward = grade_judged(text)
    assert type(reward) is float and reward in (0.0, 1.0)
    assert parse_verdict(text) is (reward == 1.0)


@settings(max_examples=50 * SCALE)
@given(value=st.none() | st.integers() | st.binary() | st.lists(st.text(max_size=3), max_size=3) | st.dictionaries(
    st.text(max_size=3), st.text(max_size=3), max_size=2))
def test_non_text_is_wrong(value):
    assert grade_judged(value) == 0.0  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- grammar + oracle

json_scalar = st.one_of(
    st.sampled_from(["correct", "wrong", "Correct", "correct ", " correct", "CORRECT", "incorrect", "", "</think>"]),
    st.text(max_size=8), st.booleans(), st.none(), st.integers(-3, 3), st.floats(allow_nan=False, width=16),
)
json_value = st.recursive(json_scalar, lambda c: st.lists(c, max_size=2) | st.dictionaries(st.text(max_size=4), c,
                                                                                           max_size=2), max_leaves=4)
verdict_obj = st.one_of(
    st.just({"verdict": "correct"}),
    st.builds(lambda v: {"verdict": v}, json_value),
    st.dictionaries(st.sampled_from(["verdict", "reason", "Verdict", "score"]), json_value, max_size=3),
    json_value,
)


@st.composite
def judge_output(draw) -> tuple[str, bool]:
    """A judge output assembled from the contract's parts, and whether the contract calls it correct."""
    obj = draw(verdict_obj)
    ok = isinstance(obj, dict) and list(obj) == ["verdict"] and obj["verdict"] == "correct" \
        and type(obj["verdict"]) is str
    body = json.dumps(obj, indent=draw(st.sampled_from([None, 0, 2])), ensure_ascii=draw(st.booleans()),
                      separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])))
    if draw(st.booleans()) and isinstance(obj, dict) and obj:  # a duplicate key: never correct
        key = next(iter(obj))
        body = body[:-1].rstrip() + f', {json.dumps(key)}: "correct"}}'
        ok = False
    fence = draw(st.sampled_from(["", "json", "bare", "python", "JSON", "inline", "unclosed"]))
    if fence == "json":
        body = f"```json\n{body}\n```"
    elif fence == "bare":
        body = f"```\n{body}\n```"
    elif fence in ("python", "JSON"):
        body, ok = f"```{fence}\n{body}\n```", False
    elif fence == "inline":
        body, ok = f"```json {body}```", False
    elif fence == "unclosed":
        body, ok = f"```json\n{body}", False
    reasoning = draw(st.text(max_size=40).filter(lambda r: "</think>" not in r))
    think = draw(st.sampled_from(["", "tagged", "prefilled", "unclosed"]))
    if think == "tagged":
        body = f"<think>{reasoning}</think>\n{body}"
    elif think == "prefilled":
        body = f"{reasoning}\n</think>\n\n{body}"
    elif think == "unclosed":
        body, ok = f"<think>{reasoning}\n{body}", False
    elif "<think>" in body:
        ok = False  # a "<think>" (here inside a JSON string) without "</think>" is truncated reasoning
    if "</think>" in body and think == "":
        ok = False  # the verdict would be cut at the first "</think>" inside it
    trailing = draw(st.sampled_from(["", " ", "\n", "\n\n  ", "x", ".", "\n{}", '\n{"verdict": "correct"}']))
    if trailing.strip():
        ok = False
    lead = draw(st.sampled_from(["", " ", "\n", "\t\n"]))
    return lead + body + trailing, ok


@settings(max_examples=400 * SCALE)
@given(case=judge_output())
@example(case=('{"verdict": "correct"}', True))
@example(case=('```json\n{"verdict": "correct"}\n```', True))
@example(case=('{"verdict": "wrong", "verdict": "correct"}', False))
@example(case=('{"verdict": "correct", "verdict": "correct"}', False))
def test_only_the_well_formed_correct_verdict_is_correct(case):
    text, ok = case
    assert grade_judged(text) == (1.0 if ok else 0.0), text


VERDICTS = ['{"verdict": "correct"}', '{"verdict":"correct"}', '```json\n{"verdict": "correct"}\n```',
            '{\n  "verdict": "correct"\n}']


@settings(max_examples=200 * SCALE)
@given(verdict=st.sampled_from(VERDICTS), junk=any_text.filter(lambda j: j.strip() and "</think>" not in j))
def test_chatter_around_a_verdict_is_wrong(verdict, junk):
    """Text before (without a closing </think>) or after a correct verdict makes the output malformed."""
    assert grade_judged(junk + verdict) == 0.0
    assert grade_judged(verdict + junk) == 0.0
    assert grade_judged(verdict + "\n" + junk.strip() + "\n" + verdict) == 0.0


@settings(max_examples=200 * SCALE)
@given(text=any_text.filter(lambda t: "{" not in t))
def test_merely_saying_correct_is_wrong(text):
    """Without a JSON object there is no verdict, whatever words the judge uses."""
    assert grade_judged(text) == 0.0
    assert grade_judged(f"{text} correct") == 0.0
    assert grade_judged(f"<think>{text}</think> The answer is correct.") == 0.0


@settings(max_examples=100 * SCALE)
@given(first=st.sampled_from(["correct", "wrong"]), second=st.sampled_from(["correct", "wrong"]),
       sep=st.sampled_from(["", " ", "\n", ",", "\n\n"]))
def test_two_verdicts_are_never_correct(first, second, sep):
    text = f'{{"verdict": "{first}"}}{sep}{{"verdict": "{second}"}}'
    assert grade_judged(text) == 0.0
    assert grade_judged(f"[{text.replace(sep, ',') if sep else text}]") == 0.0
    assert grade_judged(f'{{"verdict": "{first}", "verdict": "{second}"}}') == 0.0


@settings(max_examples=30 * SCALE)
@given(n=st.integers(10_000, 300_000), piece=st.sampled_from(["[", "{", '{"verdict": ', "<think>", "`", " ", "\\"]))
def test_huge_outputs_are_wrong(n, piece):
    assert grade_judged(piece * n) == 0.0
    text = piece * n + '{"verdict": "correct"}'
    padded_verdict = piece == " " and len(text) <= MAX_JUDGE_CHARS  # only leading whitespace is allowed
    assert grade_judged(text) == (1.0 if padded_verdict else 0.0)
