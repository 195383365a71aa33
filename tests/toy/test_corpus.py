import json
import random

from zppo_ray.algo.reformulate import DEFAULT_TEMPLATES
from zppo_ray.toy import corpus
from zppo_ray.toy.world import ToySpec, generate_split, parse_expr, solution_text, wrong_solution


def test_compression_keeps_the_mistake():
    e = parse_expr("3+8*2-5")
    wrong, answer = wrong_solution(e, random.Random(3))
    c = corpus.compressed(wrong)
    assert "<think>" not in c and c.endswith(f"\\boxed{{{answer}}}")
    assert c.splitlines()[0] == wrong[len("<think>"):wrong.index("</think>")]


def test_hint_reveals_no_result():
    e = parse_expr("3+8*2-5")
    h = corpus.hint_for(e)
    assert "3+8" in h and not any(d in h for d in "1267")  # no step result, no answer


def test_documents_use_the_trainer_templates_and_tier_weights():
    pool = generate_split(ToySpec(), 50, 0, "pretrain")
    docs = corpus.documents(pool, {"1": 1.0, "2": 0.0, "3": 0.0}, 400, 0, "student")
    assert all("compute" in p for p, _ in docs)
    assert all(p.count("*") + p.count("+") + p.count("-") >= 1 for p, _ in docs)
    bcq = [p for p, _ in docs if DEFAULT_TEMPLATES.bcq_instruction in p]
    assert bcq and all(p.count("<candidate>\n") == 2 for p in bcq)
    assert all(p.rstrip().endswith(DEFAULT_TEMPLATES.format_closer) for p, _ in docs)
    # only tier-1 questions were drawn (two operands: one operator in the question line)
    for p, c in docs:
        expr = p.split("compute ")[1].split(" ")[0]
        assert len(expr) == 3
        assert c == solution_text(parse_expr(expr), choices=None)[0] or " yes</think>" in c

    tdocs = corpus.documents(pool, {"1": 0, "2": 0, "3": 1}, 300, 0, "teacher")
    verdicts = [json.loads(c)["verdict"] for p, c in tdocs if c.startswith("{")]
    assert set(verdicts) == {"correct", "wrong"}
