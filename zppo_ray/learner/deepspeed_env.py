"""DeepSpeed imported with the environment this project relies on (one home for it: the learner and the
pickle-free checkpoint engine both need it, and neither should import the other)."""

from __future__ import annotations

import logging
import os

import torch

DEFAULT_EXTENSIONS_DIR = "~/.cache/zppo_ray/torch_extensions"


def import_deepspeed():
    """Import deepspeed with the environment this project relies on.

    - `DS_ACCELERATOR=cpu` when no CUDA device exists, so detection does not depend on the host.
    - `TORCH_EXTENSIONS_DIR` points at a project cache: JIT-built ops are reused across runs and processes.
    - The CPU shared-memory comm op is switched off (set ZPPO_DS_SHM_COMM=1 to keep it). DeepSpeed's
      `TorchBackend` builds it on every `init_distributed`: a ~20-60 s C++ compile on first use (measured
      61 s on 2 busy cores, 0.1 s once cached). Training never uses it: only `inference_all_reduce` (tensor-
      parallel inference kernels) does; gloo carries all training collectives. DeepSpeed consults the
      cached `deepspeed.ops.__compatible_ops__` dict before building, and edits to it persist by design.
    """
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.expanduser(DEFAULT_EXTENSIONS_DIR))
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu" and os.environ.get("ZPPO_DS_SHM_COMM", "0") != "1":
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    return deepspeed
