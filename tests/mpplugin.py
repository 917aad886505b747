"""pytest plugin: every test function in tests/lib also runs under MicroPython.

For each ``tests/lib/**/test_*.py`` module, next to each CPython item
``test_x`` (marked ``cpython``) the module gains an item ``test_x[micropython]``
(marked ``micropython``). The first MicroPython item of a module to run starts
``tests/mprunner.py`` once for the whole module, under the MicroPython unix port
with a device-sized heap; each item then reports its own result from that run.

Environment:
    PGW_MP_HEAP     value of ``-X heapsize=`` (default ``512wK``: the 512 KB a
                    32-bit board would have, whatever the host's word size)
    PGW_MP_TIMEOUT  seconds one module may run (default 120)

Layout, found relative to this file: ``<tests>/mprunner.py``, lib tests in
``<tests>/lib``, the code under test in ``<tests>/../lib``. Both lib folders are
put on ``sys.path`` for CPython too, so tests import the same names on both.

See docs/testing.md.
"""

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
LIB_TESTS_DIR = TESTS_DIR / "lib"
LIB_DIR = TESTS_DIR.parent / "lib"
RUNNER = TESTS_DIR / "mprunner.py"

RESULT_MARK = "@@PGW-MP-RESULT "
INFO_MARK = "@@PGW-MP-INFO "
IMPORT_PSEUDO_TEST = "<import>"
SUFFIX = "[micropython]"

for _path in (LIB_TESTS_DIR, LIB_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def heap_size():
    return os.environ.get("PGW_MP_HEAP", "512wK")


def timeout_s():
    return float(os.environ.get("PGW_MP_TIMEOUT", "120"))


def find_interpreter():
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    return shutil.which("micropython")


def is_lib_test(path):
    return path.resolve().is_relative_to(LIB_TESTS_DIR)


class MicroPythonRun:
    """One run of tests/mprunner.py over one module: results by test name."""

    def __init__(self, results, info=None, problem=None):
        self.results = results  # name -> {"test", "outcome", "ms", "error", "output"}
        self.info = info or {}
        self.problem = problem  # why tests without a result have none

    @classmethod
    def start(cls, module_name, test_names):
        interpreter = find_interpreter()
        if interpreter is None:
            return cls({}, problem=(
                "MicroPython interpreter not found (looked beside %s and on PATH).\n"
                "Run `make test`: it installs the MicroPython unix port into .venv, "
                "and lib tests must run under it, not be skipped." % sys.executable))
        command = [interpreter, "-X", "heapsize=" + heap_size(), str(RUNNER),
                   str(LIB_DIR), str(LIB_TESTS_DIR), module_name, *test_names]
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout_s(),
                                  cwd=TESTS_DIR.parent, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            done, why = exc, "timed out after %g s (PGW_MP_TIMEOUT)" % timeout_s()
        else:
            why = "exited with status %d" % done.returncode
        run = cls.parse(done.stdout or b"")
        last = list(run.results)[-1] if run.results else "none"
        run.problem = "MicroPython runner %s on module %s (heap %s) before reporting this test; " \
                      "last test reported: %s\n%s" % (
                          why, module_name, heap_size(), last, tail(done.stdout, done.stderr))
        return run

    @classmethod
    def parse(cls, stdout):
        # Output a test prints comes before its result line: it is kept as that
        # test's "output".
        results, info, printed = {}, {}, []
        for line in stdout.decode("utf-8", "replace").splitlines():
            for mark in (RESULT_MARK, INFO_MARK):
                at = line.find(mark)  # an unterminated print may precede the mark
                if at >= 0:
                    break
            try:
                record = json.loads(line[at + len(mark):]) if at >= 0 else None
            except ValueError:
                record = None
            if record is None:
                printed.append(line)
                continue
            printed.append(line[:at])
            if mark is INFO_MARK:
                info = record
            else:
                record["output"] = "\n".join(printed).strip("\n")
                results[record["test"]] = record
            printed = []
        return cls(results, info)


def tail(stdout, stderr, lines=30):
    text = ((stdout or b"") + (stderr or b"")).decode("utf-8", "replace")
    return "--- last output ---\n" + "\n".join(text.splitlines()[-lines:])


class MicroPythonFailure(Exception):
    """A test that failed (or could not run) under MicroPython; shown as its
    MicroPython traceback, summarised by the traceback's last line."""

    def __init__(self, text, headline=None):
        super().__init__(text)
        lines = [line for line in text.splitlines() if line.strip()]
        self.message = headline or (lines[-1] if lines else "failed under MicroPython")


class FailureRepr:
    # What pytest prints for a failed MicroPython item: the full text in the
    # failure section, `message` in the short summary and in JUnit XML.
    def __init__(self, text, path, lineno, message):
        self.text = text
        self.reprcrash = types.SimpleNamespace(path=str(path), lineno=lineno, message=message)

    def toterminal(self, tw):
        for line in self.text.splitlines():
            tw.line(line)
        tw.line()

    def __str__(self):
        return self.text


def without_runner_frames(traceback):
    return "\n".join(line for line in traceback.splitlines()
                     if RUNNER.name + '", line' not in line)


class MicroPythonItem(pytest.Item):
    def __init__(self, *, test_name, lineno, **kwargs):
        super().__init__(**kwargs)
        self.test_name = test_name
        self.lineno = lineno
        self.add_marker("micropython")
        self.user_properties.append(("interpreter", "micropython"))

    def runtest(self):
        run = self.parent.micropython_run()
        version = run.info.get("version")
        if version:
            self.user_properties.append(("micropython_version", version))
        result = run.results.get(IMPORT_PSEUDO_TEST) or run.results.get(self.test_name)
        if result is None:
            raise MicroPythonFailure(run.problem, run.problem.splitlines()[0])
        self.user_properties.append(("micropython_ms", result["ms"]))
        if result.get("output"):
            self.add_report_section("call", "stdout (micropython)", result["output"])
        if result["outcome"] == "skipped":
            pytest.skip(result["error"] or "SkipTest")
        if result["outcome"] != "passed":
            doing = "importing %s" % self.path.name if result["test"] == IMPORT_PSEUDO_TEST \
                else "running %s" % self.test_name
            raise MicroPythonFailure("MicroPython %s (heap %s), %s:\n%s" % (
                version, heap_size(), doing, without_runner_frames(result["error"])))

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MicroPythonFailure):
            return FailureRepr(str(excinfo.value), self.path, self.lineno, excinfo.value.message)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, self.lineno, self.name


class LibTestModule(pytest.Module):
    """A tests/lib module: its CPython items, each followed by its MicroPython twin."""

    _run = None
    _micropython_names = ()

    def collect(self):
        items, names = [], []
        for node in super().collect():
            items.append(node)
            if not isinstance(node, pytest.Function):
                self.warn(pytest.PytestCollectionWarning(
                    "%s runs under CPython only: tests/mprunner.py runs module-level "
                    "test functions" % node.name))
                continue
            node.add_marker("cpython")
            node.user_properties.append(("interpreter", "cpython"))
            if node.originalname in names:
                continue
            names.append(node.originalname)
            items.append(MicroPythonItem.from_parent(
                self, name=node.originalname + SUFFIX, test_name=node.originalname,
                lineno=node.reportinfo()[1]))
        self._micropython_names = names
        return items

    def micropython_run(self):
        # One interpreter run per module, for the tests of it this session selected.
        if self._run is None:
            selected = [item.test_name for item in self.session.items
                        if isinstance(item, MicroPythonItem) and item.parent is self]
            if sorted(selected) == sorted(self._micropython_names):
                selected = []  # all of them, in source order
            module = ".".join(
                self.path.resolve().relative_to(LIB_TESTS_DIR).with_suffix("").parts)
            self._run = MicroPythonRun.start(module, selected)
        return self._run


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):
    if is_lib_test(module_path):
        return LibTestModule.from_parent(parent, path=module_path)
    return None


class InterpreterCounts:
    """Counts the tests that ran (passed or failed) per interpreter, from the
    reports alone (so it also works in an xdist controller), and says so at the end."""

    def __init__(self):
        self.counts = {"cpython": 0, "micropython": 0, "other": 0}
        self.version = None

    def pytest_runtest_logreport(self, report):
        if report.when != "call" or report.outcome not in ("passed", "failed"):
            return
        props = dict(report.user_properties)
        self.counts[props.get("interpreter", "other")] += 1
        self.version = props.get("micropython_version") or self.version

    def pytest_terminal_summary(self, terminalreporter):
        if any(self.counts.values()):
            terminalreporter.write_line(
                "interpreters: lib tests: %d under CPython, %d under MicroPython "
                "(micropython %s, heap %s); host and end-to-end tests: %d" % (
                    self.counts["cpython"], self.counts["micropython"],
                    self.version or "version unknown", heap_size(), self.counts["other"]))


def pytest_configure(config):
    config.addinivalue_line("markers", "cpython: a tests/lib test run by CPython")
    config.addinivalue_line("markers", "micropython: a tests/lib test run by MicroPython")
    config.pluginmanager.register(InterpreterCounts(), "pgw-interpreter-counts")
    # lib/ is first on sys.path, so a lib module named like a stdlib one would
    # replace it for every test in the session, host tests included.
    clashes = sorted({p.stem for p in LIB_DIR.glob("*.py")} & sys.stdlib_module_names)
    if clashes:
        config.issue_config_time_warning(pytest.PytestConfigWarning(
            "lib/ modules shadow the CPython standard library: %s" % ", ".join(clashes)),
            stacklevel=2)
