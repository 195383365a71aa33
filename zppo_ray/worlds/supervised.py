"""Supervised training on completions and transformers-side generation: what a world needs to build and
measure its models before any engine or learner exists (the toy world's pretraining, the smollm2 world's
student and teacher fine-tunes, their held-out reports and measurements)."""

from __future__ import annotations

import logging
import math
import random
import time

import torch

from zppo_ray.algo.reformulate import Templates, question_prompt
from zppo_ray.data.schema import Question
from zppo_ray.engine.prompts import chat_prompt_ids
from zppo_ray.observe.progress import bar

log = logging.getLogger(__name__)


def encode_pair(tokenizer, prompt: str, completion: str) -> tuple[list[int], int]:
    """Token ids of chat(prompt) + completion + <|im_end|>, and where the completion starts.

    Prompt and completion are tokenized separately, exactly as a rollout sees them (the engine
    tokenizes the templated prompt and then generates completion tokens).
    """
    p_ids = chat_prompt_ids(tokenizer, prompt)
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p_ids + c_ids, len(p_ids)


def train_on_completions(model, docs: list[tuple[list[int], int]], steps: int, batch_size: int, lr: float, seed: int,
                         pad_id: int, label: str, bf16: bool = False, stop_after: int | None = None) -> list[float]:
    """Supervised next-token training on completions only (prompt tokens are masked out).

    Cosine schedule with a short warm-up; batches are drawn from length-sorted buckets to keep
    padding (wasted CPU) low. `stop_after`: run only the first steps of the same `steps`-long schedule, so
    their losses are the full run's first ones (tests/world_stamp.py fingerprints a build this way).
    """
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    order = sorted(range(len(docs)), key=lambda i: len(docs[i][0]))
    buckets = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    model.train()
    losses: list[float] = []
    t0 = time.time()
    run = steps if stop_after is None else min(steps, stop_after)
    progress = bar(run, f"train {label}", unit="step")
    for step in range(run):
        batch = [docs[i] for i in rng.choice(buckets)]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, start) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            labels[row, start:len(ids)] = torch.tensor(ids[start:])
            attn[row, :len(ids)] = 1
        # bf16 autocast: about 1.5x faster on a CPU with AVX-512 bf16; the weights and AdamW stay fp32
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=input_ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        progress.update()
        if step % 10 == 0:
            progress.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}", refresh=False)
        if progress.disable and (step % max(1, min(100, steps // 10)) == 0 or step == steps - 1):
            spent = time.time() - t0  # the bar's estimate, for logs that are not a terminal
            log.info("train %s step %d/%d loss %.4f (%.0fs, about %.0fs left)", label, step + 1, steps,
                     sum(losses[-50:]) / len(losses[-50:]), spent, spent / (step + 1) * (steps - step - 1))
    progress.close()
    model.eval()
    return losses


@torch.no_grad()
def _complete(model, tokenizer, prompts: list[str], batch_size: int,
              **generate_kwargs) -> list[str]:
    """Completions of chat prompts with transformers, `num_return_sequences` per prompt, flat and in order."""
    tokenizer.padding_side = "left"
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts[i:i + batch_size]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        gen = model.generate(**enc, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             **generate_kwargs)
        out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def greedy_complete(model, tokenizer, prompts: list[str],
                    max_new_tokens: int, batch_size: int = 128) -> list[str]:
    """Greedy completions of chat prompts with transformers (used before any engine exists)."""
    return _complete(model, tokenizer, prompts, batch_size, max_new_tokens=max_new_tokens, do_sample=False)


def sample_complete(model, tokenizer, prompts: list[str], n: int,
                    temperature: float, max_new_tokens: int, seed: int, batch_size: int = 32) -> list[list[str]]:
    """`n` sampled completions per chat prompt with transformers (world measurements, before any engine)."""
    torch.manual_seed(seed)
    flat = _complete(model, tokenizer, prompts, batch_size, max_new_tokens=max_new_tokens, do_sample=True,
                     temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=n)
    return [flat[j:j + n] for j in range(0, len(flat), n)]

def greedy_grades(model, tokenizer, questions: list[Question], max_new_tokens: int,
                  templates: Templates | None = None) -> list[float]:
    """Each question's greedy reward with the project's grader (the same one RL rewards use)."""
    from zppo_ray.rewards import grade

    outs = greedy_complete(model, tokenizer, [question_prompt(q.text, templates or Templates()) for q in questions], max_new_tokens)
    return [grade(o, q.answer, q.kind) for q, o in zip(questions, outs)]


def by_tier(questions: list[Question], grades: list[float]) -> dict[str, float]:
    per_tier: dict[str, list[float]] = {}
    for q, g in zip(questions, grades):
        per_tier.setdefault(q.tier, []).append(g)
    return {t: round(sum(v) / len(v), 4) for t, v in sorted(per_tier.items())}
