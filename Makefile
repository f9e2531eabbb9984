# The two commands: `make demo` runs the system, `make test` runs the suite.
# Both install what they need first (tools/setup/all.sh) and are quick the
# second time.
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# `make test` runs the suite on two pytest-xdist workers: most of its time is
# components starting and tests waiting on them, not CPU. Each test file stays
# on one worker, the files that start daprd share one (tests/conftest.py).
TEST_WORKERS ?= 2

.PHONY: setup demo scale soak test test-long check lint typecheck unit integration bench clean

setup:
	@bash tools/setup/all.sh

demo: setup
	$(BIN)/citylake demo --config city.yaml

# The 100k-device run (issue 7): 95k MQTT sensors, 2k Modbus meters, 3k GB28181
# devices through the whole pipeline under query load for 10 minutes; writes
# plots, samples and index.html to SCALE_REPORT. Smaller: make scale SCALE_ARGS="--devices 3000 --minutes 2"
SCALE_REPORT ?= var/scale-report
SCALE_ARGS ?=
scale: setup
	$(BIN)/citylake scale run --config city.yaml --devices 100000 --minutes 10 --report $(SCALE_REPORT) $(SCALE_ARGS)

# The soak (issue 11): 5 days of a 10k-device site compressed into 20 minutes
# through `citylake run`; landing bound, exactly-once and memory/state samples;
# report in SOAK_REPORT. A short version runs in `make test`.
SOAK_REPORT ?= var/soak-report
SOAK_ARGS ?=
soak: setup
	$(BIN)/python bench/soak.py --report $(SOAK_REPORT) $(SOAK_ARGS)

test: setup check
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The full-length proofs whose short variants run in `make test` (tests marked
# `long`; README "Tests" says what each short variant keeps).
test-long: setup
	$(BIN)/pytest --long $(PYTEST_ARGS)

check: setup lint typecheck

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy citylake devstack/citylake_devstack tests bench

unit: setup
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: setup
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

bench: setup
	@bash tools/setup/bench.sh
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The sync's benches alone (issue 16): codecs per link; in network namespaces
# (root), >= 100 short outages, a day's backlog after a cut, a region down
# for 5 minutes while its edge writes. Not part of make test (~30 min).
.PHONY: bench-sync
bench-sync:
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/bench_sync_compression.py
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/bench_sync_outages.py --outages 100 --tiers 3
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/bench_sync_outages.py --scenario backlog --repeat 3
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/bench_sync_outages.py --scenario region-down --down-s 300 --repeat 2

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
