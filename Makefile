# ai-broker: `make demo` runs everything locally; `make test` runs the whole suite.
# Both create .venv and install on a fresh machine; nothing needs to be installed by hand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-n8n n8n lint format bench chromium clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ai-broker demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app tasks console
	$(BIN)/lint-imports

# The console's browser test drives Debian's chromium (Playwright cannot download browsers here).
chromium:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

# Three workers for the tests that start no system of their own, and for the end-to-end test that
# mostly waits on retry back-off (long_wait); the other end-to-end tests, which hold timing
# targets, run alone after them.
test: lint chromium
	$(BIN)/pytest -q -p no:cacheprovider --durations=15 -n 3 -m "(not e2e or long_wait) and not real_n8n"
	$(BIN)/pytest -q -p no:cacheprovider --durations=15 -m "e2e and not long_wait and not real_n8n"

# The pinned real n8n (and the Node it needs) from npm, into a cache outside the repository.
n8n:
	tests/real_n8n/install-n8n

# The migration against the real n8n; `.ci/run` runs it after `make test`.
test-n8n: $(STAMP) n8n
	$(BIN)/pytest -q -p no:cacheprovider -m real_n8n tests/real_n8n

bench: $(STAMP) chromium
	$(BIN)/python bench/pipeline_bench.py
	$(BIN)/python bench/routing_bench.py
	$(BIN)/python bench/receiver_bench.py
	$(BIN)/python bench/console_bench.py --browser

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .ai-broker .pytest_cache .ruff_cache .mypy_cache
