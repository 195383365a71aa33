"""The records that cross actor boundaries: what is generated and what is trained on.

Plain dataclasses of Python lists (no tensors) so they pickle cheaply through Ray's object store and
mean the same thing on every role.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenRequest:
    """One prompt to sample `n` completions for.

    `prompt` is plain user text (the engine applies the chat template) or a list of chat messages.
    `images` are paths or bytes passed to vLLM as multi-modal input. `prefix_ids` forces the first
    completion tokens (Prefix baseline): they are part of the context, not generated.
    """

    prompt: str | list[dict]
    n: int
    images: tuple = ()
    prefix_ids: list[int] = field(default_factory=list)
    tag: str = ""  # free-form label carried back (e.g. "plain:qid", "bcq:qid")
    # False for the teacher's service calls (compress, hint, judge): the chat template's thinking switch is
    # turned off where it has one (Qwen3 `enable_thinking`), so the token cap is not spent inside <think>.
    thinking: bool = True


@dataclass
class Sample:
    """One completion with everything the learner needs to treat it as a rollout."""

    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]  # behaviour-policy logprob of each completion token (sampled token)
    text: str
    finish_reason: str  # "stop" | "length" | "abort"
    version: int  # policy version of the weights that produced it
    loss_mask: list[int] | None = None  # per completion token; None = all ones (Prefix masks the prefix)


@dataclass
class TrainItem:
    """One rollout prepared for the policy loss."""

    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float
    old_logprobs: list[float] | None = None  # filled by the learner's recompute at step start
    behaviour_logprobs: list[float] | None = None  # the rollout engine's, at sampling time (Sample.logprobs)
    is_weights: list[float] | None = None  # truncated importance weights per token (zppo_ray/algo/offpolicy.py)
    loss_mask: list[int] | None = None
    group: str = ""  # uid of the group it was normalised in
    version: int = 0
    # Distillation baselines: the teacher's top-k token ids / logprobs at every completion position
    # (from TeacherGroup.score_topk); the divergence losses train on these instead of an advantage.
    teacher_topk_ids: list[list[int]] | None = None
    teacher_topk_logprobs: list[list[float]] | None = None
    # The question's images (paths or bytes, by reference as the buffer keeps them). A vision-language
    # learner runs its processor on them so logprobs and gradients see the context the student sampled in;
    # `prompt_ids` then hold the chat template's image placeholders before the processor expands them.
    images: tuple = ()
