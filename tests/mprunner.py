# Runs the test_* functions of one tests/lib module under MicroPython.
#
#   micropython -X heapsize=512wK tests/mprunner.py <lib_dir> <tests_lib_dir> <module> [<test> ...]
#
# <module> is a module name relative to <tests_lib_dir> (dotted for a subfolder).
# Without test names every module-level test_* function runs, in source order.
# Each result is one line, parsed by tests/mpplugin.py; everything else a test
# prints passes through untouched:
#
#   @@PGW-MP-INFO {"version": "v1.29.0-preview", "heap": 1036288}
#   @@PGW-MP-RESULT {"test": "test_x", "outcome": "passed", "ms": 3, "error": ""}
#
# outcome is "passed", "failed" or "skipped" (the test raised an exception whose
# class is named SkipTest; see tests/lib/mpcompat.py). A module that fails to
# import is reported as one failed test named "<import>". Exit status 1 if
# anything failed, 0 otherwise.
#
# This file runs on the device interpreter: no typing, no CPython-only modules.

import gc
import io
import json
import sys
import time

_RESULT = "@@PGW-MP-RESULT "
_INFO = "@@PGW-MP-INFO "


def emit(marker, record):
    print(marker + json.dumps(record))


def traceback_text(exc):
    buf = io.StringIO()
    sys.print_exception(exc, buf)
    return buf.getvalue()


def import_module(name):
    module = __import__(name)
    for part in name.split(".")[1:]:
        module = getattr(module, part)
    return module


def source_order(module):
    # MicroPython's module dict keeps no insertion order: read the order of the
    # `def test_...` lines from the source, then add any test_* callable the
    # source scan missed (assigned or imported), sorted by name.
    names = []
    path = getattr(module, "__file__", None)
    if path:
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("def test_"):
                        name = line[4:].split("(")[0].strip()
                        if name not in names:
                            names.append(name)
        except OSError:
            pass
    found = [n for n in names if callable(getattr(module, n, None))]
    extra = [
        n for n in dir(module)
        if n.startswith("test_") and n not in found and callable(getattr(module, n))
    ]
    extra.sort()
    return found + extra


def run_one(module, name):
    func = getattr(module, name, None)
    if func is None or not callable(func):
        return "failed", 0, "no test function %r in module %s\n" % (name, module.__name__)
    start = time.ticks_ms()
    try:
        func()
    except Exception as exc:  # a test's failure is data here, whatever its type
        ms = time.ticks_diff(time.ticks_ms(), start)
        if type(exc).__name__ == "SkipTest":
            return "skipped", ms, str(exc)
        return "failed", ms, traceback_text(exc)
    return "passed", time.ticks_diff(time.ticks_ms(), start), ""


def version():
    v = sys.implementation.version
    text = "v%d.%d.%d" % (v[0], v[1], v[2])
    if len(v) > 3 and v[3]:
        text += "-" + v[3]
    return text


def main(argv):
    if len(argv) < 3:
        print("usage: mprunner.py <lib_dir> <tests_lib_dir> <module> [<test> ...]")
        return 2
    lib_dir, tests_lib_dir, module_name = argv[0], argv[1], argv[2]
    sys.path.insert(0, tests_lib_dir)
    sys.path.insert(0, lib_dir)
    gc.collect()
    emit(_INFO, {"version": version(), "heap": gc.mem_free() + gc.mem_alloc()})

    try:
        module = import_module(module_name)
    except Exception as exc:
        emit(_RESULT, {"test": "<import>", "outcome": "failed", "ms": 0,
                       "error": traceback_text(exc)})
        return 1

    failed = 0
    for name in argv[3:] or source_order(module):
        gc.collect()
        outcome, ms, error = run_one(module, name)
        if outcome == "failed":
            failed += 1
        emit(_RESULT, {"test": name, "outcome": outcome, "ms": ms, "error": error})
    return 1 if failed else 0


sys.exit(main(sys.argv[1:]))
