"""The toy world as shipped inside the package, so that a fresh clone trains in minutes, not after a 20-minute
pretraining build.

`shipped/<world key>/` mirrors the cache layout (`world.json`, `tokenizer/`, `student-<key>/`,
`teacher-<key>/`) and carries `MANIFEST.json`: the sha256 of every file and the machine that built it. A
cache that lacks a part whose key the shipped world has gets a verified copy of that part; any other part
(a changed config keys new models) is built as before. `python -m zppo_ray.worlds.toy.bootstrap --force`
rebuilds everything from scratch (never from here), and `--ship` refreshes this directory from the cache.
tests/toy/test_rebuild.py proves that a rebuild reproduces the shipped models' held-out accuracies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path

from zppo_ray.worlds.cache import building

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).parent / "shipped"
MANIFEST = "MANIFEST.json"
WORLD_PART = "tokenizer"  # the world's own part: world.json + tokenizer/


class ShippedWorldError(RuntimeError):
    """A shipped file is missing or does not match its recorded checksum."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _part_files(root: Path, part: str) -> list[Path]:
    files = sorted(p for p in (root / part).rglob("*") if p.is_file())
    return files + [root / "world.json"] if part == WORLD_PART else files


def manifest(world_key: str, shipped: Path = SHIPPED) -> dict | None:
    path = shipped / world_key / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def _verified(src_root: Path, part: str, man: dict) -> list[Path]:
    """The part's files, each checked against the manifest; raises on any difference."""
    expected = {k: v for k, v in man["sha256"].items()
                if k.split("/")[0] == part or (part == WORLD_PART and k == "world.json")}
    if not expected or (part == WORLD_PART and "world.json" not in expected):
        raise ShippedWorldError(f"{src_root / MANIFEST} lists no files for {part!r}")
    files = _part_files(src_root, part)
    found = {str(p.relative_to(src_root)): p for p in files}
    if missing := sorted(set(expected) - set(found)):
        raise ShippedWorldError(f"shipped toy world {src_root} is missing {missing}; reinstall the package "
                                "or build the world with `make bootstrap`")
    for rel, want in expected.items():
        if (got := sha256(found[rel])) != want:
            raise ShippedWorldError(f"shipped toy world file {src_root / rel} has sha256 {got[:16]}..., its "
                                    f"manifest says {want[:16]}...: the file is corrupt or was edited; "
                                    "reinstall the package or rebuild with `make bootstrap`")
    return [found[rel] for rel in sorted(expected)]


def install(root: Path, parts: list[str], shipped: Path = SHIPPED) -> list[str]:
    """Copy the shipped parts among `parts` (WORLD_PART, `student-<key>`, `teacher-<key>`) into the cache
    world `root`; returns the parts installed. A model is only taken together with the shipped tokenizer
    (its token ids mean nothing with another one)."""
    man = manifest(root.name, shipped)
    if man is None:
        return []
    src = shipped / root.name
    tok_hash = man["sha256"].get(f"{WORLD_PART}/tokenizer.json")
    done = []
    for part in parts:
        if not (src / part).is_dir():
            continue
        if part != WORLD_PART:
            have = root / WORLD_PART / "tokenizer.json"
            if not have.exists() or sha256(have) != tok_hash:
                log.info("shipped %s skipped: the cached tokenizer differs from the shipped one", part)
                continue
        files = _verified(src, part, man)
        with building(root / part) as tmp:
            for f in files:
                if f.name == "world.json":
                    continue
                dst = tmp / f.relative_to(src / part)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dst)
        if part == WORLD_PART:  # written last: world.json marks the world part complete
            shutil.copy2(src / "world.json", root / "world.json")
        done.append(part)
    if done:
        log.info("toy world %s: installed the shipped %s (sha256-verified; built on %s)", root.name,
                 ", ".join(done), man.get("built_on", "?"))
    return done


def ship(root: Path, parts: list[str], shipped: Path = SHIPPED) -> Path:
    """Copy a complete cached world (its tokenizer and the given model parts) into the package with a fresh
    manifest: the maintainers' step after a deliberate rebuild (`bootstrap --force --ship`). Models already
    shipped under the same key stay (the default student next to the zone world's) as long as the tokenizer
    they were built with is still the one shipped."""
    dst = shipped / root.name
    tmp = shipped / f".{root.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    sums: dict[str, str] = {}

    def take(files: list[Path], src: Path) -> None:  # copy into tmp at the same relative path, record sha256
        for f in files:
            rel = f.relative_to(src)
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, tmp / rel)
            sums[str(rel)] = sha256(f)

    for part in [WORLD_PART, *parts]:
        take(_part_files(root, part), root)
    old = manifest(root.name, shipped)
    kept = []
    if old and old["sha256"].get(f"{WORLD_PART}/tokenizer.json") == sums[f"{WORLD_PART}/tokenizer.json"]:
        kept = [p for p in old["parts"] if p != WORLD_PART and p not in parts]
        for part in kept:
            take(_verified(dst, part, old), dst)
    elif old:
        log.warning("the tokenizer changed: the models shipped before (%s) are dropped", old["parts"][1:])
    import torch

    man = {"world_key": root.name, "parts": [WORLD_PART, *kept, *parts], "sha256": dict(sorted(sums.items())),
           "built_on": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
           "shipped_at": time.strftime("%Y-%m-%d")}
    (tmp / MANIFEST).write_text(json.dumps(man, indent=2) + "\n")
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    return dst
