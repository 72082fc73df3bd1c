# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint typecheck lock bench clean

$(STAMP): requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## Install, migrate the embedded SQLite default, seed demo data on an empty database, serve.
run: $(STAMP)
	$(BIN)/plumbline migrate
	$(BIN)/plumbline demo --if-empty
	$(BIN)/plumbline serve

## The whole suite: SQLite always, PostgreSQL too when PLUMBLINE_TEST_DATABASE_URL is set.
test: $(STAMP)
	$(BIN)/python -m pytest -n $${PYTEST_WORKERS:-auto} $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check app plumbline tests bench
	$(BIN)/ruff format --check app plumbline tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy app plumbline

## Regenerate the pinned lock files after editing pyproject.toml (needs uv: pip install uv).
lock:
	uv pip compile pyproject.toml -q --python-version 3.11 -o requirements.lock
	uv pip compile pyproject.toml -q --extra dev --python-version 3.11 -o requirements-dev.lock

clean:
	rm -rf $(VENV) data .pytest_cache
