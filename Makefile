# Everything a user needs: `make bench` and `make test` set up their own virtualenv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < requirements.txt | cut -d' ' -f1)
# Extra arguments for bench.py run, e.g. make bench ARGS="--pairs deps --set block_ms=20"
ARGS ?=

.PHONY: bench bench-quick bench-sweep bench-soak report list test lint db-up db-down clean

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed: make PYTHON=/path/to/python3.11")'
	@echo "setting up $(VENV) with pinned dependencies (first run only)..."
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

bench: $(STAMP)  ## run the default scenario and write REPORT.md
	$(PY) bench.py run --scenario default $(ARGS)

bench-quick: $(STAMP)  ## every variant once, shorter
	$(PY) bench.py run --scenario quick $(ARGS)

bench-sweep: $(STAMP)  ## users sweep with knees for the pairs where concurrency decides
	$(PY) bench.py run --scenario sweep --pairs blocking,deps,pool --out results/$$(date +%Y%m%d-%H%M%S)-sweep $(ARGS)

bench-soak: $(STAMP)  ## a long load and a quiet recovery for the leak pairs
	$(PY) bench.py run --scenario quick --pairs sessions,orm_sessions,orm_async_sessions --soak 60 --out results/$$(date +%Y%m%d-%H%M%S)-soak $(ARGS)

report: $(STAMP)  ## re-render REPORT.md from the newest run (or RUN=results/<id>)
	$(PY) bench.py report $(RUN)

list: $(STAMP)
	$(PY) bench.py list

test: $(STAMP)  ## lint, then the test suite (starts its own PostgreSQL)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

# Optional: PostgreSQL in Docker instead of the embedded server.
db-up:
	docker compose up -d --wait
	@echo 'now: DATABASE_URL=postgresql://bench:bench@127.0.0.1:55432/bench make bench'

db-down:
	docker compose down -v

clean:
	rm -rf $(VENV) .bench .pytest_cache .ruff_cache
