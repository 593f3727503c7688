# make run    set up if needed, then a whole local federated training (MNIST, 20 clients)
# make test   set up if needed, then the lint check and the test suite (all tiers: unit, core, stack, browser)
# make lint   ruff: the lint rules and the format check (pyproject.toml)
# make serve  the embedded database + the function under serverless-offline, in the foreground
# make package, deploy  the function's zip for AWS Lambda; deploy it (see README, Deploying)
# make demo-jobs  several jobs, devices, criteria and rules at once on the local stack
# make bench-default, bench-accuracy, bench-package, bench-predict, bench-async, bench-aggregate, bench-cost, bench-scale: benchmarks, results in bench/results/
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PYTHONPATH := $(CURDIR)

# one tier only: make test TIER=unit (or core, stack, browser)
TIER ?=

.PHONY: setup lint run test serve demo-jobs demo-tabular package deploy deploy-check deploy-image bench-default bench-accuracy bench-package bench-predict bench-async bench-aggregate bench-cost bench-scale bench-encoding bench-privacy clean

$(VENV)/.installed: requirements.txt requirements-dev.txt server_aws/requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	# the project itself, editable: puts the flctl command in $(BIN)
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed

run: setup
	$(BIN)/python -m flcli.run

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup lint
	$(BIN)/python -m pytest tests $(if $(TIER),-m $(TIER))

serve: setup
	$(BIN)/python -m flcli.serve

# three jobs at once on the local stack: 8 devices of two kinds, criteria, a rule
# that stops one job and starts another, a device whose training fails (results/demo-jobs/)
demo-jobs: setup
	$(BIN)/python -m flcli.demo_jobs

# Deploy to AWS, e.g. make deploy ARGS="--stage prod --region eu-west-1".
DEPLOY_ENV := SLS_TELEMETRY_DISABLED=1
# A public endpoint without an operator token would let anyone create jobs: refuse.
# House Prices on three devices with their own CSV files, as real client processes: central, local,
# local ensemble, federated and ridge, test RMSE of log price (results/demo-tabular/)
demo-tabular: setup
	$(BIN)/python -m flcli.demo_tabular

deploy-check:
	@test -n "$$FL_ADMIN_TOKEN" || { echo "set FL_ADMIN_TOKEN before deploying (see README, Deploying)" >&2; exit 1; }
	@test -n "$$MONGODB_URL" || { echo "set MONGODB_URL to a MongoDB the function can reach" >&2; exit 1; }

# the function's zip (build/aws/serverless-fl.zip): its dependencies built for
# Lambda's Linux, trimmed and precompiled; see flcli/package.py
package:
	$(PYTHON) -m flcli.package aws $(if $(FL_PACKAGE_PRIVACY),--privacy)

deploy: node_modules/.installed deploy-check package
	$(DEPLOY_ENV) npx serverless deploy $(ARGS)

# the same function as a container image (needs Docker; pushes to ECR)
deploy-image: node_modules/.installed deploy-check
	$(DEPLOY_ENV) npx serverless deploy --config serverless.image.yml $(ARGS)

# Benchmarks, results in bench/results/ (each script's docstring says what it measures):
#   bench-default    the floor, then the default `make run` job three times, each followed by Flower's simulation of the same work: medians and ratios
#   bench-accuracy   learning quality on the default workload (about 5 minutes a run, 8 runs)
#   bench-async      rounds with and without a barrier on uneven devices
#   bench-predict    global vs ensemble predictions after the default job, and the function's time per batch
#   bench-aggregate  one aggregation of N stored updates: seconds and peak memory
#   bench-cost       the AWS cost of the last make run's job and of 1,000- and 10,000-client jobs
#   bench-scale      1,000 clients (simulation mode), 100 per round, 5 rounds through the local function
#   bench-package    deployable size and cold import time of the function
#   bench-encoding   the default job with each update encoding: bytes, billed time, round time, accuracy
#   bench-privacy    secure aggregation and DP: cost on the default job, dropouts, 100/1,000 clients, accuracy vs epsilon
bench-default: setup
	$(BIN)/python bench/default_run.py

bench-async: setup
	$(BIN)/python bench/async_run.py

bench-accuracy bench-predict bench-aggregate bench-cost bench-scale bench-package bench-encoding bench-privacy: bench-%: setup
	$(BIN)/python bench/$*.py

clean:
	rm -rf logs run .fl results/latest
