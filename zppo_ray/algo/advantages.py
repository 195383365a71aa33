"""Outcome-reward advantage estimators, one function per name (spec §2 step 8).

Every estimator maps one scalar reward per rollout to one advantage per rollout. Rollouts belong to
groups (same prompt instance: plain, BCQ and NCQ groups of one question carry different uids), given as
`group_ids`. All estimators share the signature

    fn(rewards: Tensor[N] float, group_ids: Sequence[Hashable] (len N), eps: float = 1e-6) -> Tensor[N]

A group is *degenerate* when all its rewards are equal (all right / all wrong, or a single rollout). It
carries no learning signal, so every estimator gives it exactly 0. Degeneracy is tested with
max == min rather than std > 0 so that float rounding of the mean can never make it "slightly" live.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from .registry import Registry

ADVANTAGES: Registry = Registry("advantage estimator")


def _group_stats(
    rewards: torch.Tensor, group_ids: Sequence[Hashable]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-rollout (group mean, group live mask, group index) for `rewards`.

    The only Python loop maps arbitrary hashable ids to dense indices; the statistics are tensor ops.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if len(group_ids) != rewards.numel():
        raise ValueError(f"got {rewards.numel()} rewards but {len(group_ids)} group ids")
    dense: dict[Hashable, int] = {}
    idx = torch.tensor([dense.setdefault(g, len(dense)) for g in group_ids], dtype=torch.long,
                       device=rewards.device)
    n_groups = len(dense)
    counts = torch.zeros(n_groups, dtype=rewards.dtype, device=rewards.device).index_add_(
        0, idx, torch.ones_like(rewards))
    sums = torch.zeros_like(counts).index_add_(0, idx, rewards)
    gmax = torch.zeros_like(counts).scatter_reduce(0, idx, rewards, "amax", include_self=False)
    gmin = torch.zeros_like(counts).scatter_reduce(0, idx, rewards, "amin", include_self=False)
    return (sums / counts)[idx], (gmax != gmin)[idx], idx


def _as_float(rewards: torch.Tensor) -> torch.Tensor:
    return rewards if rewards.is_floating_point() else rewards.float()


def _centered(rewards: torch.Tensor, group_ids: Sequence[Hashable]) -> tuple[torch.Tensor, torch.Tensor]:
    """A' = r - mean(group), forced to exactly 0 on degenerate groups; also returns the live mask."""
    rewards = _as_float(rewards)
    mean, live, _ = _group_stats(rewards, group_ids)
    return torch.where(live, rewards - mean, torch.zeros_like(rewards)), live


@ADVANTAGES.register("zppo")
def zppo_advantages(rewards: torch.Tensor, group_ids: Sequence[Hashable], eps: float = 1e-6) -> torch.Tensor:
    """"Norm w/o zero" (the ZPPO default).

    A' = r - mean(group); A = (A' - mu_S) / (sigma_S + eps) with mu_S, sigma_S over the rollouts of
    non-degenerate groups only, degenerate groups get 0. Why: dropping per-group std keeps
    near-consensus groups from being blown up (Dr. GRPO), while batch-level scaling keeps the step size
    independent of how many groups are degenerate (the zeros would otherwise shrink sigma).
    sigma_S is the population std (unbiased=False): it only rescales this batch, it does not estimate the
    spread of some wider population, so no Bessel correction.
    """
    centered, live = _centered(rewards, group_ids)
    if not bool(live.any()):
        return torch.zeros_like(centered)
    pool = centered[live]
    mu, sigma = pool.mean(), pool.std(unbiased=False)
    return torch.where(live, (centered - mu) / (sigma + eps), torch.zeros_like(centered))


@ADVANTAGES.register("center")
def centered_advantages(
    rewards: torch.Tensor, group_ids: Sequence[Hashable], eps: float = 1e-6
) -> torch.Tensor:
    """"No norm": A' = r - mean(group) only. `eps` is unused (kept for the shared signature)."""
    return _centered(rewards, group_ids)[0]


@ADVANTAGES.register("norm_with_zero")
def norm_with_zero_advantages(
    rewards: torch.Tensor, group_ids: Sequence[Hashable], eps: float = 1e-6
) -> torch.Tensor:
    """"Norm with zero groups": A' scaled by mean/std (population) over ALL rollouts.

    The ablation the paper beats: degenerate groups (A' = 0) dilute sigma, so the live groups' advantages
    grow as more groups become degenerate. Degenerate rollouts get (0 - mu) / (sigma + eps); as every
    group's A' sums to 0, mu is 0 up to rounding, so the difference to "zppo" is sigma alone.
    """
    centered, _ = _centered(rewards, group_ids)
    if centered.numel() == 0:
        return centered
    mu, sigma = centered.mean(), centered.std(unbiased=False)
    return (centered - mu) / (sigma + eps)


@ADVANTAGES.register("grpo")
def grpo_advantages(rewards: torch.Tensor, group_ids: Sequence[Hashable], eps: float = 1e-6) -> torch.Tensor:
    """Classic GRPO: (r - mean(group)) / (std(group) + eps) per group, degenerate groups 0.

    std is the unbiased (Bessel) group std, as torch.std in the common GRPO implementations, so numbers
    are comparable with them. Live groups always have >= 2 rollouts, so it is always defined.
    """
    rewards = _as_float(rewards)
    mean, live, idx = _group_stats(rewards, group_ids)
    n_groups = int(idx.max()) + 1 if idx.numel() else 0
    dev2 = (rewards - mean) ** 2
    ss = torch.zeros(n_groups, dtype=rewards.dtype, device=rewards.device).index_add_(0, idx, dev2)
    counts = torch.bincount(idx, minlength=n_groups).to(rewards.dtype)
    std = (ss / (counts - 1).clamp(min=1)).sqrt()[idx]
    return torch.where(live, (rewards - mean) / (std + eps), torch.zeros_like(rewards))


def compute_advantages(
    name: str, rewards: torch.Tensor, group_ids: Sequence[Hashable], eps: float = 1e-6
) -> torch.Tensor:
    """Look up estimator `name` in ADVANTAGES and apply it."""
    return ADVANTAGES.get(name)(rewards, group_ids, eps=eps)
