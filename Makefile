# RLHF 201 — two commands: `make lab` (open the course) and `make test` (check all of it).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build by default: quick to install and enough for every chapter's cpu profile.
# On a GPU machine:  make lab TORCH_INSTALL="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_INSTALL ?= torch==2.13.0
# The library versions the course is tested with; the chapters' figures come from them.
# `make lab CONSTRAINTS=` takes the newest releases the pyproject ranges allow (Python 3.10 needs it).
CONSTRAINTS ?= constraints.txt
LAB_ARGS ?=
CELL_TIMEOUT ?= 900
STAMP := $(VENV)/.installed

.PHONY: lab test unit notebooks stages slides lint bench times gpu-check test-oldest exercises check-exercises clean-cache

$(STAMP): pyproject.toml constraints.txt Makefile
	@test -x $(BIN)/python || (command -v $(PYTHON) >/dev/null && $(PYTHON) -m venv $(VENV)) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_INSTALL)
	$(BIN)/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS),) -e ".[dev]"
	@touch $(STAMP)

# JupyterLab refuses to run as root unless told; containers often run as root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

# the stage tests last: they run `python -m rlhf_mini STAGE` on the models the chapters have trained
test: $(STAMP) unit notebooks stages

unit: $(STAMP)
	$(BIN)/python -m pytest -q --durations=10 -m "not stage" tests

notebooks: $(STAMP)
	$(BIN)/python -m pytest -q --durations=10 --nbval-lax --nbval-current-env --nbval-cell-timeout=$(CELL_TIMEOUT) \
		--nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider notebooks

# Each stage of the command line end to end, on the cpu profile's real models: after the notebooks
# these are in the shared cache; run alone, a stage trains what is missing (several minutes).
stages: $(STAMP)
	$(BIN)/python -m pytest -q --durations=10 -m stage tests

# The unit tests at the lowest library versions pyproject.toml allows (constraints-oldest.txt), in
# a separate venv, so the declared ranges stay true. The CLI, JupyterLab, slide and browser tests
# exercise the notebook tools, not these libraries, and are left to `make unit` and `make stages`.
OLDEST_VENV ?= .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.installed

$(OLDEST_STAMP): pyproject.toml constraints-oldest.txt Makefile
	@test -x $(OLDEST_VENV)/bin/python || (command -v $(PYTHON) >/dev/null && $(PYTHON) -m venv $(OLDEST_VENV)) || python3 -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install -q $(TORCH_INSTALL)
	$(OLDEST_VENV)/bin/python -m pip install -q -c constraints-oldest.txt -e ".[dev]"
	@touch $(OLDEST_STAMP)

# Its own model cache: artifacts trained under other library versions are other artifacts.
test-oldest: export RLHF_MINI_CACHE = $(abspath $(OLDEST_VENV))/cache
test-oldest: $(OLDEST_STAMP)
	$(OLDEST_VENV)/bin/python -c "import transformers, tokenizers, datasets, torch; \
		print('oldest:', *(f'{m.__name__} {m.__version__}' for m in (torch, transformers, tokenizers, datasets)))"
	$(OLDEST_VENV)/bin/python -m pytest -q -p no:cacheprovider tests \
		--ignore=tests/test_cli.py --ignore=tests/test_lab.py --ignore=tests/test_slides.py \
		--ignore=tests/browser

# Student copies of the chapters in exercises/ (solutions removed), and their grading.
exercises: $(STAMP)
	$(BIN)/python -m rlhf_mini.exercises make notebooks exercises

check-exercises: $(STAMP)
	$(BIN)/python -m rlhf_mini.exercises check exercises/*.ipynb

lint: $(STAMP)
	$(BIN)/ruff check rlhf_mini tests benchmarks notebooks

# Every chapter's deck and every lecture's (slides/lecture01.html …); SLIDES_ARGS=--no-execute for
# decks without outputs, in seconds.
SLIDES_ARGS ?=
slides: $(STAMP)
	$(BIN)/python -m rlhf_mini.slides --out slides $(SLIDES_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/kernels.py
	$(BIN)/python benchmarks/training.py

# Seconds per chapter, each in a fresh kernel with an empty model cache (budget: 3 minutes each).
# `make times CHAPTERS="02 05"` for a subset.
CHAPTERS ?=
times: $(STAMP)
	$(BIN)/python benchmarks/course_times.py $(if $(CHAPTERS),--chapters $(CHAPTERS),)

gpu-check: $(STAMP)
	PYTHON=$(BIN)/python bash benchmarks/gpu_check.sh

clean-cache:
	rm -rf $${RLHF_MINI_CACHE:-$$HOME/.cache/rlhf_mini}
