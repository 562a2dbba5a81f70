# Every target creates and uses the local virtual environment .venv: nothing is installed by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# nbgrader shells out to `alembic`, jupyter-book to `jupyter`: the venv's bin/ must be on PATH.
export PATH := $(BIN):$(PATH)
MATHJAX := _static/mathjax/tex-chtml.js

.PHONY: help install book pdf texlive test test-fast lint lab exercises grade postgres sandbox bench chromium clean

help:
	@echo "make book       build the HTML book into _build/html (warnings are errors)"
	@echo "make pdf        build the whole book as one PDF, _build/latex/book.pdf (installs texlive from Debian)"
	@echo "make test       install everything and run the whole test-suite"
	@echo "make test-fast  the library lanes only (no browser, nbgrader or slow tests), under a minute"
	@echo "make lab        copy the exercises to my-work/ and open JupyterLab there (learners)"
	@echo "make exercises  regenerate exercises/ from solutions/ with nbgrader (instructors)"
	@echo "make grade A=03_lstm_gates [WORKERS=N]  autograde a class in parallel (instructors)"
	@echo "make bench      print the speed ratios of bench/ (LSTM speed, autograde time)"
	@echo "make lint       ruff"

# pyproject.toml declares ranges; constraints.txt holds the course's exact versions (torch 2.13.0 CPU, ...).
# rfc3987-syntax (with lark) comes with jupyter-events' jsonschema[format-nongpl]: jsonschema imports it to check
# the "iri" formats, and it compiles 38 grammars doing so, 1.1 s in every process that reads a notebook (each
# nbgrader run, the book's build, the tests). No schema the course meets uses those formats, and without the
# package jsonschema leaves them unchecked: the course's environment goes without it.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[course]'
	$(BIN)/python -m pip uninstall --quiet --yes rfc3987-syntax lark
	touch $@

install: $(VENV)/.installed

# MathJax 3 from the npm registry, copied into a git-ignored static folder: the book typesets offline.
$(MATHJAX):
	mkdir -p .build/mathjax _static
	npm install --silent --no-audit --no-fund --prefix .build/mathjax mathjax@3
	rm -rf _static/mathjax && cp -r .build/mathjax/node_modules/mathjax/es5 _static/mathjax

# OMP_NUM_THREADS=1: the book's models are small; torch's default 2 threads run them 15x slower on 2 cores
# as soon as another process is busy (issue 11). The pages also call torch.set_num_threads(1).
book: install $(MATHJAX)
	OMP_NUM_THREADS=1 $(BIN)/jupyter-book build . --warningiserror --keep-going

# The PDF: Jupyter Book's pdflatex builder (Sphinx LaTeX) typeset by XeLaTeX (Unicode text: σ, ⊙, →),
# all from Debian packages, offline.
TEXLIVE := texlive-xetex texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended \
	latexmk fonts-freefont-otf poppler-utils
texlive:
	@command -v latexmk >/dev/null && command -v pdftotext >/dev/null || \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	$(TEXLIVE) >/dev/null; }

pdf: install $(MATHJAX) texlive
	OMP_NUM_THREADS=1 $(BIN)/jupyter-book build . --builder pdflatex

# Debian's Chromium for the real-browser test (Playwright cannot download browsers here).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

lint: install
	$(BIN)/ruff check rnnlib grader tests bench

# Debian's bubblewrap: autograde runs every submission in a bubblewrap sandbox (grader/sandbox.py).
sandbox:
	@command -v bwrap >/dev/null || { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; }

test: install chromium postgres sandbox texlive book lint
	$(BIN)/python -m pytest

# The library lanes: rnnlib's tests without the browser, nbgrader or slow ones, one thread, under 60 s.
FAST_TESTS := tests/test_torch_parity.py tests/test_torch_errors.py tests/test_torch_upstream.py \
	tests/test_numpy.py tests/test_tasks.py tests/test_vanishing.py tests/test_checks.py tests/test_charlm.py \
	tests/test_channel.py
test-fast: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not browser and not nbgrader and not slow" $(FAST_TESTS)

exercises: install
	for a in solutions/*/; do $(BIN)/nbgrader generate_assignment "$$(basename $$a)" --force || exit 1; done

# Learners work on a private copy (my-work/, git-ignored): pulling course updates never clobbers their answers,
# and a notebook already there is never overwritten.
# WORK and LAB_ARGS exist for the test of this target (tests/test_lab.py): `make lab WORK=/tmp/w LAB_ARGS=--no-browser`.
WORK ?= my-work
LAB_ARGS ?=
# The learner's Jupyter configuration (jupyter-learner/): the Validate button without nbgrader's instructor
# tools (formgrader, course and assignment lists); JupyterLab's settings and workspaces live in $(WORK).
lab: install
	mkdir -p $(WORK) && cp -rn exercises/. $(WORK)/
	JUPYTER_CONFIG_DIR=$(CURDIR)/jupyter-learner JUPYTERLAB_SETTINGS_DIR=$(abspath $(WORK))/.jupyterlab/settings \
	JUPYTERLAB_WORKSPACES_DIR=$(abspath $(WORK))/.jupyterlab/workspaces $(BIN)/jupyter lab $(WORK)/ $(LAB_ARGS)

# Parallel autograde (grader/parallel.py): WORKERS local workers, or GRADE_ARGS="--scheduler tcp://HOST:8786
# --db postgresql+psycopg2://USER@HOST/DB" for a Dask cluster (book/instructors.md, "Grading a class in parallel").
WORKERS ?= $(shell nproc)
GRADE_ARGS ?=
grade: install
	@test -n "$(A)" || { echo "usage: make grade A=<assignment> [WORKERS=N] [GRADE_ARGS=...]"; exit 2; }
	$(BIN)/python -m grader grade $(A) --workers $(WORKERS) $(GRADE_ARGS)

# Debian's PostgreSQL server, for the test of grading on a Dask cluster with a PostgreSQL gradebook.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

bench: install
	$(BIN)/python bench/lstm_speed.py
	$(BIN)/python bench/autograde_time.py

clean:
	rm -rf _build .build _static/mathjax
