# Shared pytest configuration. The MicroPython side of the lib tests lives in
# tests/mpplugin.py (see docs/testing.md); it is registered here so that fixtures
# and hooks added to this file cannot shadow its hooks.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest_plugins = ["mpplugin"]
