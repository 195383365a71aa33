"""Worlds: generated tasks that come with their own student and teacher models.

A world is a plug-in behind one small interface (`World`): it names its question splits, builds or reuses
its models (cached under a key of everything that shapes them), resolves the model aliases a config uses
(`toy:student`, `smollm2:teacher`), and reports what it built. The entry points (`zppo_ray.main`, the
launcher, `zppo_ray.eval`, `zppo_ray.audit`) ask `for_config(cfg)` for the run's world and never special-case
one. A config that uses no world alias and no world data source gets None: its models and data are files.
"""

from __future__ import annotations

from typing import Any, Protocol

from zppo_ray.data.schema import Question


class World(Protocol):
    name: str  # the alias prefix of its models and the `path` of its data sources ("toy")

    def check(self) -> None:
        """In a second, before anything is built: raise SetupError when the world cannot be built here (a
        package it needs is missing). zppo_ray/preflight.py calls it."""

    def ensure(self) -> None:
        """Build what is missing (minutes the first time), reuse the cache otherwise."""

    def questions(self, split: str) -> list[Question]:
        """A question split ("train", "eval"); generated, so no model is needed for it."""

    def model_path(self, role: str) -> str:
        """The directory of the world's "student" or "teacher" (builds it when missing)."""

    def report(self) -> str:
        """What the world's models can do, for the console and the run directory."""

    def gap(self) -> Any:
        """None, or a predicate on questions: does it need what the student never saw (README "The zone world")."""


# name -> (config section, plug-in class path); a config uses a world through `<name>:<role>` or `path: <name>`
WORLDS = {"toy": ("toy", "zppo_ray.worlds.toy:ToyWorld"),
          "smollm2": ("smollm2", "zppo_ray.worlds.smollm2:Smollm2World")}


def _uses(cfg: Any, name: str) -> bool:
    paths = [cfg.student.path, cfg.teacher.model.path] + [s.path for s in cfg.data.train + cfg.data.eval]
    return any(str(p) == name or str(p).startswith(f"{name}:") for p in paths)


def worlds_used(cfg: Any) -> list[str]:
    """The worlds a config's models and data sources refer to (the config check allows one)."""
    return [name for name in WORLDS if _uses(cfg, name)]


def for_config(cfg: Any) -> World | None:
    """The world a config refers to (by a model alias or a data source), or None. One run uses one world."""
    used = worlds_used(cfg)
    if len(used) > 1:
        raise ValueError(f"a run uses one world; this config refers to {used} (student, teacher and data sources)")
    if not used:
        return None
    return world_named(used[0], cfg)


def world_named(name: str, cfg: Any) -> World:
    """The world `name` built from its section of the run config (`toy`, `smollm2`)."""
    import importlib

    section, target = WORLDS[name]
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(getattr(cfg, section), cfg.templates)


def is_world_alias(path: Any) -> bool:
    """`toy:student`, `smollm2:teacher`...: a name the world resolves, not a directory."""
    prefix, sep, _ = str(path).partition(":")
    return bool(sep) and prefix in WORLDS


def resolve_model(path: str, world: World | None) -> str:
    """A model path with a world alias (`toy:student`) replaced by the world's directory."""
    prefix, sep, role = str(path).partition(":")
    if not sep or world is None or prefix != world.name:
        return str(path)
    if role not in ("student", "teacher"):
        raise ValueError(f"{path!r}: a world's models are {prefix}:student or {prefix}:teacher")
    return world.model_path(role)
