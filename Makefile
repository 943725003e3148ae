# The study's two commands: `make book` (quick profile + the rendered book) and `make test`.
# Both create the virtual environment .venv on first use (pip, pinned versions).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cpt-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip's mirror notices are noise; pip's own exit status still decides (pipefail).
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

# The local single-node Slurm (tests/test_slurm.py; root only), stopped when the tests end.
SLURM_UP := if [ "$$(id -u)" = 0 ]; then trap 'scripts/slurm_local.sh stop' EXIT; \
  scripts/slurm_local.sh start; else echo "not root: no local Slurm, its tests skip"; fi

.PHONY: book test env lint smoke-book clean

book: $(STAMP)
	$(BIN)/cpt book --profile quick

test: $(STAMP)
	bash scripts/system_deps.sh
	$(BIN)/cpt book --profile smoke --out build/book-smoke
	$(SLURM_UP) && SLURM_CONF=$(CURDIR)/build/slurm/etc/slurm.conf \
	  $(BIN)/python -m pytest tests --nbval-lax notebooks -p no:cacheprovider

env: $(STAMP)

# pip reuses what is installed; the stamp makes a second `make` skip pip entirely.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import cptlib, torch, torchvision, timm, open_clip, peft, papermill"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check cptlib tests data_scripts scripts

clean:
	rm -rf book/_build book/runs build results/smoke
