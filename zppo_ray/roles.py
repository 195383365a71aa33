"""The four roles the controller drives, as small interfaces: what the trainer may call, and in what order.

The trainer imports no Ray: it talks to these methods only. A real run passes the Ray-backed groups
(zppo_ray/actors/: RolloutPool, TeacherGroup, LearnerGroup, BufferClient); tests pass fakes or local shells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from zppo_ray.data.schema import Question
from zppo_ray.types import GenRequest, Sample, TrainItem
from zppo_ray.weights import WeightSync


class Rollout(Protocol):
    """Student engines. Lifecycle per step: `generate_async` (any number) → `collect` each → optionally
    `sleep` (colocated with the learner) → `wake_up(["weights"])` → the weight push (`Roles.weights`) →
    `wake_up(["kv_cache"])`. No push while a generate is uncollected; every sample of one call carries one
    policy version."""

    def generate_async(self, requests: list[GenRequest], sampling: dict) -> Any: ...
    def collect(self, pending: Any) -> list[list[Sample]]: ...
    def generate(self, requests: list[GenRequest], sampling: dict) -> list[list[Sample]]: ...
    def sleep(self, level: int = 1) -> None: ...
    def wake_up(self, tags: list[str] | None = None) -> None: ...


class Teacher(Protocol):
    """The frozen teacher: `generate_async` then `result` (overlapped with student work), the service verbs
    `compress` / `judge`, and `score_topk` for on-policy distillation. Never updated."""

    def generate_async(self, requests: list[GenRequest], sampling: dict) -> Any: ...
    def result(self, call: Any) -> list: ...
    def generate(self, requests: list[GenRequest], sampling: dict) -> list[list[Sample]]: ...
    def compress(self, candidates: list[str], max_tokens: int, max_lines: int) -> list[str | None]: ...
    def judge(self, items: list[tuple[str, str, str]]) -> list[float]: ...
    def score_topk(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], k: int,
                   images: list[tuple] | None = None) -> list[dict]: ...


class Learner(Protocol):
    """The policy learner. Per step: `compute_logprobs` (the step-start policy), `train_minibatch` × I; the
    new weights then reach the engines through `Roles.weights` (zppo_ray/weights), never through the caller."""

    def compute_logprobs(self, items: list[TrainItem]) -> list[list[float]]: ...
    def train_minibatch(self, items: list[TrainItem], loss_fn: Any = None) -> dict[str, float]: ...


class Buffer(Protocol):
    """The replay buffer's owner: `size` / `sample` at step start, `refresh` (plain accuracies) at step end."""

    def size(self) -> int: ...
    def sample(self, n: int) -> list[Question]: ...
    def refresh(self, step: int, accuracies: dict[str, float], questions: dict[str, Question],
                replayed: list[str], group_size: int) -> dict: ...


@dataclass
class Roles:
    """What the controller drives (Ray-backed in a run, fakes in tests)."""

    rollout: Rollout
    learner: Learner
    weights: WeightSync
    teacher: Teacher | None = None
    buffer: Buffer | None = None
