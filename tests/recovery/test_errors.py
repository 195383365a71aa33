"""Failure classification and the actor boundary (zppo_ray/errors.py)."""

import pickle

import pytest
import ray.exceptions as rex

from zppo_ray.errors import DataError, InfraError, RemoteFailure, boundary, classify, remote_cause


class _Unpicklable(Exception):
    def __init__(self, msg):
        super().__init__(msg)
        self.lock = __import__("threading").Lock()  # what many library exceptions drag along


class _Actor:
    name = "rollout-3"

    @boundary("rollout")
    def bad_prompt(self):
        raise ValueError("prompt of 9000 tokens > max_model_len 8192")

    @boundary("rollout")
    def device_lost(self):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    @boundary("rollout")
    def library_bug(self):
        raise _Unpicklable("engine core died")


@pytest.mark.parametrize("method,kind", [("bad_prompt", "data"), ("device_lost", "infra"), ("library_bug", "bug")])
def test_boundary_converts_to_a_picklable_classified_error(method, kind):
    with pytest.raises(RemoteFailure) as info:
        getattr(_Actor(), method)()
    err = pickle.loads(pickle.dumps(info.value))  # what crossing a Ray boundary needs
    assert err.kind == kind and classify(err) == kind
    assert err.role == "rollout-3" and err.method == method and "Traceback" in err.trace
    assert str(err).startswith(f"{kind} failure in rollout-3.{method}: ")


def test_classify_ray_and_local_errors():
    assert classify(rex.ActorDiedError()) == "infra"
    assert classify(rex.GetTimeoutError("late")) == "infra"
    assert classify(InfraError("x")) == "infra"
    assert classify(DataError("row 3: no answer")) == "data"
    assert classify(KeyError("answer")) == "data"
    assert classify(ZeroDivisionError()) == "bug"
    wrapped = rex.RayTaskError("generate", "tb", RemoteFailure("data", "rollout-0", "generate", "too long"))
    assert classify(wrapped) == "data"
    assert isinstance(remote_cause(wrapped), RemoteFailure)
