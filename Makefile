# PHIseal — one Makefile, few targets. `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROTOS := $(shell find protos -name '*.proto' | sort)
STAMP := $(VENV)/.installed

.PHONY: help install browser proto clean-proto fmt lint test check run demo bench buf-lint buf-breaking k8s-check clean

help:
	@echo "make run    start PostgreSQL (private unless DATABASE_URL is set), the four services and the console"
	@echo "make test   install what is needed and run the whole test suite"
	@echo "make demo   the whole story against the running stack (make run in another terminal)"
	@echo "make check  lint (ruff, buf) + mypy --strict + tests"
	@echo "make proto  regenerate Python code and mypy stubs into gen/"
	@echo "make bench  run the benchmarks (prints ratios against in-run baselines)"

# The venv is rebuilt when pyproject.toml changes. Code generation needs grpcio-tools, which the
# first install brings; the second (no-deps) install then maps the generated `phiseal` package.
# encryptsvc's C sealer (services/encryptsvc/_fastseal.c, gcc and OpenSSL's headers) and the C
# walk over events (services/common/_fastwalk.c, gcc): as root with apt-get they are installed
# when missing; without them the build skips the extensions and the Python code they mirror runs
# (tests/encryptsvc/test_native_sealing.py and test_selection.py then fail, on purpose).
$(STAMP): pyproject.toml $(PROTOS) services/encryptsvc/_fastseal.c services/common/_fastwalk.c
	@{ test -f /usr/include/openssl/evp.h && command -v gcc >/dev/null; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libssl-dev >/dev/null; } \
	      || echo "apt-get could not install gcc/libssl-dev: encryptsvc will seal in Python"; \
	  else echo "no gcc or OpenSSL headers (not root, or no apt-get): encryptsvc will seal in Python"; fi; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(MAKE) --no-print-directory proto
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

install: $(STAMP) browser

# The console's browser tests drive Debian's chromium through Playwright (never a browser
# download of Playwright's own). Installed here when we may (root with apt-get); otherwise
# those tests skip and say so.
browser:
	@command -v chromium >/dev/null || command -v "$$PHISEAL_CHROMIUM" >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium for the console's browser tests"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	      || echo "apt-get could not install chromium: the console's browser tests will skip"; \
	  else echo "chromium not found (not root, or no apt-get): the console's browser tests will skip"; fi; }

proto: clean-proto
	@mkdir -p gen
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m grpc_tools.protoc -Iprotos \
	  --python_out=gen --grpc_python_out=gen \
	  --mypy_out=gen --mypy_grpc_out=only_async:gen \
	  $(PROTOS)
	@# protoc writes no __init__.py; every generated directory is a package.
	@find gen/phiseal -type d -exec touch {}/__init__.py \;
	@touch gen/phiseal/py.typed

clean-proto:
	rm -rf gen

fmt: $(STAMP)
	$(VENV)/bin/ruff format services tests benchmarks phiseal_decrypt phiseal_dev
	$(VENV)/bin/ruff check --fix services tests benchmarks phiseal_decrypt phiseal_dev

BUF := npx --yes @bufbuild/buf@1.75.0

buf-lint:
	@if command -v npx >/dev/null; then $(BUF) lint protos; else echo "buf lint skipped: npx not found"; fi

# The contracts stay compatible with the last release: contracts/released-v1.binpb is its buf
# image (committed, since a CI clone may have no tags; contracts/README.md says when to renew it).
buf-breaking:
	@if command -v npx >/dev/null; then $(BUF) breaking protos --against contracts/released-v1.binpb && echo "buf breaking: compatible with contracts/released-v1.binpb"; else echo "buf breaking skipped: npx not found"; fi

# deploy/: both kustomizations rendered and every object validated offline.
k8s-check: $(STAMP)
	$(PY) -m phiseal_dev.k8s_check

lint: $(STAMP) buf-lint buf-breaking k8s-check
	$(VENV)/bin/ruff format --check services tests benchmarks phiseal_decrypt phiseal_dev
	$(VENV)/bin/ruff check services tests benchmarks phiseal_decrypt phiseal_dev
	$(VENV)/bin/mypy

# The independent HPKE implementations tests/interop checks the hybrid format against, from
# the committed lockfile (the tests run `npm ci` themselves when this was skipped).
INTEROP := interop/hpke-node
$(INTEROP)/node_modules/.package-lock.json: $(INTEROP)/package-lock.json
	@if command -v npm >/dev/null; then cd $(INTEROP) && npm ci --no-audit --no-fund; \
	else echo "npm not found: the HPKE interoperability tests will be skipped"; fi

test: $(STAMP) browser $(INTEROP)/node_modules/.package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null \
	  && echo "Node.js $$(node --version): tests/e2e runs examples/node against the test stack" \
	  || echo "Node.js not found: the examples/node test is SKIPPED (install node and npm to run it)"
	$(PY) -m pytest $(PYTEST_ARGS)

check: lint test

run: $(STAMP)
	exec $(PY) -m phiseal_dev.devstack

# Against the stack `make run` started (same PHISEAL_RUN_DIR and port settings).
demo: $(STAMP)
	$(PY) -m phiseal_dev.demo

bench: $(STAMP)
	$(PY) -m benchmarks

clean: clean-proto
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache test-artifacts
