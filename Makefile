# petloop: two set-up commands for a fresh machine.
#   make demo   installs into .venv and runs the main job
#   make test   installs into .venv and runs the linter and the tests
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.petloop-installed
DEMO_OUT ?= demo_out
# the viewer's browser test drives Debian's Chromium (browsers cannot be downloaded); the DICOM
# tests check what petloop writes with dciodvfy (Debian's dicom3tools)
CHROMIUM := /usr/bin/chromium
DCIODVFY := /usr/bin/dciodvfy
# the MONAI Label test drives the real client: its package without its (heavy) dependencies
MONAILABEL := $(VENV)/.monailabel-client

.PHONY: install demo test lint bench clean

install: $(STAMP)

# torch and torchvision go in first, pinned together (constraints.txt); then petloop and the
# rest, under the same constraints so pip keeps them.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/petloop demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check petloop tests bench scripts

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	$$sudo apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium chromium-driver

$(DCIODVFY):
	@if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	$$sudo apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq dicom3tools

$(MONAILABEL): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt requests
	$(PY) -m pip install --quiet --no-deps monailabel==0.8.5
	touch $(MONAILABEL)

test: lint $(CHROMIUM) $(DCIODVFY) $(MONAILABEL)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/phantom_timing.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
