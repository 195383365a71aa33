"""One DeepSpeed rank of the policy learner (spec §2 step 9): log-probs, mini-batch PPO steps, weight export.

Ray-free on purpose: the same class runs in a unit test (world_size 1, in-process), under torchrun, or inside
the thin Ray shell of `zppo_ray/actors/learner.py`. Every method marked *collective* must be called on all
ranks of the group, in the same order, or the ranks deadlock waiting for each other.

Token-mean across micro-batches and ranks (why the loss is scaled by hand). The spec's loss is the mean over
ALL loss tokens of a mini-batch. A micro-batch loss `l_b` from `compute_policy_loss` is already a mean over
that micro-batch's `u_b` units (tokens for `token_mean`, non-empty sequences for `seq_mean_*`). With `U` the
units of the whole mini-batch summed over ranks (one all_reduce), each rank back-propagates
`l_b * u_b / U * W` (W = world size) for every micro-batch. The local gradients then sum to `W/U * Σ_b u_b
∇l_b` per rank, and DeepSpeed's gradient reduction AVERAGES over ranks (divides by W), so the reduced
gradient is exactly `1/U Σ_all u_b ∇l_b` = the gradient of the mini-batch mean, however the items fall into
micro-batches and ranks. DeepSpeed's own accumulation scaling is kept out of the way: the config says
`gradient_accumulation_steps = 1`, `backward(scale_wrt_gas=False)`, and the accumulation boundary is set by
hand (`set_gradient_accumulation_boundary(False)` for all but the last micro-batch, then one `step()`), so
a mini-batch may hold any number of micro-batches.

Ranks must run the same number of forward/backward passes (ZeRO-2/3 reduce gradients inside every backward,
ZeRO-3 gathers parameters inside every forward): a rank with fewer micro-batches runs zero-loss dummy passes.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from zppo_ray.algo.losses import DIVERGENCES, PolicyLossConfig, compute_divergence, compute_policy_loss
from zppo_ray.learner.deepspeed_env import import_deepspeed
from zppo_ray.learner.vision import VisionInputs
from zppo_ray.types import TrainItem

log = logging.getLogger(__name__)

# Logprob of a padded teacher top-k slot: zero mass after exp() yet finite, so no gradient turns NaN.
TOPK_PAD_LOGPROB = -1e4
# Bytes gathered at once when exporting ZeRO-3 weights to a checkpoint: bounds the transient copy.
EXPORT_BUCKET_BYTES = 1 << 30

LossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]


def ds_config(learner_cfg, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config dict derived from `LearnerConfig` (gradient accumulation is ours, see module doc)."""
    stage = int(learner_cfg.zero_stage)
    if not 0 <= stage <= 3:
        raise ValueError(f"learner.zero_stage must be 0..3, got {stage}")
    zero: dict[str, Any] = {"stage": stage}
    if learner_cfg.offload:
        if stage == 0:
            raise ValueError("learner.offload needs learner.zero_stage >= 1")
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    return {
        "train_micro_batch_size_per_gpu": int(learner_cfg.micro_batch_size),
        "train_batch_size": int(learner_cfg.micro_batch_size) * world_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": float(learner_cfg.grad_clip),
        "zero_optimization": zero,
        "bf16": {"enabled": learner_cfg.precision == "bf16"},
        # a plain torch AdamW: no JIT-compiled cpu_adam/fused_adam op (25-30 s each on first use)
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def loss_config(algo_cfg) -> PolicyLossConfig:
    """PolicyLossConfig from `AlgoConfig` (dual_clip 0 means off)."""
    return PolicyLossConfig(
        eps_low=algo_cfg.eps_low, eps_high=algo_cfg.eps_high,
        dual_clip=algo_cfg.dual_clip or None, agg=algo_cfg.loss_agg,
        kl_coef=algo_cfg.kl_coef, kl_type=algo_cfg.kl_type,
    )


def check_items(items: Sequence[TrainItem], max_len: int | None, train: bool, distill: bool = False,
                multimodal: bool = False) -> str | None:
    """Why `items` cannot be processed, or None. Pure, so the driver can reject a batch before any rank
    enters a collective (a rank raising alone would leave the others blocked). `distill`: the items feed a
    divergence loss, so they need the teacher's top-k rows instead of old logprobs and an advantage.
    `multimodal`: the model takes images; a text-only model refuses items with images rather than computing
    their logprobs on a context without the image the student saw."""
    for i, it in enumerate(items):
        p, c = len(it.prompt_ids), len(it.completion_ids)
        if p == 0:
            return f"item {i}: empty prompt_ids (the first completion token needs a preceding position)"
        if it.images and not multimodal:
            return (f"item {i} has {len(it.images)} image(s) but the student is not a vision-language model "
                    "(its config has no vision_config): its logprobs would ignore what the student saw")
        if max_len is not None and p + c > max_len:
            return f"item {i}: prompt {p} + completion {c} = {p + c} tokens > the model's max length {max_len}"
        if it.loss_mask is not None and len(it.loss_mask) != c:
            return f"item {i}: loss_mask has {len(it.loss_mask)} entries for {c} completion tokens"
        if train and distill:
            ids, lps = it.teacher_topk_ids, it.teacher_topk_logprobs
            if ids is None or lps is None:
                return f"item {i}: a divergence loss needs teacher_topk_ids and teacher_topk_logprobs"
            if len(ids) != c or len(lps) != c:
                return f"item {i}: {len(ids)}/{len(lps)} teacher top-k rows for {c} completion tokens"
            if any(len(a) != len(b) or not a for a, b in zip(ids, lps)):
                return f"item {i}: a teacher top-k row is empty or its ids and logprobs differ in length"
        elif train:
            if it.old_logprobs is None:
                return (f"item {i}: old_logprobs is None; fill it with compute_logprobs() at the start of the step "
                        "(the ratio must be against the step-start policy, not the current one)")
            if len(it.old_logprobs) != c:
                return f"item {i}: old_logprobs has {len(it.old_logprobs)} entries for {c} completion tokens"
            if it.is_weights is not None and (len(it.is_weights) != c or
                                              not all(w >= 0 and math.isfinite(w) for w in it.is_weights)):
                return f"item {i}: is_weights must be {c} finite weights >= 0, got {len(it.is_weights)} entries"
            if not math.isfinite(it.advantage):
                return f"item {i}: advantage {it.advantage} is not finite"
    return None


def loss_units(items: Sequence[TrainItem], agg: str) -> int:
    """What the aggregation averages over: loss tokens (token_mean) or sequences with >= 1 loss token."""
    counts = [sum(1 for m in it.loss_mask if m) if it.loss_mask is not None else len(it.completion_ids)
              for it in items]
    return sum(counts) if agg == "token_mean" else sum(1 for n in counts if n > 0)


def collate(items: Sequence[TrainItem], pad_id: int, device, train: bool,
            vision: VisionInputs | None = None) -> dict[str, torch.Tensor]:
    """Right-padded tensors for one micro-batch.

    input_ids/attention_mask [B, L] hold prompt + completion; `targets`/`mask` [B, T] the completion tokens
    and their loss mask; `index` [B, T] the position whose logits predict each completion token
    (prompt_len - 1 + t), so logprobs come out aligned with `completion_ids`. With images (`vision`), each
    prompt's image placeholders are expanded as the model's processor does and the pixel inputs are added.
    """
    b = len(items)
    prompts, extra = [list(it.prompt_ids) for it in items], {}
    if vision is not None and any(it.images for it in items):
        prompts, extra = vision(prompts, [it.images for it in items])
    width = max(len(p) + len(it.completion_ids) for p, it in zip(prompts, items))
    t_max = max(max(len(it.completion_ids) for it in items), 1)
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)
    attention = torch.zeros((b, width), dtype=torch.long)
    targets = torch.zeros((b, t_max), dtype=torch.long)
    index = torch.zeros((b, t_max), dtype=torch.long)
    valid = torch.zeros((b, t_max), dtype=torch.bool)
    mask = torch.zeros((b, t_max), dtype=torch.float32)
    old = torch.zeros((b, t_max), dtype=torch.float32)
    for row, (prompt, it) in enumerate(zip(prompts, items)):
        p, c = len(prompt), len(it.completion_ids)
        input_ids[row, :p + c] = torch.tensor(prompt + list(it.completion_ids), dtype=torch.long)
        attention[row, :p + c] = 1
        if c:
            targets[row, :c] = torch.tensor(it.completion_ids, dtype=torch.long)
            index[row, :c] = torch.arange(p - 1, p - 1 + c)
            valid[row, :c] = True
            mask[row, :c] = torch.tensor(it.loss_mask if it.loss_mask is not None else [1] * c, dtype=torch.float32)
            if train and it.old_logprobs is not None:  # distillation items carry none
                old[row, :c] = torch.tensor(it.old_logprobs, dtype=torch.float32)
    out = dict(input_ids=input_ids, attention_mask=attention, targets=targets, index=index, valid=valid, mask=mask,
               **extra)
    if extra:
        out["mm_token_type_ids"] = vision.token_types(input_ids)
    if train:
        out["old_logprobs"] = old
        out["advantages"] = torch.tensor([it.advantage for it in items], dtype=torch.float32)
        if any(it.is_weights is not None for it in items):
            # Truncated importance weights (zppo_ray/algo/offpolicy.py) as per-token advantages A·w: w > 0
            # commutes with the clipped surrogate's max, so this is w times each token's PPO loss.
            w = torch.ones((b, t_max), dtype=torch.float32)
            for row, it in enumerate(items):
                if it.is_weights is not None:
                    w[row, :len(it.is_weights)] = torch.tensor(it.is_weights, dtype=torch.float32)
            out["advantages"] = out["advantages"].unsqueeze(-1) * w
    if train and items[0].teacher_topk_ids is not None:
        out.update(_collate_topk(items, t_max))
    return {k: v.to(device) for k, v in out.items()}


def _collate_topk(items: Sequence[TrainItem], t_max: int) -> dict[str, torch.Tensor]:
    """[B, T, K] teacher top-k ids and logprobs, and which slots are real. Rows shorter than K (the engine
    may return fewer) are padded with the row's first id at TOPK_PAD_LOGPROB: a finite "minus infinity"
    (exp underflows to exactly 0 in fp32) because a true -inf turns the divergence's gradient into NaN."""
    k = max(len(row) for it in items for row in it.teacher_topk_ids)
    ids = torch.zeros((len(items), t_max, k), dtype=torch.long)
    lps = torch.zeros((len(items), t_max, k), dtype=torch.float32)
    valid = torch.ones((len(items), t_max, k), dtype=torch.bool)
    for b, it in enumerate(items):
        for t, (row_ids, row_lp) in enumerate(zip(it.teacher_topk_ids, it.teacher_topk_logprobs)):
            pad = k - len(row_ids)
            ids[b, t] = torch.tensor(list(row_ids) + [row_ids[0]] * pad, dtype=torch.long)
            lps[b, t] = torch.tensor(list(row_lp) + [TOPK_PAD_LOGPROB] * pad, dtype=torch.float32)
            valid[b, t, len(row_ids):] = False
    return {"topk_ids": ids, "topk_logprobs": lps, "topk_valid": valid}


SUMMED_METRICS = ("tokens", "items")  # counts; every other learner metric is a mean (or already global)


def reduce_metrics(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """One dict from several (ranks of one mini-batch, or the mini-batches of one step): counts add up,
    everything else is averaged."""
    keys = parts[0].keys() if parts else []
    return {k: sum(m[k] for m in parts) / (1 if k in SUMMED_METRICS else len(parts)) for k in keys}


def longest_first(items: Sequence[TrainItem]) -> list[int]:
    """Item positions, longest sequence first: micro-batches of similar lengths pad little. Mixed batches pay
    for it (on the smollm2 world, 100-token plain rollouts padded to 1,000-token NCQ ones). The mini-batch
    loss does not depend on how items are grouped (loss_units weighs each micro-batch exactly)."""
    return sorted(range(len(items)), key=lambda i: -(len(items[i].prompt_ids) + len(items[i].completion_ids)))


def chunks(items: Sequence, size: int) -> list[list]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


class PolicyLearner:
    """One rank: an HF causal LM wrapped in a DeepSpeed engine with AdamW and a constant (warm-up) lr."""

    def __init__(self, model_path: str, learner_cfg, algo_cfg, rank: int, world_size: int,
                 master_addr: str, master_port: int, seed: int, trust_remote_code: bool = False):
        t0 = time.perf_counter()
        if algo_cfg.entropy_coef:
            raise ValueError("algo.entropy_coef != 0 is not supported by the learner (the spec uses no entropy bonus)")
        self.model_path, self.cfg, self.algo_cfg = model_path, learner_cfg, algo_cfg
        self.rank, self.world_size = rank, world_size
        self.loss_config = loss_config(algo_cfg)
        self.step = 0  # optimizer steps taken; the policy version is the controller's business
        # Each process sees only its own device (Ray sets CUDA_VISIBLE_DEVICES per actor), so LOCAL_RANK 0.
        os.environ.update(MASTER_ADDR=str(master_addr), MASTER_PORT=str(master_port), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK=os.environ.get("LOCAL_RANK", "0"))
        random.seed(seed)
        torch.manual_seed(seed)
        self._ds = ds = import_deepspeed()
        ds.init_distributed("nccl" if torch.cuda.is_available() else "gloo")
        self._dist = torch.distributed
        if self._dist.get_world_size() != world_size:
            raise RuntimeError(f"process group has {self._dist.get_world_size()} ranks, expected {world_size} "
                               "(one process hosts at most one multi-rank learner)")

        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

        dtype = torch.bfloat16 if learner_cfg.precision == "bf16" else torch.float32
        # Every rank loads the full model; ZeRO-3 partitions it inside deepspeed.initialize. Models too big
        # for one host's memory would need deepspeed.zero.Init at load time instead.
        # use_safetensors: weights come from safetensors only, never from a pickled pytorch_model.bin
        # trust_remote_code: only when the config says so (student.trust_remote_code), as for vLLM.
        load = dict(dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        # A vision-language student: its image-text class, and its processor's image side (zppo_ray/learner/vision.py).
        self.vision = VisionInputs.for_model(model_path, config)
        self._model_cls = AutoModelForImageTextToText if self.vision is not None else AutoModelForCausalLM
        model = self._model_cls.from_pretrained(model_path, **load)
        if learner_cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        text_config = getattr(model.config, "text_config", model.config)
        self.max_len = int(getattr(text_config, "max_position_embeddings", 0)) or None
        pad = getattr(text_config, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0
        # Weight decay on every parameter (as verl's FSDP worker does); the paper names no exclusions.
        opt = torch.optim.AdamW(model.parameters(), lr=learner_cfg.lr, betas=tuple(learner_cfg.betas),
                                eps=learner_cfg.eps, weight_decay=learner_cfg.weight_decay)
        warmup = int(learner_cfg.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0)
        self.engine, *_ = ds.initialize(model=model, optimizer=opt, lr_scheduler=sched,
                                        config=ds_config(learner_cfg, world_size))
        from zppo_ray.state.safe_checkpoint import install

        install(self.engine)  # checkpoints as safetensors + JSON: DeepSpeed's default unpickles on load
        self.device = self.engine.device
        # KL to a frozen reference (algo.kl_coef > 0): the initial weights, kept whole on every rank and
        # never updated. It costs one more model in memory and one more forward per micro-batch; the
        # spec's ZPPO uses no KL term, so by default (kl_coef 0) none of this exists.
        self.ref = None
        if algo_cfg.kl_coef > 0:
            self.ref = self._model_cls.from_pretrained(model_path, **load).to(self.device).eval()
            self.ref.requires_grad_(False)
        self.zero3 = self.engine.zero_optimization_stage() == 3
        self.init_seconds = time.perf_counter() - t0
        log.info("learner rank %d/%d ready in %.1fs (zero %d, %s)", rank, world_size, self.init_seconds,
                 learner_cfg.zero_stage, learner_cfg.precision)

    # ------------------------------------------------------------------------------------------ forward

    def _logprobs(self, batch: dict[str, torch.Tensor], model=None) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T] float32 logprobs of the completion tokens (0 at padding), and the [B, T, V] fp32 logits
        at the completion positions (for the entropy metric and the divergence losses)."""
        images = {k: batch[k] for k in ("pixel_values", "image_grid_thw", "mm_token_type_ids") if k in batch}
        logits = (model or self.engine)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                        use_cache=False, **images).logits
        idx = batch["index"].unsqueeze(-1).expand(-1, -1, logits.shape[-1])
        picked = logits.gather(1, idx).float()  # only completion positions are promoted to fp32
        lp = picked.gather(-1, batch["targets"].unsqueeze(-1)).squeeze(-1) - picked.logsumexp(-1)
        return lp.masked_fill(~batch["valid"], 0.0), picked

    def _micro_loss(self, batch: dict[str, torch.Tensor], loss_fn) -> tuple[torch.Tensor, dict[str, float]]:
        """One micro-batch's loss and metrics: a policy loss, or a divergence to the teacher's top-k."""
        lp, logits = self._logprobs(batch)
        mask = batch["mask"]
        if isinstance(loss_fn, str) and loss_fn in DIVERGENCES:
            teacher = batch["topk_logprobs"]
            # Student logits on the teacher's top-k support; padded slots (zero teacher mass) are removed
            # from the student side too, so both distributions renormalise over the same real tokens.
            student = logits.gather(-1, batch["topk_ids"]).masked_fill(~batch["topk_valid"], TOPK_PAD_LOGPROB)
            kwargs = {"beta": self.algo_cfg.jsd_beta} if loss_fn == "jsd" else {}
            loss, metrics = compute_divergence(loss_fn, student, teacher, mask, None, **kwargs), {}
        else:
            ref = None
            if self.ref is not None:
                with torch.no_grad():
                    ref = self._logprobs(batch, self.ref)[0]
            loss, metrics = loss_fn(lp, batch["old_logprobs"], batch["advantages"], mask, ref_logprobs=ref)
        with torch.no_grad():  # token entropy of the current policy: the collapse diagnostic of RL runs
            ent = logits.logsumexp(-1) - (logits.softmax(-1) * logits).sum(-1)
            metrics["entropy"] = float((ent * mask).sum() / mask.sum().clamp(min=1))
        return loss, metrics

    def _dummy_pass(self) -> torch.Tensor:
        """A one-token forward whose zero loss keeps this rank in step with ranks that have more work."""
        ids = torch.full((1, 1), self.pad_id, dtype=torch.long, device=self.device)
        return self.engine(input_ids=ids, use_cache=False).logits.sum() * 0.0

    def _all_reduce(self, values: list[float], op) -> list[float]:
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        if torch.cuda.is_available():
            t = t.to(self.device)
        self._dist.all_reduce(t, op=op)
        return t.cpu().tolist()

    @torch.no_grad()
    def compute_logprobs(self, items: list[TrainItem]) -> list[list[float]]:
        """Per-token logprobs of each item's completion under the current weights, aligned with
        completion_ids. Collective under ZeRO-3 (every forward gathers parameters), local otherwise."""
        err = check_items(items, self.max_len, train=False, multimodal=self.vision is not None)
        order = longest_first(items)
        micro = chunks([items[i] for i in order], self.cfg.micro_batch_size)
        n = len(micro)
        if self.zero3:
            n, bad = (int(v) for v in self._all_reduce([n, 1 if err else 0], self._dist.ReduceOp.MAX))
            if bad and not err:
                err = "another rank rejected its share of the batch"
        if err:
            raise ValueError(err)
        self.engine.eval()
        done: list[list[float]] = []
        for i in range(n):
            if i >= len(micro):
                self._dummy_pass()
                continue
            lp = self._logprobs(collate(micro[i], self.pad_id, self.device, train=False, vision=self.vision))[0].cpu()
            done += [lp[row, :len(it.completion_ids)].tolist() for row, it in enumerate(micro[i])]
        self.engine.train()
        out: list[list[float]] = [[] for _ in items]
        for pos, lp in zip(order, done):  # back to the caller's order
            out[pos] = lp
        return out

    # ------------------------------------------------------------------------------------------ update

    def train_minibatch(self, items: list[TrainItem], loss_fn: str | LossFn | None = None) -> dict[str, float]:
        """ONE optimizer step on this rank's share of a mini-batch (collective).

        `loss_fn`: None → "ppo_clip"; a name in POLICY_LOSSES; a name in DIVERGENCES ("jsd", "forward_kl",
        "reverse_kl": distillation on the items' teacher top-k rows, token mean); or a callable
        `(logprobs, old_logprobs, advantages, mask, ref_logprobs=None) -> (loss, metrics)` that aggregates
        per algo.loss_agg.
        Returns loss (mini-batch mean), grad_norm (before clipping), lr (of this step), step, seconds,
        the loss's metrics as global token-weighted means, and this rank's `tokens`/`items` (sum them).
        """
        t0 = time.perf_counter()
        distill = isinstance(loss_fn, str) and loss_fn in DIVERGENCES
        agg = "token_mean" if distill else self.loss_config.agg
        if loss_fn is None or (isinstance(loss_fn, str) and not distill):
            loss_fn = functools.partial(compute_policy_loss, loss_fn or "ppo_clip", config=self.loss_config)
        err = check_items(items, self.max_len, train=True, distill=distill, multimodal=self.vision is not None)
        micro = chunks([items[i] for i in longest_first(items)], self.cfg.micro_batch_size)
        n_items, units, bad = self._all_reduce([len(items), loss_units(items, agg), 1 if err else 0],
                                               self._dist.ReduceOp.SUM)
        n_micro = int(self._all_reduce([len(micro)], self._dist.ReduceOp.MAX)[0])
        if err or bad:
            raise ValueError(err or "another rank rejected its share of the mini-batch")
        if n_items == 0:
            raise ValueError("empty mini-batch")
        if units == 0:
            raise ValueError("the mini-batch has no loss tokens (every loss_mask is all zeros)")

        self.engine.train()
        scale = self.world_size / units  # undone by DeepSpeed's average over ranks, see the module doc
        loss_sum, tokens, weighted = 0.0, 0, {}
        for i in range(n_micro):
            self.engine.set_gradient_accumulation_boundary(i == n_micro - 1)
            if i >= len(micro):
                self.engine.backward(self._dummy_pass(), scale_wrt_gas=False)
                continue
            batch = collate(micro[i], self.pad_id, self.device, train=True, vision=self.vision)
            loss, metrics = self._micro_loss(batch, loss_fn)
            u = loss_units(micro[i], agg)
            self.engine.backward(loss * (u * scale), scale_wrt_gas=False)
            loss_sum += loss.item() * u
            n_tok = int(batch["mask"].sum().item())
            tokens += n_tok
            for k, v in metrics.items():
                weighted[k] = weighted.get(k, 0.0) + v * n_tok
        own_norm = None
        if not self.engine.zero_optimization() and not self.engine.bfloat16_enabled():
            # plain fp32 optimizer: DeepSpeed clips but does not keep the norm; gradients are reduced by now
            sq = sum(p.grad.float().pow(2).sum() for p in self.engine.module.parameters() if p.grad is not None)
            own_norm = float(torch.as_tensor(sq).sqrt())
        lr = float(self.engine.get_lr()[0])
        self.engine.step()
        self.step += 1
        grad_norm = self.engine.get_global_grad_norm()
        grad_norm = own_norm if grad_norm is None else float(grad_norm)

        shares = [dict(loss=loss_sum, tokens=tokens, weighted=weighted)]
        if self.world_size > 1:
            shares = [None] * self.world_size
            self._dist.all_gather_object(shares, dict(loss=loss_sum, tokens=tokens, weighted=weighted))
        all_tokens = max(sum(s["tokens"] for s in shares), 1)
        keys = sorted({k for s in shares for k in s["weighted"]})
        out = {k: sum(s["weighted"].get(k, 0.0) for s in shares) / all_tokens for k in keys}
        out.update(loss=sum(s["loss"] for s in shares) / units, grad_norm=grad_norm, lr=lr, step=self.step,
                   tokens=tokens, items=len(items), seconds=time.perf_counter() - t0)
        return out

    # ------------------------------------------------------------------------------------------ weights

    def weight_sizes(self) -> list[tuple[str, int]]:
        """(HF name, bytes) of every tensor a push sends, in model order; tied weights under every name
        (`lm_head.weight` next to `model.embed_tokens.weight`): a consumer that skips a missing lm_head
        keeps a stale one (stack.md). Full sizes, also under ZeRO-3 (`ds_numel`)."""
        return [(name, int(getattr(t, "ds_numel", t.numel())) * t.element_size())
                for name, t in self.engine.module.state_dict(keep_vars=True).items()]

    def weight_buckets(self, max_bytes: int, device: str | torch.device = "cpu", every_rank: bool = False,
                       copy: bool = True) -> Iterator[dict[str, torch.Tensor] | None]:
        """The full weights, one bucket (`zppo_ray.weights.buckets.plan_buckets`) at a time; collective
        under ZeRO-3 (every rank must iterate to the end, in step). Rank 0 (every rank with `every_rank`:
        CUDA IPC hands each colocated engine its own GPU's copy) gets each bucket as its own contiguous
        copies on `device`, so a later optimizer step cannot alias them (`copy=False`, for a caller that
        serialises each bucket at once: the parameters themselves where they are already whole on `device`);
        other ranks get None and hold no copy. Only one bucket is gathered at a time."""
        from zppo_ray.weights.buckets import plan_buckets

        named = self.engine.module.state_dict(keep_vars=True)
        for names in plan_buckets(self.weight_sizes(), max_bytes):
            unique = list({id(named[n]): named[n] for n in names}.values())
            params = [t for t in unique if hasattr(t, "ds_id")]
            gather = self.zero3 and params  # attribute access: `from deepspeed.zero import` fails in 0.19.8
            out: dict[str, torch.Tensor] | None = None
            with self._ds.zero.GatheredParameters(params, modifier_rank=None) if gather else nullcontext():
                if self.rank == 0 or every_rank:
                    out, seen = {}, set()
                    for n in names:
                        t = named[n]
                        # a gathered ZeRO-3 tensor is re-partitioned when the block ends, and safetensors
                        # refuses two names on one storage (a tied head): both are copied out
                        out[n] = t.detach().to(device, copy=copy or bool(gather) or id(t) in seen).contiguous()
                        seen.add(id(t))
            yield out

    def export_weights(self) -> dict[str, torch.Tensor] | None:
        """The full HF-named state dict on rank 0 (None elsewhere); collective. For checkpoints and tests:
        a weight push streams `weight_buckets` instead and never holds the whole model."""
        out: dict[str, torch.Tensor] = {}
        for bucket in self.weight_buckets(EXPORT_BUCKET_BYTES):
            if bucket is not None:
                out.update(bucket)
        return out if self.rank == 0 else None

    # ------------------------------------------------------------------------------------------ checkpoints

    def save(self, path: str | os.PathLike) -> None:
        """Full training state (weights, optimizer, lr schedule, step counter) with DeepSpeed; collective.
        Every rank writes its own shards, so multi-node runs need `path` on a shared file system.
        The files are pickle-free (layout in zppo_ray/state/safe_checkpoint.py)."""
        self.engine.save_checkpoint(str(path), client_state={"zppo_step": self.step})
        if self.rank == 0:  # DeepSpeed's recovery scripts torch.load pickles and cannot read these files
            for script in ("zero_to_fp32.py", "zero_to_torch.py"):
                Path(path, script).unlink(missing_ok=True)

    def load(self, path: str | os.PathLike) -> None:
        """Restore what save() wrote (the latest tag in `path`); collective. Reads safetensors and JSON
        only: a file from DeepSpeed's default torch.save engine is refused, not unpickled."""
        load_path, client = self.engine.load_checkpoint(str(path), load_optimizer_states=True,
                                                        load_lr_scheduler_states=True)
        if load_path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint in {path}")
        self.step = int(client.get("zppo_step", 0))

    def save_hf(self, path: str | os.PathLike) -> None:
        """An HF model folder (config, one safetensors file with lm_head included, tokenizer); collective,
        rank 0 writes."""
        weights = self.export_weights()
        if weights is None:
            return
        from safetensors.torch import save_file
        from transformers import AutoTokenizer

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        module = self.engine.module
        module.config.save_pretrained(out)
        if getattr(module, "generation_config", None) is not None:
            module.generation_config.save_pretrained(out)
        save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
        AutoTokenizer.from_pretrained(self.model_path).save_pretrained(out)
        if self.vision is not None:  # the processor's image side travels with the model
            self.vision.image_processor.save_pretrained(out)
