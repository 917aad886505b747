# Shared pytest configuration. The MicroPython side of the lib tests lives in
# tests/mpplugin.py (see docs/testing.md); it is registered here so that fixtures
# and hooks added to this file cannot shadow its hooks.
import os
import sys
from pathlib import Path

import pytest

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


def pytest_report_header(config):
    from host_tools.broker import describe

    return f"mqtt broker: {describe()}"


@pytest.fixture(scope="session")
def broker():
    """A real MQTT broker for the run, plain and TLS (see docs/broker.md).

    Mosquitto where it is installed (always on CI), else the embedded amqtt;
    ``broker.kind`` says which, and pytest's header shows it.
    """
    from host_tools.broker import Broker

    with Broker(tls=True) as running:
        yield running
