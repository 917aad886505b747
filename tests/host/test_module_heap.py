"""bench/module_heap.py (import-time heap per module), and the imports it
keeps off the heap: what a meter configuration must not load."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import module_heap  # noqa: E402

MICROPYTHON = Path(sys.executable).parent / "micropython"


def test_measure_charges_each_module_its_own_heap():
    rows, errors, ours = module_heap.measure(["dlms.client"])
    assert not errors, errors
    names = [r[0] for r in rows]
    # dependencies first, the module asked for last, the qstr pools apart
    assert names[-1] == module_heap.QSTR_POOLS and names[-2] == "dlms.client", names
    assert names.index("dlms.apdu") < names.index("dlms.client")
    assert "dlms.security" not in names and "dlms.wrapper" not in names, names
    assert dict((m, n) for m, n, _ in rows)["dlms.client"] > 1000, rows
    assert "dlms.client" in ours and "asyncio" not in ours
    lines = module_heap.table(rows, ours, {"dlms.client": 5000, "gone": 100})
    assert lines[-1].split()[0] == "total" and any(line.split()[0] == "gone" for line in lines)


def _loaded_after(*modules):
    # sys.modules under MicroPython after importing modules from the sources
    if not MICROPYTHON.exists():
        pytest.fail("MicroPython unix port missing at %s: run `make test`" % MICROPYTHON)
    code = ("import sys\nsys.path[:0] = [%r, %r]\n" % (str(ROOT / "lib"), str(ROOT / "firmware"))
            + "".join("import %s\n" % m for m in modules) + "print(' '.join(sorted(sys.modules)))\n")
    out = subprocess.run([str(MICROPYTHON), "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_an_unciphered_hdlc_meter_loads_no_ciphering_tcp_or_names():
    loaded = _loaded_after("gateway.meters.dlms_meter")
    assert "dlms.client" in loaded and "dlms.hdlc" in loaded
    for lazy in ("dlms.security", "aesgcm", "dlms.wrapper", "dlms.wrapper_transport", "dlms.client_set",
                 "dlms.names", "dlms.cosem_names", "dlms.axdr_enc", "dlms.iec62056_21", "modbus"):
        assert lazy not in loaded, lazy


def test_a_register_profile_loads_neither_its_checks_nor_sunspec():
    loaded = _loaded_after("meterprofile", "modbus.rtu")
    for lazy in ("meterprofile_load", "modbus.sunspec", "modbus.tcp", "dlms"):
        assert lazy not in loaded, lazy
