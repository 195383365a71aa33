"""Where the roles' actors run: one line of `placement.jsonl` in the run directory (and one log line) when the
roles start and again after the learner group is rebuilt, so a user (and the multi-node test) can check that
every role landed on nodes offering the resources its `placement` section asks for."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import ray

from zppo_ray.actors.health import State

log = logging.getLogger(__name__)

# Resources every Ray node has; what is left are the custom ones a placement can ask for.
_BUILTIN = ("CPU", "GPU", "memory", "object_store_memory", "node:")


def _node_of(handles: list) -> list[str]:
    return ray.get([h.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()) for h in handles])


def where(roles: Any) -> dict[str, list[dict]]:
    """{role: [{name, node, ip, node_resources, bundles}]} for the rollout workers, teacher replicas, learner
    ranks and the buffer actor (a TP > 1 engine also lists the nodes of its placement-group bundles)."""
    nodes = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}

    def entry(name: str, node: str, pg: Any = None) -> dict:
        info = nodes.get(node, {})
        out = {"name": name, "node": node, "ip": info.get("NodeManagerAddress"),
               "node_resources": {k: v for k, v in info.get("Resources", {}).items() if not k.startswith(_BUILTIN)}}
        if pg is not None:
            out["bundles"] = list(ray.util.placement_group_table(pg)["bundles_to_node_id"].values())
        return out

    out: dict[str, list[dict]] = {}
    for role in ("rollout", "teacher"):
        group = getattr(roles, role, None)
        if group is None:
            continue
        rs = group.replicas
        up = rs.fleet.in_state(State.HEALTHY, State.STALE)  # stale: up, waiting for the current weights
        out[role] = [entry(rs.names[i], node, rs.pgs[i]) for i, node in zip(up, _node_of([rs.handles[i] for i in up]))]
    learner = roles.learner
    out["learner"] = [entry(f"rank-{r}", node) for r, node in enumerate(_node_of(learner.actors))]
    if roles.buffer is not None:
        out["buffer"] = [entry("buffer", _node_of([roles.buffer.handle])[0])]
    return out


def record(run_dir: Path, roles: Any, event: str) -> dict:
    """Append `{"event", "roles"}` to `placement.jsonl` and log which node (by custom resources) each role is on."""
    placed = where(roles)
    with Path(run_dir, "placement.jsonl").open("a") as f:
        f.write(json.dumps({"event": event, "roles": placed}) + "\n")
    summary = "; ".join(f"{role}: " + ", ".join(f"{e['name']}@{'+'.join(sorted(e['node_resources'])) or e['ip']}"
                                               for e in entries) for role, entries in placed.items())
    log.info("placement (%s): %s", event, summary)
    return placed
