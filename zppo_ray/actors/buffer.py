"""The replay-buffer actor: the only owner of question state, a thin shell over `PromptReplayBuffer`.

The policy (admit / graduate / evict / sample) lives in `zppo_ray.buffer` and is tested without Ray.
This shell adds what only a long-lived actor needs: the sampling RNG whose state travels with the
snapshot (so a resumed run replays the same questions), and a cursor over the fate records so the
controller can export only what is new each step.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict
from pathlib import Path

import ray

from zppo_ray import telemetry
from zppo_ray.buffer import BufferConfig, PromptReplayBuffer
from zppo_ray.checkpoint import rng_from_json, rng_to_json
from zppo_ray.data.schema import Question


def buffer_config(section) -> BufferConfig:
    """The pure buffer's config from the run config's `buffer` section."""
    return BufferConfig(capacity=int(section.capacity), tau=float(section.tau),
                        sample_with_replacement=bool(section.sample_with_replacement),
                        refresh_position_on_revisit=bool(section.refresh_position_on_revisit),
                        graduation=str(section.graduation), ema_alpha=float(section.ema_alpha))


class ReplayBufferShell:
    def __init__(self, config: BufferConfig, seed: int):
        self.buffer = PromptReplayBuffer(config)
        self.rng = random.Random(seed)

    def sample(self, k: int) -> list[Question]:
        return self.buffer.sample(k, self.rng) if k > 0 else []

    def refresh(self, step: int, plain_accuracy: dict[str, float], questions: dict[str, Question],
                replayed_ids: list[str], group_size: int = 0) -> dict:
        before = set(self.buffer.ids())
        result = self.buffer.refresh(step, plain_accuracy, questions, set(replayed_ids))
        out = asdict(result)
        out["fates"] = [asdict(f) for f in result.fates]
        if group_size:  # Prometheus (no-op outside Ray): the entry bins need G_S
            admitted = [self.buffer.entry(q).entry_accuracy for q in self.buffer.ids() if q not in before]
            oldest = min((self.buffer.entry(q).entry_step for q in self.buffer.ids()), default=None)
            telemetry.record_buffer_refresh(out, admitted, group_size, None if oldest is None else step - oldest)
        return out

    def size(self) -> int:
        return len(self.buffer)

    def stats(self) -> dict:
        return asdict(self.buffer.stats())

    def fates(self) -> list[dict]:
        return [asdict(f) for f in self.buffer.fates]

    def snapshot(self, directory: str) -> None:
        """buffer.json (contents, fates) and buffer_rng.json (the sampler), each written atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.buffer.snapshot(d / "buffer.json")
        tmp = d / "buffer_rng.json.tmp"
        tmp.write_text(json.dumps(rng_to_json(self.rng)))
        os.replace(tmp, d / "buffer_rng.json")

    def restore(self, directory: str) -> int:
        d = Path(directory)
        restored = PromptReplayBuffer.restore(d / "buffer.json")
        if restored.config != self.buffer.config:
            raise ValueError(f"buffer snapshot in {d} was written with {restored.config}, "
                             f"this run uses {self.buffer.config}")
        self.buffer = restored
        rng_from_json(self.rng, json.loads((d / "buffer_rng.json").read_text()))
        return len(self.buffer)


# Questions and fate records are small; the actor needs no CPU reservation of its own.
ReplayBufferActor = ray.remote(num_cpus=0)(ReplayBufferShell)
