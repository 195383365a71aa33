"""The gate in front of the world tests (tests/world_stamp.py): on every run, seconds instead of the 20-minute
rebuild. The world's inputs must be the ones the last full rebuild passed with, and the build must start as it
did then: same tokenizer, documents, token ids, initial weights and first pretraining losses."""

import json
import shutil
from importlib import metadata

import pytest
import world_stamp

GATE = ("the world's inputs changed since the last full rebuild: run `make verify-world` (12 min on a 2-core "
        "Xeon) and commit tests/world_stamp.json")


@pytest.fixture(scope="module")
def fingerprint():
    return world_stamp.fingerprint()


def test_the_build_starts_as_at_the_last_full_rebuild(fingerprint):
    ok, why = world_stamp.check()
    stamp = world_stamp.load()
    assert stamp is not None, f"{GATE}\n{why}"
    # The world's code, configs and tests must be the stamped ones. Library versions may differ (another install
    # profile, an optional package absent): the fingerprint below then says whether the build still starts alike.
    code = [k for k in world_stamp.differing(stamp) if not k.startswith("version:")]
    assert not code, f"{GATE}\n{why}"
    got, want = json.loads(json.dumps(fingerprint)), world_stamp.load()["fingerprint"]
    losses = {role: (got[role].pop("losses"), want[role].pop("losses")) for role in ("student", "teacher")}
    # exact: the same with torch's AVX2 and AVX-512 kernels (measured with ATEN_CPU_CAPABILITY=avx2 on an
    # AVX-512 Xeon: equal hashes, losses within 1e-7); a CPU without AVX2 (aarch64) draws other initial weights
    assert got == want, ("the world's inputs are the stamped ones, but its build starts differently here: something "
                         "outside them changed it (a module or library the stamp does not list) or this machine "
                         f"builds differently; run `make verify-world` to see whether the world still passes\n{why}")
    for role, (mine, stamped) in losses.items():
        # a CPU may sum in another order: the first losses agree closely, not to the bit
        assert mine == pytest.approx(stamped, rel=1e-3), (role, mine, stamped)


def test_the_fresh_tokenizer_is_the_shipped_one(fingerprint, toy_cfg):
    from zppo_ray.worlds.toy import shipped
    from zppo_ray.worlds.toy.bootstrap import artifacts_for

    man = shipped.manifest(artifacts_for(toy_cfg.toy, toy_cfg.templates).root.name)
    assert fingerprint["tokenizer"] == man["sha256"][f"{shipped.WORLD_PART}/tokenizer.json"]


def test_check_names_each_input_that_changed(tmp_path, monkeypatch, capsys):
    root = tmp_path / "repo"  # a copy of the inputs, to change without touching the repository
    for rel in world_stamp.input_files():
        if (world_stamp.ROOT / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(world_stamp.ROOT / rel, root / rel)
    monkeypatch.setattr(world_stamp, "ROOT", root)
    monkeypatch.setattr(world_stamp, "STAMP", tmp_path / "stamp.json")
    assert world_stamp.main(["check"]) == world_stamp.STALE and "no world stamp" in capsys.readouterr().out
    world_stamp.write(fp={})
    assert world_stamp.main(["check"]) == 0
    assert capsys.readouterr().out.startswith("world stamp current (verified ")

    corpus = root / "zppo_ray/worlds/toy/corpus.py"
    corpus.write_text(corpus.read_text() + "\n# an edit\n")
    (root / "zppo_ray/worlds/toy/new.py").write_text("")
    zone = root / "configs/zone.yaml"
    zone.write_text(zone.read_text() + "  vocab_size: 600\n")  # a toy key: the resolved section changes too
    version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda pkg: "0.0" if pkg == "torch" else version(pkg))
    ok, why = world_stamp.check()
    assert not ok
    changed = {line.strip() for line in why.splitlines()[1:]}
    assert changed == {"changed: file:zppo_ray/worlds/toy/corpus.py", "added:   file:zppo_ray/worlds/toy/new.py",
                       "changed: file:configs/zone.yaml", "changed: config:configs/zone.yaml",
                       "changed: version:torch"}, why


def test_stopping_early_trains_the_first_steps_of_the_same_schedule():
    """What makes the fingerprint's losses the full build's first ones (train_on_completions' stop_after)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from zppo_ray.worlds.supervised import train_on_completions

    def model():
        torch.manual_seed(0)
        return Qwen3ForCausalLM(Qwen3Config(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1, head_dim=8))

    docs = [([1 + i % 7, 2, 3 + i % 5, 4, 5], 2) for i in range(12)]
    full = train_on_completions(model(), docs, 6, 4, 1e-2, 0, 0, "full")
    assert train_on_completions(model(), docs, 6, 4, 1e-2, 0, 0, "cut", stop_after=3) == full[:3]
    # a 3-step run has another learning-rate schedule: its third loss is not the 6-step run's
    assert train_on_completions(model(), docs, 3, 4, 1e-2, 0, 0, "short")[2] != full[2]
