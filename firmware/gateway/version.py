# Kept equal to pyproject's version by tests/host/test_layout.py.
VERSION = "0.1.0"
