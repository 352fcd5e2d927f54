# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each first bootstraps .venv idempotently: the stamp file is remade only when
# pyproject.toml changes, and pip installs only what is missing.
PY       ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.diffparts-installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(CURDIR)/.prefect
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DO_NOT_TRACK := 1
# The temporary API server can take over 20 s to start on a loaded 2-core machine.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180

.PHONY: demo test test-slow bench venv clean

# `make demo ARGS=--fresh` passes options to the demo (python -m flows.demo --help).

venv: $(STAMP)

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch is pinned to the local CPU wheel first so that no later requirement
# pulls the CUDA build; fastapi<0.151 lets Prefect's server start. pip's output (and
# setuptools' editable-install banner) goes to .venv/install.log, shown only if a step fails.
LOG      := $(VENV)/install.log
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "setting up $(VENV) (a few minutes, once; log: $(LOG))"
	@: > $(LOG)
	@$(BIN)/python -m pip install -q --upgrade pip >>$(LOG) 2>&1 || { cat $(LOG); exit 1; }
	@$(BIN)/python -m pip install -q torch==2.13.0 >>$(LOG) 2>&1 || { cat $(LOG); exit 1; }
	@$(BIN)/python -m pip install -q -e '.[dev]' >>$(LOG) 2>&1 || { cat $(LOG); exit 1; }
	@touch $@
	@echo "installed: $(BIN)/diffparts, $(BIN)/prefect"

# What the README's commands need: the commands of .venv on PATH.
ACTIVATE = @echo; echo "diffparts and prefect are in $(BIN)/: run 'source $(BIN)/activate' to type them as the README does"

demo: $(STAMP)
	$(BIN)/python -m flows.demo $(ARGS)
	$(ACTIVATE)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f; done

clean:
	rm -rf $(VENV) .prefect build src/*.egg-info
