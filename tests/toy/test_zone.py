"""Both designs of the zone world (configs/zone.yaml: missing facts; configs/zone_depth.yaml: missing depth)
have what ZPPO is for, measured the way zppo_ray.worlds.measure does: hard questions the student fails on
every rollout, which the teacher solves, and reformulated prompts on which the student is sometimes right.
Bars well inside the measured values (README "The zone world")."""

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["configs/zone.yaml", "configs/zone_depth.yaml"])
def zone_cfg(request):
    from zppo_ray.config import load_config

    return load_config(request.param, [])


def test_the_student_lacks_the_held_out_skill_and_only_it(zone_cfg):
    from zppo_ray.worlds.toy.bootstrap import ensure_toy_world

    report = ensure_toy_world(zone_cfg.toy, zone_cfg.templates).report["models"]["student"]
    by_skill = report["heldout_greedy_accuracy_by_skill"]
    assert all(a >= 0.95 for a in by_skill["other"].values()), by_skill
    assert all(a <= 0.5 for a in by_skill["needs_held_out"].values()), by_skill


def test_a_zone_of_proximal_development(zone_cfg):
    from zppo_ray.worlds.measure import measure

    m = measure(zone_cfg, n_questions=150)
    assert m["hard"] >= 10
    assert m["zero_share_of_hard"] >= 0.4  # the bar: most hard questions give GRPO no gradient
    assert m["zero_needing_held_out"] >= 0.8 * m["zero_share_of_hard"] * m["hard"]  # and they are the skill's
    assert m["teacher_pass_at_g_t_on_zero"] >= 0.9  # BCQ can get a correct candidate
    assert m["bcq_student_accuracy"]["share_with_signal"] > 0.1  # BCQ groups that carry a gradient
    assert 0 < m["bcq_student_accuracy"]["all"]["mean"] < 1
