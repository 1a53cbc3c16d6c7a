# Every target makes .venv (CPU torch wheel, the package and its pinned dependencies) first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check --quiet
STAMP  := $(VENV)/.installed$(if $(CUDA),-cuda)
export MUJOCO_GL ?= egl

.PHONY: install demo test bench clean

install: $(STAMP)

# torch: the CPU build, from a local wheel or index that has it, else PyTorch's CPU index (PyPI's
# torch==2.13.0 for Linux is the CUDA build with its multi-GB nvidia-* dependencies). On a GPU
# machine `make install CUDA=1` takes that CUDA build instead, which later plain installs keep.
CUDA ?=
HAS_CUDA_TORCH := $(PY) -c "import sys, torch; sys.exit(torch.__version__ != '2.13.0' or not torch.version.cuda)" 2>/dev/null
TORCH_INSTALL := $(if $(CUDA),$(PIP) install torch==2.13.0,$(HAS_CUDA_TORCH) || $(PIP) install torch==2.13.0+cpu || $(PIP) install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu)

$(STAMP): pyproject.toml constraints.txt scripts/system-deps.sh
	bash scripts/system-deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(TORCH_INSTALL)
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(VENV)/bin/crl demo

test: $(STAMP)
	$(PY) -m pytest -n 2 --durations=15 tests

bench: $(STAMP)
	$(PY) experiments/bench_envs.py --write
	$(PY) experiments/bench_replay.py --write
	$(PY) experiments/bench_encoders.py --write
	$(PY) experiments/bench_agents.py --write $(if $(REFERENCE),--reference $(REFERENCE))
	$(PY) experiments/bench_training.py --write
	$(PY) experiments/bench_goal_agents.py --write

clean:
	rm -rf $(VENV) *.egg-info
