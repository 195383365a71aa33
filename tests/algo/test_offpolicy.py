"""The staleness bound and truncated importance sampling, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from zppo_ray.algo import offpolicy
from zppo_ray.algo.losses import PolicyLossConfig, ppo_clip_loss
from zppo_ray.learner.policy import check_items, collate
from zppo_ray.types import TrainItem


def item(behaviour, old, version=3, mask=None, adv=1.0):
    n = len(behaviour)
    return TrainItem([1, 2], list(range(5, 5 + n)), adv, old_logprobs=old, behaviour_logprobs=behaviour,
                     loss_mask=mask, version=version)


def test_weights_are_the_truncated_ratio_of_step_start_to_behaviour_per_token():
    it = item([-1.0, -2.0, -0.5], [-1.5, -1.0, -0.5])
    # exp(-1.5 + 1.0) = 0.6065..., exp(-1.0 + 2.0) = e = 2.718 -> capped at 2, exp(0) = 1
    assert offpolicy.tis_weights(it, 2.0) == pytest.approx([math.exp(-0.5), 2.0, 1.0])
    assert offpolicy.tis_weights(it, 5.0) == pytest.approx([math.exp(-0.5), math.e, 1.0])


def test_tokens_the_student_did_not_sample_keep_weight_one():
    prefix = item([0.0, 0.0, -2.0], [-3.0, -4.0, -1.0], mask=[0, 0, 1])  # a forced prefix carries no mu
    assert offpolicy.tis_weights(prefix, 2.0) == pytest.approx([1.0, 1.0, 2.0])
    injected = item([0.0, 0.0], [-3.0, -4.0], version=-1)  # a teacher answer joined the group
    assert offpolicy.tis_weights(injected, 2.0) is None


def test_mismatch_is_the_k3_kl_over_the_students_loss_tokens():
    a = item([-1.0, -2.0], [-1.5, -1.0], version=2)
    b = item([-0.3], [-0.3], version=3)
    skip = item([0.0], [-9.0], version=-1)  # injected: not in the statistics
    m = offpolicy.mismatch([a, b, skip], version=3, cap=2.0)
    d = [-0.5, 1.0, 0.0]
    assert m["rollout_kl"] == pytest.approx(sum(math.expm1(x) - x for x in d) / 3)
    assert m["rollout_logp_diff"] == pytest.approx(1.5 / 3)
    assert m["tis_truncated_frac"] == pytest.approx(1 / 3)  # e > 2 on one token of three
    assert m["sample_age_mean"] == pytest.approx(0.5) and m["sample_age_max"] == 1
    assert offpolicy.mismatch([a], 3, None)["tis_truncated_frac"] == 0.0


def test_samples_older_than_the_bound_are_left_out_and_counted():
    items = [item([-1.0], [-1.0], version=v) for v in (5, 4, 3, 2, -1)]
    keep, dropped = offpolicy.split_stale(items, version=5, max_staleness=2)
    assert [it.version for it in keep] == [5, 4, 3, -1] and dropped == 1
    keep, dropped = offpolicy.split_stale(items, version=5, max_staleness=0)
    assert [it.version for it in keep] == [5, -1] and dropped == 3


def test_the_learner_applies_the_weights_as_w_times_each_tokens_ppo_loss():
    """collate turns is_weights into per-token advantages A·w; the clipped loss is then exactly the hand
    computed w · L_ppo, including a token in the clipped branch and one in the dual-clip branch."""
    cfg = PolicyLossConfig(agg="token_mean")
    pos = item([-1.0, -1.0], [-1.0, -1.0], adv=1.0)
    neg = item([-1.0, -1.0], [-1.0, -1.0], adv=-2.0)
    pos.is_weights, neg.is_weights = [0.5, 2.0], [1.5, 1.0]
    assert check_items([pos, neg], None, train=True) is None
    batch = collate([pos, neg], 0, "cpu", train=True)
    assert batch["advantages"].tolist() == [[0.5, 2.0], [-3.0, -2.0]]
    lp = torch.tensor([[-0.5, -1.0], [-1.0, 3.0]])  # ratios e^0.5 (clipped at 1.28), 1; 1, e^4 (dual clip 10)
    loss, _ = ppo_clip_loss(lp, batch["old_logprobs"], batch["advantages"], batch["mask"], cfg)
    per_token = [0.5 * -1.0 * 1.28, 2.0 * -1.0 * 1.0, 1.5 * 2.0 * 1.0, 1.0 * 2.0 * 10.0]
    assert loss.item() == pytest.approx(sum(per_token) / 4, rel=1e-6)
    bad = item([-1.0], [-1.0])
    bad.is_weights = [float("nan")]
    assert "is_weights" in check_items([bad], None, train=True)
