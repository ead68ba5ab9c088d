# Two entry points (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= /usr/share/datasets/fashion-mnist
OUTPUT_DIR ?= runs
DEMO_FLAGS ?=

.PHONY: setup test test-slow demo data bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# Real Fashion-MNIST from Debian when we can install it; otherwise tflth falls back to tfds.
data:
	@if [ ! -d "$(DATA_DIR)" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } || \
	  echo "could not install dataset-fashion-mnist; tflth will try tfds"; fi

# Two pytest workers (pytest-xdist), each test file on one worker (module fixtures built once):
# the suite is mostly single-threaded Python, about one core's worth of work.
PYTEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile

test: setup data
	$(PYTEST)

# Tests marked @pytest.mark.slow: the full-scale commands of the docs at toy size (exit 5 = none collected is fine).
test-slow: setup
	$(PYTEST) -m slow || [ $$? -eq 5 ]

demo: setup data
	$(PY) bin/prune.py --preset=lenet_300_100_mnist --dataset=fashion_mnist \
	  --data_dir=$(DATA_DIR) --output_dir=$(OUTPUT_DIR)/demo \
	  --training_steps=2ep --levels=3 --rewind_step=0it --controls=random_reinit $(DEMO_FLAGS)

# Engine speed (compiled training included) and compiled rounding, IMP overhead, stability curves, scaling and
# exports, each printing its table; all six run, and the target fails at the end if any missed a bound (or, for exports, if an export's
# test accuracy differs from the masked model's). BENCH_FLAGS=--quick: a smoke check.
BENCH_FLAGS ?=
bench: setup data
	status=0; \
	$(PY) benchmarks/train_speed.py $(BENCH_FLAGS) || status=1; \
	$(PY) benchmarks/compiled_rounding.py $(BENCH_FLAGS) || status=1; \
	$(PY) benchmarks/lottery_speed.py $(BENCH_FLAGS) || status=1; \
	$(PY) benchmarks/stability_speed.py $(BENCH_FLAGS) || status=1; \
	$(PY) benchmarks/scaling.py $(BENCH_FLAGS) || status=1; \
	$(PY) benchmarks/export_speed.py $(BENCH_FLAGS) || status=1; \
	$(PY) benchmarks/saliency_speed.py $(BENCH_FLAGS) || status=1; \
	$(PY) benchmarks/align_speed.py $(BENCH_FLAGS) || status=1; \
	exit $$status

# tflth vs TensorFlow Model Optimization. tfmot flips tf.keras to tf_keras on import, so it
# lives in its own venv with the core venv's TensorFlow and the matching tf_keras.
TFMOT_VENV ?= .venv-tfmot
TFMOT_BENCH_FLAGS ?=

$(TFMOT_VENV)/.installed: | $(VENV)/.installed
	test -x $(TFMOT_VENV)/bin/python || $(PYTHON) -m venv $(TFMOT_VENV)
	$(TFMOT_VENV)/bin/python -m pip install -q --upgrade pip
	tf=$$($(PY) -c 'import importlib.metadata as m; print(m.version("tensorflow"))') && \
	  $(TFMOT_VENV)/bin/python -m pip install -q "tensorflow==$$tf" "tf_keras==$${tf%.*}.*" \
	    'tensorflow-model-optimization>=0.8,<0.9'
	touch $@

.PHONY: bench-tfmot
bench-tfmot: setup data $(TFMOT_VENV)/.installed
	$(PY) benchmarks/tfmot_speed.py --tfmot_python=$(TFMOT_VENV)/bin/python $(TFMOT_BENCH_FLAGS)

clean:
	rm -rf $(VENV) $(TFMOT_VENV) *.egg-info
