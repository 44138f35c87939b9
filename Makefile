# minisweep: `make demo` runs the whole sweep on the shipped sample; `make test` runs every test.
# Both create the virtual environment in .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: demo readme-figures test test-slow sync bench device-check-ready clean

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-cache-dir --upgrade pip
	$(BIN)/python -m pip install --quiet --no-cache-dir -e ".[dev,ray]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/minisweep demo

# the README's figures are the demo's: copied from the demo's own figures folder, on purpose, by this target alone
README_FIGURES = curves.png alexnet_curve.png resnet18_curve.png
readme-figures: $(STAMP)
	test -f runs/demo/figures/curves.png || $(MAKE) demo
	cp $(addprefix runs/demo/figures/,$(README_FIGURES)) docs/demo/

# Every test writes its runs (real checkpoints: AlexNet's are 0.2-0.5 GB each) under a temporary folder of its own,
# removed afterwards, pass or fail: a test session never leaves gigabytes behind in /tmp.
TESTENV = PATH="$(CURDIR)/$(BIN):$$PATH" TMPDIR="$$scratch"
SCRATCH = scratch=$$(mktemp -d -t minisweep-test.XXXXXX) && trap 'rm -rf "$$scratch"' EXIT &&

# fails if the notebooks are not clean or the library is not exported from them, or if the modules' imports break the
# structure (tools/house.py); then runs every test; last, the house's weights (tools/prose.py: prose, line lengths)
test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tools/check_sync.sh
	$(BIN)/python tools/house.py
	$(SCRATCH) cd nbs && $(TESTENV) ../$(BIN)/nbdev_test --n_workers 1 --timing
	$(SCRATCH) $(TESTENV) $(BIN)/python -m pytest -q tests
	$(BIN)/python tools/prose.py

test-slow: $(STAMP)
	$(SCRATCH) cd nbs && $(TESTENV) ../$(BIN)/nbdev_test --flags slow --n_workers 1
	$(SCRATCH) $(TESTENV) $(BIN)/python -m pytest -q -m slow tests

bench: $(STAMP)
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

# the GPU check's wheels (.whl/py3.12, and this Python's for the CPU mode), its dataset (.devdata), a check that they
# travel with the tree (64 MiB), and the device call to make; then `bash bench/device_check.sh --cpu` checks the check
device-check-ready: $(STAMP)
	PYTHON=$(CURDIR)/$(BIN)/python bash bench/ready.sh

sync: $(STAMP)
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

clean:
	rm -rf $(VENV) build *.egg-info
