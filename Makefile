# Two commands do all the set-up on a fresh machine (a venv in .venv, then the package and its extras):
#   make demo   -- the main job: train an MLP on the handwritten digits data set (scikit-learn's copy)
#   make test   -- the test suite
# Intel's CPU OpenCL runtime as a second implementation (installs the `intel` extra on first use):
#   make test-intel  -- the portability subset (PORTABILITY_TESTS below) and the demo's first epoch on Intel
#   make demo-intel  -- the demo on Intel
# Emulated device limits (axonml_autograd/target.py, AXONML_TARGET):
#   make test-matrix -- the portability subset and the demo's first epoch under each of MATRIX_TARGETS,
#                       and every kernel family under the full emulated-target matrix
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test devices bench clean gpu-check test-intel demo-intel devices-intel test-matrix

# The portability subset: the tests that must pass on every OpenCL implementation (one list, here).
# Every kernel family (matmul, elementwise, fused, reduce, scan, softmax/cross-entropy rows, norms,
# conv/pool, resampling, index, sort, optimisers, Philox, recurrent cells), both strategies, the target and its fallbacks.
PORTABILITY_TESTS := tests/test_kernels.py tests/test_matmul.py tests/test_gradients.py \
                     tests/test_softmax_rows.py tests/test_norm.py tests/test_conv.py tests/test_optim.py \
                     tests/test_random.py tests/test_sorting.py tests/test_indexing.py \
                     tests/test_gpu_strategies.py tests/test_vector_path.py tests/test_target.py \
                     tests/test_target_matrix.py tests/test_registry.py tests/test_eager_fusion.py \
                     tests/test_replay_state.py tests/test_kernel_args.py tests/test_norm_accuracy.py \
                     tests/test_conv_transpose.py tests/test_resample.py tests/test_grad_scaler.py tests/test_autocast.py \
                     tests/test_rnn.py tests/test_half.py tests/test_half_ops.py \
                     tests/test_half_bandwidth_paths.py tests/test_fused_attention.py tests/test_fused_attention_blocking.py \
                     tests/test_capture_memory.py tests/test_erf_kernels.py tests/test_matmul_bias.py tests/test_optim_multi.py \
                     tests/test_conv_paths.py tests/test_max_pool_planes.py tests/test_packed_self_attention.py
# Emulated GPUs from small to large (AXONML_TARGET fields). A target without fp64 runs in
# tests/test_target_matrix.py (float32 there): the suite's gradchecks need float64.
MATRIX_TARGETS    := strategy=gpu,work_group=64,local_mem=16384,vw_float=1 \
                     strategy=gpu,work_group=256,local_mem=32768,vw_float=4 \
                     strategy=gpu,work_group=1024,local_mem=65536,vw_float=16
# AXONML_DEVICE for Intel's runtime: its platform name (PoCL's strings never contain it).
INTEL_DEVICE      := Intel(R) OpenCL
INTEL_STAMP       := $(VENV)/.installed-intel
# Exports OCL_ICD_VENDORS/LD_LIBRARY_PATH so that Intel and PoCL are both visible (scripts/opencl_env.sh).
INTEL_ENV          = eval "$$(bash scripts/opencl_env.sh $(VENV))" && export AXONML_DEVICE='$(INTEL_DEVICE)'

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

$(INTEL_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[pocl,test,examples,mpi,intel]"
	touch $(INTEL_STAMP)

test-intel: $(INTEL_STAMP)
	$(INTEL_ENV) && $(PY) -W error::pyopencl.CompilerWarning -m pytest -q -W error::pyopencl.CompilerWarning \
	    $(PORTABILITY_TESTS) tests/test_heterogeneous_ranks.py
	$(INTEL_ENV) && $(PY) scripts/train_digits.py --stop-after 1 --no-progress --out runs/digits-intel

demo-intel: $(INTEL_STAMP)
	$(INTEL_ENV) && $(PY) scripts/train_digits.py --min-accuracy 96 --out runs/digits-intel

devices-intel: $(INTEL_STAMP)
	$(INTEL_ENV) && $(VENV)/bin/axonml-devices

test-matrix: $(STAMP)
	set -e; for t in $(MATRIX_TARGETS); do \
	    echo "== AXONML_TARGET=$$t"; \
	    AXONML_TARGET=$$t $(PY) -m pytest -q $(PORTABILITY_TESTS); \
	    AXONML_TARGET=$$t $(PY) scripts/train_digits.py --stop-after 1 --no-progress --out runs/digits-matrix; \
	done
	AXONML_MATRIX=full $(PY) -m pytest -q tests/test_target_matrix.py

clean:
	rm -rf $(VENV) build *.egg-info

# The GPU check (scripts/gpu_check.sh): no venv step, so it runs as is on a machine without network.
gpu-check:
	bash scripts/gpu_check.sh $${OUT:-runs/gpu_check} $(GPU_CHECK_FLAGS)
