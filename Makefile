# Two commands on a fresh machine:  `make run` (the main job)  and  `make test` (the tests).
# Both create .venv and install the project into it first.
PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: install run test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU wheel first: an unpinned torch would pull a multi-gigabyte CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[all]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/linmultistep study --out $(OUT)/study
	$(BIN)/linmultistep reproduce --quick --out $(OUT)/reproduce
	$(BIN)/linmultistep reproduce --model mnist-sd --quick --out $(OUT)/reproduce-mnist-sd

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
