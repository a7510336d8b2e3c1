# The two set-up commands of the README. Both work from a fresh clone on Debian with Python 3.11:
# they create .venv, install the package and what they need, and install mosquitto/socat with apt when missing
# (and mosquitto-clients, whose mosquitto_sub is the MQTT benchmark's floor; Debian's systemd package for
# systemd-analyze, which checks the unit's sandbox; it installs in a container without starting anything; and
# chromium/chromium-driver for the operator page's browser tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SECONDS_DEMO ?= 40
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck unit bench system-deps clean image-arm64 peers deb deb-check

# Debian ships venv/ensurepip separately (python3-venv): install it when the first attempt fails.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.runtime $(VENV)/.bench

# the benchmark report's plots need matplotlib (the `bench` extra; the test extra has it too)
$(VENV)/.bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@ $(VENV)/.runtime

system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_sub >/dev/null 2>&1 || missing="$$missing mosquitto-clients"; \
	command -v socat >/dev/null 2>&1 || missing="$$missing socat"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
		echo "installing with apt:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
		$(SUDO) systemctl disable --now mosquitto >/dev/null 2>&1 || true; \
	fi

demo: system-deps $(VENV)/.runtime
	$(BIN)/edge-runtime demo --seconds $(SECONDS_DEMO)

lint: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.test
	$(BIN)/mypy

unit: system-deps $(VENV)/.test
	$(BIN)/pytest -q

test: lint typecheck unit

bench: system-deps $(VENV)/.bench
	$(BIN)/edge-runtime bench --json bench-results.json

# Issue 11: the arm64 image proven under emulation (slow, never in `make test`) and the Node-RED peer comparison
# (npm installs, never in CI).
image-arm64: | $(BIN)/python
	docker/image-arm64.sh

peers: $(VENV)/.runtime
	benchmarks/peers/install.sh
	$(BIN)/python benchmarks/peers/bench_peers.py --json bench-peers.json

# A Debian package (not in CI): venv under /opt/edge-runtime, the unit, a system user, /etc/edge-runtime/.
deb:
	packaging/deb/build.sh

deb-check: deb
	packaging/deb/check-install.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
