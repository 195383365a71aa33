"""The metric catalog and the recording helpers (the live export is tests/test_prometheus_live.py)."""

import pytest

from zppo_ray.observe import prometheus


def test_catalog_names_help_and_units():
    for name, spec in prometheus.CATALOG.items():
        assert name.startswith("zppo_") and spec.kind in ("counter", "gauge", "histogram")
        assert spec.help.endswith(".") and len(spec.help) > 20, name
        assert (spec.kind == "histogram") == bool(spec.buckets), name
        assert list(spec.buckets) == sorted(spec.buckets), name


def test_wrong_labels_and_unknown_names_are_programming_errors():
    with pytest.raises(ValueError, match="takes labels"):
        prometheus.record("zppo_buffer_graduations", 1)
    with pytest.raises(KeyError):
        prometheus.record("zppo_nope", 1)


def test_outside_ray_recording_is_a_no_op(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a unit test or the pure core
    monkeypatch.setattr(prometheus, "_made", {})
    prometheus.record_step({"time": {"total": 1.0}, "plain_reward": 0.5, "n_hard": 0, "learn": {"loss": 1.0}}, 10)
    assert prometheus._made == {}  # no Ray metric object was created


def test_entry_bins():
    assert prometheus.entry_bin(0.0, 8) == "0/8" and prometheus.entry_bin(0.375, 8) == "3/8"
    assert prometheus.entry_bin(0.5, 4) == "2/4"
