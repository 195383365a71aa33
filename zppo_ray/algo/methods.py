"""Every method of the paper in one table: what `algo.name` means (spec §5).

One record per method says everything the rest of the system asks about it: the switches its name presets
(a switch the user sets explicitly wins: that is how the ablations compose), the shape of its step (group
RL with rewards, or distillation with a divergence to the teacher), which teacher-guided help it gives the
kept hard questions instead of BCQ/NCQ, and whether it needs the teacher at all. Config validation, the
launcher and the trainer all read this table; nothing else lists methods.

Adding a method: one `Method(...)` here, and, if its step differs, the step function in the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    presets: dict[str, Any] = field(default_factory=dict)  # algo.* switches implied by the name
    step: Literal["group", "distill"] = "group"  # group RL (rewards, group advantages) or distillation
    guidance: Literal["hint", "prefix", "inject"] | None = None  # step 6 of the baselines instead of BCQ/NCQ
    always_teacher: bool = True  # False: only when BCQ/NCQ are switched on (GRPO, GRPO†)

    @property
    def builds_reformulations(self) -> bool:
        """Only the ZPPO family turns enable_bcq / enable_ncq into prompts; other steps must refuse them."""
        return self.step == "group" and self.guidance is None


def _rl(bcq: bool, ncq: bool, buffer: bool) -> dict[str, Any]:
    return dict(enable_bcq=bcq, enable_ncq=ncq, use_buffer=buffer)


_DISTILL = dict(enable_bcq=False, enable_ncq=False, use_buffer=False, updates_per_step=1)

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("zppo", "BCQ + NCQ + replay buffer (the method)", _rl(True, True, True)),
    Method("grpo", "no reformulation, no buffer", _rl(False, False, False), always_teacher=False),
    Method("grpo_buffer", "GRPO†: buffer only", _rl(False, False, True), always_teacher=False),
    Method("grpo_bcq_ncq", "ablation: reformulation without the buffer", _rl(True, True, False)),
    Method("grpo_buffer_bcq", "ablation: GRPO† + BCQ", _rl(True, False, True)),
    Method("grpo_buffer_ncq", "ablation: GRPO† + NCQ", _rl(False, True, True)),
    Method("zppo_ds", "ZPPO + dynamic sampling after reformulation (the paper's §10 proposal)",
           {**_rl(True, True, True), "dynamic_sampling": True, "dynamic_sampling_by": "question"}),
    Method("offpolicy_distill", "JSD on correct teacher samples", _DISTILL, step="distill"),
    Method("onpolicy_distill", "JSD on the student's own samples, teacher top-k", _DISTILL, step="distill"),
    Method("hint", "teacher hint appended to selected hard questions", _rl(False, False, True), guidance="hint"),
    Method("prefix", "forced teacher prefix (alpha), masked out of the loss", _rl(False, False, True),
           guidance="prefix"),
    Method("teacher_inject", "a correct teacher response in the student group (LUFFY-style)",
           _rl(False, False, True), guidance="inject"),
)}


def method(name: str) -> Method:
    """The record of `name`; a clear error listing the methods for an unknown one."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; allowed: {', '.join(METHODS)}") from None


def needs_teacher(algo_cfg: Any) -> bool:
    """Whether a run with this `algo` section calls the teacher group at all."""
    m = METHODS.get(algo_cfg.name)
    return m is None or m.always_teacher or bool(algo_cfg.enable_bcq or algo_cfg.enable_ncq)
