import random

import pytest

from zppo_ray import checkpoint as ckpt
from zppo_ray.actors.buffer import ReplayBufferShell
from zppo_ray.buffer import BufferConfig
from zppo_ray.data.schema import Question


def _save(run_dir, step, complete=True):
    d = ckpt.checkpoint_dir(run_dir, step)
    d.mkdir(parents=True)
    rng = random.Random(step)
    ckpt.write_trainer_state(d, ckpt.TrainerState(step, step, 4 * step, 0, ckpt.rng_to_json(rng)))
    if complete:
        ckpt.mark_complete(d)
    return d


def test_latest_ignores_interrupted_saves(tmp_path):
    assert ckpt.latest(tmp_path) is None
    _save(tmp_path, 2)
    _save(tmp_path, 10)
    _save(tmp_path, 12, complete=False)  # killed mid-save
    assert ckpt.latest(tmp_path).name == "step-000010"
    assert ckpt.resolve_resume("auto", tmp_path).name == "step-000010"
    assert ckpt.resolve_resume("never", tmp_path) is None
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ckpt.resolve_resume(str(ckpt.checkpoint_dir(tmp_path, 12)), tmp_path)


def test_trainer_state_round_trip_restores_rng(tmp_path):
    d = _save(tmp_path, 3)
    state = ckpt.read_trainer_state(d)
    assert (state.step, state.version, state.cursor, state.epoch) == (3, 3, 12, 0)
    rng = random.Random(0)
    state.restore_rng(rng)
    assert rng.random() == random.Random(3).random()


def test_prune_keeps_the_newest(tmp_path):
    for s in (1, 2, 3, 4):
        _save(tmp_path, s)
    gone = ckpt.prune(tmp_path, 2)
    assert [d.name for d in gone] == ["step-000001", "step-000002"]
    assert ckpt.latest(tmp_path).name == "step-000004"
    assert ckpt.prune(tmp_path, 0) == []


def test_buffer_shell_snapshot_keeps_contents_and_sampler(tmp_path):
    qs = {f"q{i}": Question(id=f"q{i}", prompt=f"p{i}", answer="1") for i in range(6)}
    a = ReplayBufferShell(BufferConfig(capacity=10), seed=7)
    a.refresh(1, {q: 0.0 for q in qs}, qs, [])
    a.sample(2)  # advance the sampler before the snapshot
    a.snapshot(str(tmp_path / "buf"))
    b = ReplayBufferShell(BufferConfig(capacity=10), seed=999)
    assert b.restore(str(tmp_path / "buf")) == 6
    assert [q.id for q in b.sample(3)] == [q.id for q in a.sample(3)]
    c = ReplayBufferShell(BufferConfig(capacity=5), seed=0)
    with pytest.raises(ValueError, match="written with"):
        c.restore(str(tmp_path / "buf"))
