"""What the suite leaves running: every process a test starts (engine cores, `ray start` nodes, Prometheus,
actors in the session's Ray cluster) must be gone when its module ends, whether the tests passed, failed or
timed out. The fixtures in conftest.py take a snapshot before a module and sweep what is new after it."""

from __future__ import annotations

import os
import time

import psutil

# How long what a module stopped may take to exit (ray.kill and a pool's shutdown return before the process is gone).
GRACE_S = 10.0
# Processes a session-scoped fixture owns (the session's Ray cluster, the shared roles): never swept by a module.
KEPT: set[int] = set()


def descendants() -> dict[int, psutil.Process]:
    try:
        return {p.pid: p for p in psutil.Process(os.getpid()).children(recursive=True)}
    except psutil.NoSuchProcess:
        return {}


def _label(p: psutil.Process) -> str:
    try:
        cmd = p.cmdline()
        return (cmd[0] if cmd else p.name())[:80]
    except psutil.Error:
        return "?"


def _shared_helper(p: psutil.Process) -> bool:
    """Processes the interpreter or Ray keep for reuse, never owned by one test: a pooled Ray worker that holds
    no actor, and multiprocessing's resource tracker / fork server (one per interpreter, used by later tests)."""
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return False
    return cmd.startswith("ray::IDLE") or "multiprocessing.resource_tracker" in cmd or "forkserver" in cmd


def snapshot() -> dict[int, str]:
    """Every descendant with what it runs: a pooled Ray worker that takes an actor later keeps its pid but
    changes its title (ray::IDLE -> ray::RolloutWorker), and then counts as new."""
    return {pid: _label(p) for pid, p in descendants().items()}


def _new(pid: int, p: psutil.Process, before: dict[int, str]) -> bool:
    return pid not in before or (before[pid].startswith("ray::IDLE") and _actor(p))


def keep_new(before: dict[int, str]) -> None:
    """Mark what appeared since `before` as owned by a session fixture."""
    KEPT.update(pid for pid, p in descendants().items() if _new(pid, p, before) and not _shared_helper(p))


def _actor(p: psutil.Process) -> bool:
    return _label(p).startswith("ray::") and not _label(p).startswith("ray::IDLE")


def _under_kept(p: psutil.Process) -> bool:
    try:
        return any(a.pid in KEPT for a in p.parents())
    except psutil.NoSuchProcess:
        return False


def sweep(before: dict[int, str], grace_s: float = GRACE_S) -> list[str]:
    """Kill every process (with its subtree) that appeared since `before` and no session fixture owns; returns
    what was killed. A kept Ray cluster's own helpers (agents it starts late) stay; an actor in it that nothing
    kept is a leak. An actor's vLLM engine core is its child: the subtree goes together, so nothing is
    orphaned out of reach."""
    now = descendants()
    new = [p for pid, p in now.items() if _new(pid, p, before) and pid not in KEPT and not _shared_helper(p)
           and (_actor(p) or not _under_kept(p))]
    new = _alive(new, grace_s) if new else []  # what was already told to stop gets the time to do it
    victims: dict[int, psutil.Process] = {}  # parents before their children: a parent killed after its child
    for p in new:                             # could exit on its own first and hide what it was
        if p.pid in victims:
            continue
        victims[p.pid] = p
        try:
            victims.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    labels = [f"{pid} {_label(p)}" for pid, p in victims.items()]
    for p in victims.values():
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_dead(list(victims.values()))
    return labels


def _alive(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those still running after `timeout` s (zombies count as gone)."""
    _wait_dead(procs, timeout)
    out = []
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _wait_dead(procs: list[psutil.Process], timeout: float = 10.0) -> None:
    """Until each is gone or a zombie. Not reaped here: a zombie belongs to whoever started it (a Popen that
    reaps it later would otherwise read a wrong exit status)."""
    deadline = time.monotonic() + timeout
    for p in procs:
        while time.monotonic() < deadline:
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
