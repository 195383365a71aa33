import random
from pathlib import Path

import pytest

from zppo_ray.actors.buffer import ReplayBufferShell
from zppo_ray.data.schema import Question
from zppo_ray.errors import CheckpointError
from zppo_ray.state import checkpoint as ckpt
from zppo_ray.state.buffer import BufferConfig


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
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
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
    assert b.restore(str(tmp_path / "buf")) == 1  # the step of its last refresh
    assert b.size() == 6
    assert [q.id for q in b.sample(3)] == [q.id for q in a.sample(3)]
    c = ReplayBufferShell(BufferConfig(capacity=5), seed=0)
    with pytest.raises(ValueError, match="written with"):
        c.restore(str(tmp_path / "buf"))


def test_buffer_refresh_is_idempotent_per_step_and_writes_a_live_snapshot(tmp_path):
    """What lets the driver rebuild a dead buffer actor and repeat the call that failed (README "Recovery")."""
    qs = {f"q{i}": Question(id=f"q{i}", prompt=f"p{i}", answer="1") for i in range(4)}
    live = tmp_path / "live"
    a = ReplayBufferShell(BufferConfig(capacity=10), seed=7, live_dir=str(live))
    first = a.refresh(1, {"q0": 0.0, "q1": 1.0}, qs, [])
    assert first["admitted_ids"] == ["q0"] and first["buffered"] == ["q0"]
    assert a.refresh(1, {"q0": 0.0, "q1": 1.0}, qs, []) == first  # a repeat changes nothing
    assert a.size() == 1
    with pytest.raises(ValueError, match="after step 1"):
        a.refresh(0, {}, qs, [])
    # The rebuilt actor starts from the live snapshot: the refresh of step 1 is there, nothing is lost.
    b = ReplayBufferShell(BufferConfig(capacity=10), seed=0, live_dir=str(live))
    assert b.restore(str(live)) == 1 and b.ids() == ["q0"]
    assert b.refresh(1, {"q0": 0.0, "q1": 1.0}, qs, []) == first
    second = b.refresh(2, {"q0": 1.0, "q2": 0.0}, qs, ["q0"])
    assert [f["qid"] for f in second["fates"]] == ["q0"] and second["buffered"] == ["q2"]


def test_buffer_restore_refuses_a_torn_snapshot(tmp_path):
    qs = {f"q{i}": Question(id=f"q{i}", prompt=f"p{i}", answer="1") for i in range(3)}
    a = ReplayBufferShell(BufferConfig(capacity=10), seed=7)
    a.refresh(1, {"q0": 0.0}, qs, [])
    a.snapshot(str(tmp_path / "s1"))
    a.refresh(2, {"q1": 0.0}, qs, [])
    a.snapshot(str(tmp_path / "s2"))
    (tmp_path / "s1" / "buffer.json").write_bytes((tmp_path / "s2" / "buffer.json").read_bytes())
    with pytest.raises(ValueError, match="torn"):
        ReplayBufferShell(BufferConfig(capacity=10), seed=7).restore(str(tmp_path / "s1"))


def test_a_save_that_fails_half_way_leaves_no_checkpoint_behind(tmp_path):
    """A full disk during a save: the half-written directory (never resumable) is removed so that it does not
    hold the space a retry needs. Saving again over a complete checkpoint (a resumed run saves at the step it
    resumed from) first takes its COMPLETE away, so a torn one is never taken for whole."""
    from types import SimpleNamespace

    from zppo_ray.launch import save_checkpoint

    def full(path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "half").write_text("x")
        raise OSError(28, "No space left on device")

    roles = SimpleNamespace(learner=SimpleNamespace(save=full), buffer=None)
    with pytest.raises(OSError):
        save_checkpoint(SimpleNamespace(step=3), roles, tmp_path, keep_last=2)
    assert not ckpt.checkpoint_dir(tmp_path, 3).exists()
    _save(tmp_path, 2)
    _save(tmp_path, 4)
    with pytest.raises(OSError):
        save_checkpoint(SimpleNamespace(step=4), roles, tmp_path, keep_last=2)
    assert ckpt.latest(tmp_path) == ckpt.checkpoint_dir(tmp_path, 2)
