"""Every bad-row kind: an error naming file, row and reason, or a counted skip; duplicate ids always fail."""

from __future__ import annotations

import logging

import pytest

from zppo_ray.data import DataError, Question, ensure_unique_ids, load_questions, load_questions_report

GOOD = {"id": "ok", "prompt": "What is 1+1?", "answer": "2"}

# (bad row, reason, words of the detail, column map)
BAD_ROWS = [
    ({"id": "b", "prompt": "p", "answer": None}, "missing_answer", "'answer' is empty or absent", None),
    ({"id": "b", "prompt": "p"}, "missing_answer", "'answer' is empty or absent", None),
    ({"id": "b", "prompt": "p", "answer": "   "}, "missing_answer", "empty or absent", None),
    ({"id": "b", "prompt": "", "answer": "1"}, "missing_prompt", "'prompt' is empty", None),
    ({"id": "b", "prompt": [{"role": "system", "content": "s"}], "answer": "1"}, "missing_prompt",
     "without a user message", None),
    ({"id": "b", "prompt": "p", "answer": {"v": 1}}, "wrong_type", "answer must be text, got dict", None),
    ({"id": "b", "prompt": "p", "answer": True}, "wrong_type", "got bool", None),
    ({"id": "b", "prompt": 42, "answer": "1"}, "wrong_type", "prompt must be text or a list", None),
    ({"id": "b", "prompt": [{"role": "bot", "content": "x"}], "answer": "1"}, "wrong_type", "message 0", None),
    ({"id": "b", "prompt": "p", "answer": 3, "kind": "free"}, "wrong_type", "a free answer must be text", None),
    ({"id": "b", "prompt": "p", "answer": 1, "kind": "mc", "choices": ["x", "y"]}, "wrong_type",
     "mmlu_index_to_letter", None),
    ({"id": "b", "prompt": "p", "answer": "1", "kind": "essay"}, "unknown_kind", "'essay'", None),
    ({"id": "b", "prompt": "p", "answer": "E", "kind": "mc", "choices": ["1", "2", "3", "4"]}, "bad_mc_answer",
     "not a letter in A..D (4 choices)", None),
    ({"id": "b", "prompt": "p", "answer": "AB", "kind": "mc", "choices": ["1", "2"]}, "bad_mc_answer", "'AB'", None),
    ({"id": "b", "prompt": "p", "answer": "A", "kind": "mc"}, "bad_choices", "mc question without choices", None),
    ({"id": "b", "prompt": "p", "answer": "A", "kind": "mc", "choices": "ABCD"}, "bad_choices", "list of strings",
     None),
    ({"id": "b", "prompt": "p", "answer": "A", "kind": "mc", "choices": []}, "bad_choices", "need 1..26", None),
    ({"id": "b", "prompt": "p", "answer": "1", "images": ["nowhere/cat.png"]}, "missing_image",
     "unreadable image path", None),
    ({"id": "b", "prompt": "p", "answer": "1", "images": [3]}, "wrong_type", "an image must be a path or bytes",
     None),
    ({"id": "", "prompt": "p", "answer": "1"}, "missing_id", "id column 'id' is empty", None),
    ({"id": 1.5, "prompt": "p", "answer": "1"}, "wrong_type", "id must be a string or integer", None),
    ({"id": "b", "question": "q", "answer": "no hash here"}, "bad_answer", "gsm8k_hash: no '#### <answer>'",
     {"preset": "gsm8k", "id": "id"}),
    ({"id": "b", "problem": "q", "solution": "no box"}, "bad_answer", "math_boxed: no complete", {"preset": "math",
                                                                                                 "id": "id"}),
    ({"id": "b", "question": "q", "choices": ["a", "b"], "answer": 5}, "bad_answer", "index 5 out of range",
     {"preset": "mmlu", "id": "id"}),
    ({"id": "b", "prompt": "one two three four five six", "answer": "1"}, "prompt_too_long", "6 tokens > max_prompt_tokens 5", None),
]


def _good_for(cmap):
    if cmap is None:
        return dict(GOOD)
    preset = cmap["preset"]
    return {"gsm8k": {"id": "ok", "question": "q", "answer": "#### 2"},
            "math": {"id": "ok", "problem": "q", "solution": "\\boxed{2}"},
            "mmlu": {"id": "ok", "question": "q", "choices": ["a", "b"], "answer": 1}}[preset]


@pytest.mark.parametrize("row, reason, detail, cmap", BAD_ROWS, ids=[f"{r[1]}-{i}" for i, r in enumerate(BAD_ROWS)])
def test_bad_row_error_mode(tmp_path, write_jsonl, word_tokenizer, row, reason, detail, cmap):
    f = write_jsonl(tmp_path / "rows.jsonl", [_good_for(cmap), row])
    with pytest.raises(DataError) as e:
        load_questions({"path": str(f), "column_map": cmap}, word_tokenizer, "error", max_prompt_tokens=5)
    msg = str(e.value)
    assert msg.startswith(f"{f} line 2: {reason}: "), msg
    assert detail in msg and e.value.reason == reason and e.value.origin == f"{f} line 2"


@pytest.mark.parametrize("row, reason, detail, cmap", BAD_ROWS, ids=[f"{r[1]}-{i}" for i, r in enumerate(BAD_ROWS)])
def test_bad_row_skip_mode(tmp_path, write_jsonl, word_tokenizer, caplog, row, reason, detail, cmap):
    f = write_jsonl(tmp_path / "rows.jsonl", [_good_for(cmap), row])
    with caplog.at_level(logging.WARNING, logger="zppo_ray.data.validate"):
        qs, report = load_questions_report({"path": str(f), "column_map": cmap}, word_tokenizer, "skip",
                                           max_prompt_tokens=5)
    assert [q.id for q in qs] == ["ok"]
    assert (report.rows, report.loaded, dict(report.skipped)) == (2, 1, {reason: 1})
    assert detail in report.examples[reason] and "line 2" in report.examples[reason]
    assert f"skipped 1 of 2 rows ({reason}=1 at line 2)" in caplog.text  # the file is named once, in front


def test_bad_rows_in_parquet_name_the_row(tmp_path, write_parquet):
    f = write_parquet(tmp_path / "p.parquet", [GOOD, {"id": "x", "prompt": "p", "answer": None}])
    with pytest.raises(DataError, match=rf"^{f} row 1: missing_answer"):
        load_questions(str(f))
    qs, report = load_questions_report(str(f), on_bad_row="skip")
    assert len(qs) == 1 and report.skipped["missing_answer"] == 1


def test_bad_json_line(tmp_path, write_jsonl):
    f = write_jsonl(tmp_path / "j.jsonl", [GOOD, {}, [1, 2]], raw_lines={1: "{not json"})
    with pytest.raises(DataError, match=rf"{f} line 2: bad_json"):
        load_questions(str(f))
    qs, report = load_questions_report(str(f), on_bad_row="skip")
    assert len(qs) == 1 and dict(report.skipped) == {"bad_json": 1, "not_a_record": 1}


def test_derived_ids_survive_skips_and_blank_lines(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "a", "answer": "1"}\n\n{"prompt": "b"}\n{"prompt": "c", "answer": "3"}\n')
    qs = load_questions(str(f), on_bad_row="skip")
    assert [q.id for q in qs] == ["d:0", "d:2"]
    assert qs[1].extra["origin"] == f"{f} line 4"


def test_duplicate_ids_always_fail(tmp_path, write_jsonl):
    f = write_jsonl(tmp_path / "dup.jsonl", [GOOD, {"id": "x", "prompt": "p", "answer": "1"}, GOOD])
    for mode in ("error", "skip"):
        with pytest.raises(DataError, match=rf"duplicate id 'ok': {f} line 1 and {f} line 3"):
            load_questions(str(f), on_bad_row=mode)


def test_duplicate_ids_across_files_of_a_directory(tmp_path, write_jsonl, write_parquet):
    write_jsonl(tmp_path / "d" / "a.jsonl", [GOOD])
    write_parquet(tmp_path / "d" / "b.parquet", [GOOD])
    with pytest.raises(DataError, match=r"duplicate id 'ok': .*a\.jsonl line 1 and .*b\.parquet row 0"):
        load_questions(str(tmp_path / "d"))


def test_duplicate_ids_across_sources(tmp_path, write_jsonl):
    a = load_questions(str(write_jsonl(tmp_path / "a.jsonl", [GOOD])))
    b = load_questions(str(write_jsonl(tmp_path / "b.jsonl", [GOOD])))
    ensure_unique_ids(a)
    with pytest.raises(DataError, match=r"duplicate id 'ok': .*a\.jsonl line 1 and .*b\.jsonl line 1"):
        ensure_unique_ids(a + b)


def test_images_paths_bytes_and_hf_dicts(tmp_path, write_jsonl, write_parquet):
    img = tmp_path / "cat.png"
    img.write_bytes(b"\x89PNG")
    f = write_parquet(tmp_path / "imgs.parquet", [
        {"prompt": "p", "answer": "1", "images": [{"bytes": b"raw", "path": None}]},
        {"prompt": "p", "answer": "1", "images": [{"bytes": None, "path": str(img)}]},
    ])
    q0, q1 = load_questions(str(f))
    assert q0.images == (b"raw",) and q1.images == (str(img),)
    missing = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "p", "answer": "1", "images": "cat2.png"}])
    with pytest.raises(DataError, match=rf"missing_image: unreadable image path '{tmp_path}/cat2.png'"):
        load_questions(str(missing))


def test_everything_skipped_is_an_error(tmp_path, write_jsonl):
    f = write_jsonl(tmp_path / "all_bad.jsonl", [{"prompt": "p"}, {"prompt": "q"}])
    with pytest.raises(DataError, match=r"no valid questions \(2 rows read, skipped: \{'missing_answer': 2\}\)"):
        load_questions(str(f), on_bad_row="skip")


def test_chat_prompt_becomes_a_tuple(tmp_path, write_jsonl):
    (q,) = load_questions(str(write_jsonl(tmp_path / "h.jsonl", [{"prompt": [{"role": "user", "content": "x"}],
                                                                   "answer": "1"}])))
    assert isinstance(q, Question) and q.prompt == ({"role": "user", "content": "x"},)
