"""Policy losses (spec §2 step 9) and distillation divergences (spec §5), registered by name.

Policy losses:  fn(logprobs, old_logprobs, advantages, mask, config, ref_logprobs=None) -> (loss, metrics)
Divergences:    fn(student_logprobs, teacher_logprobs, mask, teacher_indices=None, ...) -> loss

Shapes: logprobs, old_logprobs, ref_logprobs, mask are [B, T] (per generated token); advantages are
[B] (one per sequence, broadcast over tokens) or [B, T]. `mask` is 1 for tokens that enter the loss
(response tokens; the Prefix baseline's forced prefix is 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .registry import Registry

POLICY_LOSSES: Registry = Registry("policy loss")
DIVERGENCES: Registry = Registry("divergence")

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum")
KL_TYPES = ("k1", "k2", "k3")


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over entries where `mask` != 0 (mask values act as weights); 0 where nothing is unmasked.

    Masked-out entries are dropped with `where` rather than multiplied by 0, so padding holding inf/NaN
    (e.g. logprob -inf) cannot poison the result.
    """
    mask = mask.to(x.dtype)
    x = torch.where(mask != 0, x * mask, torch.zeros_like(x))
    if dim is None:
        return x.sum() / mask.sum().clamp(min=1)
    return x.sum(dim) / mask.sum(dim).clamp(min=1)


def aggregate(loss: torch.Tensor, mask: torch.Tensor, agg: str) -> torch.Tensor:
    """Reduce a per-token loss [B, T] to a scalar.

    token_mean: every unmasked token of the mini-batch weighs the same (the ZPPO default, so long responses
    are not down-weighted). seq_mean_*: per-sequence mean / sum, then mean over the sequences that have at
    least one unmasked token (empty rows would otherwise dilute the mean).
    """
    if agg == "token_mean":
        return masked_mean(loss, mask)
    mask = mask.to(loss.dtype)
    if agg == "seq_mean_token_mean":
        per_seq = masked_mean(loss, mask, dim=-1)
    elif agg == "seq_mean_token_sum":
        per_seq = torch.where(mask != 0, loss * mask, torch.zeros_like(loss)).sum(-1)
    else:
        raise ValueError(f"unknown aggregation {agg!r}; known: {', '.join(AGGREGATIONS)}")
    return masked_mean(per_seq, (mask.sum(-1) > 0).to(loss.dtype))


@dataclass(frozen=True)
class PolicyLossConfig:
    """Clipped-surrogate knobs; defaults are the paper's (clip-higher 0.20/0.28, dual clip 10, no KL).

    `dual_clip=None` disables dual clipping. `kl_coef > 0` requires `ref_logprobs`.
    """

    eps_low: float = 0.2
    eps_high: float = 0.28
    dual_clip: float | None = 10.0
    agg: str = "token_mean"
    kl_coef: float = 0.0
    kl_type: str = "k3"

    def __post_init__(self) -> None:
        if not (0 <= self.eps_low < 1 and self.eps_high >= 0):
            raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {self.eps_low}, {self.eps_high}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1 (or None), got {self.dual_clip}")
        if self.agg not in AGGREGATIONS:
            raise ValueError(f"agg must be one of {AGGREGATIONS}, got {self.agg!r}")
        if self.kl_type not in KL_TYPES:
            raise ValueError(f"kl_type must be one of {KL_TYPES}, got {self.kl_type!r}")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kl_type: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman's k1/k2/k3).

    k1 = lp - ref (unbiased, can be negative); k2 = (lp - ref)^2 / 2; k3 = exp(ref - lp) - (ref - lp) - 1
    (unbiased and always >= 0, the usual choice).
    """
    d = logprobs - ref_logprobs
    if kl_type == "k1":
        return d
    if kl_type == "k2":
        return 0.5 * d**2
    if kl_type == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"kl_type must be one of {KL_TYPES}, got {kl_type!r}")


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: PolicyLossConfig = PolicyLossConfig(),
    ref_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate with clip-higher and dual clip.

    Per token, with r = exp(lp - old):  L = max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high)), and for
    A < 0 additionally L = min(L, -c A). Why: the asymmetric clip (eps_high > eps_low) lets unlikely
    good tokens grow faster (against entropy collapse); the dual clip bounds the loss of a negative-
    advantage token whose ratio exploded off-policy, which plain PPO leaves unbounded.

    Metrics (over unmasked tokens): clipfrac_low / clipfrac_high = fraction where the clipped branch is
    active at 1 - eps_low (A < 0) / at 1 + eps_high (A > 0), i.e. where the token gets no gradient;
    dualclip_frac; approx_kl = mean((r - 1) - log r), the k3 estimate of KL(pi_old || pi); ratio_mean.
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    advantages = advantages.expand_as(logprobs)
    # Padding may hold -inf/NaN logprobs: zero them first so neither the loss nor its gradient sees them.
    pad = mask == 0
    logprobs = logprobs.masked_fill(pad, 0.0)
    # Clamp only guards exp() against overflow; |log r| > 20 is already far outside any clip range.
    log_ratio = (logprobs - old_logprobs.masked_fill(pad, 0.0)).clamp(-20.0, 20.0)
    ratio = log_ratio.exp()
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * ratio.clamp(1 - config.eps_low, 1 + config.eps_high)
    loss = torch.maximum(loss_unclipped, loss_clipped)
    clip_active = loss_clipped > loss_unclipped
    dual_active = torch.zeros_like(clip_active)
    if config.dual_clip is not None:
        loss_dual = -advantages * config.dual_clip
        dual_active = (advantages < 0) & (loss > loss_dual)
        loss = torch.where(dual_active, loss_dual, loss)

    with torch.no_grad():
        metrics = {
            "clipfrac_low": masked_mean((clip_active & (ratio < 1)).float(), mask).item(),
            "clipfrac_high": masked_mean((clip_active & (ratio > 1)).float(), mask).item(),
            "dualclip_frac": masked_mean(dual_active.float(), mask).item(),
            "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
        }

    if config.kl_coef > 0 and ref_logprobs is None:
        raise ValueError("kl_coef > 0 needs ref_logprobs")
    if ref_logprobs is not None:
        kl = kl_penalty(logprobs, ref_logprobs.masked_fill(pad, 0.0), config.kl_type)
        metrics["kl"] = masked_mean(kl.detach(), mask).item()
        if config.kl_coef > 0:
            loss = loss + config.kl_coef * kl
    return aggregate(loss, mask, config.agg), metrics


def compute_policy_loss(
    name: str,
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: PolicyLossConfig = PolicyLossConfig(),
    ref_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Look up policy loss `name` in POLICY_LOSSES and apply it."""
    return POLICY_LOSSES.get(name)(logprobs, old_logprobs, advantages, mask, config, ref_logprobs)


# ---------------------------------------------------------------------------------------------------
# Divergences for the distillation baselines.


def _aligned_logprobs(
    student: torch.Tensor, teacher: torch.Tensor, teacher_indices: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher log-distributions on one common support, both normalised.

    Full path (teacher_indices None): both [B, T, V] logits or logprobs; log_softmax over V (idempotent on
    logprobs, so either is accepted). Top-k path: teacher [B, T, K] logprobs at teacher_indices [B, T, K];
    the student's full [B, T, V] logprobs are gathered at those indices and BOTH are renormalised over
    the K-token support. Why: a divergence needs two distributions on the same support; the teacher's
    tail mass outside its top-k is unknown, so we compare the conditional distributions on the top-k
    (exact when K = V, a small bias when the top-k hold most of the mass).
    """
    if teacher_indices is not None:
        # logits or logprobs alike: the log_softmax below renormalises over the K support
        student = student.gather(-1, teacher_indices)
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} do not align")
    return student.log_softmax(-1), teacher.log_softmax(-1)


def _kl(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dim from log-probs; terms with p = 0 count 0 (no NaN from -inf - -inf)."""
    p = lp.exp()
    diff = torch.where(p > 0, lp - lq, torch.zeros_like(lp))
    return (p * diff).sum(-1)


@DIVERGENCES.register("jsd")
def jsd_loss(
    student_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor,
    teacher_indices: torch.Tensor | None = None,
    beta: float = 0.5,
) -> torch.Tensor:
    """Generalised Jensen-Shannon divergence per token, token-mean over `mask`.

    With M = beta P_T + (1 - beta) P_S:  JSD = beta KL(P_T || M) + (1 - beta) KL(P_S || M). Why JSD: it is
    bounded (<= ln 2 at beta = 0.5) and symmetric at beta = 0.5, so tokens where the two models disagree
    completely cannot dominate the batch the way a KL's unbounded terms can.
    """
    if not 0 < beta < 1:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    ls, lt = _aligned_logprobs(student_logprobs, teacher_logprobs, teacher_indices)
    beta_t = torch.tensor(beta, dtype=ls.dtype, device=ls.device)
    lm = torch.logaddexp(lt + beta_t.log(), ls + (1 - beta_t).log())
    per_token = beta * _kl(lt, lm) + (1 - beta) * _kl(ls, lm)
    return masked_mean(per_token, mask)


@DIVERGENCES.register("forward_kl")
def forward_kl_loss(
    student_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor,
    teacher_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(P_T || P_S) per token (mode-covering, classic distillation), token-mean over `mask`."""
    ls, lt = _aligned_logprobs(student_logprobs, teacher_logprobs, teacher_indices)
    return masked_mean(_kl(lt, ls), mask)


@DIVERGENCES.register("reverse_kl")
def reverse_kl_loss(
    student_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor,
    teacher_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(P_S || P_T) per token (mode-seeking), token-mean over `mask`."""
    ls, lt = _aligned_logprobs(student_logprobs, teacher_logprobs, teacher_indices)
    return masked_mean(_kl(ls, lt), mask)


def compute_divergence(
    name: str,
    student_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor,
    teacher_indices: torch.Tensor | None = None,
    **kwargs: float,
) -> torch.Tensor:
    """Look up divergence `name` in DIVERGENCES and apply it (extra kwargs, e.g. beta, pass through)."""
    return DIVERGENCES.get(name)(student_logprobs, teacher_logprobs, mask, teacher_indices, **kwargs)
