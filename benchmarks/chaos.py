"""Chaos run: train the toy world while killing random actors, then check that nothing was lost.

    python benchmarks/chaos.py --steps 24 --kills 8 --seed 0 --out benchmarks/results/chaos

What it does, like a preemptible cluster would:

* starts a Ray head (`ray start --head`; with `--nodes 3` two worker nodes too, each offering its own custom
  resources that the roles' `placement` asks for) and runs the job as `python -m zppo_ray.main` against it, with
  `trainer.resume=auto`, under a supervisor that reruns the job when it exits (what a RayJob's
  `backoffLimit` or a Kubernetes restart policy does);
* once the run makes progress, kills a target every few seconds (seeded): a rollout worker, a teacher
  replica, the replay-buffer actor or a learner rank (SIGKILL of the actor's process, found by its Ray
  process title), the driver itself (SIGTERM: the preemption notice, which must checkpoint; or SIGKILL),
  or a whole worker node (`node:b`: its raylet is killed, and a node with the same resources joins 10 s
  later, as KubeRay replaces a lost worker pod).
  Every target is hit at least once before any is hit twice. Before each kill it waits for a new step, so
  each kill lands on a run that recovered from the previous one;
* when the run has finished, audits it (`zppo_ray.audit`: every question accounted for, the served stream
  equal to the data cursor's, the ledger equal to the buffer's own records) and writes OUT/chaos.json and
  OUT/README.md: the kills, how each was survived, the audit, the final held-out accuracy.

Exit status 0 when the run completed and the audit passed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from zppo_ray.errors import UsageError

# Ray names an actor's worker process "ray::<Class>" (plus ".method" while it runs one).
TARGETS = {"rollout": "RolloutWorker", "teacher": "TeacherReplica", "buffer": "ReplayBufferShell",
           "learner": "_LearnerShell", "driver-term": None, "driver-kill": None}
# Log lines that show each recovery (the driver's stderr/stdout).
RECOVERY_PATTERNS = {
    "rollout/teacher replaced": r"starting a replacement",
    "requests retried elsewhere": r"go to the other replicas|retrying \d+ item",
    "buffer rebuilt": r"replay buffer rebuilt",
    "learner rolled back": r"rebuilding the learner group and rolling back",
    "checkpoint on SIGTERM": r"SIGTERM: finishing the current step",
}


# Three Ray nodes on this machine (--nodes 3, tests/recovery/test_chaos.py): the head holds the buffer, node a the
# tensor-parallel teacher and one learner rank, node b the rollout workers and the other learner rank (ZeRO-3
# across the two), so losing node b takes a rollout worker and a learner rank with it.
THREE_NODES = {"head": {"zppo_head": 1}, "a": {"zppo_a": 1, "zppo_learner": 1},
               "b": {"zppo_b": 1, "zppo_learner": 1}}
THREE_NODE_CONFIG = ("placement.buffer={zppo_head: 0.01}", "placement.teacher={zppo_a: 0.01}",
                     "placement.rollout={zppo_b: 0.01}", "placement.learner={zppo_learner: 0.01}",
                     "placement.learner_strategy=STRICT_SPREAD", "teacher.tp=2", "learner.num_ranks=2",
                     "learner.zero_stage=3", "rollout.num_workers=2")


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--kills", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset of " + ",".join(TARGETS))
    ap.add_argument("--schedule", default="", help="fixed order of targets (overrides --kills/--targets)")
    ap.add_argument("--checkpoint-every", type=int, default=3)
    ap.add_argument("--max-reruns", type=int, default=6)
    ap.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    ap.add_argument("--out", default="benchmarks/results/chaos")
    ap.add_argument("--nodes", type=int, choices=(1, 3), default=1,
                    help="3: the three-node layout (THREE_NODES, THREE_NODE_CONFIG); targets may then name node:b")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides for the job")
    return ap.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def actor_pids(cls: str, node_pids: list[int]) -> list[int]:
    """Worker processes of actor class `cls` started by our Ray nodes (another cluster on the machine, e.g.
    the test session's, is left alone)."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info.get("cmdline") or []
        if cmd and re.match(rf"ray::{re.escape(cls)}(\.|$| )", cmd[0]):
            try:
                if any(a.pid in node_pids for a in p.parents()):
                    out.append(p.info["pid"])
            except psutil.NoSuchProcess:
                pass
    return sorted(out)


class RayNode:
    """`ray start [--head] --block` in its own process group, on the loopback address: stopping it stops this
    node only (never `ray stop`, which would stop every Ray cluster on the machine). A worker node joins the
    head at `head_port`; `resources` are its custom Ray resources (what a role's `placement` asks for)."""

    def __init__(self, env: dict, log: Path, head_port: int | None = None, resources: dict | None = None,
                 num_cpus: int = 8):
        ray_bin = str(Path(sys.executable).parent / "ray")
        cmd = [ray_bin, "start", "--block", f"--num-cpus={num_cpus}", "--node-ip-address=127.0.0.1",
               "--disable-usage-stats", f"--resources={json.dumps(resources or {})}"]
        if head_port is None:
            self.port = _free_port()
            cmd += ["--head", f"--port={self.port}", "--include-dashboard=false"]
        else:
            self.port = head_port
            cmd += [f"--address=127.0.0.1:{head_port}"]
        self.head, self.log = head_port is None, log
        self.proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 120
        while not self._up():
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"ray start failed; see {log}")
            time.sleep(0.5)

    def _up(self) -> bool:
        """Registered with the cluster: `ray start` says so only then. A raylet alone is not enough: a node that
        joins while another still registers can time out later ("Failed to get node info") and leave."""
        if self.raylet_pid() is None or "Ray runtime started" not in self.log.read_text(errors="replace"):
            return False
        if self.head:  # and the GCS port accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                return False
        return True

    def raylet_pid(self) -> int | None:
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        return next((c.pid for c in kids if c.name() == "raylet"), None)

    def kill_raylet(self) -> int | None:
        """What a lost machine looks like to the cluster: its raylet (and with it every worker) gone."""
        pid = self.raylet_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        try:
            procs = [self.proc.pid] + [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = [self.proc.pid]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in procs:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                continue
            if sig == signal.SIGTERM:
                time.sleep(2)  # let children exit before the SIGKILL sweep


class RayCluster:
    """A head and worker nodes on this machine. `nodes`: name -> custom resources; the first is the head."""

    def __init__(self, env: dict, out: Path, nodes: dict[str, dict]):
        self.env, self.out, self.layout = env, out, dict(nodes)
        names = list(nodes)
        self.nodes = {names[0]: RayNode(env, out / f"ray_{names[0]}.log", resources=nodes[names[0]])}
        self.port = self.nodes[names[0]].port
        try:
            for name in names[1:]:
                self.nodes[name] = self._join(name, "")
        except BaseException:
            self.stop()
            raise
        self.head_pid = self.nodes[names[0]].proc.pid

    def _join(self, name: str, suffix: str) -> RayNode:
        """A worker node, one at a time; a second try when the first does not register (seen once in 2 cores'
        contention: the node timed out waiting for the GCS and exited)."""
        try:
            return RayNode(self.env, self.out / f"ray_{name}{suffix}.log", self.port, self.layout[name])
        except RuntimeError:
            return RayNode(self.env, self.out / f"ray_{name}{suffix}_retry.log", self.port, self.layout[name])

    def pids(self) -> list[int]:
        return [n.proc.pid for n in self.nodes.values()]

    def replace(self, name: str, after_s: float = 10.0) -> int | None:
        """Kill node `name`'s raylet, then (as KubeRay does for a lost worker pod) start a node with the
        same resources in its place; returns the killed raylet's pid."""
        pid = self.nodes[name].kill_raylet()
        time.sleep(after_s)
        self.nodes[name].stop()
        self.nodes[name] = self._join(name, "_2")
        return pid

    def stop(self) -> None:
        for node in reversed(list(self.nodes.values())):
            node.stop()


class Supervisor:
    """Runs the job until it completes, rerunning it after every exit that is not success."""

    def __init__(self, cmd: list[str], env: dict, log_path: Path, max_reruns: int):
        self.cmd, self.env, self.log_path, self.max_reruns = cmd, env, log_path, max_reruns
        self.proc: subprocess.Popen | None = None
        self.exits: list[int] = []
        self.lock = threading.Lock()
        self.stopped = False

    def stop(self) -> None:
        """Kill the job and run it no more (the chaos run's time is up, or it was interrupted)."""
        with self.lock:
            self.stopped = True
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()

    def run(self) -> int:
        with self.log_path.open("w") as log:
            while True:
                with self.lock:
                    if self.stopped:
                        return self.exits[-1] if self.exits else -9
                    self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
                rc = self.proc.wait()
                self.exits.append(rc)
                log.write(f"\n[chaos] job exited with {rc}\n")
                log.flush()
                if rc == 0 or len(self.exits) > self.max_reruns:
                    return rc

    def driver_pid(self) -> int | None:
        with self.lock:
            return self.proc.pid if self.proc and self.proc.poll() is None else None


def steps_logged(run_dir: Path) -> int:
    """Step records in the run log so far (across incarnations): a progress counter."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.startswith('{"kind": "step"'))


def monkey(plan: list[str], sup: Supervisor, run_dir: Path, rng: random.Random, kills: list[dict],
           done: threading.Event, cluster: RayCluster, checkpoint_every: int) -> None:
    last_driver = None
    for target in plan:
        # After a driver kill, the rerun must be up (a SIGTERM'd driver still finishes its step and
        # checkpoints: that is not the rerun's progress, and the rerun's actors do not exist yet).
        while not done.is_set() and sup.driver_pid() in (None, last_driver):
            time.sleep(0.5)
        seen = steps_logged(run_dir)
        if target.startswith("node:"):  # a whole node: a learner rank goes with it, so a checkpoint must exist
            seen = max(seen, checkpoint_every)
        while not done.is_set() and steps_logged(run_dir) <= seen:  # then a new step: the run recovered
            time.sleep(0.5)
        if done.is_set():
            return
        time.sleep(rng.uniform(0.2, 2.5))  # land somewhere inside a step
        if done.is_set():
            return
        rec = {"target": target, "at_step_records": steps_logged(run_dir), "time": round(time.time(), 1)}
        if target.startswith("node:"):
            name = target.split(":", 1)[1]
            pid = cluster.replace(name)
            rec.update(pid=pid, signal="SIGKILL (raylet)", outcome=f"node {name} lost; a node with its resources "
                       "joined 10 s later")
            kills.append(rec)
            print(f"[chaos] kill {len(kills)}/{len(plan)}: {rec}", flush=True)
            continue
        if target.startswith("driver"):
            pid = last_driver = sup.driver_pid()
            sig = signal.SIGTERM if target == "driver-term" else signal.SIGKILL
        else:
            pids = actor_pids(TARGETS[target], cluster.pids())
            pid = rng.choice(pids) if pids else None
            sig = signal.SIGKILL
        if pid is None:
            rec["outcome"] = "no such process alive (skipped)"
        else:
            try:
                os.kill(pid, sig)
                rec.update(pid=pid, signal=signal.Signals(sig).name)
            except ProcessLookupError:
                rec["outcome"] = "process gone before the signal (skipped)"
        kills.append(rec)
        print(f"[chaos] kill {len(kills)}/{len(plan)}: {rec}", flush=True)


def recoveries(log_text: str) -> dict[str, int]:
    return {name: len(re.findall(pat, log_text)) for name, pat in RECOVERY_PATTERNS.items()}


def run_chaos(steps: int, plan: list[str], out: Path, seed: int = 0, checkpoint_every: int = 3,
              max_reruns: int = 6, timeout: float = 3600.0, overrides: tuple[str, ...] = (),
              nodes: dict[str, dict] | None = None) -> dict:
    """`nodes`: name -> custom resources of each Ray node (the first is the head); default one head.
    Plan targets: a role (a process of it), driver-term / driver-kill, or node:NAME (its raylet)."""
    from zppo_ray.audit import audit_run

    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "run"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    # ZPPO_DEBUG: a job that fails leaves its traceback in job.log (the log is for finding out why)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1", ZPPO_DEBUG="1")
    env.pop("RAY_ADDRESS", None)
    cluster = RayCluster(env, out, nodes or {"head": {}})
    env["RAY_ADDRESS"] = f"127.0.0.1:{cluster.port}"
    cmd = [sys.executable, "-m", "zppo_ray.main", f"trainer.steps={steps}", f"trainer.run_dir={run_dir}",
           "trainer.resume=auto", f"checkpoint.every={checkpoint_every}", "checkpoint.keep_last=2",
           "trainer.eval_every=0", *overrides]
    sup = Supervisor(cmd, env, out / "job.log", max_reruns)
    rng = random.Random(seed)
    kills: list[dict] = []
    done = threading.Event()
    t0 = time.time()
    chaos = threading.Thread(target=monkey, args=(plan, sup, run_dir, rng, kills, done, cluster, checkpoint_every),
                             daemon=True)
    chaos.start()
    timer = threading.Timer(timeout, lambda: (done.set(), sup.stop()))
    timer.start()
    try:
        rc = sup.run()
    finally:
        done.set()
        timer.cancel()
        sup.stop()  # interrupted (Ctrl-C, a test's time limit): no job outlives us
        cluster.stop()
    wall = time.time() - t0
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    result = {"steps": steps, "plan": plan, "seed": seed, "kills": kills, "job_exits": sup.exits,
              "completed": rc == 0 and summary.get("steps") == steps, "wall_seconds": round(wall, 1),
              "recoveries": recoveries((out / "job.log").read_text()), "summary": summary}
    try:
        a = audit_run(run_dir)
        result["audit"] = {"ok": a.ok, "counts": a.counts, "problems": a.problems}
    except FileNotFoundError as e:
        result["audit"] = {"ok": False, "counts": {}, "problems": [str(e)]}
    evals = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"kind": "eval"' in x]
    result["accuracy"] = {e["label"]: e["accuracy"]["all"] for e in evals if e["label"] in ("before", "after")}
    result["passed"] = bool(result["completed"] and result["audit"]["ok"])
    (out / "chaos.json").write_text(json.dumps(result, indent=2))
    return result


def report(result: dict, argv: list[str]) -> str:
    kills = result["kills"]
    landed = [k for k in kills if "pid" in k]
    lines = [
        "# Chaos run", "",
        f"`python benchmarks/chaos.py {' '.join(argv)}` on {platform.node()} ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d')}.", "",
        f"- **{'PASSED' if result['passed'] else 'FAILED'}**: run completed {result['completed']} "
        f"({result['summary'].get('steps')} of {result['steps']} steps), audit ok {result['audit']['ok']}",
        f"- kills: {len(landed)} landed of {len(kills)} planned; job exits {result['job_exits']} "
        "(143 = stopped by SIGTERM after checkpointing, -9 = SIGKILL, 0 = done)",
        f"- wall time {result['wall_seconds']:.0f} s", "",
        "| # | target | signal | step records before | outcome |", "|---|---|---|---|---|",
    ]
    for i, k in enumerate(kills, 1):
        lines.append(f"| {i} | {k['target']} | {k.get('signal', '-')} | {k['at_step_records']} | "
                     f"{k.get('outcome', 'killed')} |")
    lines += ["", "Recoveries seen in the job log:", ""]
    lines += [f"- {name}: {n}" for name, n in result["recoveries"].items()]
    a = result["audit"]
    lines += ["", "Audit (`python -m zppo_ray.audit`): " + ", ".join(f"{k} {v}" for k, v in a["counts"].items()),
              *(f"- PROBLEM: {p}" for p in a["problems"])]
    acc = result.get("accuracy", {})
    if "before" in acc and "after" in acc:
        lines += ["", f"Held-out accuracy {acc['before']:.1%} before -> {acc['after']:.1%} after "
                      f"(the first incarnation's and the last's evaluation); buffer: {result['summary'].get('buffer')}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    args = parse(argv)
    rng = random.Random(args.seed)
    if args.schedule:
        plan = args.schedule.split(",")
    else:
        targets = args.targets.split(",")
        plan = []
        while len(plan) < args.kills:  # every target once before any twice
            rng.shuffle(targets)
            plan += targets
        plan = plan[:args.kills]
    nodes = THREE_NODES if args.nodes == 3 else {"head": {}}
    known = set(TARGETS) | {f"node:{n}" for n in list(nodes)[1:]}
    unknown = set(plan) - known
    if unknown:
        raise UsageError(f"--schedule/--targets: unknown target(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")
    overrides = (*(THREE_NODE_CONFIG if args.nodes == 3 else ()), *args.overrides)
    result = run_chaos(args.steps, plan, Path(args.out), args.seed, args.checkpoint_every, args.max_reruns,
                       args.timeout, overrides, nodes)
    text = report(result, argv)
    (Path(args.out) / "README.md").write_text(text)
    print(text)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    from zppo_ray.cli import run_entry

    sys.exit(run_entry(main))
