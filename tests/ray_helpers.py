"""Helpers for tests on a real Ray cluster."""

import time

import ray


def kill(handle):
    """ray.kill returns before the actor is gone: wait until it is, so the next call meets a dead actor."""
    ray.kill(handle, no_restart=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ray.get(handle.__ray_ready__.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.1)
    raise AssertionError("the killed actor is still answering")
