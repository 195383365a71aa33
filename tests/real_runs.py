"""Runs of the toy world on one set of real roles shared by the session (the `shared_roles` fixture)."""

# The configuration of every run on the shared roles (tests/test_e2e.py, tests/test_prometheus_live.py): short
# steps of the toy world; each test adds its own keys (method, buffer, staleness), none of which the roles read.
SHORT = [
    "trainer.steps=3", "trainer.prompts_per_step=4", "rollout.group_size=4", "teacher.group_size=2",
    "data.eval[0].limit=12", "checkpoint.every=1", "checkpoint.keep_last=0", "trainer.eval_every=0",
    "rollout.max_new_tokens=64", "teacher.max_new_tokens=64", "eval.max_new_tokens=64",
    "learner.lr=1e-4", "algo.tau=0.75",
]


def short_cfg(run_dir, *extra):
    from zppo_ray.config import load_config

    return load_config(None, [*SHORT, f"trainer.run_dir={run_dir}", *extra])


# What the roles read when they start (zppo_ray/launch.py start_roles; the learner's loss keys in
# zppo_ray/learner/policy.py): a run on the shared roles must not set these differently, or its setting would be
# accepted and ignored. (trainer.max_staleness also picks whether the weight sync reloads a replaced worker at
# once; no worker is replaced on the shared roles.)
ROLE_KEYS = ("student", "learner", "placement", "teacher.model", "teacher.num_replicas", "teacher.tp",
             "teacher.kv_cache_gib", "teacher.cpus_per_replica", "teacher.max_restarts", "teacher.request_timeout_s",
             "rollout.num_workers", "rollout.cpus_per_worker", "rollout.kv_cache_gib", "rollout.weight_sync",
             "rollout.weight_bucket_mb", "rollout.omp_threads", "rollout.max_restarts", "trainer.seed",
             "algo.eps_low", "algo.eps_high", "algo.dual_clip", "algo.loss_agg", "algo.kl_coef", "algo.kl_type",
             "algo.entropy_coef", "algo.jsd_beta")


def _at(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


class SharedRoles:
    """One set of real actors (learner, rollout pool, teacher, weight sync) for every run of the session that
    needs them: starting them costs about a minute on 2 cores. `fresh(cfg, run_dir)` hands them out as a new
    run would find them: the learner back at the pretrained student (weights and optimizer), the engines
    serving it at version 0, the teacher only where the method uses one, a buffer of its own, the placement
    record. A config that sets a key the roles read (ROLE_KEYS) differently is refused; a test that timed out
    on the roles leaves them `broken`, and the runs after it fail at once instead of waiting on them."""

    def __init__(self, roles, initial: str, cfg):
        self.roles, self.initial, self.cfg = roles, initial, cfg
        self.broken: str | None = None

    def fresh(self, cfg, run_dir):
        import dataclasses

        from zppo_ray.actors import placement
        from zppo_ray.algo.methods import needs_teacher
        from zppo_ray.launch import start_buffer

        if self.broken:
            raise RuntimeError(f"the shared roles were left mid-call by {self.broken}, which timed out")
        differ = [k for k in ROLE_KEYS if _at(cfg, k) != _at(self.cfg, k)]
        if differ:
            raise ValueError(f"a run on the shared roles cannot change what they started with: {differ}")
        self.roles.learner.load(self.initial)
        self.roles.weights.push(0, rollback=True)
        pool = self.roles.rollout
        assert pool.versions() == [0] * len(pool.versions()) and all(h["alive"] for h in pool.health()), \
            pool.health()
        roles = dataclasses.replace(self.roles, teacher=self.roles.teacher if needs_teacher(cfg.algo) else None,
                                    buffer=start_buffer(cfg, run_dir) if cfg.algo.use_buffer else None)
        placement.record(run_dir, roles, "start")
        return roles

    @staticmethod
    def release(roles) -> None:
        """The run's own buffer goes (a kill that does not land in time is the module sweep's to finish)."""
        import ray

        if roles.buffer is not None:
            ray.kill(roles.buffer.handle, no_restart=True)


def train_on(shared: SharedRoles, cfg, run_dir) -> dict:
    """One whole run (`zppo_ray.launch.train`) on the shared roles, as `python -m zppo_ray.main` makes it on its
    own roles."""
    from zppo_ray.launch import train
    from zppo_ray.worlds import for_config

    roles = shared.fresh(cfg, run_dir)
    try:
        return train(cfg, run_dir, for_config(cfg), roles=roles)
    finally:
        shared.release(roles)
