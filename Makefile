# log-sidecar — `make run` for the demo, `make test` for everything CI checks, `make bench` for figures.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := logrotate prometheus podman buildah runc debootstrap

.PHONY: run test lint unit bench interop system-deps clean image image-distroless

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(PY) examples/demo/demo.py

# The tests drive Debian's logrotate, a real Prometheus server, and podman (with buildah, runc and
# debootstrap for the stand-in base images) to build and run the images; install them when missing.
system-deps:
	@missing=""; \
	for pkg in $(APT_PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing:$$missing"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else \
			echo "make test needs the Debian packages:$$missing — run: sudo apt-get install$$missing" >&2; exit 1; \
		fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check sidecar tests bench examples images interop
	$(VENV)/bin/mypy

unit: $(STAMP) system-deps
	$(VENV)/bin/pytest -q

test: system-deps lint unit

# Build an image with podman (making stand-in bases when no registry is reachable); prints its size.
image: $(STAMP) system-deps
	$(PY) -m images.build slim

image-distroless: $(STAMP) system-deps
	$(PY) -m images.build distroless

# The bench draws its picture with matplotlib, a bench-only extra.
$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	@touch $@

bench: $(VENV)/.bench-installed
	$(PY) -m bench.run

# Agent mode against a real Fluent Bit and a real Fluentd, by hand before a release (not in `make test`:
# neither is in a package registry). FLUENT_BIT=/path/to/fluent-bit FLUENTD=/path/to/fluentd/bin/fluentd
interop: $(STAMP)
	$(PY) -m interop.run

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
