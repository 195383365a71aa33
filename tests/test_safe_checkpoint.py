"""The pickle-free checkpoint format of zppo_ray/state/safe_checkpoint.py, without a learner (see test_learner.py
for save/resume of real DeepSpeed engines)."""

import json
import math
import pickle
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file

from zppo_ray.state.safe_checkpoint import (
    FORMAT,
    OBJECTS,
    SafetensorsCheckpointEngine,
    flatten,
    load_state,
    save_state,
    unflatten,
)


def same(a, b, where="/"):
    """Deep equality that also checks every type (an int that came back as an enum, a tuple as a list fail)."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert [(type(k), k) for k in a] == [(type(k), k) for k in b], where
        for k in a:
            same(a[k], b[k], f"{where}{k}/")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}{i}/")
    elif type(a) in OBJECTS.values():
        same(vars(a), vars(b), where)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def deepspeed_like_state():
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    flat = torch.arange(12, dtype=torch.float32)
    emb = torch.randn(5, 4)
    return {
        # tied weights (one tensor under two names) and views of one flat buffer share memory
        "module": OrderedDict([("embed", emb), ("lm_head", emb), ("a", flat[:6].view(2, 3)), ("b", flat[6:])]),
        "tensors": [torch.randn(3, dtype=torch.bfloat16), torch.tensor([1.5, -2], dtype=torch.float16),
                    torch.arange(4), torch.tensor([True, False]), torch.randint(0, 255, (2, 2), dtype=torch.uint8),
                    torch.empty(0), torch.empty(0, dtype=torch.bfloat16), torch.tensor(7.0),
                    torch.randn(3, 4).t()],  # non-contiguous
        "optimizer": {"state": {0: {"step": torch.tensor(2.0), "exp_avg": torch.ones(2)}, 1: {}},
                      "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1], "foreach": None,
                                        "amsgrad": False}]},
        "zero": {"loss_scaler": LossScaler(1.0),
                 "dynamic": DynamicLossScaler(2.0**16, 1000, 1.0, 2, False, dtype=torch.float16),
                 "zero_stage": ZeroStageEnum.gradients, "partition_count": [1],
                 "slices": [OrderedDict(w=fragment_address(numel=6, start=0))]},
        "param_shapes": [OrderedDict(embed=torch.Size([5, 4]), scalar=torch.Size([]))],
        "dtypes": (torch.bfloat16, torch.float32, torch.int64), "empty": ((), [], {}), "none": None,
        "floats": [float("inf"), float("-inf"), float("nan"), -0.0, 1e-300],
        "odd keys/~": {"__t": "not a tag", "a/b": 1, "~0": torch.ones(2)},
        "mixed": {1: "x", "1": "y", None: 0, 2.5: True},
        "nested": [[[{"deep": torch.zeros(1, 1, 1)}]]], "zppo_step": 3, "text": "ünïcode",
    }


def test_round_trip_keeps_values_types_and_structure(tmp_path):
    state = deepspeed_like_state()
    path = str(tmp_path / "mp_rank_00_model_states.pt")
    save_state(state, path)
    again = load_state(path)
    same(state, again)
    # in-memory round trip too, and the keys are the readable JSON-pointer paths
    tensors, tree = flatten(state)
    same(state, unflatten(json.loads(json.dumps(tree)), tensors))
    assert "/optimizer/state/0/exp_avg" in tensors and "/odd keys~1~0/~00" in tensors
    # loaded tensors are independent, writable memory (optimizers update them in place)
    again["module"]["embed"].add_(1)
    assert not torch.equal(again["module"]["embed"], again["module"]["lm_head"])


@pytest.mark.parametrize("value,where,what", [
    ({"a": [1, {"b/c": object()}]}, "/a/1/b~1c", "builtins.object"),
    ({"s": {1, 2}}, "/s", "builtins.set"),
    ({"f": [len]}, "/f/0", "builtin_function_or_method"),
    ({"k": {(1, 2): 3}}, "/k", "dict key of type tuple"),
    ({"n": {"x": __import__("numpy").float64(1.0)}}, "/n/x", "numpy.float64"),
])
def test_unsupported_objects_raise_with_their_path(value, where, what, tmp_path):
    with pytest.raises(TypeError) as err:
        save_state(value, str(tmp_path / "x.pt"))
    assert err.value.args[0].startswith(f"{where}:") and what in err.value.args[0]
    assert not (tmp_path / "x.pt").exists()


class Boom:
    """Unpickling this runs code (creates a marker file): what a tampered torch.save checkpoint can do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def no_pickle(monkeypatch):
    """Every way DeepSpeed or torch could unpickle a file raises instead."""
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    for mod, name in ((torch, "load"), (torch.serialization, "load"), (pickle, "load"), (pickle, "loads"),
                      (pickle, "Unpickler")):
        monkeypatch.setattr(mod, name, refuse)


def test_tampered_files_are_refused_not_executed(tmp_path, no_pickle):
    engine = SafetensorsCheckpointEngine()
    evil = tmp_path / "mp_rank_00_model_states.pt"
    marker = tmp_path / "pwned"
    torch.save({"module": Boom(str(marker))}, evil)  # a DeepSpeed-default (torch.save) file, maliciously
    with pytest.raises(Exception) as err:
        engine.load(str(evil), map_location=lambda storage, loc: storage)
    assert "unpickling" not in str(err.value) and not marker.exists()

    # a valid safetensors file whose tree names a class outside the allowlist, or a non-dtype torch attribute
    for node in ({"__t": "object", "cls": "os.system", "state": {}}, {"__t": "dtype", "name": "load"}):
        save_file({}, str(evil), metadata={"zppo_format": FORMAT, "zppo_tree": json.dumps({"x": node})})
        with pytest.raises(ValueError):
            engine.load(str(evil), map_location="cpu")

    # plain safetensors without our metadata (e.g. an HF weights file) is not mistaken for a checkpoint
    save_file({"w": torch.ones(1)}, str(evil))
    with pytest.raises(ValueError, match="not a zppo-ds-safetensors-1"):
        engine.load(str(evil))


def test_no_pickle_fixture_catches_deepspeeds_default_engine(tmp_path, no_pickle):
    """The guard used by the learner tests really trips on DeepSpeed's own loader."""
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    path = tmp_path / "x.pt"
    TorchCheckpointEngine().save({"a": torch.ones(1)}, str(path))
    with pytest.raises(AssertionError, match="unpickling attempted"):
        TorchCheckpointEngine().load(str(path), map_location="cpu")
