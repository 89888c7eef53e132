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
$(STAMP): requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -r requirements.txt
	$(PIP) install --quiet --no-deps -c constraints.txt -r requirements-nodeps.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	# headless Chromium for the audit report's rendering test (best effort: skipped where absent)
	-(command -v chromium || (apt-get update -qq && apt-get install -y -qq chromium)) >/dev/null 2>&1
	touch $(STAMP)

demo: install
	$(VENV)/bin/trustfl demo

# Import contracts (.importlinter). They are checked on an installed copy of the package: in the
# editable install attacks/, defenses/ and audits/ live at the repository root (mapped to trustfl.* by
# pyproject's package-dir), where lint-imports (grimp walks the package folder) would not see them as
# trustfl.attacks, trustfl.defenses, trustfl.audits. The copy is a build artefact under build/, never in trustfl/.
LINT_COPY := build/lint-imports
lint-imports: install
	rm -rf $(LINT_COPY)
	$(PIP) install --quiet --no-index --no-deps --no-build-isolation --no-compile --target $(LINT_COPY) .
	cd $(LINT_COPY) && $(CURDIR)/$(VENV)/bin/lint-imports --no-cache --config $(CURDIR)/.importlinter

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
