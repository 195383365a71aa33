"""The run schema: merge order, errors that name the key path, every validation rule, the shipped files."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from zppo_ray import config as C
from zppo_ray.config import ConfigError, RunConfig, load_config, save_resolved, to_yaml, validate

ROOT = Path(__file__).resolve().parents[1]


def _set(cfg: RunConfig, path: str, value) -> None:
    *parents, leaf = path.split(".")
    obj = cfg
    for part in parents:
        obj = getattr(obj, part)
    setattr(obj, leaf, value)


def problems(*, available_gpus=None, cuda_available=False, **changes) -> str:
    """Validate the defaults with `changes` (keys use __ for dots); return the error text ('' if none)."""
    cfg = load_config(None, [])
    for key, value in changes.items():
        _set(cfg, key.replace("__", "."), value)
    try:
        validate(cfg, available_gpus=available_gpus, cuda_available=cuda_available)
    except ConfigError as e:
        return str(e)
    return ""


# ---------------------------------------------------------------------------------------------- loading


def test_defaults_are_the_toy_world():
    cfg = load_config(None, [])
    assert isinstance(cfg, RunConfig)
    assert cfg.student.path == "toy:student" and cfg.teacher.model.path == "toy:teacher"
    assert (cfg.rollout.group_size, cfg.teacher.group_size, cfg.algo.updates_per_step) == (8, 4, 4)
    assert (cfg.algo.tau, cfg.algo.rho_replay, cfg.algo.rho_aug) == (0.5, 0.25, 0.25)
    assert (cfg.algo.eps_low, cfg.algo.eps_high, cfg.algo.dual_clip, cfg.algo.kl_coef) == (0.2, 0.28, 10.0, 0.0)
    assert cfg.buffer.capacity == 10000 and cfg.buffer.tau == 0.5
    assert cfg.learner.lr == 5e-5 and cfg.learner.betas == [0.9, 0.999] and cfg.learner.weight_decay == 0.1
    assert cfg.teacher.compress_max_tokens == 512 and cfg.teacher.compress_max_lines == 5
    assert cfg.data.train[0].path == "toy" and cfg.data.train[0].split == "train"
    assert cfg.trainer.run_dir.startswith("runs/") and "$" not in cfg.trainer.run_dir


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("algo:\n  tau: 0.4\n  rho_replay: 0.1\ntrainer:\n  steps: 5\n")
    cfg = load_config(f, ["algo.tau=0.3", "rollout.temperature=1"])
    assert cfg.algo.tau == 0.3 and cfg.algo.rho_replay == 0.1 and cfg.trainer.steps == 5
    assert cfg.buffer.tau == 0.3  # follows algo.tau unless set
    assert cfg.rollout.temperature == 1.0 and isinstance(cfg.rollout.temperature, float)
    assert load_config(f, ["buffer.tau=0.7"]).buffer.tau == 0.7


def test_list_of_sources_overrides():
    cfg = load_config(None, ["data.train[0].path=a.jsonl", "data.train.1.path=b.parquet", "data.train.1.column_map=gsm8k"])
    assert [s.path for s in cfg.data.train] == ["a.jsonl", "b.parquet"]
    assert cfg.data.train[1].column_map == "gsm8k" and cfg.data.train[1].split is None
    cfg = load_config(None, ["data.eval=[{path: x.jsonl, column_map: {preset: mmlu, id: qid}, limit: 3}]"])
    assert cfg.data.eval[0].column_map == {"preset": "mmlu", "id": "qid"} and cfg.data.eval[0].limit == 3
    with pytest.raises(ConfigError, match=r"data\.train\[3\]: index out of range"):
        load_config(None, ["data.train.3.path=x.jsonl"])


def test_env_and_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("ZPPO_CACHE", str(tmp_path / "cache"))
    cfg = load_config(None, ["trainer.run_dir=" + str(tmp_path / "run"), "data.train.0.column_map={id: qid}"])
    assert cfg.toy.cache_dir == str(tmp_path / "cache")
    written = save_resolved(cfg, cfg.trainer.run_dir)
    assert written == tmp_path / "run" / "config.yaml"
    assert load_config(written, []) == cfg
    assert to_yaml(cfg) == written.read_text()


def test_algorithm_presets():
    grpo = load_config(None, ["algo.name=grpo"]).algo
    assert (grpo.enable_bcq, grpo.enable_ncq, grpo.use_buffer) == (False, False, False)
    dagger = load_config(None, ["algo.name=grpo_buffer_bcq"]).algo
    assert (dagger.enable_bcq, dagger.enable_ncq, dagger.use_buffer) == (True, False, True)
    explicit = load_config(None, ["algo.name=grpo", "algo.use_buffer=true"]).algo
    assert explicit.use_buffer is True and explicit.enable_bcq is False
    assert load_config(None, ["algo.name=offpolicy_distill"]).algo.updates_per_step == 1


def test_the_method_table_is_the_one_list_of_algorithms(monkeypatch):
    from zppo_ray.algo.methods import METHODS, Method

    assert "algo.name" in problems(algo__name="mine")
    monkeypatch.setitem(METHODS, "mine", Method("mine", "a new method", {"use_buffer": False}))
    assert problems(algo__name="mine") == ""
    assert load_config(None, ["algo.name=mine"]).algo.use_buffer is False  # its presets apply


# ---------------------------------------------------------------------------------------------- type errors


@pytest.mark.parametrize(
    "override, key, wording",
    [
        ("algo.taux=1", "algo.taux", "did you mean 'algo.tau'"),
        ("nosuch.x=1", "nosuch", "allowed keys here"),
        ("toy.student.depth=3", "toy.student.depth", "unknown key"),
        ("data.train=[{path: a.jsonl, bogus: 1}]", "data.train[0].bogus", "unknown key"),
    ],
)
def test_unknown_key_names_the_path(override, key, wording):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert e.value.key == key and str(e.value).startswith(key + ":") and wording in str(e.value)


def test_unknown_key_in_yaml(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("rollout:\n  group_sise: 8\n")
    with pytest.raises(ConfigError, match=r"rollout\.group_sise: unknown key \(did you mean 'rollout\.group_size'"):
        load_config(f, [])


@pytest.mark.parametrize(
    "override, key, wording",
    [
        ("algo.tau=abc", "algo.tau", "expected a number (float)"),
        ("rollout.group_size=2.5", "rollout.group_size", "expected an integer"),
        ("algo.enable_bcq=maybe", "algo.enable_bcq", "boolean"),
        ("algo.advantage=foo", "algo.advantage", "one of 'zppo', 'center', 'norm_with_zero', 'grpo'"),
        ("learner.precision=fp8", "learner.precision", "one of 'fp32', 'bf16'"),
        ("data.on_bad_row=ignore", "data.on_bad_row", "one of 'error', 'skip'"),
        ("data.train[0].kind=essay", "data.train[0].kind", "one of 'math', 'mc', 'free' or null"),
        ("learner.betas=[0.9, x]", "learner.betas", "a list of a number (float)"),
        ("trainer.steps=null", "trainer.steps", "expected an integer"),
        ("algo=3", "algo", "expected a mapping with keys name, advantage"),
        ("data.train=7", "data.train", "expected a list of a mapping"),
    ],
)
def test_wrong_type_names_the_path(override, key, wording):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert e.value.key == key and wording in str(e.value)


def test_malformed_inputs(tmp_path):
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["algo.tau"])
    with pytest.raises(ConfigError, match="algo.tau: Interpolation key 'nope' not found"):
        load_config(None, ["algo.tau=${nope}"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml", [])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml", [])
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml", []) .algo.tau == 0.5


# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "changes, key, wording",
    [
        ({"algo__rho_replay": 1.5}, "algo.rho_replay", "[0, 1]"),
        ({"algo__rho_aug": -0.1}, "algo.rho_aug", "[0, 1]"),
        ({"algo__tau": 1.2}, "algo.tau", "(0, 1]"),
        ({"buffer__tau": -1.0}, "buffer.tau", "(0, 1]"),
        ({"rollout__group_size": 1}, "rollout.group_size", "G_S >= 2"),
        ({"rollout__group_size": 0}, "rollout.group_size", "[1, inf]"),
        ({"teacher__group_size": 0}, "teacher.group_size", "[1, inf]"),
        ({"trainer__prompts_per_step": 0}, "trainer.prompts_per_step", "[1, inf]"),
        ({"trainer__steps": -1}, "trainer.steps", "[0, inf]"),
        ({"learner__zero_stage": 4}, "learner.zero_stage", "[0, 3]"),
        ({"learner__offload": True}, "learner.offload", "zero_stage in 1..3"),
        ({"learner__betas": [0.9]}, "learner.betas", "two numbers"),
        ({"learner__lr": 0.0}, "learner.lr", "(0, inf]"),
        ({"algo__updates_per_step": 40, "trainer__prompts_per_step": 4}, "algo.updates_per_step", "need >= 40"),
        ({"algo__updates_per_step": 0}, "algo.updates_per_step", "[1, inf]"),
        ({"algo__dual_clip": 0.5}, "algo.dual_clip", "0 (off) or > 1"),
        ({"algo__eps_low": 1.0}, "algo.eps_low", "[0, 1)"),
        ({"algo__name": "nope"}, "algo.name", "allowed: zppo, grpo"),
        ({"rollout__top_k": 0}, "rollout.top_k", "-1 (off) or >= 1"),
        ({"rollout__top_p": 0.0}, "rollout.top_p", "(0, 1]"),
        ({"rollout__temperature": 0.0}, "rollout.temperature", "(0, inf]"),
        ({"buffer__ema_alpha": 0.0}, "buffer.ema_alpha", "(0, 1]"),
        ({"student__max_model_len": 256}, "student.max_model_len", "rollout.max_prompt_tokens + rollout.max_new_tokens"),
        ({"data__max_prompt_tokens": 1000}, "data.max_prompt_tokens", "<= rollout.max_prompt_tokens"),
        ({"teacher__model__max_model_len": 512}, "teacher.model.max_model_len", "must be >= 768"),
        ({"teacher__num_replicas": 0}, "teacher.num_replicas", "uses the teacher"),
        ({"toy__student__num_heads": 8}, "toy.student.num_heads", "head_dim = hidden_size / num_heads = 16"),
        ({"toy__teacher__hidden_size": 130}, "toy.teacher.hidden_size", "divisible by toy.teacher.num_heads"),
        ({"toy__teacher__num_kv_heads": 3}, "toy.teacher.num_kv_heads", "must divide toy.teacher.num_heads"),
        ({"toy__student__max_position_embeddings": 512}, "toy.student.max_position_embeddings", ">= the model's"),
        ({"student__path": "toy:big"}, "student.path", "'toy:student' or 'toy:teacher'"),
        ({"rollout__gpus_per_worker": 2}, "rollout.gpus_per_worker", "0 (CPU) or rollout.tp (1)"),
        ({"teacher__gpus_per_replica": 1, "teacher__tp": 2}, "teacher.gpus_per_replica", "teacher.tp (2)"),
        ({"learner__gpus_per_rank": 2}, "learner.gpus_per_rank", "0 (CPU) or 1"),
        ({"rollout__colocate_with_learner": True, "rollout__gpus_per_worker": 1}, "rollout.colocate_with_learner",
         "same GPUs"),
        ({"checkpoint__keep_last": -1}, "checkpoint.keep_last", "[0, inf]"),
        ({"rollout__weight_sync": "rdma"}, "rollout.weight_sync", "one of object_store, nccl, ipc"),
        ({"rollout__weight_sync": "nccl"}, "rollout.weight_sync", "on CPU use object_store"),
        ({"rollout__weight_sync": "ipc", "rollout__gpus_per_worker": 1, "learner__gpus_per_rank": 1},
         "rollout.weight_sync", "colocated engines only"),
        ({"rollout__weight_sync": "nccl", "rollout__gpus_per_worker": 1, "learner__gpus_per_rank": 1,
          "rollout__colocate_with_learner": True}, "rollout.weight_sync", "colocated engines take ipc"),
        ({"rollout__weight_bucket_mb": 0}, "rollout.weight_bucket_mb", "(0, inf]"),
        ({"placement__learner_strategy": "STRICT"}, "placement.learner_strategy", "STRICT_SPREAD"),
        ({"placement__rollout": {"zppo_b": 0}}, "placement.rollout.zppo_b", "amount > 0"),
        ({"trainer__resume": ""}, "trainer.resume", "'never', 'auto'"),
    ],
)
def test_each_rule_names_its_key(changes, key, wording):
    text = problems(**changes)
    line = next((ln for ln in text.splitlines() if ln.strip().startswith(key + ":")), None)
    assert line is not None, text
    assert wording in line, line


def test_data_source_rules():
    cfg = load_config(None, [])
    cfg.data.train[0] = C.SourceConfig(path="a.jsonl", column_map="gsm9k")
    cfg.data.eval = [C.SourceConfig(path="toy", split="test"), C.SourceConfig(path="x.csv", answer_transform="nope"),
                     C.SourceConfig(path="d", column_map={"promt": "q"}, limit=0)]
    with pytest.raises(ConfigError) as e:
        validate(cfg, cuda_available=False)
    keys = {k for k, _ in e.value.problems}
    assert keys == {"data.train[0].column_map", "data.eval[0].split", "data.eval[1].path",
                    "data.eval[1].answer_transform", "data.eval[2].column_map", "data.eval[2].limit"}
    assert "allowed: gsm8k, math, mmlu, mmlu_pro" in str(e.value)
    cfg.data.train = []
    cfg.data.eval = []
    with pytest.raises(ConfigError, match="data.train: at least one"):
        validate(cfg, cuda_available=False)


def test_head_dim_rule_only_without_cuda():
    assert "toy.student.num_heads" in problems(toy__student__num_heads=8, cuda_available=False)
    assert problems(toy__student__num_heads=8, cuda_available=True) == ""
    assert "toy.student.num_kv_heads" in problems(toy__student__num_kv_heads=3, cuda_available=True)
    # a non-toy student is not checked against the toy architecture
    assert problems(toy__student__num_heads=8, student__path="some/hf-model") == ""


def test_gpu_budget():
    gpu = dict(rollout__num_workers=2, rollout__tp=2, rollout__gpus_per_worker=2, teacher__gpus_per_replica=1,
               learner__num_ranks=2, learner__gpus_per_rank=1)
    assert problems(available_gpus=7, **gpu) == ""  # 4 + 2 + 1
    text = problems(available_gpus=6, **gpu)
    assert "asks for 7 GPUs but 6 are available" in text
    for key in ("rollout.num_workers", "teacher.num_replicas", "learner.num_ranks"):
        assert key in text
    colocated = dict(gpu, rollout__colocate_with_learner=True, learner__num_ranks=4)
    assert problems(available_gpus=5, **colocated) == ""  # max(4, 4) + 1


def test_check_paths(tmp_path):
    cfg = load_config(None, ["data.train.0.path=" + str(tmp_path / "none.jsonl"), "trainer.resume=/no/such/ckpt"])
    with pytest.raises(ConfigError) as e:
        validate(cfg, check_paths=True, cuda_available=False)
    assert {k for k, _ in e.value.problems} == {"data.train[0].path", "trainer.resume"}


def test_config_error_lists_all_problems():
    text = problems(algo__tau=2.0, trainer__steps=-3)
    assert text.startswith("2 config problems:") and "algo.tau" in text and "trainer.steps" in text


# ---------------------------------------------------------------------------------------------- files, CLI


def test_toy_yaml_loads():
    cfg = load_config(ROOT / "configs/toy.yaml", [])
    defaults = load_config(None, [])
    assert dataclasses.replace(cfg, trainer=defaults.trainer) == defaults


def test_paper_yaml_loads_on_64_gpus():
    cfg = load_config(ROOT / "configs/paper_8x8_h100.yaml", [], available_gpus=64)
    assert cfg.student.path == "Qwen/Qwen3.5-0.8B" and cfg.teacher.model.path == "Qwen/Qwen3.5-27B-FP8"
    assert (cfg.teacher.tp, cfg.teacher.num_replicas, cfg.rollout.num_workers, cfg.learner.num_ranks) == (2, 8, 48, 48)
    assert C.gpus_required(cfg) == 64 and cfg.rollout.colocate_with_learner
    assert (cfg.trainer.steps, cfg.trainer.prompts_per_step, cfg.rollout.group_size, cfg.teacher.group_size) == (200, 384, 8, 4)
    assert (cfg.rollout.max_new_tokens, cfg.data.max_prompt_tokens, cfg.rollout.temperature) == (12288, 4096, 1.0)
    assert cfg.learner.precision == "bf16" and cfg.student.dtype == "bfloat16" and cfg.learner.lr == 1e-6
    assert (cfg.algo.rho_replay, cfg.algo.rho_aug) == (0.25, 0.25)
    with pytest.raises(ConfigError, match="asks for 64 GPUs but 56 are available"):
        load_config(ROOT / "configs/paper_8x8_h100.yaml", [], available_gpus=56)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zppo_ray.config", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_prints_resolved_yaml():
    out = _cli("configs/toy.yaml", "algo.tau=0.3")
    assert out.returncode == 0, out.stderr
    assert "  tau: 0.3\n" in out.stdout and "algo:\n  name: zppo\n" in out.stdout
    bad = _cli("configs/toy.yaml", "algo.tau=abc")
    assert bad.returncode == 2 and "algo.tau: expected a number" in bad.stderr and bad.stdout == ""


@pytest.mark.parametrize(
    "override, key",
    [
        ("toy.tiers=[1,3]", "toy.tiers"),
        ("toy.mc_fraction=1.5", "toy.mc_fraction"),
        ("toy.student.tier_weights=[1.0]", "toy.student.tier_weights"),
        ("toy.teacher.tier_weights=[0,0,0]", "toy.teacher.tier_weights"),
    ],
)
def test_toy_world_rules_name_their_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert key in str(e.value)


def test_toy_shortcut_shares_are_checked():
    assert "toy.student.shortcut" in problems(toy__student__shortcut=[0.0, 0.5])
    assert "toy.student.shortcut" in problems(toy__student__shortcut=[0.0, 0.0, 1.5])
    assert "toy.teacher.shortcut" in problems(toy__teacher__shortcut=[0.0, 0.0, 0.5])


def test_dynamic_sampling_by_question_is_the_zppo_ds_preset_and_needs_dynamic_sampling():
    cfg = load_config(None, ["algo.name=zppo_ds"])
    assert (cfg.algo.dynamic_sampling, cfg.algo.dynamic_sampling_by) == (True, "question")
    assert cfg.algo.enable_bcq and cfg.algo.enable_ncq and cfg.algo.use_buffer
    assert "algo.dynamic_sampling_by: 'question' needs algo.dynamic_sampling=true" in problems(
        algo__dynamic_sampling_by="question")
    with pytest.raises(ConfigError, match="algo.dynamic_sampling_by"):
        load_config(None, ["algo.dynamic_sampling_by=prompt"])
