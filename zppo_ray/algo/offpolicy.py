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

import math
from collections.abc import Sequence

from zppo_ray.types import TrainItem


def age(item: TrainItem, version: int) -> int:
    """How many policy versions behind `version` (the learner's) the item's sample was drawn."""
    return version - item.version


def split_stale(items: Sequence[TrainItem], version: int, max_staleness: int) -> tuple[list[TrainItem], int]:
    """(the items at most `max_staleness` versions behind `version`, how many were older and left out).
    Injected teacher samples (version -1, not the student's own) are never stale: they are not rollouts."""
    keep = [it for it in items if it.version < 0 or age(it, version) <= max_staleness]
    return keep, len(items) - len(keep)


def _student_tokens(item: TrainItem):
    """(token index, behaviour logprob, step-start logprob) of the loss tokens the student itself sampled."""
    if item.version < 0 or item.behaviour_logprobs is None or item.old_logprobs is None:
        return []
    mask = item.loss_mask if item.loss_mask is not None else [1] * len(item.completion_ids)
    return [(t, b, o) for t, (m, b, o) in enumerate(zip(mask, item.behaviour_logprobs, item.old_logprobs)) if m]


def tis_weights(item: TrainItem, cap: float) -> list[float] | None:
    """Per completion token, w = min(exp(old - behaviour), cap); 1 where the student did not sample the token
    (a forced prefix, an injected teacher answer: there is no behaviour probability to correct). None for
    an item with nothing to correct."""
    tokens = _student_tokens(item)
    if not tokens:
        return None
    w = [1.0] * len(item.completion_ids)
    for t, b, o in tokens:
        w[t] = min(math.exp(min(o - b, 50.0)), cap)  # 50: exp() stays finite; the cap is far below anyway
    return w


def mismatch(items: Sequence[TrainItem], version: int, cap: float | None) -> dict[str, float]:
    """Rollout/learner mismatch over the student's own loss tokens, for the step metrics:

    rollout_kl          k3 estimate of KL(mu || pi_old): mean of (r - 1) - log r with r = pi_old / mu,
                        which is >= 0 per token and unbiased over tokens drawn from mu (when the engine's
                        logprobs are its sampling distribution: temperature 1, no top-p/top-k cut);
    rollout_logp_diff   mean |log pi_old - log mu| (the drift in logprob units);
    tis_truncated_frac  share of tokens whose weight hit the cap (0 when the correction is off);
    sample_age_mean / sample_age_max   policy versions between the samples and the learner.
    """
    kl, diff, capped, n = 0.0, 0.0, 0, 0
    for it in items:
        for _, b, o in _student_tokens(it):
            d = max(min(o - b, 50.0), -50.0)
            kl += math.expm1(d) - d
            diff += abs(d)
            capped += cap is not None and math.exp(d) > cap
            n += 1
    ages = [age(it, version) for it in items if it.version >= 0]
    return {"rollout_kl": kl / n if n else 0.0, "rollout_logp_diff": diff / n if n else 0.0,
            "tis_truncated_frac": capped / n if n else 0.0,
            "sample_age_mean": sum(ages) / len(ages) if ages else 0.0, "sample_age_max": max(ages, default=0)}
