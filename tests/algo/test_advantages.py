"""Advantage estimators against hand-computed values.

The batch: group "all_right" = [1,1,1,1], "all_wrong" = [0,0,0,0], "one_right" = [1,0,0,0],
"half" = [1,1,0,0], interleaved so grouping by id (not by position) is exercised.
A' of the live groups: one_right -> [.75,-.25,-.25,-.25], half -> [.5,.5,-.5,-.5].
Over those 8 live rollouts: mean 0, population variance (.5625 + 3*.0625 + 4*.25)/8 = 7/32,
so sigma_S = sqrt(7/32) and .75/sigma = 3*sqrt(2/7) = 1.6035674514745464, .25/sigma = 0.5345224838248488,
.5/sigma = 1.0690449676496976. (Bessel's std would give 0.5 and 1.5 / -0.5 / 1.0 instead.)
Over all 16 rollouts (norm_with_zero): variance 1.75/16 = 7/64, sigma = sqrt(7)/8, so
.75/sigma = 6/sqrt(7) = 2.2677868380553634, .25/sigma = 0.7559289460184544, .5/sigma = 1.5118578920369088.
GRPO (Bessel std per group): one_right std = sqrt(.75/3) = .5 -> [1.5,-.5,-.5,-.5];
half std = sqrt(1/3) -> +-0.8660254037844386.
"""

import pytest
import torch

from zppo_ray.algo import ADVANTAGES, UnknownNameError, compute_advantages

# (group id, reward) in an interleaved order
BATCH = [
    ("one_right", 1.0), ("all_right", 1.0), ("half", 1.0), ("all_wrong", 0.0),
    ("one_right", 0.0), ("all_right", 1.0), ("half", 1.0), ("all_wrong", 0.0),
    ("one_right", 0.0), ("all_right", 1.0), ("half", 0.0), ("all_wrong", 0.0),
    ("one_right", 0.0), ("all_right", 1.0), ("half", 0.0), ("all_wrong", 0.0),
]
IDS = [g for g, _ in BATCH]
REWARDS = torch.tensor([r for _, r in BATCH], dtype=torch.float64)


def _expected(one_right_hi, one_right_lo, half):
    table = {"all_right": [0.0] * 4, "all_wrong": [0.0] * 4,
             "one_right": [one_right_hi, one_right_lo, one_right_lo, one_right_lo],
             "half": [half, half, -half, -half]}
    seen = {g: 0 for g in table}
    out = []
    for g in IDS:
        out.append(table[g][seen[g]])
        seen[g] += 1
    return torch.tensor(out, dtype=torch.float64)


def test_zppo_norm_without_zero_groups_hand_values():
    got = compute_advantages("zppo", REWARDS, IDS, eps=0.0)
    want = _expected(1.6035674514745464, -0.5345224838248488, 1.0690449676496976)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_zppo_degenerate_groups_are_exactly_zero_with_eps():
    got = compute_advantages("zppo", REWARDS, IDS)  # default eps 1e-6
    degenerate = torch.tensor([g in ("all_right", "all_wrong") for g in IDS])
    assert torch.equal(got[degenerate], torch.zeros(8, dtype=torch.float64))
    # eps enters the denominator: 0.75 / (sqrt(7/32) + 1e-6)
    assert got[0].item() == pytest.approx(0.75 / (0.4677071733467426 + 1e-6), abs=1e-12)
    assert got[0].item() < 1.6035674514745464


def test_center_is_group_centering_only():
    got = compute_advantages("center", REWARDS, IDS)
    torch.testing.assert_close(got, _expected(0.75, -0.25, 0.5), rtol=0, atol=1e-12)


def test_norm_with_zero_uses_all_rollouts():
    got = compute_advantages("norm_with_zero", REWARDS, IDS, eps=0.0)
    want = _expected(2.2677868380553634, -0.7559289460184544, 1.5118578920369088)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_grpo_per_group_bessel_std():
    got = compute_advantages("grpo", REWARDS, IDS, eps=0.0)
    want = _expected(1.5, -0.5, 0.8660254037844386)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["zppo", "center", "norm_with_zero", "grpo"])
def test_all_degenerate_batch_gives_zeros_not_nan(name):
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.3])
    got = compute_advantages(name, rewards, ["a", "a", "b", "b", "single"])
    assert torch.equal(got, torch.zeros(5))


def test_non_binary_equal_rewards_are_degenerate_exactly():
    # 0.1 * 3 / 3 != 0.1 in floats; the group must still be exactly 0, the other group carries the signal.
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0], dtype=torch.float64)
    got = compute_advantages("zppo", rewards, [("q", 0)] * 3 + [("q", 1)] * 2, eps=0.0)
    torch.testing.assert_close(got, torch.tensor([0.0, 0.0, 0.0, 1.0, -1.0], dtype=torch.float64))


def test_integer_rewards_and_output_shape():
    got = compute_advantages("center", torch.tensor([1, 0, 0, 0]), [7, 7, 7, 7])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_empty_batch():
    assert compute_advantages("zppo", torch.zeros(0), []).numel() == 0


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="group ids"):
        compute_advantages("zppo", torch.zeros(3), ["a", "b"])


def test_unknown_estimator_lists_known_names():
    assert ADVANTAGES.names() == ["zppo", "center", "norm_with_zero", "grpo"]
    with pytest.raises(UnknownNameError, match="known: zppo, center, norm_with_zero, grpo"):
        compute_advantages("gae", REWARDS, IDS)
