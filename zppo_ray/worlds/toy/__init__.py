"""The toy world: modulo-10 chains in difficulty tiers and two tiny models pretrained here (README "The toy
world"). `ToyWorld` is its plug-in (zppo_ray/worlds/__init__.py); `bootstrap.py` builds and caches it."""

from __future__ import annotations

from typing import Any

from zppo_ray.data.schema import Question


class ToyWorld:
    name = "toy"

    def __init__(self, toy_cfg: Any, templates: Any = None):
        self.cfg, self.templates = toy_cfg, templates
        self._art = None

    def check(self) -> None:
        """The toy world needs nothing beyond the base install (torch, tokenizers)."""

    def ensure(self):
        from zppo_ray.worlds.toy.bootstrap import ensure_toy_world

        if self._art is None:
            self._art = ensure_toy_world(self.cfg, self.templates)
        return self._art

    def questions(self, split: str) -> list[Question]:
        from zppo_ray.worlds.toy.bootstrap import toy_questions

        return toy_questions(self.cfg, split)

    def model_path(self, role: str) -> str:
        return str(self.ensure().model(role))

    def gap(self):
        from zppo_ray.worlds.toy.bootstrap import gap_of

        return gap_of(self.cfg)

    def report(self) -> str:
        from zppo_ray.worlds.toy.bootstrap import format_report

        return format_report(self.ensure().report)
