# One entry point for set-up, code generation, checks and the cell itself.
# `make run` runs the cell; `make test` runs every check and the test suite.
# Both install what they need (a venv under .venv, buf under node_modules).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUF := node_modules/.bin/buf
STAMP := $(VENV)/.installed

.PHONY: run test check lint gen check-gen breaking pytest postgres promtool rules deps clean bench soak

run: $(STAMP)
	$(BIN)/workcell run $(ARGS)

test: check

check: lint check-gen breaking pytest

deps: $(STAMP) $(BUF)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[dev]'
	touch $@

$(BUF): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

# Regenerate the Python code under workcell/v1/ from protos/ (commit the result).
gen: deps
	$(BUF) generate

# Fails when the contracts break generated clients of the previous commit
# (field renumbered, type changed, message or RPC removed, ...).
breaking: deps
	@if git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null; then \
		$(BUF) breaking --against '.git#ref=HEAD~1' && echo "buf breaking: no breaking change since HEAD~1"; \
	else echo "buf breaking: no previous commit to compare with"; fi

# Fails when workcell/v1/ differs from what `make gen` would write.
check-gen: deps
	rm -rf build/gen && mkdir -p build/gen
	$(BUF) generate -o build/gen
	diff -r --exclude=__pycache__ --exclude=__init__.py --exclude='*.typed' build/gen/workcell/v1 workcell/v1 \
		|| { echo "workcell/v1 is stale: run 'make gen' and commit"; exit 1; }

lint: deps
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BUF) lint
	$(BUF) format --diff --exit-code

# The storage, fault and end-to-end tests also run against a throwaway
# PostgreSQL server they start from /usr/lib/postgresql/*/bin (issue 5).
postgres:
	scripts/ensure_postgres.sh

# promtool checks the Prometheus scrape config and alert rules under
# deploy/prometheus/ and runs their unit tests (tests/test_alerts.py; issue 13).
promtool:
	scripts/ensure_promtool.sh

# The same checks as tests/test_alerts.py, straight from promtool.
rules: promtool
	cd deploy/prometheus && promtool check config prometheus.yml \
		&& promtool check rules alerts.yml && promtool test rules tests/*.yml

# Most tests wait on processes, sockets and periods more than they compute: they
# run on PYTEST_WORKERS parallel workers; the files marked serial (timing bounds,
# heavy load: tests/conftest.py) run afterwards, one test at a time.
PYTEST_WORKERS ?= 3
pytest: deps postgres promtool
	$(BIN)/pytest -n $(PYTEST_WORKERS) -m "not serial" $(PYTEST_ARGS)
	$(BIN)/pytest -m serial $(PYTEST_ARGS)

# The performance harness (issue 4): `make bench ARGS="--quick"`; see benchmarks/README.md.
bench: deps
	$(BIN)/pip install --quiet --config-settings editable_mode=compat -e '.[bench]'
	$(BIN)/python -m benchmarks $(ARGS)

# The soak of issue 3 (10 minutes by default): make soak ARGS="--duration 2m --json soak.json"
soak: deps
	$(BIN)/python scripts/soak.py $(ARGS)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
