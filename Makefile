# The documented way to do everything. `make run` and `make test` work on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: run test lint format venv migrate demo worker clean bench

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

## Embedded mode: SQLite, in-process channel layer, no Redis; demo user demo/demo.
run: $(STAMP)
	./scripts/ensure-packages.sh
	mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	@echo "ReproLab on http://127.0.0.1:$(PORT)  (log in as demo / demo)"
	$(BIN)/python manage.py run_embedded --port $(PORT)

## The whole suite: PostgreSQL and Redis when reachable (required under CI=true), a real
## Celery worker, a real ASGI server and Debian's Chromium.
test: $(STAMP)
	./scripts/ensure-packages.sh
	./scripts/run-tests.sh $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

worker: $(STAMP)
	$(BIN)/celery -A config worker --loglevel=INFO

bench: $(STAMP)
	$(BIN)/python bench/render_bench.py
	$(BIN)/python bench/hash_bench.py
	$(BIN)/python bench/array_bench.py
	$(BIN)/python bench/kernel_bench.py 2>/dev/null
	$(BIN)/python bench/execution_bench.py 2>/dev/null
	$(BIN)/python bench/environment_bench.py
	$(BIN)/python bench/grading_bench.py 2>/dev/null

clean:
	rm -rf var/test-media var/test-db.sqlite3 .pytest_cache .mypy_cache .ruff_cache
