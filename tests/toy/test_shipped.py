"""The toy world shipped in the package: a fresh cache gets a verified copy instead of a 20-minute build."""

import copy
import json
import shutil

import pytest

from zppo_ray.worlds.toy import shipped
from zppo_ray.worlds.toy.bootstrap import artifacts_for, ensure_toy_world


def _cfg_in(toy_cfg, cache):
    cfg = copy.deepcopy(toy_cfg)
    cfg.toy.cache_dir = str(cache)
    return cfg


def test_the_default_world_is_shipped(toy_cfg):
    art = artifacts_for(toy_cfg.toy, toy_cfg.templates)
    man = shipped.manifest(art.root.name)
    assert man is not None, ("the default toy world's key changed and nothing ships under it: rebuild and ship "
                             "it with `make bootstrap ARGS=--ship`")
    assert {shipped.WORLD_PART, art.student.name, art.teacher.name} <= set(man["parts"])


def test_a_fresh_cache_gets_the_shipped_world_verbatim(toy_cfg, tmp_path):
    cfg = _cfg_in(toy_cfg, tmp_path)
    art = ensure_toy_world(cfg.toy, cfg.templates)
    src = shipped.SHIPPED / art.root.name
    mine = {"world.json", shipped.WORLD_PART, art.student.name, art.teacher.name}
    checked = 0
    for rel, digest in shipped.manifest(art.root.name)["sha256"].items():
        if rel.split("/")[0] in mine:  # other shipped models (the zone world's student) stay out of this cache
            assert shipped.sha256(art.root / rel) == digest, rel
            checked += 1
    from zppo_ray.config import load_config

    zone = load_config("configs/zone.yaml", [])
    assert checked == 18 and not (art.root / artifacts_for(zone.toy, zone.templates).student.name).exists()
    assert art.report["models"]["student"] == json.loads((src / art.student.name / "report.json").read_text())


def test_a_corrupt_shipped_file_is_refused_by_name(toy_cfg, tmp_path):
    art = artifacts_for(_cfg_in(toy_cfg, tmp_path / "cache").toy, toy_cfg.templates)
    fake = tmp_path / "shipped"
    shutil.copytree(shipped.SHIPPED / art.root.name, fake / art.root.name)
    weights = fake / art.root.name / art.student.name / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1
    weights.write_bytes(blob)
    assert shipped.install(art.root, [shipped.WORLD_PART], fake) == [shipped.WORLD_PART]
    with pytest.raises(shipped.ShippedWorldError, match="student-.*model.safetensors.*corrupt"):
        shipped.install(art.root, [art.student.name], fake)
    assert not art.student.exists()  # nothing half-copied


def test_models_are_not_taken_with_another_tokenizer(toy_cfg, tmp_path):
    art = artifacts_for(_cfg_in(toy_cfg, tmp_path).toy, toy_cfg.templates)
    (art.root / shipped.WORLD_PART).mkdir(parents=True)
    (art.root / shipped.WORLD_PART / "tokenizer.json").write_text("{}")  # a tokenizer built some other way
    assert shipped.install(art.root, [art.student.name, art.teacher.name]) == []


def test_a_changed_model_config_is_not_served_from_the_shipped_copy(toy_cfg, tmp_path):
    cfg = _cfg_in(toy_cfg, tmp_path)
    cfg.toy.student.pretrain_steps += 1
    art = artifacts_for(cfg.toy, cfg.templates)
    assert shipped.install(art.root, [shipped.WORLD_PART, art.student.name, art.teacher.name]) == [
        shipped.WORLD_PART, art.teacher.name]


def test_shipping_a_model_keeps_the_ones_shipped_before(toy_cfg, toy_world, tmp_path):
    fake = tmp_path / "shipped"
    shipped.ship(toy_world.root, [toy_world.student.name], fake)
    shipped.ship(toy_world.root, [toy_world.teacher.name], fake)
    man = shipped.manifest(toy_world.root.name, fake)
    assert man["parts"] == [shipped.WORLD_PART, toy_world.student.name, toy_world.teacher.name]
    cache = tmp_path / "cache" / toy_world.root.name
    assert shipped.install(cache, [shipped.WORLD_PART, toy_world.student.name, toy_world.teacher.name], fake) == [
        shipped.WORLD_PART, toy_world.student.name, toy_world.teacher.name]
