# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo lint-imports test test-fast bench clean

install: $(STAMP)

# Re-runs only when a requirements file or pyproject.toml changes.
$(STAMP): requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml devtools/import_graph_layout.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -r requirements.txt
	$(PIP) install --quiet --no-deps -c constraints.txt -r requirements-nodeps.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PY) devtools/import_graph_layout.py
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	# headless Chromium for the audit report's rendering test (best effort: skipped where absent)
	-(command -v chromium || (apt-get update -qq && apt-get install -y -qq chromium)) >/dev/null 2>&1
	touch $(STAMP)

demo: install
	$(VENV)/bin/trustfl demo

# Import contracts (.importlinter), checked on the working tree. attacks/, defenses/ and audits/ live at the
# repository root (DESIGN.md "Layout"); devtools/import_graph_layout.py, run by a .pth line in the
# lint-imports process only, lets grimp see them as trustfl.attacks, trustfl.defenses, trustfl.audits.
lint-imports: install
	$(VENV)/bin/lint-imports

# tests/test_packaging.py is the dependency check (declared == imported, deptry-style).
test: install lint-imports
	$(PY) -m pytest -q -n 2 --durations=15 tests

# Integration tests with the real offline weights are included in `make test`;
# `make test-fast` skips them.
test-fast: install
	$(PY) -m pytest -q -n 2 -m "not integration" tests

bench: install
	$(PY) benchmarks/loop_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache
