# Two-command quickstart: `make repro` (set up + run the pipeline), `make test` (set up + tests).
# Setup is venv + pip from pyproject.toml (single source of dependencies, exact pins).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup sandbox-deps test repro bench bench-gpu profile clean-smoke

setup: $(STAMP) sandbox-deps

# Reinstall whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev]"
	-git rev-parse --git-dir >/dev/null 2>&1 && \
	  git config filter.nbstripout.clean "$(CURDIR)/$(BIN)/nbstripout" && \
	  git config filter.nbstripout.smudge cat && \
	  git config diff.ipynb.textconv "$(CURDIR)/$(BIN)/nbstripout -t"
	touch $(STAMP)

# bubblewrap isolates model-written code (see src/sml/sandbox/__init__.py). Installed when we can (root + apt);
# otherwise the sandbox falls back to a weaker mode and warns loudly.
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) >/dev/null \
	      || echo "WARNING: could not install bubblewrap; the code sandbox will run in its weak mode"; \
	  else echo "WARNING: bubblewrap (bwrap) missing: install it (e.g. sudo apt-get install bubblewrap)" \
	            "or the code sandbox runs in its weak mode"; fi; }

test: setup
	$(BIN)/python -m pytest -q

# params.yaml is checked as a whole first (each stage also checks its own parameters before any work).
# Stale stages run as `dvc repro` would, but independent ones side by side, one core each
# (scripts/repro_parallel.py; JOBS=1 runs one at a time). `dvc repro` gives the same outputs, one stage at a time.
JOBS ?= $(shell nproc)
repro: setup
	PYTHONPATH=src $(BIN)/python -m sml.settings params.yaml
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHONPATH=src $(BIN)/python scripts/repro_parallel.py --jobs $(JOBS)

# Engine throughput vs raw batched generate and vs one dialogue at a time, and GRPO s/step vs TRL's single-turn
# GRPOTrainer -> metrics/bench.json.
# Needs the base student (the `base_student` stage runs first if it is not up to date).
bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro base_student
	PYTHONPATH=src $(BIN)/python -m benchmarks.bench --out metrics/bench.json

# On a GPU machine: the engine vs raw generate and GRPO s/step for Qwen2.5-0.5B/1.5B-shaped random models.
bench-gpu: setup
	PYTHONPATH=src $(BIN)/python -m benchmarks.bench_gpu --out metrics/bench_gpu.json

# Switch params.yaml to a profile (profiles/*.yaml), e.g. `make profile PROFILE=qwen2.5-7b`; `git checkout params.yaml` switches back.
profile: setup
	PYTHONPATH=src $(BIN)/python -m sml.profiles $(PROFILE) --write

clean-smoke:
	rm -rf runs/smoke
