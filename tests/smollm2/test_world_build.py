"""The SmolLM2 world's fine-tunes (zppo_ray/worlds/smollm2/models.py), built small: marked `world` with the toy
world's rebuild, so that it runs (`make verify-world`) when what the builds depend on changes
(tests/world_stamp.py), not on every run of the suite."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.world]


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_each_model_is_fine_tuned_measured_and_cached(role, student_dir, cfg, tmp_path):
    """Two-step builds (the real recipes are 30 and 120 steps): built, measured on the held-out split, reused;
    the student's warm-up holds no sum with a carry."""
    import dataclasses

    from transformers import AutoModelForCausalLM

    from zppo_ray.worlds.smollm2 import task
    from zppo_ray.worlds.smollm2.models import _corpus, ensure_model

    small = dataclasses.replace(cfg.smollm2, cache_dir=str(tmp_path), n_eval=2, tiers=2,
                                **{role: dataclasses.replace(getattr(cfg.smollm2, role), steps=2, batch_size=2,
                                                             examples_per_tier=4)})
    path = ensure_model(role, small, student_dir, cfg.templates)
    report = json.loads((path / "report.json").read_text())
    assert report["examples"] == 8 and report["steps"] == 2
    assert set(report["heldout_greedy_accuracy_by_tier"]) == {"1", "2"}
    assert set(report["heldout_greedy_accuracy_by_skill"]) <= {"carry", "no_carry"}
    assert AutoModelForCausalLM.from_pretrained(path).config.tie_word_embeddings
    stamp = (path / "report.json").stat().st_mtime
    assert ensure_model(role, small, student_dir, cfg.templates) == path
    assert (path / "report.json").stat().st_mtime == stamp
    held = task.splits(small.n_train, small.n_eval, small.tiers, small.seed, "eval")
    carried = [task.has_carry(q) for q in _corpus(role, small, held)]
    assert not any(carried) if role == "student" else any(carried)
