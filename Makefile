# Two commands work on a fresh machine with Python 3.11 and make: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint readme bench instructions loadtest testssl image image-name image-tools local-base clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH (or make PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-load: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[load]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/inference-router demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check router tests loadtests
	$(BIN)/mypy

# The README's settings table, made again from router/settings.py: run it after adding or changing a setting
# (tests/test_cli_help.py fails while the table and the definitions disagree).
readme: $(VENV)/.installed
	$(BIN)/python -m router.settings --readme README.md

# pytest exits 5 when it collected no test: that is a failure here, as every non-zero code is.
test: lint
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python loadtests/bench.py

# CPU instructions per request under valgrind: the noise-free figure for comparing changes
instructions: $(VENV)/.installed
	$(BIN)/python loadtests/instructions.py

# locust against the demo setup, about a minute: HTML report, CSVs and concurrency.png in loadtests/out/
loadtest: $(VENV)/.installed-load
	$(BIN)/python loadtests/loadtest.py

# testssl.sh against the TLS port (installs it with apt-get when missing): TLS 1.2+ and strong ciphers only.
testssl: $(VENV)/.installed
	$(BIN)/python loadtests/testssl.py

# The router's image, tagged as the chart's default image, with podman (no daemon; installed with apt-get
# when missing). BASE defaults to the official Python 3.11 slim image; where that cannot be pulled, the
# base is made from Debian's own packages (bookworm's python3 is 3.11), its tarball cached in IMAGE_CACHE.
# Isolation chroot: the default (crun) needs cgroups that machines without a container daemon may not give.
IMAGE ?= ghcr.io/inference-router/inference-router
TAG ?= $(shell sed -n 's/^appVersion: *"*\([^"]*\)"*/\1/p' manifests/chart/Chart.yaml)
DEFAULT_BASE := python:3.11-slim
BASE ?= $(DEFAULT_BASE)
LOCAL_BASE := localhost/inference-router-base:bookworm
IMAGE_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/inference-router
APT_INSTALL := apt-get install -y -q --no-install-recommends
PODMAN_BUILD := --isolation chroot --pull=never
# the build stage, tagged so that it stays podman's cache while older ones are pruned (and the superseded image)
BUILD_STAGE := localhost/inference-router-build:latest

image: $(VENV)/.installed image-tools
	rm -rf build/wheelhouse
	SOURCE_DATE_EPOCH=315532800 $(BIN)/pip wheel -q --wheel-dir build/wheelhouse .
	base='$(BASE)'; \
	if [ "$$base" = '$(DEFAULT_BASE)' ] && ! podman image exists "$$base" && ! timeout 120 podman pull -q "$$base"; then \
	  base='$(LOCAL_BASE)'; echo "$(DEFAULT_BASE) cannot be pulled: building on $$base, made from Debian's packages"; \
	  podman image exists "$$base" || $(MAKE) --no-print-directory local-base || exit 1; \
	fi; \
	old=$$(podman image inspect --format '{{.Id}}' $(IMAGE):$(TAG) 2>/dev/null); \
	podman build $(PODMAN_BUILD) --build-arg BASE="$$base" --target build -t $(BUILD_STAGE) . \
	  && podman build $(PODMAN_BUILD) --build-arg BASE="$$base" -t $(IMAGE):$(TAG) . || exit 1; \
	new=$$(podman image inspect --format '{{.Id}}' $(IMAGE):$(TAG)); \
	if [ -n "$$old" ] && [ "$$old" != "$$new" ]; then podman rmi "$$old" >/dev/null 2>&1 || true; fi; \
	podman image prune -f --filter label=io.inference-router.stage=build >/dev/null 2>&1 || true  # another build may hold one

# what `make image` tags: podman push "$(make -s image-name)"
image-name:
	@echo $(IMAGE):$(TAG)

image-tools:
	@command -v podman >/dev/null && command -v mmdebstrap >/dev/null || { \
	  [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "make image needs podman and mmdebstrap (apt-get install podman mmdebstrap)"; exit 1; }; \
	  $(APT_INSTALL) podman mmdebstrap || { apt-get update -q && $(APT_INSTALL) podman mmdebstrap; }; }

local-base: $(IMAGE_CACHE)/base-bookworm.tar
	podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	  --change 'ENV LANG=C.UTF-8' $< $(LOCAL_BASE)

$(IMAGE_CACHE)/base-bookworm.tar:
	mkdir -p $(@D)
	mmdebstrap --format=tar --variant=minbase --include=python3,python3-venv,ca-certificates bookworm $@.part
	mv $@.part $@

clean:
	rm -rf $(VENV) build *.egg-info
