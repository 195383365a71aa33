"""Worlds as plug-ins: the entry points ask `for_config` and resolve model aliases through the world."""

import pytest

from zppo_ray import worlds
from zppo_ray.config import load_config
from zppo_ray.worlds.toy import ToyWorld


def test_a_config_that_uses_the_toy_world_gets_it_and_a_file_config_gets_none():
    world = worlds.for_config(load_config(None, []))
    assert isinstance(world, ToyWorld) and world.name == "toy"
    assert {q.tier for q in world.questions("eval")} == {"1", "2", "3"}  # generated: no model needed
    files = load_config(None, ["student.path=/m/student", "teacher.model.path=/m/teacher",
                               "data.train=[{path: train.jsonl}]", "data.eval=[]"])
    assert worlds.for_config(files) is None


def test_model_aliases_resolve_through_the_world_and_paths_pass_through():
    class Fake:
        name = "toy"

        def model_path(self, role):
            return f"/cache/{role}"

    assert worlds.resolve_model("toy:teacher", Fake()) == "/cache/teacher"
    assert worlds.resolve_model("/models/student", Fake()) == "/models/student"
    assert worlds.resolve_model("toy:student", None) == "toy:student"  # no world: nothing to resolve
    with pytest.raises(ValueError, match="toy:student or toy:teacher"):
        worlds.resolve_model("toy:judge", Fake())
