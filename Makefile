# PHIseal — one Makefile, few targets. `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROTOS := $(shell find protos -name '*.proto' | sort)
STAMP := $(VENV)/.installed

.PHONY: help install proto clean-proto fmt lint test check run bench buf-lint clean

help:
	@echo "make run    start PostgreSQL (private unless DATABASE_URL is set) and the four services"
	@echo "make test   install what is needed and run the whole test suite"
	@echo "make check  lint (ruff, buf) + mypy --strict + tests"
	@echo "make proto  regenerate Python code and mypy stubs into gen/"
	@echo "make bench  run the benchmarks (prints ratios against in-run baselines)"

# The venv is rebuilt when pyproject.toml changes. Code generation needs grpcio-tools, which the
# first install brings; the second (no-deps) install then maps the generated `phiseal` package.
$(STAMP): pyproject.toml $(PROTOS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(MAKE) --no-print-directory proto
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

install: $(STAMP)

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

buf-lint:
	@command -v npx >/dev/null && npx --yes @bufbuild/buf@1.75.0 lint protos || echo "buf lint skipped: npx not found"

lint: $(STAMP) buf-lint
	$(VENV)/bin/ruff format --check services tests benchmarks phiseal_decrypt phiseal_dev
	$(VENV)/bin/ruff check services tests benchmarks phiseal_decrypt phiseal_dev
	$(VENV)/bin/mypy

# The independent HPKE implementations tests/interop checks the hybrid format against, from
# the committed lockfile (the tests run `npm ci` themselves when this was skipped).
INTEROP := interop/hpke-node
$(INTEROP)/node_modules/.package-lock.json: $(INTEROP)/package-lock.json
	@if command -v npm >/dev/null; then cd $(INTEROP) && npm ci --no-audit --no-fund; \
	else echo "npm not found: the HPKE interoperability tests will be skipped"; fi

test: $(STAMP) $(INTEROP)/node_modules/.package-lock.json
	$(PY) -m pytest $(PYTEST_ARGS)

check: lint test

run: $(STAMP)
	exec $(PY) -m phiseal_dev.devstack

bench: $(STAMP)
	$(PY) -m benchmarks

clean: clean-proto
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache
