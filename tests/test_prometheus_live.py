"""A real Prometheus scrapes a real training run; every PromQL expression of the dashboard returns data.

Prometheus is Debian's package (`make prometheus` installs it; `make test` calls that first), bound to
loopback. It scrapes the metrics export port of the test's Ray node, the same endpoint KubeRay's
PodMonitor scrapes. The run keeps its actors alive until the queries are answered: a Ray worker's
metrics leave the endpoint with the worker, and Prometheus marks vanished series stale.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from real_runs import short_cfg

PROMETHEUS = shutil.which("prometheus")
DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "zppo-dashboard.json"
# Grafana's built-in variables, as a dashboard over the last hour would expand them
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="no `prometheus` binary: `make prometheus` installs Debian's "
                                                  "package (as root: apt-get install prometheus)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    out = []
    for e in exprs:
        for k, v in GRAFANA_VARS.items():
            e = e.replace(k, v)
        out.append(e)
    return out


def query(base: str, expr: str) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def total(base: str, metric: str) -> float:
    return sum(float(r["value"][1]) for r in query(base, metric))


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, ray_cluster):
    target = ray_cluster.nodes()[0]["MetricsExportPort"]
    d = tmp_path_factory.mktemp("prometheus")
    (d / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: ray\n    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n")
    port = free_port()
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=open(d / "prometheus.log", "w"))
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if urllib.request.urlopen(f"{base}/-/ready", timeout=1).status == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"Prometheus did not become ready: {(d / 'prometheus.log').read_text()[-2000:]}")
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def test_every_dashboard_expression_returns_data_during_a_run(prometheus, shared_roles, toy_world, tmp_path):
    from transformers import AutoTokenizer

    from zppo_ray.launch import load_split, save_checkpoint
    from zppo_ray.observe.runlog import RunLog
    from zppo_ray.trainer import Trainer
    from zppo_ray.worlds import for_config

    # Hard-tier questions on the shared roles (learner lr 1e-4: this is about the metrics, not learning). The toy
    # student solves a hard question in about 1 sample of 8, so with buffer.tau 0.25 the 0/4 questions enter the
    # buffer and a replay with one right sample graduates; with room for one, most admitted questions are
    # evicted: both fates, and with them every graduation panel, occur in 10 steps. (At buffer.tau 0.5 a replay
    # needed 2/4 and none graduated in 10 steps.)
    cfg = short_cfg(tmp_path, "trainer.prompts_per_step=8", "buffer.capacity=1", "buffer.tau=0.25",
                    "algo.rho_replay=0.125")
    tok = AutoTokenizer.from_pretrained(toy_world.tokenizer)
    hard = [q for q in load_split(cfg, "train", tok, for_config(cfg)) if q.tier == str(len(cfg.toy.tiers))]
    roles = shared_roles.fresh(cfg, tmp_path)
    try:
        trainer = Trainer(cfg, roles, hard, [], tok, RunLog(tmp_path, True))
        # The shared roles and this process export what earlier runs recorded too: every counter of the dashboard
        # must grow during this run, so its panels show this run, not only what was there before.
        counters = sorted({m for e in dashboard_exprs() for m in re.findall(r"ray_zppo_\w+?(?:_total|_bucket)\b", e)})
        assert len(counters) >= 8, counters
        before = {m: total(prometheus, m) for m in counters}
        grads_before = before["ray_zppo_buffer_graduations_total"]
        steps = [trainer.train_step() for _ in range(10)]
        save_checkpoint(trainer, roles, tmp_path, keep_last=1)
        assert sum(m["graduated"] for m in steps) > 0 and sum(m["evicted"] for m in steps) > 0

        exprs = dashboard_exprs()
        missing = exprs
        deadline = time.time() + 90  # Ray's agents report every ~10 s; Prometheus scrapes every second
        while missing and time.time() < deadline:
            time.sleep(2)
            missing = [e for e in missing if not query(prometheus, e)]
        assert not missing, f"{len(missing)} of {len(exprs)} dashboard expressions returned no data: {missing}"
        still = counters
        while still and time.time() < deadline + 30:
            still = [m for m in still if total(prometheus, m) <= before[m]]
            if still:
                time.sleep(2)
        assert not still, f"dashboard counters this run did not move: {still}"

        # the graduation numbers Prometheus computes are the ones the run logged
        want = grads_before + sum(m["graduated"] for m in steps)
        deadline = time.time() + 30
        while total(prometheus, "ray_zppo_buffer_graduations_total") != want and time.time() < deadline:
            time.sleep(2)
        assert total(prometheus, "ray_zppo_buffer_graduations_total") == want
        bins = {r["metric"]["entry_bin"] for r in query(prometheus, "ray_zppo_buffer_admissions_total")}
        assert bins and all(b.endswith("/4") for b in bins)
    finally:
        shared_roles.release(roles)
