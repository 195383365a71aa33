"""The smollm2 world as a plug-in: config, aliases, one world per run, benchmarks, the copy guard's cut."""

import pytest

from zppo_ray.config import ConfigError, load_config
from zppo_ray.worlds import for_config, is_world_alias, resolve_model, world_named
from zppo_ray.worlds.smollm2 import Smollm2World


def test_the_config_selects_the_smollm2_world_with_its_splits():
    cfg = load_config("configs/smollm2.yaml", [])
    world = for_config(cfg)
    assert isinstance(world, Smollm2World) and world.gap() is not None
    held = world.questions("eval")
    assert len(held) == 81 // 3 + 2 * cfg.smollm2.n_eval and {q.tier for q in held} == {"1", "2", "3"}
    assert all(q.source == "smollm2" and q.kind == "math" for q in held)
    # the student's warm-up never shows a carry: the sums that need one are its missing skill
    assert {q.extra["skill_group"] for q in held} == {"missing", "known"}
    assert all((q.extra["skill_group"] == "missing") == ("carry" in q.extra["skills"]) for q in held)
    shipped = for_config(load_config("configs/smollm2.yaml", ["smollm2.student.steps=0"]))
    assert shipped.gap() is None and "skill_group" not in shipped.questions("eval")[0].extra


def test_aliases_name_a_world_and_a_role():
    assert is_world_alias("smollm2:student") and is_world_alias("toy:teacher")
    assert not is_world_alias("/models/x") and not is_world_alias("hf:data")
    assert resolve_model("/models/x", None) == "/models/x"
    with pytest.raises(ConfigError, match="'smollm2:student' or 'smollm2:teacher'"):
        load_config("configs/smollm2.yaml", ["teacher.model.path=smollm2:judge"])


def test_one_run_uses_one_world():
    with pytest.raises(ConfigError, match=r"student.path: a run uses one world; .* \['toy', 'smollm2'\]"):
        load_config("configs/smollm2.yaml", ["teacher.model.path=toy:teacher"])


@pytest.mark.parametrize("override, key", [("smollm2.tiers=6", "smollm2.tiers"),
                                           ("smollm2.student.steps=-1", "smollm2.student"),
                                           ("smollm2.teacher.steps=0", "smollm2.teacher.steps"),
                                           ("data.train[0].split=test", "data.train[0].split")])
def test_bad_smollm2_settings_are_named(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config("configs/smollm2.yaml", [override])


def test_config_benchmarks_expand_the_world_into_tiers():
    from zppo_ray.eval.harness import config_benchmarks

    benches, families = config_benchmarks(load_config("configs/smollm2.yaml", []), limit=5)
    assert list(benches) == ["smollm2_t1", "smollm2_t2", "smollm2_t3"] and families == {"smollm2": list(benches)}
    assert all(len(v) == 5 for v in benches.values())  # limit=5 per tier


def test_world_named_reads_its_own_section():
    cfg = load_config("configs/toy.yaml", ["smollm2.tiers=2"])
    assert world_named("smollm2", cfg).questions("eval")[-1].tier == "2"


def test_the_copy_guard_cuts_a_worked_sum_and_a_toy_chain():
    from zppo_ray.worlds.measure import _without_answer
    from zppo_ray.worlds.smollm2.task import worked_solution

    cut = _without_answer(worked_solution(47, 38))
    assert "85" not in cut and cut.endswith("So 47 + 38 =</think>")
    assert _without_answer("<think>3+8=1,1*2=2</think>\n\\boxed{2}") == "<think>3+8=1,1*2=</think>"
