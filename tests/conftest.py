# Shared pytest configuration. The MicroPython side of the lib tests lives in
# tests/mpplugin.py (see docs/testing.md); it is registered here so that fixtures
# and hooks added to this file cannot shadow its hooks.
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest_plugins = ["mpplugin"]

# The NIST ECDSA vectors of the cryptography-vectors package, for lib tests
# under MicroPython too (its test process inherits this environment; see
# tests/lib/p256_vectors.py).
try:
    import cryptography_vectors

    os.environ.setdefault("PGW_CRYPTOGRAPHY_VECTORS", os.path.dirname(cryptography_vectors.__file__))
except ImportError:
    pass
