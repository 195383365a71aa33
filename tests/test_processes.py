"""The sweep after every module (tests/processes.py): what a module started and left running is killed with its
subtree; what was there before, and what a session fixture owns, stays."""

import subprocess
import sys

import processes
import psutil

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
# a child that starts a grandchild and waits on it: the grandchild must go too, not be orphaned
PARENT = [sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, '-c', "
                                "'import time; time.sleep(600)'])"]


def _wait_for_grandchild(proc, timeout=30.0):
    deadline = psutil.time.monotonic() + timeout
    while psutil.time.monotonic() < deadline:
        kids = psutil.Process(proc.pid).children()
        if kids:
            return kids[0]
        psutil.time.sleep(0.05)
    raise AssertionError(f"no grandchild after {timeout} s")


def _dead(p: psutil.Process) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_sweep_kills_what_appeared_since_and_nothing_else():
    old = subprocess.Popen(SLEEPER)
    kept = subprocess.Popen(SLEEPER)
    try:
        before = {pid: label for pid, label in processes.snapshot().items() if pid != kept.pid}
        processes.KEPT.add(kept.pid)
        new = subprocess.Popen(PARENT)
        grandchild = _wait_for_grandchild(new)
        killed = processes.sweep(before, grace_s=0.5)
        assert {int(k.split()[0]) for k in killed} == {new.pid, grandchild.pid}
        assert new.wait(timeout=10) == -9 and _dead(grandchild)
        assert old.poll() is None and kept.poll() is None
    finally:
        processes.KEPT.discard(kept.pid)
        for p in (old, kept):
            p.kill()
            p.wait()
