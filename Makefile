# Two commands do all set-up on a fresh machine with only Python: `make demo` and `make test`.
# Both create (or refresh, when pyproject.toml or constraints.txt change) the local virtual environment .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# torch's idle CPU threads sleep rather than spin: on a busy 2-core machine spinning threads starve the one doing the
# work (the backends tests: about 9 minutes spinning, 50 s sleeping). `guardrail` itself sets this too (cli/__init__).
export OMP_WAIT_POLICY ?= PASSIVE
# Material for MkDocs prints a banner about MkDocs 2.0 on every build; the pins in constraints.txt hold.
export NO_MKDOCS_2_WARNING := 1

.PHONY: install browser postgres vllm-env demo test test-slow test-vllm lint typecheck check docs bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch first, pinned by constraints.txt: never a multi-GB CUDA build.
	$(BIN)/python -m pip install -q -c constraints.txt torch
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,docs]'
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium and its driver for the browser tests (the review page, the calibration report): the Debian
# packages, installed with apt-get as root or with passwordless sudo; nothing is done when both are present. Where
# apt-get cannot be used this says why and the browser tests skip, except under GUARDRAIL_REQUIRE_BROWSER=1 (CI),
# where they fail.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
	  echo "browser: $$(chromium --version 2>/dev/null | head -n 1) and its driver are installed"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: no apt-get here; install chromium and chromedriver yourself, or the browser tests skip"; \
	elif [ "$$(id -u)" != 0 ] && ! sudo -n true >/dev/null 2>&1; then \
	  echo "browser: apt-get needs root or passwordless sudo; run 'sudo apt-get install chromium chromium-driver'," \
	    "or the browser tests skip"; \
	else \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
	  echo "browser: installing chromium and chromium-driver with apt-get"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	fi

# PostgreSQL's server binaries for the escalation tests on a real server: the Debian package, installed with apt-get
# as root or with passwordless sudo; nothing is done when initdb and postgres are present (on PATH or in Debian's
# /usr/lib/postgresql/N/bin). The tests make a throwaway cluster of their own with initdb and stop it afterwards;
# nothing is configured system-wide. Where apt-get cannot be used this says why and those tests skip, except under
# GUARDRAIL_REQUIRE_POSTGRES=1 (CI), where they fail.
postgres:
	@BIN=$$(dirname "$$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)"); \
	if [ -x "$$BIN/initdb" ] && [ -x "$$BIN/postgres" ]; then \
	  echo "postgres: $$("$$BIN/postgres" --version) is installed ($$BIN)"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "postgres: no apt-get here; install PostgreSQL's server (initdb, postgres) yourself, or those tests skip"; \
	elif [ "$$(id -u)" != 0 ] && ! sudo -n true >/dev/null 2>&1; then \
	  echo "postgres: apt-get needs root or passwordless sudo; run 'sudo apt-get install postgresql'," \
	    "or the PostgreSQL tests skip"; \
	else \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
	  echo "postgres: installing postgresql with apt-get"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql; \
	fi

# --force: a new run replaces the previous one's guardrail-demo/ (the command refuses a folder that holds files).
demo: install
	$(BIN)/guardrail demo --force

lint: install
	$(BIN)/ruff check guardrail tests bench examples docs
	$(BIN)/ruff format --check guardrail tests bench examples docs
	$(BIN)/lint-imports  # the layers of ARCHITECTURE.md, as contracts in pyproject.toml

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -m "not slow and not vllm"

test-slow: install browser postgres
	$(BIN)/python -m pytest -m "slow and not vllm"

# vLLM's CPU build in an environment of its own, .vllm-venv (VLLM_VENV=DIR elsewhere): never the project's .venv,
# whose pins it would break. scripts/vllm_env.sh says why each of its workarounds is needed. About 3.5 GB.
vllm-env:
	VLLM_VENV=$${VLLM_VENV:-.vllm-venv} PYTHON=$(PYTHON) scripts/vllm_env.sh

# The tests on a real vLLM server serving the reference model (tests/backends/test_vllm_*.py): each module starts
# its own server on 127.0.0.1 from that environment and stops every process of it, also on failure. Two servers
# start (about 100 s each on two cores, 3.3 GB resident each, one at a time); the whole run takes 6-10 minutes.
test-vllm: install vllm-env
	GUARDRAIL_REQUIRE_VLLM=1 GUARDRAIL_VLLM_VENV=$${VLLM_VENV:-.vllm-venv} $(BIN)/python -m pytest -m vllm

check: test test-slow

# The documentation site (mkdocs.yml, docs/) with warnings as errors: a broken link or anchor, a page left out of
# the navigation, a docstring the API reference cannot render. Output in site/ (git-ignored).
docs: install
	$(BIN)/mkdocs build --strict --site-dir site

# Every CPU benchmark quoted in the README (several minutes), on one thread as their results were measured;
# results go to bench/results/, each with the commit and command that produced it.
bench: install
	OMP_NUM_THREADS=1 $(BIN)/python bench/policy_overhead.py
	OMP_NUM_THREADS=1 $(BIN)/python bench/telemetry_overhead.py
	OMP_NUM_THREADS=1 $(BIN)/python bench/reference_quality.py --n-clean 1000 --n-corrupt 100 --n-kl 200 --n-latency 50
	OMP_NUM_THREADS=1 $(BIN)/python bench/confidence_evidence.py --n 1500 --black 150
	OMP_NUM_THREADS=1 $(BIN)/python bench/confidence_cost.py
	OMP_NUM_THREADS=1 $(BIN)/python bench/batch_throughput.py --items 64 --rounds 2 --sizes 1 4 16
	OMP_NUM_THREADS=1 $(BIN)/python bench/decoupling.py --n 600
	OMP_NUM_THREADS=1 $(BIN)/python bench/calibration_synthetic.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis site
