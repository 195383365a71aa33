"""Policy loss and divergences against hand-computed values."""

import math

import pytest
import torch

from zppo_ray.algo import (
    DIVERGENCES,
    POLICY_LOSSES,
    PolicyLossConfig,
    compute_divergence,
    compute_policy_loss,
    masked_mean,
    ppo_clip_loss,
)

F64 = torch.float64
INF = float("inf")


# ----------------------------------------------------------------------------------- masked_mean


def test_masked_mean_ignores_inf_padding_and_handles_empty():
    x = torch.tensor([[1.0, 3.0, INF], [2.0, -INF, float("nan")]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.0)  # (1 + 3 + 2) / 3
    torch.testing.assert_close(masked_mean(x, mask, dim=-1), torch.tensor([2.0, 2.0]))
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0


# ----------------------------------------------------------------------------------- ppo_clip

# Six live tokens, eps_low 0.2, eps_high 0.28, dual clip 10, per-token loss by hand:
#   A=+1 r=1.5  -> max(-1.5, -1.28)       = -1.28  high clip active (no gradient)
#   A=-1 r=0.5  -> max( 0.5,  0.8)        =  0.8   low clip active (no gradient)
#   A=+2 r=1.0  -> -2                              unclipped, grad -A r = -2
#   A=-1 r=12   -> min(max(12, 1.28), 10) = 10     dual clip active (no gradient)
#   A=+1 r=0.5  -> max(-0.5, -0.8)        = -0.5   unclipped (A>0 below 1-eps is not clipped), grad -0.5
#   A=-1 r=1.2  ->  1.2                            unclipped, grad +1.2
# token_mean = (-1.28 + 0.8 - 2 + 10 - 0.5 + 1.2) / 6 = 8.22 / 6 = 1.37
# Last column is padding with -inf / NaN logprobs that must not leak.
RATIOS = [[1.5, 0.5, 1.0, 1.0], [12.0, 0.5, 1.2, 1.0]]
ADV = torch.tensor([[1.0, -1.0, 2.0, 100.0], [-1.0, 1.0, -1.0, 100.0]], dtype=F64)
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])


def _inputs():
    old = torch.full((2, 4), -1.0, dtype=F64)
    lp = (old + torch.tensor(RATIOS, dtype=F64).log()).clone()
    lp[:, 3] = -INF
    old[:, 3] = float("nan")
    return lp.requires_grad_(True), old


def test_ppo_clip_both_sides_and_dual_clip_exact_loss_and_grads():
    lp, old = _inputs()
    loss, m = ppo_clip_loss(lp, old, ADV, MASK, PolicyLossConfig())
    assert loss.item() == pytest.approx(1.37, abs=1e-12)
    loss.backward()
    want = torch.tensor([[0.0, 0.0, -2 / 6, 0.0], [0.0, -0.5 / 6, 1.2 / 6, 0.0]], dtype=F64)
    torch.testing.assert_close(lp.grad, want, rtol=0, atol=1e-12)
    assert m["clipfrac_high"] == pytest.approx(1 / 6)
    assert m["clipfrac_low"] == pytest.approx(1 / 6)
    assert m["dualclip_frac"] == pytest.approx(1 / 6)
    assert m["ratio_mean"] == pytest.approx(16.7 / 6)  # (1.5+.5+1+12+.5+1.2)/6
    # k3 of each ratio, (r - 1) - ln r, averaged
    assert m["approx_kl"] == pytest.approx(1.5022668410716289, abs=1e-9)
    assert "kl" not in m


def test_ppo_clip_without_dual_clip_is_unbounded():
    lp, old = _inputs()
    loss, m = ppo_clip_loss(lp, old, ADV, MASK, PolicyLossConfig(dual_clip=None))
    assert loss.item() == pytest.approx(10.22 / 6, abs=1e-12)  # the r=12 token now costs 12
    loss.backward()
    assert lp.grad[1, 0].item() == pytest.approx(12 / 6, abs=1e-12)
    assert m["dualclip_frac"] == 0.0


def test_symmetric_clip_changes_the_high_side():
    lp, old = _inputs()
    loss, _ = ppo_clip_loss(lp, old, ADV, MASK, PolicyLossConfig(eps_high=0.2))
    assert loss.item() == pytest.approx((8.22 + 0.08) / 6, abs=1e-12)  # -1.2 instead of -1.28


# Aggregations: ratio 1, so per-token loss = -A. Row 0: A=+1 on 3 tokens, row 1: A=-2 on 1 token,
# row 2: no live token (must not count as a sequence).
AGG_MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])


@pytest.mark.parametrize(
    "agg, want",
    [
        ("token_mean", (-3 + 2) / 4),  # -0.25
        ("seq_mean_token_mean", (-1 + 2) / 2),  # 0.5
        ("seq_mean_token_sum", (-3 + 2) / 2),  # -0.5
    ],
)
def test_aggregations(agg, want):
    lp = torch.zeros(3, 3, dtype=F64)
    adv = torch.tensor([1.0, -2.0, 5.0], dtype=F64)  # [B], broadcast over tokens
    loss, _ = compute_policy_loss("ppo_clip", lp, lp.clone(), adv, AGG_MASK, PolicyLossConfig(agg=agg))
    assert loss.item() == pytest.approx(want, abs=1e-12)


# KL term: A = 0, ratio 1, ref - lp = ln 2 on every token, kl_coef 0.1.
#   k1 = lp - ref = -ln 2; k2 = (ln 2)^2 / 2 = 0.2402265069591007; k3 = 2 - ln 2 - 1 = 0.3068528194400546
@pytest.mark.parametrize(
    "kl_type, kl", [("k1", -0.6931471805599453), ("k2", 0.2402265069591007), ("k3", 0.3068528194400546)]
)
def test_kl_penalty_types(kl_type, kl):
    lp = torch.full((2, 3), -1.0, dtype=F64)
    ref = lp + math.log(2)
    cfg = PolicyLossConfig(kl_coef=0.1, kl_type=kl_type)
    loss, m = ppo_clip_loss(lp, lp.clone(), torch.zeros(2, dtype=F64), torch.ones(2, 3), cfg, ref)
    assert loss.item() == pytest.approx(0.1 * kl, abs=1e-12)
    assert m["kl"] == pytest.approx(kl, abs=1e-12)


def test_kl_reported_but_not_added_when_coef_zero():
    lp = torch.full((1, 2), -1.0, dtype=F64)
    loss, m = ppo_clip_loss(lp, lp.clone(), torch.ones(1, dtype=F64), torch.ones(1, 2),
                            PolicyLossConfig(), lp + math.log(2))
    assert loss.item() == pytest.approx(-1.0)
    assert m["kl"] == pytest.approx(0.3068528194400546)


def test_kl_coef_without_ref_raises():
    lp = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="ref_logprobs"):
        ppo_clip_loss(lp, lp, torch.ones(1), torch.ones(1, 2), PolicyLossConfig(kl_coef=0.1))


@pytest.mark.parametrize("bad", [dict(agg="sum"), dict(kl_type="k4"), dict(dual_clip=1.0), dict(eps_low=1.0)])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        PolicyLossConfig(**bad)


def test_registry_names():
    assert POLICY_LOSSES.get("ppo_clip") is ppo_clip_loss
    assert DIVERGENCES.names() == ["jsd", "forward_kl", "reverse_kl"]


# ----------------------------------------------------------------------------------- divergences
# Two-point hand values, T = teacher [.9, .1], S = student [.5, .5], M = [.7, .3]:
#   KL(T||M) = .9 ln(9/7) + .1 ln(1/3);  KL(S||M) = .5 ln(5/7) + .5 ln(5/3)
#   JSD = (KL(T||M) + KL(S||M)) / 2 = 0.10174922507919676
#   forward KL(T||S) = .9 ln 1.8 + .1 ln .2 = 0.3680642071684971; reverse KL(S||T) = 0.5108256237659907
# Disjoint T = [1, 0], S = [0, 1]: JSD = ln 2; with beta .25, M = [.25, .75]:
#   .25 ln 4 + .75 ln(4/3) = 0.5623351446188083


def _lp(*probs):
    return torch.tensor(probs, dtype=F64).log().view(1, 1, -1)


def test_jsd_identical_is_zero():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, dtype=F64)
    mask = torch.ones(2, 3)
    for name in DIVERGENCES.names():
        assert compute_divergence(name, logits, logits.clone(), mask).item() == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize(
    "name, want", [("jsd", 0.10174922507919676), ("forward_kl", 0.3680642071684971),
                   ("reverse_kl", 0.5108256237659907)]
)
def test_two_point_hand_values(name, want):
    got = compute_divergence(name, _lp(0.5, 0.5), _lp(0.9, 0.1), torch.ones(1, 1))
    assert got.item() == pytest.approx(want, abs=1e-12)


def test_jsd_disjoint_and_beta_convention():
    s, t, mask = _lp(0.0, 1.0), _lp(1.0, 0.0), torch.ones(1, 1)
    assert compute_divergence("jsd", s, t, mask).item() == pytest.approx(math.log(2), abs=1e-12)
    got = compute_divergence("jsd", s, t, mask, beta=0.25)
    assert got.item() == pytest.approx(0.5623351446188083, abs=1e-12)


def test_jsd_accepts_logits():
    got = compute_divergence("jsd", _lp(0.5, 0.5) - 2.0, _lp(0.9, 0.1) + 3.7, torch.ones(1, 1))
    assert got.item() == pytest.approx(0.10174922507919676, abs=1e-12)


def test_jsd_masked_token_mean():
    s = torch.cat([_lp(0.5, 0.5), _lp(0.0, 1.0)], dim=1)  # [1, 2, 2]
    t = torch.cat([_lp(0.9, 0.1), _lp(1.0, 0.0)], dim=1)
    assert compute_divergence("jsd", s, t, torch.tensor([[1, 0]])).item() == pytest.approx(
        0.10174922507919676, abs=1e-12)
    assert compute_divergence("jsd", s, t, torch.tensor([[1, 1]])).item() == pytest.approx(
        (0.10174922507919676 + math.log(2)) / 2, abs=1e-12)


@pytest.mark.parametrize("name", ["jsd", "forward_kl", "reverse_kl"])
def test_topk_equals_full_when_k_is_v(name):
    torch.manual_seed(1)
    student = torch.randn(2, 3, 6, dtype=F64)
    teacher = torch.randn(2, 3, 6, dtype=F64).log_softmax(-1)
    idx = teacher.argsort(-1, descending=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    full = compute_divergence(name, student, teacher, mask)
    topk = compute_divergence(name, student, teacher.gather(-1, idx), mask, teacher_indices=idx)
    assert full.item() > 1e-3
    assert topk.item() == pytest.approx(full.item(), abs=1e-12)


def test_topk_renormalises_both_over_support():
    # teacher [.6, .3, .1], top-2 {0, 1} -> [2/3, 1/3]; student [.25, .25, .5] at {0, 1} -> [.5, .5]
    # JSD([2/3, 1/3], [.5, .5]) = 0.014362591564146779 (M = [7/12, 5/12])
    student = _lp(0.25, 0.25, 0.5)
    teacher_k = torch.tensor([0.3, 0.6], dtype=F64).log().view(1, 1, 2)
    idx = torch.tensor([1, 0]).view(1, 1, 2)  # any order of the support
    got = compute_divergence("jsd", student, teacher_k, torch.ones(1, 1), teacher_indices=idx)
    assert got.item() == pytest.approx(0.014362591564146779, abs=1e-12)


def test_jsd_gradient_finite_with_zero_teacher_mass():
    logits = torch.tensor([[[0.3, -0.2]]], dtype=F64, requires_grad=True)
    loss = compute_divergence("jsd", logits, _lp(1.0, 0.0), torch.ones(1, 1))
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_jsd_beta_must_be_inside_unit_interval():
    with pytest.raises(ValueError, match="beta"):
        compute_divergence("jsd", _lp(0.5, 0.5), _lp(0.5, 0.5), torch.ones(1, 1), beta=1.0)
