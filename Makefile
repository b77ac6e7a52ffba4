# Thin targets. `make run` and `make test` install what is missing, and reuse what is there.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
HOME_DIR := .easel
KAFKA_LIBS := $(HOME_DIR)/kafka/libs
S3PROXY_LIBS := $(HOME_DIR)/s3proxy/libs
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

install: $(STAMP) $(KAFKA_LIBS)/.fetched $(S3PROXY_LIBS)/.fetched

# Re-installs only when the lock or the project description changed (torch is large).
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# The broker's jars from Maven Central, through the pinned pom.
$(KAFKA_LIBS)/.fetched: kafka/pom.xml
	mvn -B -q -f kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS)
	touch $@

# S3Proxy's jars: the S3-compatible server the tests (and a local S3 setup) run, like the broker.
$(S3PROXY_LIBS)/.fetched: s3proxy/pom.xml
	mvn -B -q -f s3proxy/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(S3PROXY_LIBS)
	touch $@

run: install
	$(VENV)/bin/easel dev

# Lint and strict typing first: they take seconds, the suite minutes.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest

bench: install
	HF_HUB_OFFLINE=1 $(PY) -m bench

clean:
	rm -rf $(HOME_DIR) .pytest_cache
