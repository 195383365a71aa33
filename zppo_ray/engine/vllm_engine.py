"""`VLLMEngine`: one vLLM `LLM` instance with the three things RL needs from it, and no Ray.

    generate(requests)          rollouts as token ids + sampled-token logprobs + the weight version
    score_topk(prompts, compl)  teacher top-k logprobs on GIVEN sequences (on-policy distillation)
    begin_weights / load_bucket / commit_weights
                                the learner's new weights bucket by bucket, then a new version
                                (zppo_ray/engine/weight_sync.py; the GPU path: weight_transfer)

Why Ray-free: the engine is tested directly (tests/test_engine.py) and wrapped by thin actors
(zppo_ray/actors/rollout.py, teacher.py), so nothing about sampling or weight loading lives in actor code.

vLLM on CPU traps handled here (docs/stack.md): the CPU env vars must be set before vllm is imported;
the KV cache is sized explicitly (else vLLM sizes it from RAM); threads are not pinned (cores are shared
with other actors); sleep mode does not exist on CPU (sleep/wake_up log and return).

Logprobs: vLLM's `logprobs=0` returns exactly one entry per generated token, the sampled token's logprob
(verified in tests). They are vLLM's default "raw_logprobs": log-softmax of the model's logits *before*
temperature/top-p/top-k and penalties, i.e. the policy's own distribution. With the training recipe
(temperature 1, top-p 1, no top-k) this is the behaviour policy; otherwise it is the unmodified policy,
which is what the learner recomputes at step start anyway.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from zppo_ray.engine.prompts import chat_prompt_ids, load_image
from zppo_ray.engine.weight_sync import EXTENSION_QUALNAME
from zppo_ray.seeds import request_seeds
from zppo_ray.types import GenRequest, Sample

log = logging.getLogger(__name__)

# The worker-side calls of vLLM's weight-transfer protocol, in the order one push makes them (init once).
_TRANSFER_METHODS = ("init_weight_transfer_engine", "start_weight_update", "update_weights", "finish_weight_update",
                     "shutdown_weight_transfer_engine")


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _set_cpu_env(kv_cache_gib: float) -> None:
    """Env vars vLLM's CPU backend reads at import/engine start (inherited by its spawned processes)."""
    if float(kv_cache_gib).is_integer():
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, int(kv_cache_gib)))
    else:  # the env var is whole GiB only and would override kv_cache_memory_bytes
        os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


class VLLMEngine:
    """One vLLM engine (TP ≥ 1). Not thread-safe: one caller at a time (the actor shells guarantee it)."""

    def __init__(
        self,
        model_path: str,
        *,
        tokenizer: str | None = None,
        dtype: str = "float32",
        max_model_len: int = 1024,
        tp: int = 1,
        seed: int = 0,
        kv_cache_gib: float = 1.0,
        gpu_memory_utilization: float = 0.9,
        enforce_eager: bool | None = None,
        enable_sleep_mode: bool = False,
        max_num_seqs: int = 256,
        max_logprobs: int = 20,
        distributed_executor_backend: str | None = None,
        trust_remote_code: bool = False,
        weight_transfer: str | None = None,
    ):
        self.on_gpu = _cuda_available()
        if weight_transfer is not None and not self.on_gpu:
            raise ValueError(f"weight transfer backend {weight_transfer!r} needs CUDA (NCCL / CUDA IPC); on CPU "
                             "use rollout.weight_sync=object_store")
        if not self.on_gpu:
            _set_cpu_env(kv_cache_gib)
            if enable_sleep_mode:
                log.info("sleep mode is not supported by vLLM on CPU: enable_sleep_mode ignored")
            enable_sleep_mode = False
        from vllm import LLM

        kwargs: dict[str, Any] = dict(
            model=str(model_path), tokenizer=str(tokenizer or model_path), dtype=dtype,
            max_model_len=max_model_len, tensor_parallel_size=tp, seed=seed,
            enforce_eager=(not self.on_gpu) if enforce_eager is None else enforce_eager,
            enable_sleep_mode=enable_sleep_mode, max_num_seqs=max_num_seqs, max_logprobs=max_logprobs,
            worker_extension_cls=EXTENSION_QUALNAME, trust_remote_code=trust_remote_code,
            load_format="safetensors",  # never a pickled .bin checkpoint (README "Security")
        )
        if weight_transfer is not None:  # vLLM's native learner → engine transfer (zppo_ray/weights/vllm_transfer.py)
            from vllm.config import WeightTransferConfig

            kwargs["weight_transfer_config"] = WeightTransferConfig(backend=weight_transfer)
        if distributed_executor_backend is not None:  # "ray" for TP > 1 inside a Ray actor (placement group)
            kwargs["distributed_executor_backend"] = distributed_executor_backend
        if self.on_gpu:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        else:  # explicit size also skips the CPU warm-up pass (faster start)
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
            # A seeded request whose prefill is split by chunked prefill kills the CPU engine: the runner
            # rewinds the request's generator with Generator.set_offset, which CPU generators lack
            # ("CPU Generator does not use offset"). Unchunked prefill never splits a prompt.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(max_model_len, 4096)
        t0 = time.perf_counter()
        self.llm = LLM(**kwargs)
        self.start_seconds = time.perf_counter() - t0
        self.tokenizer = self.llm.get_tokenizer()
        self.model_path = str(model_path)
        self.max_model_len = max_model_len
        self.sleep_enabled = enable_sleep_mode
        self.transfer_backend = weight_transfer
        # vLLM's Ray executor may put TP workers on other nodes, which do not see this host's /dev/shm
        self.shm_buckets = os.path.isdir("/dev/shm") and distributed_executor_backend != "ray"
        self._push_seconds = 0.0  # engine-side time of the push in progress (begin/start to commit)
        self.is_multimodal = bool(self.llm.llm_engine.model_config.is_multimodal_model)
        self._version = 0
        log.info("vLLM engine for %s up in %.1fs (%s, tp=%d)", model_path, self.start_seconds,
                 "cuda" if self.on_gpu else "cpu", tp)

    # ------------------------------------------------------------------------------------ properties

    @property
    def version(self) -> int:
        """Policy version of the weights currently served (0 = the checkpoint the engine started from)."""
        return self._version

    # ------------------------------------------------------------------------------------ prompts

    def prompt_ids(self, prompt: str | list[dict], n_images: int = 0, thinking: bool = True) -> list[int]:
        return chat_prompt_ids(self.tokenizer, prompt, n_images, thinking)

    def _engine_prompt(self, req: GenRequest) -> tuple[dict, list[int]]:
        self._check_images(req.images, req.tag)  # before templating: a text-only template cannot place them
        ids = self.prompt_ids(req.prompt, len(req.images), req.thinking)
        return self._with_images({"prompt_token_ids": ids + list(req.prefix_ids)}, req.images, req.tag), ids

    def _check_images(self, images: Sequence, what: str) -> None:
        if images and not self.is_multimodal:
            raise ValueError(f"{what!r} has {len(images)} image(s) but {self.model_path} is not a multi-modal "
                             "model in vLLM")

    def _with_images(self, prompt: dict[str, Any], images: Sequence, what: str) -> dict[str, Any]:
        """vLLM's multi-modal processor expands the template's image placeholder tokens itself."""
        self._check_images(images, what)
        if images:
            loaded = [load_image(im) for im in images]
            prompt["multi_modal_data"] = {"image": loaded if len(loaded) > 1 else loaded[0]}
        return prompt

    # ------------------------------------------------------------------------------------ generate

    def generate(
        self,
        requests: Sequence[GenRequest],
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        max_tokens: int = 128,
        seed: int | Sequence[int] | None = None,
        presence_penalty: float = 0.0,
        logprobs: bool = True,
    ) -> list[list[Sample]]:
        """`n` samples per request, in request order.

        `seed`: request i is sampled with `seed[i]` when a list is given (the trainer derives one per request,
        zppo_ray/seeds.py), or with `request_seeds(seed, ...)[i]` for a single int; vLLM gives sample j the
        request's seed + j. None = engine RNG.
        `prefix_ids` (Prefix baseline): the prefix is appended to the prompt tokens and generation
        continues after it; the returned Sample has `prompt_ids` = the templated
        prompt only, `completion_ids` = prefix + generated, `logprobs` 0.0 for prefix tokens (they are not
        the policy's choices and are never trained on) and `loss_mask` 0 for them, 1 after.
        `images` (multi-modal models only; untested here, no VLM on CPU): `prompt_ids` are the templated
        ids *before* vLLM expands each image placeholder into its feature tokens, i.e. what an HF
        processor expects next to the same images when the learner recomputes logprobs.
        """
        from vllm import SamplingParams

        if not requests:
            return []
        seeds = [None] * len(requests) if seed is None else (
            request_seeds(seed, len(requests)) if isinstance(seed, int) else [int(x) for x in seed])
        if len(seeds) != len(requests):
            raise ValueError(f"{len(seeds)} seeds for {len(requests)} requests")
        greedy = temperature == 0.0  # vLLM refuses n > 1 with greedy sampling: send n copies of n=1
        prompts, prompt_ids, params, owner = [], [], [], []
        for i, req in enumerate(requests):
            if req.n < 1:
                raise ValueError(f"request {i} ({req.tag!r}) asks for n={req.n} samples; need >= 1")
            p, ids = self._engine_prompt(req)
            if len(p["prompt_token_ids"]) >= self.max_model_len:
                raise ValueError(f"request {i} ({req.tag!r}): prompt + prefix is {len(p['prompt_token_ids'])} "
                                 f"tokens, max_model_len is {self.max_model_len}")
            prompt_ids.append(ids)
            sp = SamplingParams(
                n=1 if greedy else req.n, temperature=temperature, top_p=top_p,
                top_k=0 if top_k in (-1, 0) else top_k,
                max_tokens=min(max_tokens, self.max_model_len - len(p["prompt_token_ids"])),
                seed=seeds[i], presence_penalty=presence_penalty,
                logprobs=0 if logprobs else None, detokenize=False)
            for _ in range(req.n if greedy else 1):
                prompts.append(p)
                params.append(sp)
                owner.append(i)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        version = self._version
        completions: list[list] = [[] for _ in requests]
        for i, out in zip(owner, outputs):
            completions[i].extend(sorted(out.outputs, key=lambda c: c.index))
        return [self._samples(req, ids, outs, version, logprobs)
                for req, ids, outs in zip(requests, prompt_ids, completions)]

    def _samples(self, req: GenRequest, ids: list[int], outs: list, version: int, logprobs: bool) -> list[Sample]:
        prefix = list(req.prefix_ids)
        completions = [prefix + list(c.token_ids) for c in outs]
        # Text is decoded here from the final ids (vLLM detokenization is off): the ids are the ground truth,
        # and vLLM's incremental detokenizer can disagree with a plain decode on invalid UTF-8 byte runs.
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        samples = []
        for c, ids_c, text in zip(outs, completions, texts):
            gen = list(c.token_ids)
            lps = [float(d[t].logprob) for t, d in zip(gen, c.logprobs)] if logprobs else [0.0] * len(gen)
            samples.append(Sample(
                prompt_ids=list(ids), completion_ids=ids_c, logprobs=[0.0] * len(prefix) + lps,
                text=text, finish_reason=str(c.finish_reason or "abort"), version=version,
                loss_mask=([0] * len(prefix) + [1] * len(gen)) if prefix else None))
        return samples

    # ------------------------------------------------------------------------------------ scoring

    def score_topk(self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                   k: int, images: Sequence[tuple] | None = None) -> list[dict]:
        """Per completion token: the model's top-k token ids and logprobs, and the actual token's logprob.

        One prefill of prompt + completion with `prompt_logprobs=k` (max_tokens=1; the one sampled token
        is discarded). Returns per sequence {"topk_ids": [[k ids]...], "topk_logprobs": [[k floats]...],
        "token_logprobs": [float...]}, one row per completion token, top-k sorted by rank.
        """
        from vllm import SamplingParams

        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
        if not prompt_ids:
            return []
        images = list(images) if images is not None else [()] * len(prompt_ids)
        prompts = []
        for i, (p, c, ims) in enumerate(zip(prompt_ids, completion_ids, images)):
            if not p or not c:
                raise ValueError(f"sequence {i}: prompt and completion must both be non-empty")
            if len(p) + len(c) >= self.max_model_len:
                raise ValueError(f"sequence {i}: {len(p) + len(c)} tokens >= max_model_len {self.max_model_len}")
            prompts.append(self._with_images({"prompt_token_ids": list(p) + list(c)}, ims, f"sequence {i}"))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=k, detokenize=False)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for p, c, out in zip(prompt_ids, completion_ids, outputs):
            rows = out.prompt_logprobs[len(p):]  # row j predicts token j (row 0 is None)
            ids, lps, actual = [], [], []
            for tok, row in zip(c, rows):
                top = sorted((lp for lp in row.items() if lp[1].rank is not None and lp[1].rank <= k),
                             key=lambda kv: kv[1].rank)[:k]
                ids.append([t for t, _ in top])
                lps.append([float(v.logprob) for _, v in top])
                actual.append(float(row[tok].logprob))
            results.append({"topk_ids": ids, "topk_logprobs": lps, "token_logprobs": actual})
        return results

    # ------------------------------------------------------------------------------------ weights

    def begin_weights(self, names: list[str]) -> None:
        """Start a push of exactly `names` on every worker (zppo_ray/engine/weight_sync.py lifecycle)."""
        if not names:
            raise ValueError("a weight push must name at least one tensor")
        self._push_seconds = 0.0
        self._timed(self.llm.collective_rpc, "zppo_begin_reload", args=(list(names),))

    def load_bucket(self, blob: bytes) -> int:
        """One bucket of safetensors bytes into every worker; returns the tensors per worker. Through one
        /dev/shm file that the workers read tensor by tensor when they share this host (vLLM's RPC channel
        would copy the whole bucket into each worker's process first), else as bytes through the RPC."""
        if not blob:
            raise ValueError("empty weight bucket")
        if not self.shm_buckets:
            return int(self._timed(self.llm.collective_rpc, "zppo_load_bucket", args=(blob,))[0])
        fd, path = tempfile.mkstemp(prefix="zppo_bucket_", suffix=".safetensors", dir="/dev/shm")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            return int(self._timed(self.llm.collective_rpc, "zppo_load_bucket_file", args=(path,))[0])
        finally:
            os.unlink(path)

    def commit_weights(self, version: int) -> float:
        """Finish the push on every worker, then serve `version`; returns the push's engine-side seconds.
        The prefix cache is reset before the version changes: cached KV blocks belong to the old weights."""
        if self.transfer_backend is None:  # vLLM's own finish_weight_update already finished a GPU transfer
            self._timed(self.llm.collective_rpc, "zppo_finish_reload")
        self.llm.reset_prefix_cache()
        self._version = int(version)
        return self._push_seconds

    def weight_transfer(self, method: str, payload: Any = None) -> None:
        """GPU path: one call of vLLM's weight-transfer protocol on every worker (`init_weight_transfer_engine`,
        `start_weight_update`, `update_weights`, `finish_weight_update`), driven by the learner's sender
        (zppo_ray/weights/vllm_transfer.py). The engine must have been built with `weight_transfer`."""
        if method not in _TRANSFER_METHODS:
            raise ValueError(f"unknown weight-transfer call {method!r}; expected one of {sorted(_TRANSFER_METHODS)}")
        if self.transfer_backend is None:
            raise RuntimeError("this engine was started without a weight-transfer backend (rollout.weight_sync)")
        if method == "start_weight_update":
            self._push_seconds = 0.0
        self._timed(self.llm.collective_rpc, method, args=() if payload is None else (payload,))

    def _timed(self, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self._push_seconds += time.perf_counter() - t0

    def param_checksum(self) -> float:
        return float(self.llm.collective_rpc("zppo_param_checksum")[0])

    # ------------------------------------------------------------------------------------ lifecycle

    def sleep(self, level: int = 1) -> None:
        """Free GPU memory for a colocated learner step (level 1: weights to CPU, KV cache dropped)."""
        if not self.sleep_enabled:
            log.info("engine sleep skipped: sleep mode %s", "disabled" if self.on_gpu else "unsupported on CPU")
            return
        self.llm.sleep(level=level)

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Re-allocate after sleep. Colocated pushes wake `["weights"]` first, receive the new weights,
        then wake `["kv_cache"]`, so weights and KV cache never hold GPU memory during the learner step."""
        if not self.sleep_enabled:
            log.info("engine wake_up skipped: sleep mode %s", "disabled" if self.on_gpu else "unsupported on CPU")
            return
        self.llm.wake_up(tags)

    def shutdown(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort at teardown
            log.debug("engine core shutdown failed", exc_info=True)
        del llm
        import gc

        gc.collect()


__all__ = ["VLLMEngine"]
