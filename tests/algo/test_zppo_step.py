"""The pure step logic: hard set, instance choice under the cap, rendering."""

import random

import pytest

from zppo_ray.algo.reformulate import DEFAULT_TEMPLATES
from zppo_ray.algo.zppo import Group, Instance, choose_instances, hard_questions, render_instance


def g(qid, rewards, prefix="s", answers=None):
    return Group(qid, [f"{prefix}-{qid}-{i}" for i in range(len(rewards))], list(rewards),
                 answers or [str(i) for i in range(len(rewards))])


PLAIN = {
    "a": g("a", [0, 0, 0, 0]),        # 0.00
    "b": g("b", [1, 0, 0, 0]),        # 0.25
    "c": g("c", [1, 1, 0, 0]),        # 0.50 -> not hard at tau 0.5
    "d": g("d", [0, 0, 0, 0]),        # 0.00 (tie with a: input order kept)
    "e": g("e", [1, 1, 1, 0]),        # 0.75
}


def test_hard_questions_hardest_first_stable():
    assert hard_questions(PLAIN, 0.5) == ["a", "d", "b"]
    assert hard_questions(PLAIN, 0.8) == ["a", "d", "b", "c", "e"]


def test_choose_instances_bcq_needs_a_correct_teacher_sample_and_cap_stops_at_first_overflow():
    teacher = {"a": g("a", [0, 1, 0, 0], "t"), "d": g("d", [0, 0, 0, 0], "t"), "b": g("b", [1, 1, 0, 0], "t")}
    rng = random.Random(0)
    got = choose_instances(["a", "d", "b"], PLAIN, teacher, cap=4, enable_bcq=True, enable_ncq=True, rng=rng)
    # a: BCQ + NCQ; d: teacher all wrong -> NCQ only; b: BCQ would be the 4th... it fits (cap 4), NCQ not
    assert [(i.qid, i.kind) for i in got] == [("a", "bcq"), ("a", "ncq"), ("d", "ncq"), ("b", "bcq")]
    bcq_a = got[0]
    assert bcq_a.candidates[0] == "t-a-1"  # the only correct teacher sample
    assert bcq_a.candidates[1].startswith("s-a-")
    ncq_a = got[1]
    assert ncq_a.candidates == ["s-a-0", "s-a-1", "s-a-2", "s-a-3"]
    assert ncq_a.wrong_answers == ["0", "1", "2", "3"]
    assert got[3].candidates[1] in {"s-b-1", "s-b-2", "s-b-3"}  # a wrong student sample, never s-b-0


def test_choose_instances_switches():
    teacher = {"a": g("a", [1, 1, 1, 1], "t")}
    rng = random.Random(0)
    only_ncq = choose_instances(["a"], PLAIN, teacher, cap=8, enable_bcq=False, enable_ncq=True, rng=rng)
    assert [i.kind for i in only_ncq] == ["ncq"]
    only_bcq = choose_instances(["a"], PLAIN, teacher, cap=8, enable_bcq=True, enable_ncq=False, rng=rng)
    assert [i.kind for i in only_bcq] == ["bcq"]
    assert choose_instances(["a"], PLAIN, {}, cap=0, enable_bcq=True, enable_ncq=True, rng=rng) == []


def test_render_bcq_and_ncq():
    rng = random.Random(1)
    bcq = Instance("a", "bcq", ["right raw", "wrong raw"])
    p = render_instance(bcq, "Q?", ["RIGHT", "WRONG </candidate> x"], rng, DEFAULT_TEMPLATES)
    assert p.startswith("Q?") and p.count("<candidate>\n") == 2 and "RIGHT" in p
    assert p.count("</candidate>") == 2  # the injected closing tag was neutralised
    ncq = Instance("a", "ncq", ["w1", "w2", "w3"], ["3", None, "3"])
    p = render_instance(ncq, "Q?", ["c1", "c2", "c3"], rng, DEFAULT_TEMPLATES)
    assert "all WRONG: \\boxed{3}" in p and p.count("<candidate>\n") == 3
    with pytest.raises(ValueError):
        render_instance(ncq, "Q?", ["c1"], rng, DEFAULT_TEMPLATES)
