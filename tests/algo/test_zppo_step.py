"""The pure step logic: hard set, instance choice under the cap, rendering."""

import random

import pytest

from zppo_ray.algo.reformulate import DEFAULT_TEMPLATES
from zppo_ray.algo.zppo import (
    Group,
    Instance,
    can_reformulate,
    choose_instances,
    hard_questions,
    informative_groups,
    pre_cap,
    render_instance,
)


def g(qid, rewards, prefix="s", answers=None):
    return Group(qid, [f"{prefix}-{qid}-{i}" for i in range(len(rewards))], list(rewards),
                 answers or [str(i) for i in range(len(rewards))])


PLAIN = {
    "a": g("a", [0, 0, 0, 0]),        # 0.00
    "b": g("b", [1, 0, 0, 0]),        # 0.25
    "c": g("c", [1, 1, 0, 0]),        # 0.50 -> not hard at tau 0.5
    "d": g("d", [0, 0, 0, 0]),        # 0.00 (tie with a: order drawn at random)
    "e": g("e", [1, 1, 1, 0]),        # 0.75
}


def test_hard_questions_hardest_first_ties_at_random():
    orders = {tuple(hard_questions(PLAIN, 0.5, random.Random(s))) for s in range(20)}
    assert orders == {("a", "d", "b"), ("d", "a", "b")}  # b (0.25) always after the 0/4 pair
    assert hard_questions(PLAIN, 0.5, random.Random(3)) == hard_questions(PLAIN, 0.5, random.Random(3))
    assert hard_questions(PLAIN, 0.8, random.Random(0))[2:] == ["b", "c", "e"]


def test_replayed_and_new_questions_of_equal_accuracy_share_the_cap_in_proportion():
    # The measured defect: 100 new and 30 replayed questions, all at 0/8, the batch listing new first; a
    # stable sort kept 0 replayed questions under a cap of 25. With random ties ~30/130 of the kept are replayed.
    plain = {f"new{i}": g(f"new{i}", [0] * 8) for i in range(100)}
    plain |= {f"rep{i}": g(f"rep{i}", [0] * 8) for i in range(30)}
    kept_replayed = []
    for seed in range(200):
        kept = pre_cap(hard_questions(plain, 0.5, random.Random(seed)), lambda q: True, 25)
        kept_replayed.append(sum(q.startswith("rep") for q in kept))
    mean = sum(kept_replayed) / len(kept_replayed)
    assert abs(mean - 25 * 30 / 130) < 0.6  # hypergeometric mean 5.77; the old code gave 0
    assert min(kept_replayed) >= 0 and max(kept_replayed) > 8


def test_pre_cap_takes_the_hardest_questions_that_can_get_an_enabled_reformulation():
    # a and d are the hardest; the teacher solved only b. GRPO†+BCQ (NCQ off) must keep b, not waste the
    # slot on a question the teacher failed (paper App. C).
    teacher = {"a": g("a", [0, 0, 0, 0], "t"), "d": g("d", [0, 0, 0, 0], "t"), "b": g("b", [1, 0, 0, 0], "t")}
    hard = ["a", "d", "b"]
    bcq_only = pre_cap(hard, lambda q: can_reformulate(q, PLAIN, teacher, True, False), 1)
    assert bcq_only == ["b"]
    both = pre_cap(hard, lambda q: can_reformulate(q, PLAIN, teacher, True, True), 2)
    assert both == ["a", "d"]  # NCQ is possible for every hard question with a wrong sample
    assert pre_cap(hard, lambda q: can_reformulate(q, PLAIN, teacher, False, False), 3) == []


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
    assert p.count("</candidate>") == 3  # the instruction's mention + two blocks: the injected one neutralised
    ncq = Instance("a", "ncq", ["w1", "w2", "w3"], ["3", None, "3"])
    p = render_instance(ncq, "Q?", ["c1", "c2", "c3"], rng, DEFAULT_TEMPLATES)
    assert "all WRONG: \\boxed{3}" in p and p.count("<candidate>\n") == 3
    with pytest.raises(ValueError):
        render_instance(ncq, "Q?", ["c1"], rng, DEFAULT_TEMPLATES)


def test_dynamic_sampling_by_group_drops_every_degenerate_group():
    groups = [("plain:a", g("a", [0, 0, 0, 0]), []), ("bcq:a", g("a", [1, 0, 0, 0]), []),
              ("plain:c", g("c", [1, 1, 0, 0]), []), ("plain:e", g("e", [1, 1, 1, 1]), [])]
    assert [u for u, _, _ in informative_groups(groups, "group")] == ["bcq:a", "plain:c"]


def test_dynamic_sampling_by_question_keeps_a_degenerate_plain_group_whose_reformulation_has_signal():
    """The paper's §10 variant: a question's groups go only when its plain, BCQ and NCQ groups are all
    degenerate."""
    groups = [("plain:a", g("a", [0, 0, 0, 0]), []), ("bcq:a", g("a", [1, 0, 0, 0]), []),
              ("plain:d", g("d", [0, 0, 0, 0]), []), ("ncq:d", g("d", [0, 0, 0, 0]), []),
              ("plain:e", g("e", [1, 1, 1, 1]), [])]
    assert [u for u, _, _ in informative_groups(groups, "question")] == ["plain:a", "bcq:a"]
    with pytest.raises(ValueError, match="'prompt'"):
        informative_groups(groups, "prompt")
