"""Training on samples the learner did not draw itself: the staleness bound and the truncated importance
weights (TIS). Pure functions over TrainItems; no Ray, no model.

Three policies meet in one update:
    mu      the behaviour policy: the rollout engine's weights when it sampled (its logprobs come with
            every sample, `TrainItem.behaviour_logprobs`);
    pi_old  the learner's policy at the start of the step (`TrainItem.old_logprobs`, recomputed);
    pi      the policy being optimised.
The PPO ratio stays pi / pi_old (the clip keeps each update near the step-start policy); the gap between
mu and pi_old — a policy version or more behind in asynchronous mode, a numeric drift between vLLM and the
learner in synchronous mode — is corrected per token by w = min(pi_old / mu, cap), detached, multiplying the
token's PPO loss (truncated importance sampling, as in verl's and OpenRLHF's TIS). Since w > 0 it commutes
with the clip's max, so the learner applies it as a per-token advantage A·w.

The mismatch is measured whether or not the correction is on: a growing KL between the engine's and the
learner's logprobs of the same tokens is also how an engine/learner numeric bug shows itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zppo_ray.types import TrainItem


def age(item: TrainItem, version: int) -> int:
    """How many policy versions behind `version` (the learner's) the item's sample was drawn."""
    return version - item.version


def split_stale(items: Sequence[TrainItem], version: int, max_staleness: int) -> tuple[list[TrainItem], int]:
    """(the items at most `max_staleness` versions behind `version`, how many were older and left out).
    Injected teacher samples (version -1, not the student's own) are never stale: they are not rollouts."""
    keep = [it for it in items if it.version < 0 or age(it, version) <= max_staleness]
    return keep, len(items) - len(keep)


def _log_ratio(item: TrainItem) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(log pi_old - log mu clamped to +-50, loss mask as bool) per completion token, or None for an item the
    student did not sample (an injected teacher answer) or that carries no logprobs. Tensors, not Python
    loops: at paper scale a step holds millions of tokens and this runs on the controller every step."""
    if item.version < 0 or item.behaviour_logprobs is None or item.old_logprobs is None:
        return None
    n = min(len(item.old_logprobs), len(item.behaviour_logprobs), len(item.completion_ids))
    d = (torch.tensor(item.old_logprobs[:n], dtype=torch.float64)
         - torch.tensor(item.behaviour_logprobs[:n], dtype=torch.float64)).clamp(-50.0, 50.0)  # exp() stays finite
    mask = (torch.tensor(item.loss_mask[:n], dtype=torch.bool) if item.loss_mask is not None
            else torch.ones(n, dtype=torch.bool))
    return d, mask


def tis_weights(item: TrainItem, cap: float) -> list[float] | None:
    """Per completion token, w = min(exp(old - behaviour), cap); 1 where the student did not sample the token
    (a forced prefix, an injected teacher answer: there is no behaviour probability to correct). None for
    an item with nothing to correct."""
    ratio = _log_ratio(item)
    if ratio is None or not ratio[1].any():
        return None
    d, mask = ratio
    w = torch.ones(len(item.completion_ids), dtype=torch.float64)
    w[:len(d)] = torch.where(mask, d.exp().clamp(max=cap), w[:len(d)])
    return w.tolist()


def mismatch(items: Sequence[TrainItem], version: int, cap: float | None) -> dict[str, float]:
    """Rollout/learner mismatch over the student's own loss tokens, for the step metrics:

    rollout_kl          k3 estimate of KL(mu || pi_old): mean of (r - 1) - log r with r = pi_old / mu,
                        which is >= 0 per token and unbiased over tokens drawn from mu (when the engine's
                        logprobs are its sampling distribution: temperature 1, no top-p/top-k cut);
    rollout_logp_diff   mean |log pi_old - log mu| (the drift in logprob units);
    tis_truncated_frac  share of tokens whose weight hit the cap (0 when the correction is off);
    sample_age_mean / sample_age_max   policy versions between the samples and the learner.
    """
    parts = [d[mask] for d, mask in filter(None, map(_log_ratio, items))]
    d = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    n = d.numel()
    ages = [age(it, version) for it in items if it.version >= 0]
    return {"rollout_kl": (torch.expm1(d) - d).mean().item() if n else 0.0,
            "rollout_logp_diff": d.abs().mean().item() if n else 0.0,
            "tis_truncated_frac": (d.exp() > cap).double().mean().item() if n and cap is not None else 0.0,
            "sample_age_mean": sum(ages) / len(ages) if ages else 0.0, "sample_age_max": max(ages, default=0)}
