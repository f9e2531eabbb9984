# The two commands: `make demo` runs the system, `make test` runs the suite.
# Both install what they need first (tools/setup/all.sh) and are quick the
# second time.
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test check lint typecheck unit integration bench clean

setup:
	@bash tools/setup/all.sh

demo: setup
	$(BIN)/citylake demo --config city.yaml

test: setup check
	$(BIN)/pytest $(PYTEST_ARGS)

check: setup lint typecheck

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy citylake tests bench

unit: setup
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: setup
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
