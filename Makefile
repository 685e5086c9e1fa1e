# Two commands for a new user: `make run` (the whole system, embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint typecheck check clean images images-offline up up-offline down

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

## Start Redis and 2 balancer instances (:5555, :5556) sharing 3 replica processes.
## Balancer flags go after "--": make run ARGS="-- --replicas 5".
run: $(STAMP)
	$(BIN)/lb-cluster $(ARGS)

## The full test suite (unit, API, integration with real processes), then lint and types.
test: $(STAMP)
	$(BIN)/pytest $(ARGS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## This balancer next to HAProxy and nginx (throughput, CPU, p99), then latency at a fixed load.
## Needs ../shared/bench (BENCH_HARNESS=...), installs wrk/haproxy/nginx with apt if missing.
bench: $(STAMP)
	bench/run.sh
	bench/latency.sh

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## The Docker deployment (docker-compose.yml): Redis, balancers on :5555/:5556, replica containers.
## `make up` pulls python:3.11-slim and redis:7; `make up-offline` needs no registry or index
## (debootstrap base from this machine's apt mirror + a local wheelhouse; starts dockerd if needed).
images:
	infra/docker/build-images.sh

images-offline:
	OFFLINE=1 infra/docker/build-images.sh

up:
	infra/docker/ensure-token.sh
	docker-compose up -d --build

up-offline:
	infra/docker/up-offline.sh

## Stops the balancers (the last one out stops the replica containers it started), Redis, net1.
down:
	LB_ADMIN_TOKEN=$${LB_ADMIN_TOKEN-unused} docker-compose down --remove-orphans

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
