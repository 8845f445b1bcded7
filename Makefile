# The two set-up commands (see README): `make demo` runs the main job on the embedded
# default; `make test` runs the whole suite with real etcd, memcached and Redis servers.
# Each creates its own virtualenv and installs what it needs (system packages via apt-get
# when missing: run as root, or have sudo).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := etcd-server memcached redis-server graphviz openssl

.PHONY: demo test chaos lint typecheck docs services graphviz bench clean

demo: $(VENV)/.installed graphviz
	$(BIN)/dal demo

# the suite in two parts: most tests on 4 workers (pytest-xdist: they wait on servers and
# processes more than they compute), then one at a time the fault suite, the multi-process stress
# tests and the tests marked serial, whose timing bounds and printed figures need the machine
TEST_ALONE = faults or slow or serial
# (both parts run, whatever the first gives; the target fails if either did)
test: $(VENV)/.installed services lint typecheck docs
	$(BIN)/pytest -n 4 -m "not ($(TEST_ALONE))"; parallel=$$?; \
	$(BIN)/pytest -m "$(TEST_ALONE)"; alone=$$?; \
	test $$parallel -eq 0 && test $$alone -eq 0

# the fault suite in its long mode (make test runs it in its quick mode)
chaos: $(VENV)/.installed services
	DAL_CHAOS=1 DAL_REQUIRE_SERVICES=1 $(BIN)/pytest tests/faults -m faults

lint: $(VENV)/.installed
	$(BIN)/ruff check dal tests bench
	$(BIN)/lint-imports

# the manual (docs/) as a site; --strict turns a broken link or reference into a failure
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

typecheck: $(VENV)/.installed
	$(BIN)/mypy

bench: $(VENV)/.installed services
	$(BIN)/python -m bench

services:
	@if ! command -v etcd >/dev/null || ! command -v memcached >/dev/null || \
		! command -v redis-server >/dev/null || ! command -v dot >/dev/null || \
		! command -v openssl >/dev/null; then \
		echo "installing $(APT_PACKAGES)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

# the demo draws erd.svg with Graphviz's `dot` (it still finishes without, with a note)
graphviz:
	@if ! command -v dot >/dev/null; then \
		echo "installing graphviz"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends graphviz || \
		echo "could not install graphviz: the demo will skip erd.svg"; \
	fi

$(VENV)/.installed: pyproject.toml setup.py
	@$(PYTHON) -m venv $(VENV) || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis site dal.sqlite3*
