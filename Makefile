# Two commands on a fresh machine (Python 3.11+, Java 17+, npm):
#   make up     run the billing-lifecycle demo locally, then serve the API (installs everything it needs first)
#   make test   lint, type-check and run every test (installs everything it needs first)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install whenever pyproject.toml changes.
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
LAYER_PYTHON_VERSION := 3.12
LAYER_PLATFORM       := manylinux2014_aarch64

.PHONY: up serve test lint typecheck unit layer sam-check clean reset install bench-import bench-meter bench-charge

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

up: $(STAMP)
	$(BIN)/msp-billing demo $(ARGS)

# The system without the demo: one seeded partner, a curl walk-through, the API serving.
serve: $(STAMP)
	$(BIN)/msp-billing up $(ARGS)

reset: $(STAMP)
	$(BIN)/msp-billing reset

test: lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	# Every function's entry module is app.py; mypy checks them one at a time (module names collide).
	for app in functions/*/app.py; do MYPYPATH=src:$$(dirname $$app) $(BIN)/mypy --strict --ignore-missing-imports $$app || exit 1; done

unit: $(STAMP)
	$(BIN)/pytest tests/unit

# Cold import time of the API handlers next to `import boto3` -> bench/results/import_time.json
bench-import: $(STAMP)
	$(BIN)/python bench/import_time.py

# Metering cost and throughput: 200,000 sightings through the meter handler and a naive baseline
# against DynamoDB Local -> bench/results/meter.json (about 20 minutes on 2 cores)
bench-meter: $(STAMP)
	$(BIN)/python bench/meter_bench.py

# Monthly charge run: 1,000 then 4,000 partners x 20 workspaces x up to 20 devices through the dispatcher
# and charge-worker handlers on the local stack -> bench/results/charge.json (about 40 minutes on 2 cores)
bench-charge: $(STAMP)
	$(BIN)/python bench/charge_bench.py $(ARGS)

# The billing-core layer for the Lambda platform, without Docker: binary wheels for arm64 / CPython 3.12.
# Chalice goes in without its dependencies: at run time only chalice.app is used, which needs the
# standard library alone (its CLI dependencies would triple the layer).
layer: $(STAMP)
	rm -rf build/layer && mkdir -p build/layer/python
	$(BIN)/python -c 'import tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; print("\n".join(d for d in deps if not d.startswith("chalice")))' > build/layer-requirements.txt
	$(BIN)/python -m pip install --quiet --target build/layer/python \
	  --platform $(LAYER_PLATFORM) --implementation cp --python-version $(LAYER_PYTHON_VERSION) \
	  --only-binary=:all: -r build/layer-requirements.txt
	$(BIN)/python -m pip install --quiet --target build/layer/python --no-deps \
	  --platform $(LAYER_PLATFORM) --implementation cp --python-version $(LAYER_PYTHON_VERSION) \
	  --only-binary=:all: "$$(grep -o 'chalice==[0-9.]*' pyproject.toml)"
	cp -r src/billing_core build/layer/python/
	find build/layer -name '__pycache__' -prune -exec rm -rf {} +
	@echo "Layer ready in build/layer ($$(du -sh build/layer | cut -f1)); deploy with: sam deploy (settings in samconfig.toml)"

# `sam validate --lint` and `sam build` of template.yaml, without Docker or an AWS account (about 10 s, plus
# a minute or two the first time, to install the SAM CLI). The SAM CLI gets a venv of its own: its pins (boto3,
# botocore, pydantic, click) are not the project's. Not part of `make test`: that installs nothing from outside
# the project's pins; cfn-lint (in the suite) already checks the template with SAM's transform.
SAM_CLI_VERSION := 1.170.0
SAM_VENV        := .venv-sam
SAM             := $(SAM_VENV)/bin/sam

$(SAM):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet "aws-sam-cli==$(SAM_CLI_VERSION)"

sam-check: $(SAM) layer
	SAM_CLI_TELEMETRY=0 $(SAM) validate --lint --template template.yaml
	SAM_CLI_TELEMETRY=0 $(SAM) build --template template.yaml
	@echo "sam validate --lint and sam build passed (.aws-sam/build); deploy with: sam deploy"

clean:
	rm -rf build .aws-sam .mypy_cache .pytest_cache .ruff_cache
