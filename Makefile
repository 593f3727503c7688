# make run    set up if needed, then a whole local federated training (MNIST, 20 clients)
# make test   set up if needed, then the test suite
# make serve  the embedded database + the function under serverless-offline, in the foreground
# make bench-accuracy, make bench-package: benchmarks, results in bench/results/
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PYTHONPATH := $(CURDIR)

.PHONY: setup run test serve bench-accuracy bench-package clean

$(VENV)/.installed: requirements.txt requirements-dev.txt server_aws/requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed

run: setup
	$(BIN)/python -m flcli.run

test: setup
	$(BIN)/python -m pytest tests

serve: setup
	$(BIN)/python -m flcli.serve

# learning quality on the default workload (about 5 minutes a run, 8 runs)
bench-accuracy: setup
	$(BIN)/python bench/accuracy.py

# deployable size and cold import time of the function
bench-package: setup
	$(BIN)/python bench/package.py

clean:
	rm -rf logs run .fl results/latest
