# cityops — the two commands: `make demo` and `make test`.
# Everything they need is installed here: the venv (PyPI), Kafka jars (Maven
# Central, via `cityops stack up`), Redis (Debian package, via `cityops stack up`).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DURATION ?= 0
RATE ?= 300
PYTEST_ARGS ?=

.PHONY: demo test unit integration typecheck stack-up stack-down stack-status venv clean bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 (apt-get install -y python3 python3-venv)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

stack-up: venv
	$(BIN)/cityops stack up

stack-down: venv
	$(BIN)/cityops stack down

stack-status: venv
	$(BIN)/cityops stack status

## make demo [DURATION=60] [RATE=300]: stack + worker + simulated city, alarms live.
## Ctrl-C (or the end of DURATION) stops the worker and the simulator, and the
## stack too when this demo started it. The INT trap is a handler, not an
## ignore, so the demo itself still receives Ctrl-C.
demo: venv
	@if $(BIN)/cityops stack status >/dev/null 2>&1; then started=0; else started=1; fi; \
	$(BIN)/cityops stack up || exit $$?; \
	trap 'true' INT; \
	$(BIN)/cityops demo --duration $(DURATION) --rate $(RATE); rc=$$?; \
	if [ $$started = 1 ]; then echo "stopping the stack this demo started"; $(BIN)/cityops stack down; fi; \
	exit $$rc

## make test: unit, contract and integration tests against real Kafka and Redis, plus mypy --strict.
test: stack-up
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)
	$(BIN)/mypy

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: stack-up
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

typecheck: venv
	$(BIN)/mypy

## make bench [BENCH_ARGS="--repeats 5"]: cityops side by side with bare aiokafka and
## confluent-kafka, a naive Faust agent and Quix Streams, on one backlog of both input
## shapes, then gas alarm latency under open-loop load (loadtest/bench_compare.py, under
## 15 min on 2 cores). Table on stdout, everything in .stack/bench/compare.json. Quix
## Streams 3.28.1 gets a venv of its own: it needs confluent-kafka<2.13 and pydantic<2.14.
BENCH_STAMP := $(VENV)/.bench-installed
QUIX_VENV := .stack/bench/quix-venv
QUIX_STAMP := $(QUIX_VENV)/.installed
BENCH_ARGS ?=

bench: stack-up $(BENCH_STAMP) $(QUIX_STAMP)
	$(BIN)/python loadtest/bench_compare.py --json .stack/bench/compare.json $(BENCH_ARGS)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[bench]'
	@touch $@

$(QUIX_STAMP): loadtest/peers/quix-requirements.txt
	rm -rf $(QUIX_VENV)
	$(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/pip install --quiet --upgrade pip
	$(QUIX_VENV)/bin/pip install --quiet -r loadtest/peers/quix-requirements.txt
	@touch $@

clean: stack-down
	rm -rf .stack $(VENV)
