"""PolicyLearner (real DeepSpeed on gloo, in-process, one rank) and LearnerGroup (real Ray, two ranks).

The reference for every number is a plain transformers model: logprobs from a per-sequence forward, the
mini-batch loss and gradient norm from `compute_policy_loss` on the whole mini-batch at once. Tests that
compare weights after a step use AdamW eps = 1: the first Adam step is then ~lr * g instead of
~lr * sign(g), so a wrongly scaled gradient shows up in the weights.
"""

import dataclasses
import socket

import pytest
import torch

from zppo_ray.algo.losses import PolicyLossConfig, compute_policy_loss
from zppo_ray.config import AlgoConfig, LearnerConfig
from zppo_ray.learner.policy import PolicyLearner, collate
from zppo_ray.types import TrainItem

CORPUS = ["In arithmetic modulo 10, compute 3+8*2-5.\n<think>3+8*2-5=3+6-5=9-5=4</think>\n\\boxed{4}"] * 50 + [
    "user assistant Below are two candidate responses"] * 20
ALGO = AlgoConfig()
SENSITIVE = dict(lr=1e-2, eps=1.0, weight_decay=0.0, grad_clip=0.0)  # update ~ lr * gradient (see module doc)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from zppo_ray.worlds.toy.models import Arch, build_model
    from zppo_ray.worlds.toy.tokenizer import build_tokenizer

    path = tmp_path_factory.mktemp("tiny_qwen3")
    tok = build_tokenizer(CORPUS, vocab_size=300)
    model = build_model(Arch(64, 2, 2, 1, 128), tok, 512, seed=0)
    assert model.config.tie_word_embeddings and model.config.head_dim == 32
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def make_learner(path, algo=ALGO, **cfg) -> PolicyLearner:
    torch.set_num_threads(1)
    return PolicyLearner(path, LearnerConfig(**cfg), algo, rank=0, world_size=1, master_addr="127.0.0.1",
                         master_port=free_port(), seed=0)


def make_items(lengths, seed=0, advantages=None) -> list[TrainItem]:
    g = torch.Generator().manual_seed(seed)
    advantages = advantages or [(-1.0) ** i * (0.5 + 0.25 * i) for i in range(len(lengths))]
    return [TrainItem(prompt_ids=torch.randint(3, 300, (p,), generator=g).tolist(),
                      completion_ids=torch.randint(3, 300, (c,), generator=g).tolist(), advantage=a)
            for (p, c), a in zip(lengths, advantages)]


def with_old(items, logprobs, shift=0.3):
    """old_logprobs = current ± shift: ratios away from 1 so both clip branches are exercised."""
    return [dataclasses.replace(it, old_logprobs=[x + shift * ((j % 3) - 1) for j, x in enumerate(lp)])
            for it, lp in zip(items, logprobs)]


def hf_logprobs(model, item) -> torch.Tensor:
    ids = torch.tensor([item.prompt_ids + item.completion_ids])
    logp = model(input_ids=ids).logits[0].float().log_softmax(-1)
    p, c = len(item.prompt_ids), len(item.completion_ids)
    return logp[p - 1:p - 1 + c].gather(-1, torch.tensor(item.completion_ids)[:, None])[:, 0]


def weights_close(a, b, atol):
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= atol, worst


def test_logprobs_match_transformers(model_dir):
    from transformers import AutoModelForCausalLM

    items = make_items([(4, 7), (9, 2), (3, 11), (6, 1), (5, 5)])
    learner = make_learner(model_dir, micro_batch_size=2)
    got = learner.compute_logprobs(items)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        for it, lp in zip(items, got):
            assert len(lp) == len(it.completion_ids)
            torch.testing.assert_close(torch.tensor(lp), hf_logprobs(model, it), atol=1e-5, rtol=0)


def test_micro_batches_take_similar_lengths_together():
    from zppo_ray.learner.policy import longest_first

    items = make_items([(4, 7), (400, 20), (3, 11), (380, 30), (5, 5)])
    order = longest_first(items)
    assert order[:2] == [1, 3] and sorted(order) == list(range(5))  # the two long NCQ-like rows share a micro-batch


def test_step_moves_logprobs_with_the_advantage(model_dir):
    items = make_items([(5, 8), (6, 8)], advantages=[1.0, -1.0])
    learner = make_learner(model_dir, lr=1e-3, micro_batch_size=1)
    before = learner.compute_logprobs(items)
    metrics = learner.train_minibatch(with_old(items, before, shift=0.0))
    after = learner.compute_logprobs(items)
    assert sum(after[0]) > sum(before[0]) and sum(after[1]) < sum(before[1])
    assert metrics["step"] == learner.step == 1 and metrics["tokens"] == 16 and metrics["items"] == 2
    assert metrics["lr"] == pytest.approx(1e-3) and metrics["grad_norm"] > 0
    assert metrics["clipfrac_low"] == metrics["clipfrac_high"] == 0.0  # ratio 1 at the first step
    assert abs(metrics["loss"]) < 1e-6  # token mean of -A * 1 over 8 (+1) and 8 (-1) tokens


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean"])
def test_loss_is_the_minibatch_mean_across_micro_batches(model_dir, agg):
    """micro_batch_size 1 and 3 give the loss, gradient norm and weights of one full-batch reference."""
    from transformers import AutoModelForCausalLM

    algo = dataclasses.replace(ALGO, loss_agg=agg)
    items = make_items([(5, 2), (3, 9), (7, 5)])
    items[2].loss_mask = [1, 0, 0, 1, 1]  # masked tokens must count nowhere, not even in the denominator
    results = []
    for mbs in (1, 3):
        learner = make_learner(model_dir, algo, micro_batch_size=mbs, **SENSITIVE)
        batch = with_old(items, learner.compute_logprobs(items))
        results.append((learner.train_minibatch(batch), learner.export_weights()))
    (m1, w1), (m3, w3) = results
    weights_close(w1, w3, atol=1e-6)

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    rows = [hf_logprobs(model, it) for it in batch]
    pad = lambda xs: torch.nn.utils.rnn.pad_sequence([torch.as_tensor(x, dtype=torch.float32) for x in xs],
                                                     batch_first=True)
    mask = pad([it.loss_mask or [1] * len(it.completion_ids) for it in batch])
    loss, ref_metrics = compute_policy_loss(
        "ppo_clip", pad(rows), pad([it.old_logprobs for it in batch]), torch.tensor([it.advantage for it in batch]),
        mask, PolicyLossConfig(agg=agg))
    loss.backward()
    grad_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters())).item()
    for m in (m1, m3):
        assert m["loss"] == pytest.approx(loss.item(), abs=1e-6)
        assert m["grad_norm"] == pytest.approx(grad_norm, rel=1e-5)
        assert m["tokens"] == 2 + 9 + 3
        for k in ("clipfrac_low", "clipfrac_high", "ratio_mean"):
            assert m[k] == pytest.approx(ref_metrics[k], abs=1e-6)
    assert ref_metrics["clipfrac_low"] > 0 and ref_metrics["clipfrac_high"] > 0


def test_export_weights_is_the_full_hf_state_dict(model_dir):
    from safetensors.torch import load, save
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    learner = make_learner(model_dir)
    weights = learner.export_weights()
    assert "lm_head.weight" in weights and set(hf) <= set(weights)
    for k, v in hf.items():
        assert weights[k].device.type == "cpu" and weights[k].is_contiguous()
        torch.testing.assert_close(weights[k], v, atol=0, rtol=0)
    # own storage per name (tied weights included), so safetensors takes it and steps cannot alias it
    assert weights["lm_head.weight"].data_ptr() != weights["model.embed_tokens.weight"].data_ptr()
    # a push streams the same tensors in buckets of whole layers, within budget unless one layer is bigger
    from zppo_ray.weights.buckets import layer_groups

    budget = sum(v.numel() * v.element_size() for k, v in weights.items() if ".layers.0." in k)
    buckets = list(learner.weight_buckets(budget))
    assert len(buckets) >= 3 and [k for b in buckets for k in b] == list(weights)
    for b in buckets:
        assert sum(v.numel() * v.element_size() for v in b.values()) <= budget or len(layer_groups(list(b))) == 1
    weights_close(load(save({k: v for b in buckets for k, v in b.items()})), weights, atol=0)
    layers_of = [sorted({int(k.split(".")[2]) for k in b if ".layers." in k}) for b in buckets]
    flat = [i for ls in layers_of for i in ls]
    assert flat == sorted(set(flat))  # a layer never spans two buckets


def test_save_load_roundtrips_the_training_state(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = dict(micro_batch_size=2, warmup_steps=3, **SENSITIVE)  # warm-up: the restored step must set the lr
    items = make_items([(4, 6), (5, 3), (6, 4)])
    a = make_learner(model_dir, **cfg)
    a.train_minibatch(with_old(items, a.compute_logprobs(items)))
    a.save(tmp_path / "ckpt")
    second = with_old(items, a.compute_logprobs(items), shift=0.1)
    m_a = a.train_minibatch(second)

    b = make_learner(model_dir, **cfg)
    b.load(tmp_path / "ckpt")
    assert b.step == 1
    m_b = b.train_minibatch(second)
    assert m_b["lr"] == m_a["lr"] == pytest.approx(1e-2 * 2 / 3)
    assert m_b["step"] == 2
    weights_close(a.export_weights(), b.export_weights(), atol=1e-7)  # equal Adam moments, equal step

    b.save_hf(tmp_path / "hf")
    assert (tmp_path / "hf" / "tokenizer.json").exists()
    AutoTokenizer.from_pretrained(tmp_path / "hf")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(b.compute_logprobs(items[:1])[0]), hf_logprobs(reloaded, items[0]),
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("stage,precision,offload", [
    (0, "fp32", False), (0, "bf16", False), (1, "fp32", False), (2, "bf16", False), (2, "fp32", True),
    (3, "fp32", False), (3, "bf16", False)])
def test_resume_is_exact_and_pickle_free(model_dir, tmp_path, monkeypatch, stage, precision, offload):
    """2 steps, save, load into a fresh learner with every unpickler disabled, 1 more step: the same loss,
    lr, step and weights as a learner that never stopped. The checkpoint holds only safetensors files."""
    import pickle

    from safetensors import safe_open

    cfg = dict(zero_stage=stage, precision=precision, offload=offload, micro_batch_size=2, warmup_steps=4,
               **SENSITIVE)
    batches = [make_items([(4, 6), (5, 3), (6, 4)], seed=s) for s in range(3)]
    a = make_learner(model_dir, **cfg)
    for items in batches[:2]:
        a.train_minibatch(with_old(items, a.compute_logprobs(items)))
    a.save(tmp_path / "ckpt")
    third = with_old(batches[2], a.compute_logprobs(batches[2]), shift=0.1)
    m_a = a.train_minibatch(third)

    files = sorted(p.relative_to(tmp_path / "ckpt").as_posix() for p in (tmp_path / "ckpt").rglob("*") if p.is_file())
    assert "latest" in files and len(files) >= 2 and not any(f.endswith(".py") for f in files), files
    for f in files:
        if f != "latest":
            with safe_open(str(tmp_path / "ckpt" / f), framework="pt") as handle:  # raises on a torch.save file
                assert handle.metadata()["zppo_format"] == "zppo-ds-safetensors-1"

    b = make_learner(model_dir, **cfg)
    with monkeypatch.context() as m:
        def refuse(*args, **kwargs):
            raise AssertionError("unpickling attempted")
        for mod, name in ((torch, "load"), (torch.serialization, "load"), (pickle, "load"), (pickle, "loads"),
                          (pickle, "Unpickler")):
            m.setattr(mod, name, refuse)
        b.load(tmp_path / "ckpt")
    assert b.step == 2
    m_b = b.train_minibatch(third)
    assert m_b["step"] == 3 and m_b["lr"] == m_a["lr"] == pytest.approx(1e-2 * 3 / 4)
    assert m_b["loss"] == m_a["loss"] and m_b["grad_norm"] == m_a["grad_norm"]
    weights_close(a.export_weights(), b.export_weights(), atol=0)  # equal Adam moments and fp32 masters
    # the step's lr came from the optimizer's param groups; the scheduler sets the following ones
    assert b.engine.lr_scheduler.state_dict() == a.engine.lr_scheduler.state_dict()


@pytest.mark.parametrize("stage,offload", [(1, False), (2, True), (3, False)])
def test_zero_stages_match_stage_0(model_dir, stage, offload):
    items = make_items([(4, 6), (5, 3), (6, 4)])
    out = []
    for s, off in ((0, False), (stage, offload)):
        learner = make_learner(model_dir, zero_stage=s, offload=off, micro_batch_size=2, **SENSITIVE)
        m = learner.train_minibatch(with_old(items, learner.compute_logprobs(items)))
        out.append((m["grad_norm"], learner.export_weights()))
    assert out[0][1].keys() == out[1][1].keys()
    assert out[1][0] == pytest.approx(out[0][0], rel=1e-5)
    weights_close(out[0][1], out[1][1], atol=1e-6)


def test_clear_errors(model_dir):
    learner = make_learner(model_dir)
    items = make_items([(4, 3)])
    with pytest.raises(ValueError, match="empty mini-batch"):
        learner.train_minibatch([])
    with pytest.raises(ValueError, match="old_logprobs is None"):
        learner.train_minibatch(items)
    with pytest.raises(ValueError, match="max length 512"):
        learner.compute_logprobs(make_items([(500, 20)]))
    with pytest.raises(ValueError, match="loss_mask has 2 entries"):
        learner.compute_logprobs([dataclasses.replace(items[0], loss_mask=[1, 1])])
    masked = with_old([dataclasses.replace(items[0], loss_mask=[0, 0, 0])], [[0.0] * 3])
    with pytest.raises(ValueError, match="no loss tokens"):
        learner.train_minibatch(masked)
    with pytest.raises(ValueError, match="entropy_coef"):
        make_learner(model_dir, AlgoConfig(entropy_coef=0.01))
    assert learner.step == 0


def teacher_rows(items, k=4, seed=1):
    """Made-up teacher top-k rows (distinct ids, normalised logprobs) for every completion token."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for it in items:
        ids = [torch.randperm(300, generator=g)[:k].tolist() for _ in it.completion_ids]
        lps = [torch.randn(k, generator=g).log_softmax(-1).tolist() for _ in it.completion_ids]
        out.append(dataclasses.replace(it, teacher_topk_ids=ids, teacher_topk_logprobs=lps))
    return out


def test_jsd_distillation_loss_matches_reference_and_decreases(model_dir):
    from transformers import AutoModelForCausalLM

    from zppo_ray.algo.losses import compute_divergence

    items = teacher_rows(make_items([(5, 6), (4, 9), (7, 3)]))
    items[1] = dataclasses.replace(items[1], teacher_topk_ids=[r[:2] for r in items[1].teacher_topk_ids],
                                   teacher_topk_logprobs=[torch.tensor(r[:2]).log_softmax(-1).tolist()
                                                          for r in items[1].teacher_topk_logprobs])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    per_item, n_tok = [], 0
    for it in items:  # reference: one sequence at a time, JSD over each row's own support
        ids = torch.tensor([it.prompt_ids + it.completion_ids])
        p, c = len(it.prompt_ids), len(it.completion_ids)
        logits = model(input_ids=ids).logits[0, p - 1:p - 1 + c].float()
        s = logits.gather(-1, torch.tensor(it.teacher_topk_ids))
        t = torch.tensor(it.teacher_topk_logprobs)
        per_item.append(compute_divergence("jsd", s[None], t[None], torch.ones(1, c)) * c)
        n_tok += c
    expected = float(sum(per_item) / n_tok)
    learner = make_learner(model_dir, lr=1e-2, micro_batch_size=2)
    first = learner.train_minibatch(items, loss_fn="jsd")
    assert first["loss"] == pytest.approx(expected, rel=1e-4)
    assert first["entropy"] > 0 and first["tokens"] == 18
    for _ in range(5):
        last = learner.train_minibatch(items, loss_fn="jsd")
    assert last["loss"] < 0.5 * first["loss"]


def test_distillation_items_are_checked(model_dir):
    learner = make_learner(model_dir)
    items = make_items([(4, 3)])
    with pytest.raises(ValueError, match="needs teacher_topk_ids"):
        learner.train_minibatch(items, loss_fn="jsd")
    bad = teacher_rows(items)
    bad[0] = dataclasses.replace(bad[0], teacher_topk_ids=bad[0].teacher_topk_ids[:2])
    with pytest.raises(ValueError, match="2/3 teacher top-k rows for 3 completion tokens"):
        learner.train_minibatch(bad, loss_fn="jsd")


def test_kl_to_the_frozen_reference(model_dir):
    items = make_items([(5, 8), (6, 8)], advantages=[1.0, -1.0])
    learner = make_learner(model_dir, algo=AlgoConfig(kl_coef=0.1, kl_type="k3"), lr=1e-2)
    first = learner.train_minibatch(with_old(items, learner.compute_logprobs(items), shift=0.0))
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy starts at the reference
    second = learner.train_minibatch(with_old(items, learner.compute_logprobs(items), shift=0.0))
    assert second["kl"] > 1e-4
    # the reference itself never moves: a fresh learner's logprobs equal the reference model's
    ref_lp = learner._logprobs(collate(items, learner.pad_id, learner.device, train=False), learner.ref)[0]
    fresh = make_learner(model_dir).compute_logprobs(items)
    torch.testing.assert_close(ref_lp[0, :8], torch.tensor(fresh[0]), atol=1e-5, rtol=0)


def test_entropy_metric_matches_transformers(model_dir):
    from transformers import AutoModelForCausalLM

    items = make_items([(5, 6), (4, 4)])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ents = []
    for it in items:
        p, c = len(it.prompt_ids), len(it.completion_ids)
        logp = model(input_ids=torch.tensor([it.prompt_ids + it.completion_ids])).logits[0, p - 1:p - 1 + c].log_softmax(-1)
        ents.append(-(logp.exp() * logp).sum(-1))
    learner = make_learner(model_dir)
    m = learner.train_minibatch(with_old(items, learner.compute_logprobs(items)))
    assert m["entropy"] == pytest.approx(float(torch.cat(ents).mean()), rel=1e-4)


# ---------------------------------------------------------------------------------------------- Ray




@pytest.fixture(scope="module", params=[0, 3], ids=["zero0", "zero3"])
def ray_group(request, model_dir, ray_cluster):
    """Two ranks (micro-batch 1); ZeRO-3 adds parameter gathers to every forward and to the export."""
    from zppo_ray.actors.learner import LearnerGroup

    cfg = LearnerConfig(num_ranks=2, zero_stage=request.param, micro_batch_size=1, **SENSITIVE)
    group = LearnerGroup(model_dir, cfg, ALGO, seed=0)
    yield group
    group.shutdown()


@pytest.mark.slow
def test_two_ranks_equal_one_rank(model_dir, ray_group, tmp_path):
    """Logprobs match and every step equals the one-rank step on the same items, uneven shards included
    (3 items: one rank runs a dummy pass; 1 item: one rank holds nothing). Then checkpoint and HF export."""
    from safetensors.torch import load_file

    single = make_learner(model_dir, micro_batch_size=1, **SENSITIVE)
    for n_items, seed in ((4, 1), (3, 2), (1, 3)):
        items = make_items([(4 + i, 3 + 2 * i) for i in range(n_items)], seed=seed)
        lp_group, lp_single = ray_group.compute_logprobs(items), single.compute_logprobs(items)
        assert len(lp_group) == n_items
        for a, b in zip(lp_group, lp_single):
            torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)
        batch = with_old(items, lp_single)
        m_group, m_single = ray_group.train_minibatch(batch), single.train_minibatch(batch)
        assert m_group["tokens"] == m_single["tokens"] and m_group["items"] == n_items
        assert m_group["loss"] == pytest.approx(m_single["loss"], abs=1e-6)
        assert m_group["grad_norm"] == pytest.approx(m_single["grad_norm"], rel=1e-5)
        weights_close(ray_group.export_weights(), single.export_weights(), atol=1e-5)

    saved = ray_group.export_weights()
    ray_group.save(str(tmp_path / "ckpt"))
    ray_group.train_minibatch(batch)
    ray_group.load(str(tmp_path / "ckpt"))
    weights_close(ray_group.export_weights(), saved, atol=0)
    ray_group.save_hf(str(tmp_path / "hf"))
    weights_close(load_file(str(tmp_path / "hf" / "model.safetensors")), saved, atol=0)


def test_the_gpu_transfer_source_declares_exactly_what_it_yields(model_dir):
    """vLLM sizes its receive buffers from `metadata()` and trusts iteration to match it element for element
    (zppo_ray/weights/vllm_transfer.py): names, dtypes and shapes, bucket by bucket, in one order."""
    from zppo_ray.weights.vllm_transfer import learner_source

    learner = make_learner(model_dir)
    source = learner_source(learner, bucket_bytes=50_000)
    meta = source.metadata()
    pairs = list(source)
    assert [(m.name, m.dtype, tuple(m.shape)) for m in meta] == [(n, t.dtype, tuple(t.shape)) for n, t in pairs]
    assert "lm_head.weight" in {m.name for m in meta}
    assert [names for names, _ in source.iter_groups()] == [g for g in source.groups()]  # vLLM's own grouping agrees
