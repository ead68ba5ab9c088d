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

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

# Tests marked @pytest.mark.slow (none today; exit 5 = none collected is fine).
test-slow: setup
	$(PY) -m pytest -q -p no:cacheprovider -m slow || [ $$? -eq 5 ]

demo: setup data
	$(PY) bin/prune.py --preset=lenet_300_100_mnist --dataset=fashion_mnist \
	  --data_dir=$(DATA_DIR) --output_dir=$(OUTPUT_DIR)/demo \
	  --training_steps=2ep --levels=3 --rewind_step=0it --controls=random_reinit $(DEMO_FLAGS)

bench: setup
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) *.egg-info
