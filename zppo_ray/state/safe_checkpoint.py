"""Pickle-free DeepSpeed checkpoints: every file is safetensors, the non-tensor structure is JSON.

Why: DeepSpeed's default TorchCheckpointEngine writes with torch.save and reads with
`torch.load(weights_only=False)`, so a tampered checkpoint runs arbitrary code on resume. DeepSpeed 0.19.8
offers no config hook for a custom engine, but every save/load of a training checkpoint goes through the one
attribute `engine.checkpoint_engine` (the ZeRO-1/2/3 and bf16 optimizers hold no reference of their own):
`install(engine)` replaces it after `deepspeed.initialize`.

On-disk layout. DeepSpeed keeps choosing the paths (`<dir>/<tag>/mp_rank_00_model_states.pt`,
`[bf16_]zero_pp_rank_<r>_mp_rank_00_optim_states.pt`, ZeRO-3's `zero_pp_rank_<r>_mp_rank_00_model_states.pt`,
the plain-text `<dir>/latest`), because it globs and checks for exactly those names on load. Despite the `.pt`
suffix each such file is a plain safetensors file:
- its tensors are the state dict's tensors, keyed by their path in the nested dict as a JSON pointer
  (`/optimizer/state/0/exp_avg`, `~` and `/` in a key escaped as `~0` and `~1`);
- its header metadata holds `zppo_format` (FORMAT) and `zppo_tree`: the state dict as JSON with each tensor
  replaced by `{"__t": "tensor", "key": <pointer>}`. Keeping the tree inside the safetensors header rather
  than in a sidecar means the two halves cannot get separated or mixed up.
JSON primitives, lists and str-keyed dicts are stored as themselves; the few other objects DeepSpeed puts in
its state dicts become tagged dicts (`{"__t": ...}`): dicts with non-str keys (the optimizer's int param ids),
OrderedDict, tuple, torch.Size, torch.dtype, and the allowlisted DeepSpeed classes below. Anything else
raises TypeError naming its path: there is no pickle fallback.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from zppo_ray.learner.deepspeed_env import import_deepspeed
from zppo_ray.state.codec import TAG, decode, encode, pointer

import_deepspeed()  # the accelerator environment must be set before deepspeed's first import
from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointEngine
from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
from deepspeed.runtime.zero.config import ZeroStageEnum
from deepspeed.utils.tensor_fragment import fragment_address

FORMAT = "zppo-ds-safetensors-1"
# What DeepSpeed 0.19.8 stores for ZeRO 0-3 in fp32/bf16: the ZeRO optimizers' `loss_scaler` (a LossScaler,
# DynamicLossScaler under fp16), `zero_stage` and ZeRO-1/2's `param_slice_mappings` values. Classes are
# looked up by name in these dicts only, so a file cannot name anything else to instantiate.
ENUMS = {f"{c.__module__}.{c.__qualname__}": c for c in (ZeroStageEnum,)}
OBJECTS = {f"{c.__module__}.{c.__qualname__}": c for c in (LossScaler, DynamicLossScaler, fragment_address)}


def flatten(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """(tensors keyed by JSON pointer, JSON-able tree referring to them) for a nested state dict."""
    tensors: dict[str, torch.Tensor] = {}
    storages: set[tuple[str, int]] = set()

    def extra(x: Any, path: list[str], enc) -> Any:
        where = pointer(path)
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu()
            # safetensors refuses non-contiguous tensors and tensors sharing memory (tied weights, views of
            # DeepSpeed's flat buffers): copy only those, the rest are written without a copy
            storage = (str(t.device), t.untyped_storage().data_ptr())
            if not t.is_contiguous() or storage in storages:
                t = t.clone(memory_format=torch.contiguous_format)
            storages.add((str(t.device), t.untyped_storage().data_ptr()))
            if where in tensors:
                raise ValueError(f"two entries map to the tensor key {where!r}")
            tensors[where] = t
            return {TAG: "tensor", "key": where}
        if type(x) is torch.Size:
            return {TAG: "size", "items": list(x)}
        if isinstance(x, torch.dtype):
            return {TAG: "dtype", "name": str(x).removeprefix("torch.")}
        name = f"{type(x).__module__}.{type(x).__qualname__}"
        if name in ENUMS and type(x) is ENUMS[name]:
            return {TAG: "enum", "cls": name, "value": enc(x.value, path)}
        if name in OBJECTS and type(x) is OBJECTS[name]:
            return {TAG: "object", "cls": name, "state": enc(vars(x), path)}
        return NotImplemented  # the codec's TypeError names the place

    return tensors, encode(obj, extra)


def unflatten(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of flatten(); builds only primitives, containers, tensors and allowlisted classes."""

    def extra(tag: str, x: dict, dec) -> Any:
        if tag == "tensor":
            return tensors[x["key"]]
        if tag == "size":
            return torch.Size(int(v) for v in x["items"])
        if tag == "dtype":
            dtype = getattr(torch, str(x["name"]), None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"not a torch dtype: {x['name']!r}")
            return dtype
        if tag == "enum" and x.get("cls") in ENUMS:
            return ENUMS[x["cls"]](dec(x["value"]))
        if tag == "object" and x.get("cls") in OBJECTS:
            cls = OBJECTS[x["cls"]]
            obj = cls.__new__(cls)  # what unpickling does, minus the freedom to pick the class or call code
            obj.__dict__.update(dec(x["state"]))
            return obj
        return NotImplemented

    return decode(tree, extra)


def save_state(state: Any, path: str) -> None:
    tensors, tree = flatten(state)
    save_file(tensors, path, metadata={"zppo_format": FORMAT, "zppo_tree": json.dumps(tree)})


def load_state(path: str, device: str | torch.device = "cpu") -> Any:
    with safe_open(path, framework="pt", device=str(device)) as f:
        meta = f.metadata() or {}
        if meta.get("zppo_format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} checkpoint file (format {meta.get('zppo_format')!r})")
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    return unflatten(json.loads(meta["zppo_tree"]), tensors)


class SafetensorsCheckpointEngine(CheckpointEngine):
    """DeepSpeed CheckpointEngine writing and reading the layout above; never unpickles."""

    def __init__(self, config_params=None):
        super().__init__(config_params)
        self.name = "SafetensorsCheckpointEngine"

    def create(self, info):
        pass

    def save(self, state_dict, path: str):
        save_state(state_dict, path)

    def load(self, path: str, map_location=None):
        # DeepSpeed passes "cpu", a torch.device, or `lambda storage, loc: storage` (keep the saved device).
        # Tensors were saved from CPU copies and every consumer copies them into its own parameters or
        # moves them to its parameters' device, so anything but an explicit device means CPU.
        device = map_location if isinstance(map_location, (str, torch.device)) else "cpu"
        return load_state(path, device)

    def commit(self, info):
        return True


def install(engine) -> None:
    """Make a DeepSpeed engine save and load its checkpoints with SafetensorsCheckpointEngine."""
    # The engine chose save_non_zero_checkpoint with its old engine's is_data_parallel_writer(); ours
    # inherits the same rule (data-parallel rank 0 writes), so that choice stays right.
    engine.checkpoint_engine = SafetensorsCheckpointEngine()
