"""Build-once directories shared by the worlds: written aside, published whole, one builder at a time.

A world's cached part (a pretrained toy model, a converted real model) is written into a temporary sibling
and renamed into place only once complete, so a reader never sees half a model; concurrent callers (parallel
tests, two runs started together) take a file lock, so one builds and the others wait and reuse its result.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def building(final: Path) -> Iterator[Path]:
    """A temporary sibling directory to write into; it replaces `final` when the block ends normally and is
    removed when it does not (an error, Ctrl-C), so an interrupted build leaves nothing in the cache."""
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold `root/.lock` exclusively (created with `root`) for the duration of the block."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
