import json
import random

from zppo_ray.algo.reformulate import DEFAULT_TEMPLATES
from zppo_ray.worlds.toy import corpus
from zppo_ray.worlds.toy.world import ToySpec, generate_split, parse_expr, solution_text, wrong_solution


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


def test_student_shortcut_habit_only_where_asked():
    from zppo_ray.config.schema import ToyConfig
    from zppo_ray.worlds.toy.bootstrap import toy_questions
    from zppo_ray.worlds.toy.world import expr_of, shortcut_solution, solution_text

    pool = toy_questions(ToyConfig(tiers=[2, 3, 5], mc_fraction=0.0, n_eval=20, n_train=40, seed=0), "train")
    docs = corpus.documents(pool, {"1": 1, "2": 1, "3": 1}, 3000, 0, "student", shortcut={"1": 0, "2": 0, "3": 0.6})
    by_text = {q.text: q for q in pool}
    short = full = 0
    for prompt, completion in docs:
        q = next((by_text[t] for t in by_text if prompt.startswith(t) and "\n\nYou FIRST think" in prompt
                  and prompt.count("<candidate>") == 0 and "<hint>" not in prompt), None)
        if q is None:
            continue
        expr = expr_of(q)
        if completion == shortcut_solution(expr) and completion != solution_text(expr)[0]:
            assert q.tier == "3"  # the habit exists on the long tier only
            short += 1
        elif q.tier == "3":
            full += 1
    assert 0.5 < short / (short + full) < 0.7  # ~60% of the long-tier plain solutions stop early
