# Two commands work on a fresh machine with Python 3.11 and make: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint readme bench instructions loadtest testssl clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH (or make PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-load: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[load]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/inference-router demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check router tests loadtests
	$(BIN)/mypy

# The README's settings table, made again from router/settings.py: run it after adding or changing a setting
# (tests/test_cli_help.py fails while the table and the definitions disagree).
readme: $(VENV)/.installed
	$(BIN)/python -m router.settings --readme README.md

# pytest exits 5 when it collected no test: that is a failure here, as every non-zero code is.
test: lint
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python loadtests/bench.py

# CPU instructions per request under valgrind: the noise-free figure for comparing changes
instructions: $(VENV)/.installed
	$(BIN)/python loadtests/instructions.py

# locust against the demo setup, about a minute: HTML report, CSVs and concurrency.png in loadtests/out/
loadtest: $(VENV)/.installed-load
	$(BIN)/python loadtests/loadtest.py

# testssl.sh against the TLS port (installs it with apt-get when missing): TLS 1.2+ and strong ciphers only.
testssl: $(VENV)/.installed
	$(BIN)/python loadtests/testssl.py

clean:
	rm -rf $(VENV) build *.egg-info
