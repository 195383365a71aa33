"""Fuzzing the data loaders (zppo_ray.data): malformed rows in jsonl, parquet and in-memory records.

Property: every row either becomes a Question whose content is right (checked field by field against the
raw row below, including "the grader accepts its gold"), or is rejected: `on_bad_row=error` raises a
DataError naming the file, the row and a reason code that says which field is bad; `on_bad_row=skip`
counts it. Never another exception, never a Question built from a bad row. The files are written the way
tests/data/conftest.py writes them (json.dumps lines, pa.Table.from_pylist), into a temporary directory.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, event, example, given, settings
from hypothesis import strategies as st

from zppo_ray.data import KINDS, REASONS, DataError, Question, load_hf, load_questions_report
from zppo_ray.data.loaders import PRESETS, TRANSFORMS, ColumnMap
from zppo_ray.data.validate import MAX_CHOICES, ROLES, BadRow, RowContext, build_question, render_choices
from zppo_ray.rewards import LETTERS, check_gold, normalize_gold_letter

SCALE = int(os.environ.get("ZPPO_FUZZ_SCALE", "1"))
IMAGE = "img.png"  # written into every example's directory; "ABS" in a row stands for its absolute path

# Which words a rejection's message must contain for each reason: the field it is about.
FIELD_WORDS = {
    "bad_json": ["json", "utf-8", "line"], "not_a_record": ["record"], "missing_id": ["id"],
    "missing_prompt": ["prompt", "message"], "missing_answer": ["answer"], "bad_answer": ["answer", "solution"],
    "wrong_type": ["id", "prompt", "message", "answer", "image"], "unknown_kind": ["kind"],
    "bad_choices": ["choice"], "bad_mc_answer": ["answer"], "missing_image": ["image"],
    "prompt_too_long": ["tokens"],
}

junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=6,
)
huge = st.sampled_from(["x" * 100_000, "{" * 50_000, "\\boxed{" * 10_000])
text = st.text(max_size=20) | st.sampled_from(["", " ", "\n", "1", "B", "(c)", "K", "\\frac{1}{2}", "\x00"]) | huge
number = st.integers() | st.floats() | st.sampled_from([2**70, -(2**70), float("nan"), float("inf"), 1e308])
part = st.fixed_dictionaries({"type": st.sampled_from(["text", "image"])}, optional={"text": text | junk})
message = st.fixed_dictionaries({}, optional={
    "role": st.sampled_from([*ROLES, "bot", ""]) | junk,
    "content": text | st.lists(part | junk, max_size=3) | junk,
})
image_item = st.sampled_from([IMAGE, "ABS", "missing.png", "", ".", "a" * 5000, "~nosuchuser/x.png", "a\x00b.png",
                              "sub/../img.png"]) | st.fixed_dictionaries(
    {}, optional={"path": st.sampled_from([IMAGE, "ABS", "missing.png", "", None]), "bytes": st.none()}) | junk

row_strategy = st.fixed_dictionaries({}, optional={
    "id": st.text(max_size=6) | st.integers() | st.sampled_from(["", " ", None, True, 1.5, "a" * 10_000]) | junk,
    "prompt": text | st.lists(message, max_size=3) | junk,
    "answer": text | number | st.booleans() | junk,
    "kind": st.sampled_from([*KINDS, "", "MC", "essay", None]) | junk,
    "choices": st.lists(text | number, max_size=12) | st.sampled_from(["ABCD", [], None]) | junk
    | st.just([str(i) for i in range(MAX_CHOICES + 1)]),
    "images": image_item | st.lists(image_item, max_size=3),
    "subject": junk,
})
nonblank = st.text(min_size=1, max_size=20).filter(str.strip)
good_prompt = nonblank | st.builds(lambda sys_text, user: [{"role": "system", "content": sys_text},
                                                            {"role": "user", "content": user}],
                                    nonblank, nonblank | nonblank.map(lambda t: [{"type": "image"},
                                                                                 {"type": "text", "text": t}]))


@st.composite
def near_valid_row(draw) -> dict:
    """A valid row of a random kind, then each field replaced by a hostile value (or dropped) now and then:
    rows that are almost right are the ones a loose check lets through."""
    kind = draw(st.sampled_from(KINDS))
    row = {"prompt": draw(good_prompt)}
    if kind == "mc":
        row["choices"] = draw(st.lists(nonblank | st.integers(), min_size=1, max_size=12))
        letter = chr(65 + draw(st.integers(0, min(len(row["choices"]), 10) - 1)))
        row["answer"] = draw(st.sampled_from(["{}", "({})", "{}.", " {} "])).format(
            letter.lower() if draw(st.booleans()) else letter)
    elif kind == "free":
        row["answer"] = draw(nonblank)
    else:
        row["answer"] = draw(nonblank | st.integers() | st.floats(allow_nan=False, allow_infinity=False))
    if kind != "math" or draw(st.booleans()):
        row["kind"] = kind
    if draw(st.booleans()):
        row["id"] = draw(nonblank | st.integers())
    if draw(st.booleans()):
        row["images"] = draw(st.sampled_from([IMAGE, "ABS", [IMAGE, "ABS"], {"path": IMAGE}, []]))
    hostile = draw(st.sets(st.sampled_from(["id", "prompt", "answer", "kind", "choices", "images"]), max_size=2))
    for name in hostile:
        if draw(st.booleans()):
            row.pop(name, None)
        else:
            row[name] = draw(HOSTILE_FIELDS[name])
    return row


HOSTILE_FIELDS = {
    "id": st.sampled_from(["", " ", None, True, 1.5, "a" * 10_000]) | junk,
    "prompt": st.sampled_from(["", " \n", None, 7, [], [{"role": "user", "content": ""}],
                               [{"role": "user", "content": [{"type": "image"}]}],
                               [{"role": "user", "content": [1, 2]}], [{"role": "bot", "content": "x"}],
                               [{"role": "system", "content": "x"}]]) | huge | junk,
    "answer": st.sampled_from(["", " ", None, True, "K", "(k)", "AB", "ı", "1" * 1001]) | number | huge | junk,
    "kind": st.sampled_from(["MC", "essay", " math", 1, None, ""]) | junk,
    "choices": st.sampled_from(["ABCD", [], [True, "x"], [None], [str(i) for i in range(MAX_CHOICES + 1)]]) | junk,
    "images": image_item | st.lists(image_item, max_size=3),
}
rows_strategy = st.lists(near_valid_row() | row_strategy, min_size=1, max_size=5)


def _materialize(value, root: Path):
    """Replace the "ABS" placeholder by the absolute path of the example's image."""
    if value == "ABS":
        return str(root / IMAGE)
    if isinstance(value, list):
        return [_materialize(v, root) for v in value]
    if isinstance(value, dict):
        return {k: _materialize(v, root) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------------- the content oracle


def check_question(q: Question, row: dict, where: str, derived_id: str, root: Path) -> None:
    """A loaded Question must say what its row says, and be usable downstream (grader, prompts)."""
    assert isinstance(q, Question) and q.extra["origin"] == where
    # id: the row's own (a non-blank str or an int, never a bool/float/None), else the derived one.
    if "id" in row:
        assert isinstance(row["id"], (str, int)) and not isinstance(row["id"], bool) and str(row["id"]).strip()
        assert q.id == str(row["id"])
    else:
        assert q.id == derived_id
    # kind: the row's when it has one, always a known kind.
    assert q.kind in KINDS
    if row.get("kind") not in (None, ""):
        assert q.kind == row["kind"]
    # choices: only lists of text-like values, rendered into the prompt of an mc question.
    rendered = ""
    if q.choices is not None:
        raw = row["choices"]
        assert isinstance(raw, list) and 1 <= len(raw) <= MAX_CHOICES
        assert q.choices == tuple(str(c) for c in raw) and not any(isinstance(c, bool) for c in raw)
        if q.kind == "mc":
            rendered = "\n\n" + render_choices(q.choices)
    elif q.kind == "mc":
        pytest.fail("an mc question without choices")
    # prompt: non-blank text, or chat messages with a non-blank user text; never anything else.
    assert isinstance(q.text, str) and q.text.strip()
    if isinstance(q.prompt, str):
        assert isinstance(row["prompt"], str) and q.prompt == row["prompt"] + rendered
    else:
        assert isinstance(row["prompt"], list) and len(q.prompt) == len(row["prompt"])
        assert all(m["role"] in ROLES for m in q.prompt) and any(m["role"] == "user" for m in q.prompt)
    # answer: the row's, stripped; numbers only for math and only finite; and a gold the grader accepts.
    raw = row["answer"]
    assert isinstance(q.answer, str) and q.answer.strip() == q.answer and q.answer
    assert not isinstance(raw, bool)
    if isinstance(raw, float):
        assert math.isfinite(raw), f"a non-finite number became the gold {q.answer!r}"
    if q.kind == "mc":
        assert isinstance(raw, str) and q.answer == raw.strip().strip("().").strip().upper()
        assert q.answer in LETTERS[:len(q.choices)] and normalize_gold_letter(q.answer) == q.answer
    else:
        assert isinstance(raw, (str, int, float)) and q.answer == str(raw).strip()
        if q.kind == "math":
            check_gold(q.answer)  # the grader would raise at training time otherwise
    # images: bytes, or paths of readable files.
    for image in q.images:
        assert isinstance(image, bytes) and image or Path(image).is_file()


def check_rejection(err: DataError, where: str) -> None:
    msg = str(err)
    assert err.reason in REASONS and err.origin == where, msg
    assert msg.startswith(f"{where}: {err.reason}: "), msg
    detail = msg.lower()[len(where):]
    assert any(w in detail for w in FIELD_WORDS[err.reason]), msg


def _load(path: Path, mode: str, **source):
    try:
        return load_questions_report({"path": str(path), **source}, on_bad_row=mode)
    except DataError as e:
        if e.reason in ("empty", "duplicate_id"):
            return e
        raise


def run_both_modes(path: Path, rows: list, wheres: list[str], derived: list[str], root: Path, **source) -> None:
    """Skip mode: kept rows are checked one by one, the rest counted. Error mode: the first bad row named."""
    skipped = _load(path, "skip", **source)
    if isinstance(skipped, DataError):
        if skipped.reason == "duplicate_id":
            return  # duplicate ids fail in both modes by design (tests/data cover the message)
        kept = {}
    else:
        questions, report = skipped
        assert report.rows == len(rows) and report.loaded == len(questions)
        assert report.loaded + sum(report.skipped.values()) == report.rows
        assert set(report.skipped) <= set(REASONS)
        kept = {q.extra["origin"]: q for q in questions}
    event(f"rows kept: {'some' if kept else 'none'}")
    for row, where, did in zip(rows, wheres, derived):
        if where in kept:
            check_question(kept[where], row, where, did, root)
    bad = [w for w in wheres if w not in kept]
    if not bad:
        assert not isinstance(_load(path, "error", **source), DataError)
        return
    with pytest.raises(DataError) as e:
        load_questions_report({"path": str(path), **source}, on_bad_row="error")
    check_rejection(e.value, bad[0])


# ----------------------------------------------------------------------------------- jsonl


RAW_LINES = st.sampled_from([
    "{not json", "[" * 100_000, '{"answer": ' + "1" * 5000 + "}", "NaN", '"just a string"', "{}",
    '{"prompt": "p", "answer": NaN}', '{"prompt": "p", "answer": Infinity}', "\ufeff{}", "\x00",
])


@settings(max_examples=60 * SCALE)
@given(rows=rows_strategy, raw=st.lists(RAW_LINES | st.binary(max_size=8).filter(lambda b: not set(b"\r\n") & set(b)),
                                        max_size=2))
@example(rows=[{"prompt": "p", "answer": float("nan")}], raw=[])  # pandas writes NaN for a missing answer
@example(rows=[{"prompt": "p", "answer": "1" * 1001}], raw=[])  # the grader refuses golds over 1000 chars
@example(rows=[{"prompt": "p", "answer": "K", "kind": "mc", "choices": list("abcdefghijkl")}], raw=[])
@example(rows=[{"prompt": [{"role": "user", "content": [{"type": "image"}]}], "answer": "1"}], raw=[])
@example(rows=[{"prompt": "p", "answer": "1", "images": "a" * 5000}], raw=[])
@example(rows=[{"prompt": "p", "answer": "1"}], raw=["[" * 100_000, '{"answer": ' + "1" * 5000 + "}"])
@example(rows=[{"prompt": "p", "answer": "1"}], raw=[b"\xff\xfe"])
def test_jsonl_rows_load_right_or_are_rejected_by_name(rows, raw):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / IMAGE).write_bytes(b"\x89PNG")
        path = root / "rows.jsonl"
        lines = [json.dumps(_materialize(r, root)).encode() for r in rows]
        lines += [r if isinstance(r, bytes) else r.encode("utf-8", "surrogatepass") for r in raw]
        assume(all(line.decode("utf-8", "replace").strip() for line in lines))  # blank lines are not rows
        path.write_bytes(b"\n".join(lines) + b"\n")
        parsed = [_materialize(r, root) for r in rows] + [None] * len(raw)
        wheres = [f"{path} line {i + 1}" for i in range(len(lines))]
        derived = [f"rows:{i}" for i in range(len(lines))]
        run_both_modes(path, parsed, wheres, derived, root)


# ----------------------------------------------------------------------------------- parquet

column = st.sampled_from(["str", "int", "float", "none"])


@st.composite
def parquet_rows(draw) -> list[dict]:
    """Rows with one arrow type per column (what parquet can hold), values still hostile."""
    n = draw(st.integers(1, 4))
    answer_type = draw(st.sampled_from(["str", "int", "float"]))
    answers = {"str": text | st.none(), "int": st.integers(-2**63, 2**63 - 1) | st.none(),
               "float": st.floats() | st.none()}[answer_type]
    rows = []
    for _ in range(n):
        row = {"prompt": draw(text | st.none()), "answer": draw(answers),
               "kind": draw(st.sampled_from([*KINDS, "", "essay", None])),
               "choices": draw(st.none() | st.lists(text, max_size=12)),
               "images": draw(st.none() | st.lists(st.fixed_dictionaries({
                   "bytes": st.none() | st.sampled_from([b"", b"\x89PNG"]),
                   "path": st.none() | st.sampled_from([IMAGE, "missing.png", ""])}), max_size=2))}
        rows.append(row)
    return rows


def _drop_nulls(row: dict) -> dict:
    """What the oracle sees: parquet has every column in every row, null where absent."""
    return {k: v for k, v in row.items() if v is not None}


@settings(max_examples=40 * SCALE)
@given(rows=parquet_rows())
@example(rows=[{"prompt": "p", "answer": float("nan"), "kind": None, "choices": None, "images": None}])
def test_parquet_rows_load_right_or_are_rejected_by_name(rows):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / IMAGE).write_bytes(b"\x89PNG")
        path = root / "rows.parquet"
        try:
            pq.write_table(pa.Table.from_pylist(rows), path)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            assume(False)
        wheres = [f"{path} row {i}" for i in range(len(rows))]
        derived = [f"rows:{i}" for i in range(len(rows))]
        run_both_modes(path, [_drop_nulls(r) for r in rows], wheres, derived, root)


# ----------------------------------------------------------------------------------- in-memory records


any_object = junk | st.binary(max_size=4) | st.tuples(junk) | st.frozensets(st.integers(), max_size=2) | st.builds(
    object) | st.sampled_from([2**70, float("nan"), b"", bytearray(b"x")])


@settings(max_examples=150 * SCALE)
@given(preset=st.sampled_from([None, *PRESETS]), row=st.dictionaries(
    st.sampled_from(["id", "question_id", "prompt", "question", "problem", "answer", "solution", "kind", "choices",
                     "options", "answer_index", "images", "level", "tier", "source"]),
    any_object | text | number, max_size=8) | any_object | near_valid_row())
@example(preset="mmlu_pro", row={"question": "q", "options": ["a", "b"], "answer": "A", "answer_index": 2**70})
@example(preset="mmlu_pro", row={"question": "q", "options": ["a", "b"], "answer": "A", "answer_index": -1})
def test_any_record_is_a_question_or_a_bad_row(preset, row):
    """build_question (shared by jsonl, parquet and HF rows) only ever returns a Question or raises BadRow."""
    cmap = PRESETS[preset] if preset else ColumnMap()
    transform = TRANSFORMS[cmap.answer_transform] if cmap.answer_transform else None
    ctx = RowContext(where="mem row 0", derived_id="mem:0", default_kind=cmap.default_kind or "math", source="mem",
                     base_dir=None)
    try:
        q = build_question(row, cmap, ctx, transform)
    except BadRow as bad:
        assert bad.reason in REASONS and bad.detail
        event(f"rejected: {bad.reason}")
        return
    event("loaded")
    assert isinstance(q, Question) and q.kind in KINDS and isinstance(q.text, str) and q.text.strip()
    if q.kind == "math":
        check_gold(q.answer)
    elif q.kind == "mc":
        assert q.answer in LETTERS[:len(q.choices)]


@settings(max_examples=30 * SCALE)
@given(rows=st.lists(rows_strategy.map(lambda rs: {k: v for k, v in rs[0].items() if k != "images"}), min_size=1,
                     max_size=4))
def test_hf_rows_skip_mode_never_crashes(rows):
    """In-memory datasets (any iterable of records with column_names) go through the same checks."""

    class Rows(list):
        column_names = ["id", "prompt", "answer", "kind", "choices", "subject"]

    try:
        questions = load_hf(Rows(rows), on_bad_row="skip")
    except DataError as e:
        assert e.reason in ("empty", "duplicate_id"), str(e)
        return
    for q in questions:
        index = int(q.extra["origin"].rsplit(" ", 1)[1])
        check_question(q, rows[index], f"hf row {index}", f"hf:{index}", Path("."))
