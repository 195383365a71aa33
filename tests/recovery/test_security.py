"""Security defaults (README "Security"): no credentials in logs or saved configs, no remote code by
default, the run's own Ray cluster never exposes a dashboard."""

import logging

import pytest

from zppo_ray.config import load_config, save_resolved
from zppo_ray.redact import RedactingFilter, redact_text


@pytest.mark.parametrize("text,secret", [
    ("reading https://alice:s3cr3t-pw@data.example.com/train.parquet", "s3cr3t-pw"),
    ("token hf_abcdefghijklmnopqrstuvwxyz012345 in a path", "hf_abcdefghijklmnopqrstuvwxyz012345"),
    ("override api_key=abc123def456", "abc123def456"),
    ("HF_TOKEN: 'qwertyuiop'", "qwertyuiop"),
    ("aws AKIAABCDEFGHIJKLMNOP used", "AKIAABCDEFGHIJKLMNOP"),
])
def test_credentials_are_masked(text, secret):
    out = redact_text(text)
    assert secret not in out and "***" in out


def test_ordinary_text_is_left_alone():
    for text in ("step 3 | reward 0.500 | buffer 12", "path /data/zppo_train", "s3://bucket/key.parquet",
                 "tokens_per_second=120.5", "max_tokens: 128"):
        assert redact_text(text) == text


def test_log_records_are_redacted(caplog):
    logger = logging.getLogger("zppo_ray.test_security")
    handler = logging.Handler()
    seen = []
    handler.emit = lambda record: seen.append(record.getMessage())
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("loading %s", "https://bob:hunter2@example.com/x")
    finally:
        logger.removeHandler(handler)
    assert seen == ["loading https://***@example.com/x"]


def test_the_saved_config_holds_no_credential_and_remote_code_is_off(tmp_path):
    cfg = load_config(None, ["data.train=[{path: 'hf:https://u:topsecret@hub.example/ds', split: train}]",
                             "trainer.run_dir=" + str(tmp_path)])
    assert cfg.student.trust_remote_code is False and cfg.teacher.model.trust_remote_code is False
    text = save_resolved(cfg, tmp_path).read_text()
    assert "topsecret" not in text and "https://***@hub.example/ds" in text


def test_a_runs_own_cluster_is_new_and_has_no_dashboard(monkeypatch):
    import ray

    from zppo_ray import launch

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    launch.connect_ray(load_config(None, []))
    assert seen["address"] == "local" and seen["include_dashboard"] is False
