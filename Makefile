# Two commands on a fresh machine with Python 3 and make:
#   make tutorial   create .venv (once), install, run every lesson headless -> outputs/
#   make test       same .venv, then the tests and the lessons in fast mode
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export MICRANET_WORKDIR ?= $(CURDIR)/outputs/work

.PHONY: tutorial test test-unit test-lessons test-browser lab venv benchmarks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Optional: where PyTorch comes from, e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu
# for the CPU-only build (much smaller than the default CUDA build from PyPI).
TORCH_INDEX ?=

# Re-installs only when pyproject.toml changes: a second run takes seconds.
$(STAMP): $(BIN)/python pyproject.toml
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet --disable-pip-version-check \
	  --index-url $(TORCH_INDEX) torch torchvision)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,lab]'
	@touch $(STAMP)

venv: $(STAMP)

tutorial: venv
	$(BIN)/python tools/run_lessons.py --output outputs

test: test-unit test-lessons test-browser

test-unit: venv
	MICRANET_FAST=1 $(BIN)/python -m pytest -q -m "not browser" tests

test-lessons: venv
	MICRANET_FAST=1 MICRANET_WORKDIR=$(CURDIR)/outputs/test-work $(BIN)/python -m pytest -q \
	  --nbval-lax --nbval-cell-timeout=900 --nbval-sanitize-with notebooks/nbval_sanitize.cfg -p no:cacheprovider notebooks

# needs the lessons first: lesson 05 in the browser reuses the model lesson 03 trained in
# test-work, so `make -j test` runs the lessons before the browser test
test-browser: venv test-lessons
	MICRANET_FAST=1 MICRANET_WORKDIR=$(CURDIR)/outputs/test-work $(BIN)/python -m pytest -q -m browser tests/test_browser.py

# as root (a container), JupyterLab refuses to start without --allow-root
lab: venv
	$(BIN)/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

benchmarks: venv
	$(BIN)/python benchmarks/gradcam.py
	$(BIN)/python benchmarks/recipes.py
	$(BIN)/python benchmarks/training.py

clean:
	rm -rf outputs .pytest_cache
