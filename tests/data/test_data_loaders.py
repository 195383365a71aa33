"""Public layouts load through presets; directories, HF objects and column maps behave as documented."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zppo_ray.config import SourceConfig
from zppo_ray.data import (
    PRESETS,
    ColumnMap,
    DataError,
    Question,
    load_hf,
    load_questions,
    load_questions_report,
    resolve_column_map,
)
from zppo_ray.data.loaders import _last_boxed
from zppo_ray.errors import SetupError


def test_gsm8k_parquet(tmp_path, write_parquet):
    f = write_parquet(tmp_path / "gsm8k.parquet", [
        {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
        {"question": "How many cents in 12.34 dollars... times 100?", "answer": "work\n#### 1,234"},
    ])
    qs = load_questions(SourceConfig(path=str(f), column_map="gsm8k"))
    assert [q.answer for q in qs] == ["7", "1234"]
    assert [q.id for q in qs] == ["gsm8k:0", "gsm8k:1"]
    q = qs[0]
    assert q.kind == "math" and q.prompt.startswith("Tom has") and q.choices is None and q.source == "gsm8k"
    assert q.extra["raw_answer"].endswith("#### 7") and q.extra["origin"] == f"{f} row 0"


def test_math_jsonl(tmp_path, write_jsonl):
    f = write_jsonl(tmp_path / "math.jsonl", [
        {"problem": "Compute 1/2.", "solution": "So $\\boxed{\\frac{1}{2}}$.", "level": "Level 2", "type": "Algebra"},
        {"problem": "Set?", "solution": "first \\boxed{1} then \\boxed{\\{1, 2\\}}", "level": "Level 5",
         "type": "Counting"},
    ])
    qs = load_questions({"path": str(f), "column_map": "math"})
    assert [q.answer for q in qs] == ["\\frac{1}{2}", "\\{1, 2\\}"]
    assert [q.tier for q in qs] == ["Level 2", "Level 5"] and qs[0].extra["type"] == "Algebra"


@pytest.mark.parametrize("text, expected", [
    ("\\boxed{a{b}c}", "a{b}c"),
    ("x \\boxed{1} y \\boxed{2}", "2"),
    ("\\fbox{7}", "7"),
    ("$\\boxed 5$", "5"),
    ("\\boxed{\\frac{1}{2}", None),
    ("no box", None),
])
def test_last_boxed(text, expected):
    assert _last_boxed(text) == expected


def test_mmlu_parquet_renders_choices(tmp_path, write_parquet):
    f = write_parquet(tmp_path / "mmlu.parquet", [
        {"question": "2+2?", "subject": "math", "choices": ["3", "4", "5", "6"], "answer": 1},
        {"question": "Capital of France?", "subject": "geo", "choices": ["Paris", "Rome", "Oslo", "Bern"], "answer": 0},
    ])
    qs = load_questions({"path": str(f), "column_map": "mmlu"})
    q = qs[0]
    assert q.kind == "mc" and q.answer == "B" and q.choices == ("3", "4", "5", "6")
    assert q.prompt == "2+2?\n\n(A) 3\n(B) 4\n(C) 5\n(D) 6"
    assert q.extra["subject"] == "math" and qs[1].answer == "A"
    plain = load_questions({"path": str(f), "column_map": "mmlu", "render_choices": False})
    assert plain[0].prompt == "2+2?"


def test_mmlu_pro_jsonl(tmp_path, write_jsonl):
    options = [f"opt{i}" for i in range(10)]
    f = write_jsonl(tmp_path / "mmlu_pro.jsonl", [
        {"question_id": 70, "question": "Pick the last.", "options": options, "answer": "J", "answer_index": 9,
         "category": "law"},
        {"question_id": 71, "question": "Pick the third.", "options": options[:4], "answer": "C", "answer_index": 2},
    ])
    qs = load_questions({"path": str(f), "column_map": "mmlu_pro"})
    assert [(q.id, q.answer) for q in qs] == [("70", "J"), ("71", "C")]
    assert "(J) opt9" in qs[0].prompt and len(qs[1].choices) == 4
    bad = write_jsonl(tmp_path / "bad_pro.jsonl", [
        {"question_id": 1, "question": "q", "options": options, "answer": "A", "answer_index": 3}])
    with pytest.raises(DataError, match="bad_answer: mmlu_pro: answer 'A' disagrees with answer_index 3"):
        load_questions({"path": str(bad), "column_map": "mmlu_pro"})


def test_identity_layout_chat_prompt_images_and_kinds(tmp_path, write_jsonl):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"\x89PNG")
    f = write_jsonl(tmp_path / "mixed.jsonl", [
        {"id": "q1", "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Which?"}],
         "answer": "b", "kind": "mc", "choices": ["x", "y"], "images": ["img/a.png"], "tier": 3, "source": "mine"},
        {"id": "q2", "prompt": "Name a colour.", "answer": "red", "kind": "free"},
        {"id": "q3", "prompt": "1+1?", "answer": 2},
    ])
    q1, q2, q3 = load_questions(str(f))
    assert q1.answer == "B" and q1.images == (str(tmp_path / "img" / "a.png"),) and q1.tier == "3"
    assert q1.prompt[-1]["content"] == "Which?\n\n(A) x\n(B) y" and q1.text.startswith("Which?")
    assert q1.source == "mine" and isinstance(q1, Question)
    assert (q2.kind, q2.answer, q2.source) == ("free", "red", "mixed")
    assert (q3.kind, q3.answer) == ("math", "2")


def test_directory_sorted_recursive_and_split(tmp_path, write_jsonl, write_parquet):
    d = tmp_path / "ds"
    write_parquet(d / "b.parquet", [{"prompt": "b0", "answer": "1"}])
    write_jsonl(d / "a.jsonl", [{"prompt": "a0", "answer": "1"}, {"prompt": "a1", "answer": "2"}])
    write_jsonl(d / "sub" / "c.jsonl", [{"prompt": "c0", "answer": "3"}])
    (d / "notes.txt").write_text("ignored")
    qs = load_questions(str(d))
    assert [q.id for q in qs] == ["a:0", "a:1", "b:0", "c:0"]
    hub = tmp_path / "hub"
    write_parquet(hub / "main" / "train-00000-of-00001.parquet", [{"question": "t", "answer": "#### 1"}])
    write_parquet(hub / "main" / "test-00000-of-00001.parquet", [{"question": "e", "answer": "#### 2"}])
    train = load_questions({"path": str(hub), "split": "train", "column_map": "gsm8k"})
    assert [q.prompt for q in train] == ["t"]
    with pytest.raises(DataError, match="no .parquet or .jsonl files for split 'dev'"):
        load_questions({"path": str(hub), "split": "dev"})


def test_limit_kind_default_and_source_name(tmp_path, write_jsonl):
    f = write_jsonl(tmp_path / "x.jsonl", [{"prompt": f"p{i}", "answer": "t"} for i in range(5)])
    qs = load_questions({"path": str(f), "limit": 2, "kind": "free", "name": "custom"})
    assert len(qs) == 2 and {q.kind for q in qs} == {"free"} and {q.source for q in qs} == {"custom"}


def test_missing_required_column_is_a_file_error(tmp_path, write_parquet):
    f = write_parquet(tmp_path / "t.parquet", [{"problem": "x", "solution": "\\boxed{1}"}])
    with pytest.raises(DataError, match=r"column\(s\) \['answer', 'prompt'\] not found; columns are \['problem', 'solution'\]"):
        load_questions(str(f))
    explicit = {"path": str(f), "column_map": {"preset": "math", "images": "img"}}
    with pytest.raises(DataError, match=r"\['img'\] not found"):
        load_questions(explicit)


def test_column_maps():
    assert resolve_column_map(None) == ColumnMap()
    assert resolve_column_map("gsm8k") is PRESETS["gsm8k"]
    m = resolve_column_map({"preset": "mmlu", "id": "qid"})
    assert (m.id, m.prompt, m.answer_transform, m.default_kind, m.explicit) == ("qid", "question", "mmlu_index_to_letter",
                                                                               "mc", frozenset({"id"}))
    for bad, msg in [("gsm9k", "allowed: gsm8k, math, mmlu, mmlu_pro"), ({"promt": "q"}, "unknown field"),
                     ({"answer_transform": "x"}, "answer_transform: one of"), ({"prompt": None}, "cannot be null"),
                     (3, "a preset name or a mapping")]:
        with pytest.raises(ValueError, match=msg):
            resolve_column_map(bad)


class FakeDataset:
    """The slice of `datasets.Dataset` the loader uses: column_names and row iteration."""

    def __init__(self, rows):
        self.rows = rows
        self.column_names = list(rows[0])

    def __iter__(self):
        return iter(self.rows)


def test_load_hf_object_and_split(tmp_path):
    ds = FakeDataset([{"question": "2+2?", "choices": ["3", "4"], "answer": 1}])
    qs = load_hf(ds, "mmlu", name="mmlu_test")
    assert qs[0].answer == "B" and qs[0].id == "mmlu_test:0" and qs[0].extra["origin"] == "mmlu_test row 0"
    both = {"train": ds, "test": FakeDataset([{"question": "q", "choices": ["a"], "answer": 0}])}
    assert load_hf(both, "mmlu", split="test")[0].answer == "A"
    with pytest.raises(DataError, match=r"choose a split.*\['train', 'test'\]"):
        load_hf(both, "mmlu")
    with pytest.raises(DataError, match=r"\['answer'\] not found"):
        load_hf(FakeDataset([{"question": "q"}]), "gsm8k")


def test_hf_path_without_datasets(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets → ImportError
    with pytest.raises(SetupError, match="pip install datasets"):
        load_questions(f"hf:{tmp_path}")


def test_unsupported_inputs(tmp_path):
    with pytest.raises(ValueError, match="generated by zppo_ray.worlds.toy"):
        load_questions("toy")
    with pytest.raises(DataError, match="no such file"):
        load_questions(str(tmp_path / "nope.jsonl"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_questions(str(tmp_path / "x.csv"))
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="not a readable parquet file"):
        load_questions(str(tmp_path / "fake.parquet"))
    with pytest.raises(ValueError, match="on_bad_row must be"):
        load_questions_report(str(tmp_path / "fake.parquet"), on_bad_row="ignore")


def test_package_import_stays_light():
    code = "import sys, zppo_ray.data; print(sorted(m for m in ('ray', 'pyarrow', 'datasets', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_source_answer_transform_overrides_the_map(tmp_path, write_jsonl):
    f = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "q", "answer": "work #### 12"}])
    assert load_questions({"path": str(f), "answer_transform": "gsm8k_hash"})[0].answer == "12"
    with pytest.raises(ValueError, match="answer_transform: one of gsm8k_hash"):
        load_questions({"path": str(f), "answer_transform": "nope"})
