"""The evaluation harness (zppo_ray.eval, zppo_ray.eval.passk).

Fast tests: pass@k against brute-force enumeration, aggregation, the markdown table, the four public data
layouts (tests/data/eval_layouts, hand-written rows), grading and the judge through scripted generators, and
the CLI's input errors. One slow test runs the real toy student in a real vLLM engine.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from zppo_ray.cli import run_entry
from zppo_ray.eval.cli import main
from zppo_ray.eval.harness import (
    config_benchmarks,
    evaluate_checkpoint,
    load_benchmarks,
    parse_bench,
    toy_benchmarks,
)
from zppo_ray.eval.passk import (
    QuestionResult,
    benchmark_summary,
    check_ks,
    family_summary,
    markdown_table,
    pass_at_k,
)
from zppo_ray.rewards import grade, read_verdict
from zppo_ray.types import Sample

LAYOUTS = Path(__file__).parent / "data" / "eval_layouts"


# ---------------------------------------------------------------------------------------------- pass@k


def _enumerated_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of the k-subsets of n samples (c correct) holding at least one correct sample."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(_enumerated_pass_at_k(n, c, k), abs=1e-12), (n, c, k)
    assert pass_at_k(4, 1, 1) == 0.25  # pass@1 is the plain mean


def test_pass_at_k_rejects_bad_input():
    with pytest.raises(ValueError, match=r"pass@5 needs 1 <= k <= n, and there are n=4"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match=r"pass@8 needs at least 8 samples per question, but n=4"):
        check_ks([1, 8], 4)
    with pytest.raises(ValueError, match="positive integer, got 0"):
        check_ks([0], 4)
    assert check_ks([4, 1, 4], 4) == [1, 4]


# ---------------------------------------------------------------------------------------------- aggregation


def _result(bench: str, qid: str, rewards: list[float], answers: list[str | None] | None = None) -> QuestionResult:
    return QuestionResult(bench, qid, "math", "1", rewards, answers or ["1"] * len(rewards))


def test_rewards_must_be_binary():
    with pytest.raises(ValueError, match="a/q: rewards must be 0 or 1, got 0.5"):
        _ = _result("a", "q", [1.0, 0.5]).correct


def test_benchmark_and_family_scores():
    # bench a: 2 questions (c = 1 of 2, c = 0 of 2); bench b: 1 question (2 of 2).
    a = [_result("a", "q1", [1.0, 0.0], ["1", None]), _result("a", "q2", [0.0, 0.0], [None, None])]
    b = [_result("b", "q3", [1.0, 1.0])]
    ks = [1, 2]
    benches = {"a": benchmark_summary("a", a, ks), "b": benchmark_summary("b", b, ks)}
    assert benches["a"]["pass@1"] == pytest.approx(0.25) and benches["a"]["pass@2"] == pytest.approx(0.5)
    assert benches["a"]["no_answer_samples"] == 3 and benches["a"]["no_answer_questions"] == 2
    assert benches["b"]["pass@1"] == 1.0 and benches["b"]["no_answer_samples"] == 0
    fams = family_summary(benches, {"all": ["a", "b"], "only_b": ["b", "b"]}, ks)
    # Macro average of the benchmarks (0.25 + 1) / 2, not the mean over the 3 questions (1/3 + ...).
    assert fams["all"]["pass@1"] == pytest.approx(0.625) and fams["all"]["pass@2"] == pytest.approx(0.75)
    assert fams["only_b"] == {"benchmarks": ["b"], "pass@1": 1.0, "pass@2": 1.0}
    with pytest.raises(ValueError, match=r"family 'x': unknown benchmark\(s\) \['c'\]; evaluated: a, b"):
        family_summary(benches, {"x": ["a", "c"]}, ks)
    with pytest.raises(ValueError, match="family 'x' names no benchmark"):
        family_summary(benches, {"x": []}, ks)
    with pytest.raises(ValueError, match="benchmark 'c' has no questions"):
        benchmark_summary("c", [], ks)


def test_markdown_table():
    benches = {"a": benchmark_summary("a", [_result("a", "q1", [1.0, 0.0], ["1", None])], [1, 2])}
    fams = family_summary(benches, {"f": ["a"]}, [1, 2])
    assert markdown_table(benches, fams, [1, 2]) == (
        "| benchmark | questions | pass@1 | pass@2 | no answer (samples) | truncated |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        "| a | 1 | 50.0 | 100.0 | 1/2 | 0 |\n"
        "\n"
        "| family | benchmarks | pass@1 | pass@2 |\n"
        "|---|---|---:|---:|\n"
        "| f | a | 50.0 | 100.0 |\n")


# ---------------------------------------------------------------------------------------------- public layouts


@pytest.mark.parametrize("preset, file, golds, kind, first_prompt_has", [
    ("gsm8k", "gsm8k.jsonl", ["8", "48", "2000", "150"], "math", "Tom has 3 apples"),
    ("math", "math.jsonl", ["\\frac{5}{6}", "4", "6", "5\\sqrt{2}"], "math", "\\frac{1}{2} + \\frac{1}{3}"),
    ("mmlu", "mmlu.jsonl", ["B", "A", "B", "D"], "mc", "(B) Na\n(C) So"),
    ("mmlu_pro", "mmlu_pro.jsonl", ["B", "C", "D"], "mc", "(J) x^3"),
])
def test_public_layouts_load(preset, file, golds, kind, first_prompt_has):
    name, source = parse_bench(f"{preset}={preset}:{LAYOUTS / file}")
    qs = load_benchmarks({name: source})[name]
    assert [q.answer for q in qs] == golds
    assert {q.kind for q in qs} == {kind} and {q.source for q in qs} == {preset}
    assert first_prompt_has in qs[0].prompt
    assert load_benchmarks({name: source}, limit=2)[name] == qs[:2]


def test_layout_details():
    math_qs = load_benchmarks({"m": {"path": str(LAYOUTS / "math.jsonl"), "column_map": "math"}})["m"]
    assert [q.tier for q in math_qs][:2] == ["Level 1", "Level 2"]  # MATH's level column becomes the tier
    pro = load_benchmarks(dict([parse_bench(f"p=mmlu_pro:{LAYOUTS / 'mmlu_pro.jsonl'}")]))["p"]
    assert [q.id for q in pro] == ["70", "71", "72"] and len(pro[0].choices) == 10


def test_mmlu_parquet_loads_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (LAYOUTS / "mmlu.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "mmlu.parquet")
    from_parquet = load_benchmarks(dict([parse_bench(f"mmlu=mmlu:{tmp_path / 'mmlu.parquet'}")]))["mmlu"]
    from_jsonl = load_benchmarks(dict([parse_bench(f"mmlu=mmlu:{LAYOUTS / 'mmlu.jsonl'}")]))["mmlu"]
    assert [(q.prompt, q.answer, q.choices) for q in from_parquet] == [
        (q.prompt, q.answer, q.choices) for q in from_jsonl]


# ---------------------------------------------------------------------------------------------- harness


def _sample(text: str, finish: str = "stop") -> Sample:
    return Sample(prompt_ids=[], completion_ids=[1], logprobs=[0.0], text=text, finish_reason=finish, version=0)


class ScriptedGenerator:
    """Answers each request from `script(request, sample index)`; records what it was asked."""

    def __init__(self, script):
        self.script = script
        self.calls: list[tuple[list, dict]] = []

    def generate(self, requests, sampling):
        self.calls.append((list(requests), dict(sampling)))
        return [[_sample(*self.script(r, i)) for i in range(r.n)] for r in requests]


def _gsm8k_and_mmlu_script(req, i):
    """gsm8k: sample 0 right, sample 1 wrong, samples 2-3 without a box (the last one truncated);
    mmlu: every sample answers "(B)" in words, no box (right on questions 1 and 3 of the fixture)."""
    if "(A)" in req.prompt:
        return ("The answer is (B).",)
    gold = {"Tom": "8", "A box": "48", "Mia": "2000", "A train": "150"}
    value = next(v for k, v in gold.items() if req.prompt.startswith(k))
    return [(f"<think>ok</think> \\boxed{{{value}}}",), ("\\boxed{-1}",), ("no idea",), ("runs out", "length")][i]


def test_evaluate_with_a_generator_object(tmp_path):
    gen = ScriptedGenerator(_gsm8k_and_mmlu_script)
    benches = dict([parse_bench(f"gsm8k=gsm8k:{LAYOUTS / 'gsm8k.jsonl'}"),
                    parse_bench(f"mmlu=mmlu:{LAYOUTS / 'mmlu.jsonl'}")])
    report = evaluate_checkpoint(gen, benches, families={"both": ["gsm8k", "mmlu"]}, n=4, ks=[1, 2, 4],
                                 judge="/no/such/judge", out_dir=tmp_path)
    (requests, sampling), = gen.calls  # one batched call; the judge is never started without free questions
    assert requests[0].prompt.endswith("MUST BE put in \\boxed{}.") and requests[0].n == 4
    assert sampling == {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "max_tokens": 128,
                        "presence_penalty": 0.0, "seed": 0, "logprobs": False}
    g, m = report["benchmarks"]["gsm8k"], report["benchmarks"]["mmlu"]
    # gsm8k: 1 correct of 4 on every question -> pass@1 1/4, pass@2 1/2, pass@4 1.
    assert (g["pass@1"], g["pass@2"], g["pass@4"]) == pytest.approx((0.25, 0.5, 1.0))
    assert (g["no_answer_samples"], g["no_answer_questions"], g["truncated_samples"]) == (8, 4, 4)
    assert (m["pass@1"], m["pass@4"], m["no_answer_samples"]) == (0.5, 0.5, 0)
    assert report["families"]["both"]["pass@1"] == pytest.approx((0.25 + 0.5) / 2)
    assert report["judge"] is None and report["model"] == "ScriptedGenerator"
    first = report["questions"][0]
    assert first["answers"] == ["8", "-1", None, None] and first["rewards"] == [1.0, 0.0, 0.0, 0.0]
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["benchmarks"] == report["benchmarks"] and len(on_disk["questions"]) == 8
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and rows[0]["responses"][3] == "runs out" and rows[0]["finish_reasons"][3] == "length"
    md = (tmp_path / "results.md").read_text()
    assert "| gsm8k | 4 | 25.0 | 50.0 | 100.0 | 8/16 | 4 |" in md and "| both | gsm8k, mmlu |" in md


def test_judge_verdicts():
    assert read_verdict('{"verdict": "correct"}') is True
    assert read_verdict('<think>it is "wrong"? no</think>```json\n{"verdict": "wrong"}\n```') is False
    for malformed in ("correct", '{"verdict": "wrong", "why": "x"}', '{"verdict": "Wrong"}', '{"verdict": "wrong"} ok'):
        assert read_verdict(malformed) is None, malformed


def test_free_form_questions_go_to_the_judge(tmp_path):
    rows = [{"id": "capital", "prompt": "What is the capital of France?", "answer": "Paris", "kind": "free"},
            {"id": "sum", "prompt": "2+2?", "answer": "4", "kind": "math"}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = dict([parse_bench(f"mixed=native:{path}")])
    student = ScriptedGenerator(lambda req, i: ("\\boxed{4}" if "2+2" in req.prompt else f"\\boxed{{Paris {i}}}",))
    verdicts = ['{"verdict": "correct"}', '{"verdict": "wrong"}', "I think it is correct"]
    judge = ScriptedGenerator(lambda req, i: (verdicts[int(req.tag.split(":")[1])],))
    report = evaluate_checkpoint(student, bench, n=3, ks=[1, 3], judge=judge, out_dir=tmp_path / "out")
    (judge_reqs, judge_sampling), = judge.calls
    assert len(judge_reqs) == 3 and "Ground-truth answer:\nParis" in judge_reqs[0].prompt
    assert judge_sampling["temperature"] == 0.0 and judge_sampling["max_tokens"] == 512
    free, math = report["questions"]
    assert free["rewards"] == [1.0, 0.0, 0.0] and free["judge_unparseable"] == 1 and math["rewards"] == [1.0] * 3
    assert report["benchmarks"]["mixed"]["judge_unparseable"] == 1 and report["judge"] == "ScriptedGenerator"
    lines = (tmp_path / "out" / "samples.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["judge_outputs"] == verdicts and "judge_outputs" not in json.loads(lines[1])
    with pytest.raises(ValueError, match=r"benchmark\(s\) \['mixed'\] hold free-form questions: they need a judge"):
        evaluate_checkpoint(student, bench, n=1)


def test_generator_returning_the_wrong_number_of_samples_is_an_error():
    short = ScriptedGenerator(lambda req, i: ("\\boxed{1}",))
    short.generate = lambda requests, sampling: [[_sample("x")] for _ in requests]
    bench = dict([parse_bench(f"gsm8k=gsm8k:{LAYOUTS / 'gsm8k.jsonl'}")])
    with pytest.raises(RuntimeError, match=r"groups of sizes \[1\] for 4 requests of n=2"):
        evaluate_checkpoint(short, bench, n=2)


def test_config_eval_sources_become_benchmarks():
    from zppo_ray.config import SourceConfig, load_config

    cfg = load_config(None, [])
    cfg.data.eval = [SourceConfig(path=str(LAYOUTS / "gsm8k.jsonl"), column_map="gsm8k"),
                     SourceConfig(path="toy", split="eval", limit=2)]
    sources, families = config_benchmarks(cfg, limit=3)
    assert list(sources) == ["gsm8k", "toy_t1", "toy_t2", "toy_t3"]
    assert families == {"toy": ["toy_t1", "toy_t2", "toy_t3"]}
    questions = load_benchmarks(sources, limit=3)
    assert [len(qs) for qs in questions.values()] == [3, 2, 2, 2]  # the tighter of --limit and the source's limit
    cfg.data.eval.append(SourceConfig(path=str(LAYOUTS / "math.jsonl"), column_map="math", name="gsm8k"))
    with pytest.raises(ValueError, match=r"two sources are both named \['gsm8k'\]"):
        config_benchmarks(cfg)


# ---------------------------------------------------------------------------------------------- CLI errors


@pytest.mark.parametrize("args, message", [
    (["--bench", "g=gsm8k:{tmp}/missing.jsonl"], "benchmark 'g': {tmp}/missing.jsonl: no such file or directory"),
    (["--bench", "g=gsm9k:{layouts}/gsm8k.jsonl"],
     "unknown preset 'gsm9k'; allowed: gsm8k, math, mmlu, mmlu_pro, native"),
    (["--bench", "g={layouts}/gsm8k.jsonl"], "expected NAME=PRESET:PATH"),
    (["--bench", "g=gsm8k:{layouts}/gsm8k.jsonl", "--n", "2", "--k", "1,4"],
     "pass@4 needs at least 4 samples per question, but n=2"),
    (["--bench", "g=gsm8k:{layouts}/gsm8k.jsonl", "--k", "1,x"], "--k '1,x': expected comma-separated integers"),
    (["--bench", "e=native:{tmp}/empty.jsonl"], "benchmark 'e': {tmp}/empty.jsonl: no valid questions"),
    (["--bench", "g=gsm8k:{layouts}/gsm8k.jsonl", "--family", "math=g,nope"],
     "family 'math': unknown benchmark(s) ['nope']; evaluated: g"),
    (["--bench", "g=gsm8k:{layouts}/gsm8k.jsonl", "--model", "{tmp}/no_model"], "--model={tmp}/no_model: no such dir"),
    (["--bench", "f=native:{tmp}/free.jsonl"], "free-form questions need a judge model: --judge PATH"),
])
def test_cli_input_errors(tmp_path, capsys, args, message):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "free.jsonl").write_text(json.dumps({"prompt": "Why?", "answer": "because", "kind": "free"}) + "\n")
    fill = {"tmp": str(tmp_path), "layouts": str(LAYOUTS)}
    argv = ["--model", str(tmp_path)] + [a.format(**fill) for a in args]
    assert run_entry(main, argv) == 2  # what `python -m zppo_ray.eval` runs (zppo_ray/cli.py)
    err = capsys.readouterr().err
    assert message.format(**fill) in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- real engine


@pytest.mark.slow
def test_toy_student_end_to_end(toy_world, toy_cfg, tmp_path):
    """The cached toy student in a real vLLM engine, 3 held-out questions per tier, 2 samples each."""
    benches, families = toy_benchmarks(toy_cfg.toy, limit=3)
    report = evaluate_checkpoint(str(toy_world.student), benches, families=families, n=2, ks=[1, 2],
                                 out_dir=tmp_path, engine_kwargs={"max_model_len": 512, "kv_cache_gib": 1.0})
    assert list(report["benchmarks"]) == ["toy_t1", "toy_t2", "toy_t3"]
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(report))
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    questions = {q.id: q for qs in benches.values() for q in qs}
    assert len(rows) == len(report["questions"]) == 9
    for row, rec in zip(rows, report["questions"]):  # the stored rewards are the grader's verdict on the texts
        assert [grade(t, questions[row["id"]].answer, "math") for t in row["responses"]] == rec["rewards"]
    t1 = report["benchmarks"]["toy_t1"]
    assert t1["pass@1"] > 0  # the student solves most tier-1 questions: a broken prompt or grader gives 0
    for s in report["benchmarks"].values():
        assert 0 <= s["pass@1"] <= s["pass@2"] <= 1
    mean_t = sum(s["pass@1"] for s in report["benchmarks"].values()) / 3
    assert report["families"]["toy"]["pass@1"] == pytest.approx(mean_t)
    assert "| toy_t1 | 3 |" in (tmp_path / "results.md").read_text()


def test_a_progress_bar_splits_the_call_but_every_request_keeps_its_seed(monkeypatch):
    """With a bar on, evaluation generates in parts; each request must still get the seed of its position in
    the whole call, so the numbers do not depend on whether a terminal was attached."""
    from zppo_ray.algo.reformulate import Templates
    from zppo_ray.data.schema import Question
    from zppo_ray.eval.harness import score_questions
    from zppo_ray.seeds import request_seeds

    qs = {"t": [Question(id=f"q{i}", prompt=f"q{i}", answer="1", tier="1") for i in range(23)]}
    seen = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("ZPPO_PROGRESS", flag)
        gen = ScriptedGenerator(lambda r, i: ("\\boxed{1}",))
        score_questions(gen, qs, 2, {"temperature": 0.6, "seed": 7}, Templates())
        seen[flag] = [(r.tag, s) for reqs, sp in gen.calls
                      for r, s in zip(reqs, sp["seed"] if isinstance(sp["seed"], list) else request_seeds(7, len(reqs)))]
        assert len(gen.calls) == (1 if flag == "0" else 8)
    assert seen["0"] == seen["1"]
