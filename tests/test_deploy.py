"""deploy/: the KubeRay manifests against the real CRDs' openAPIV3Schema, their entrypoints' configs, the
PodMonitor and the Grafana dashboard.

The CRDs (../shared/kuberay-crds, KubeRay's own helm chart; vendored gzip copies in tests/data) are used as published, with one tightening:
an object schema that lists its properties and does not preserve unknown fields rejects other keys. The
API server would silently prune such a key (a typo like `replica:` vanishes and the default applies);
here it is an error.
"""

from __future__ import annotations

import copy
import gzip
import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# The CRDs as KubeRay publishes them: the workspace's shared copy when this checkout sits next to it, else
# the byte-identical gzip copy in tests/data (a clone elsewhere, e.g. CI; test_vendored_crds_are_the_shared_ones)
SHARED_CRDS = ROOT.parent / "shared" / "kuberay-crds"
VENDORED_CRDS = ROOT / "tests" / "data" / "kuberay-crds"
MANIFESTS = {"RayCluster": ["raycluster.yaml"], "RayJob": ["rayjob-paper.yaml", "rayjob-toy.yaml"]}
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
MANIFEST_PATHS = [ROOT / "deploy" / "kuberay" / f for fs in MANIFESTS.values() for f in fs]


def strict(schema):
    """A copy of `schema` where listed properties are the only allowed ones (see module doc)."""
    s = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node
                    and not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(s)
    return s


def crd_text(fname: str) -> str:
    if (SHARED_CRDS / fname).exists():
        return (SHARED_CRDS / fname).read_text()
    return gzip.decompress((VENDORED_CRDS / f"{fname}.gz").read_bytes()).decode()


def test_vendored_crds_are_the_shared_ones():
    if not SHARED_CRDS.exists():
        pytest.skip(f"no shared copy at {SHARED_CRDS} to compare with (a clone outside the workspace)")
    for fname in CRD_FILES.values():
        vendored = gzip.decompress((VENDORED_CRDS / f"{fname}.gz").read_bytes())
        assert vendored == (SHARED_CRDS / fname).read_bytes(), fname


@pytest.fixture(scope="module")
def validators():
    out = {}
    for kind, fname in CRD_FILES.items():
        crd = yaml.safe_load(crd_text(fname))
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        out[kind] = jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))
    return out


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def errors(validators, doc) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validators[doc["kind"]].iter_errors(doc)]


@pytest.mark.parametrize("path", MANIFEST_PATHS, ids=lambda p: p.name)
def test_manifest_validates_against_the_crd(path, validators):
    doc = load(path)
    assert doc["apiVersion"] == "ray.io/v1"
    assert errors(validators, doc) == []


def test_the_validator_catches_a_typo(validators):
    doc = load(ROOT / "deploy" / "kuberay" / "raycluster.yaml")
    doc["spec"]["workerGroupSpecs"][0]["replica"] = doc["spec"]["workerGroupSpecs"][0].pop("replicas")
    assert any("'replica' was unexpected" in e for e in errors(validators, doc))
    doc = load(ROOT / "deploy" / "kuberay" / "rayjob-toy.yaml")
    doc["spec"]["shutdownAfterJobFinishes"] = "yes"
    assert any("is not of type 'boolean'" in e for e in errors(validators, doc))


def cluster_specs():
    for path in MANIFEST_PATHS:
        doc = load(path)
        yield path.name, doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


@pytest.mark.parametrize("name,spec", list(cluster_specs()), ids=[n for n, _ in cluster_specs()])
def test_every_pod_exports_metrics_and_has_a_memory_backed_shm(name, spec):
    groups = [spec["headGroupSpec"]] + spec.get("workerGroupSpecs", [])
    for g in groups:
        assert g["rayStartParams"]["metrics-export-port"] == "8080"
        pod = g["template"]["spec"]
        container = pod["containers"][0]
        assert {"containerPort": 8080, "name": "metrics"} in container["ports"]
        assert "ray health-check" in " ".join(container["readinessProbe"]["exec"]["command"])
        shm = [v for v in pod["volumes"] if v["name"] == "dshm"]
        assert shm and shm[0]["emptyDir"]["medium"] == "Memory"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_paper_cluster_has_student_teacher_and_cpu_groups_with_bounds():
    spec = load(ROOT / "deploy" / "kuberay" / "raycluster.yaml")["spec"]
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"student-gpu", "teacher-gpu", "cpu"}
    assert spec["enableInTreeAutoscaling"] is True
    for g in groups.values():
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    gpus = {n: int(g["rayStartParams"].get("num-gpus", "0")) * g["maxReplicas"] for n, g in groups.items()}
    assert gpus == {"student-gpu": 48, "teacher-gpu": 16, "cpu": 0}  # 8 nodes x (6 + 2) H100


def test_rayjob_embeds_the_same_cluster_as_raycluster():
    job = load(ROOT / "deploy" / "kuberay" / "rayjob-paper.yaml")
    assert job["spec"]["rayClusterSpec"] == load(ROOT / "deploy" / "kuberay" / "raycluster.yaml")["spec"]
    assert job["spec"]["shutdownAfterJobFinishes"] is True


@pytest.mark.parametrize("fname,gpus", [("rayjob-paper.yaml", 64), ("rayjob-toy.yaml", 0)])
def test_entrypoint_config_exists_and_loads(fname, gpus):
    from zppo_ray.config import load_config, split_cli_args

    entry = shlex.split(load(ROOT / "deploy" / "kuberay" / fname)["spec"]["entrypoint"])
    assert entry[:3] == ["python", "-m", "zppo_ray.main"]
    path, overrides = split_cli_args(entry[3:])
    assert path is not None and (ROOT / path).exists(), path
    cfg = load_config(str(ROOT / path), overrides, available_gpus=gpus)
    assert cfg.trainer.run_dir.startswith(("/workspace/runs", "/tmp/runs"))


def test_podmonitor_scrapes_the_declared_metrics_port():
    pm = load(ROOT / "deploy" / "prometheus" / "podmonitor.yaml")
    assert pm["kind"] == "PodMonitor" and pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert [e["port"] for e in pm["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert pm["spec"]["selector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}


def test_dashboard_queries_only_exported_metrics_through_a_datasource_variable():
    from zppo_ray.observe.prometheus import CATALOG

    dash = json.loads((ROOT / "deploy" / "grafana" / "zppo-dashboard.json").read_text())
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in dash["templating"]["list"])
    exported = {f"ray_{n}{'_total' if s.kind == 'counter' else ''}" for n, s in CATALOG.items()}
    exported |= {f"ray_{n}_bucket" for n, s in CATALOG.items() if s.kind == "histogram"}
    import re

    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for t in panel["targets"]:
            names = set(re.findall(r"ray_zppo_[a-z_]+", t["expr"]))
            assert names and names <= exported, (panel["title"], names - exported)
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for must in ("graduation rate", "entry bin", "buffer size", "bcq / ncq share", "reward", "tokens/s",
                 "step time breakdown", "weight push"):
        assert must in titles, must


def test_network_policy_opens_only_metrics_and_the_job_api_to_non_ray_pods():
    pol = load(ROOT / "deploy" / "kuberay" / "networkpolicy.yaml")
    assert pol["kind"] == "NetworkPolicy" and pol["spec"]["policyTypes"] == ["Ingress"]
    assert pol["spec"]["podSelector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}
    rules = pol["spec"]["ingress"]
    ray_only = [r for r in rules if "ports" not in r]
    assert ray_only == [{"from": [{"podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}}]}]
    opened = sorted(p["port"] for r in rules for p in r.get("ports", []))
    assert opened == [8080, 8265]
    # the metrics port it opens is the one every Ray pod exports
    cluster = load(ROOT / "deploy" / "kuberay" / "raycluster.yaml")["spec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    assert {g["rayStartParams"]["metrics-export-port"] for g in groups} == {"8080"}
