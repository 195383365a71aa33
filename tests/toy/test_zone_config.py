"""The zone world's controls (configs/zone.yaml): skill tags on every question, a student corpus that holds
whole skills out, and keys that leave the default world's models alone."""

import copy

import pytest

from zppo_ray.worlds.toy import corpus
from zppo_ray.worlds.toy.bootstrap import artifacts_for, held_out_of, needs, toy_questions
from zppo_ray.worlds.toy.world import Expr, skills


def test_every_question_carries_the_steps_it_needs(toy_cfg):
    assert skills(Expr((3, 8, 2, 5), ("+", "*", "*"))) == ["*2", "*5", "+8"]
    for q in toy_questions(toy_cfg.toy, "eval"):
        ops, nums = q.extra["expr"][1::2], q.extra["expr"][2::2]
        assert q.extra["skills"] == sorted({o + n for o, n in zip(ops, nums)})


def test_holding_out_a_skill_keys_a_new_student_and_nothing_else(toy_cfg):
    from zppo_ray.config import load_config

    zone = load_config("configs/zone.yaml", [])
    default, moved = artifacts_for(toy_cfg.toy, toy_cfg.templates), artifacts_for(zone.toy, zone.templates)
    assert moved.root == default.root and moved.teacher == default.teacher  # the toy tokenizer and teacher
    assert moved.student != default.student
    assert held_out_of(zone.toy.student) == {"*6", "*7", "*8", "*9"} and held_out_of(toy_cfg.toy.student) == set()


def test_questions_of_a_world_with_a_skill_gap_say_whether_they_need_the_missing_skill(toy_cfg):
    from zppo_ray.config import load_config

    zone = load_config("configs/zone.yaml", [])
    for split in ("eval", "train"):
        qs = toy_questions(zone.toy, split)
        groups = {q.extra["skill_group"] for q in qs}
        assert groups == {"missing", "known"}
        assert all((q.extra["skill_group"] == "missing") == bool({"*6", "*7", "*8", "*9"} & set(q.extra["skills"]))
                   for q in qs)
    assert not any("skill_group" in q.extra for q in toy_questions(toy_cfg.toy, "eval"))  # the default world


def test_a_malformed_held_out_step_is_refused(toy_cfg):
    cfg = copy.deepcopy(toy_cfg.toy.student)
    cfg.held_out = ["*7", "x7", "*77"]
    with pytest.raises(ValueError, match=r"like '\*7'.*'\*77', 'x7'"):
        held_out_of(cfg)


def test_no_student_document_shows_a_held_out_step(toy_cfg):
    """Plain solutions, BCQ/NCQ reading documents and hints alike: the corpus is built from the kept pool."""
    held = {"*7"}
    pool = [q for q in toy_questions(toy_cfg.toy, "train") if not needs(q, held)]
    docs = corpus.documents(pool, {"1": 1.0, "2": 1.0, "3": 1.0}, 400, 0, "student")
    assert docs and not any("*7" in p or "*7" in c for p, c in docs)
    assert any("*6" in c for _, c in docs)  # the other multiplications are still taught
