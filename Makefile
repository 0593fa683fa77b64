# Two commands do all the set-up on a fresh machine (a venv in .venv, then the package and its extras):
#   make demo   -- the main job: train an MLP on the handwritten digits data set (scikit-learn's copy)
#   make test   -- the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test devices bench clean gpu-check

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[pocl,test,examples,mpi]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/train_digits.py --min-accuracy 96

devices: $(STAMP)
	$(VENV)/bin/axonml-devices

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) scripts/bench.py --quick

clean:
	rm -rf $(VENV) build *.egg-info

# The GPU check (scripts/gpu_check.sh): no venv step, so it runs as is on a machine without network.
gpu-check:
	bash scripts/gpu_check.sh $${OUT:-runs/gpu_check} $(GPU_CHECK_FLAGS)
