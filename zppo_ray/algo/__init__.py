"""Pure, Ray-free algorithm code: advantages, losses, prompt reformulation, selection and caps."""

from .advantages import (
    ADVANTAGES,
    centered_advantages,
    compute_advantages,
    grpo_advantages,
    norm_with_zero_advantages,
    zppo_advantages,
)
from .losses import (
    AGGREGATIONS,
    DIVERGENCES,
    KL_TYPES,
    POLICY_LOSSES,
    PolicyLossConfig,
    aggregate,
    compute_divergence,
    compute_policy_loss,
    forward_kl_loss,
    jsd_loss,
    kl_penalty,
    masked_mean,
    ppo_clip_loss,
    reverse_kl_loss,
)
from .reformulate import (
    DEFAULT_TEMPLATES,
    Templates,
    build_bcq,
    build_compression_prompt,
    build_hint_prompt,
    build_hinted_question,
    build_judge_prompt,
    build_ncq,
    question_prompt,
    sanitize_candidate,
    split_prefix,
    with_format_closer,
)
from .registry import Registry, UnknownNameError
from .selection import (
    aug_cap,
    floor_times,
    plan_instances,
    replay_count,
    select_hardest,
)

__all__ = [
    "ADVANTAGES", "AGGREGATIONS", "DEFAULT_TEMPLATES", "DIVERGENCES", "KL_TYPES", "POLICY_LOSSES",
    "PolicyLossConfig", "Registry", "Templates", "UnknownNameError",
    "aggregate", "aug_cap", "build_bcq", "build_compression_prompt", "build_hint_prompt",
    "build_hinted_question", "build_judge_prompt", "build_ncq", "centered_advantages",
    "compute_advantages", "compute_divergence", "compute_policy_loss", "floor_times", "forward_kl_loss",
    "grpo_advantages", "jsd_loss", "kl_penalty", "masked_mean", "norm_with_zero_advantages",
    "plan_instances", "question_prompt", "ppo_clip_loss", "replay_count", "reverse_kl_loss", "sanitize_candidate",
    "select_hardest", "split_prefix", "with_format_closer", "zppo_advantages",
]
