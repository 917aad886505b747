"""The MicroPython half of the lib tests (tests/mpplugin.py, tests/mprunner.py),
checked by running pytest in a subprocess on a throw-away copy of the layout."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

LIB_MODULE = """\
def double(x):
    return 2 * x
"""

LIB_TEST = """\
import sys

from mpcompat import SkipTest, raises
from sample import double


def test_passes():
    assert double(21) == 42
    raises(TypeError, double, None)


def test_fails_only_on_micropython():
    assert sys.implementation.name != "micropython", "ran on " + sys.implementation.name


def test_skipped():
    raise SkipTest("not on this board")


def test_prints_without_newline():
    print("partial line", end="")
    assert double(1) == 2
"""

BROKEN_TEST = """\
import sys

if sys.implementation.name == "micropython":
    import no_such_module_on_micropython


def test_a():
    pass


def test_b():
    pass
"""


def make_layout(root, **lib_tests):
    tests = root / "tests"
    (tests / "lib").mkdir(parents=True)
    (root / "lib").mkdir()
    for name in ("conftest.py", "mpplugin.py", "mprunner.py", "lib/mpcompat.py"):
        shutil.copy(TESTS / name, tests / name)
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    (root / "lib" / "sample.py").write_text(LIB_MODULE)
    for name, text in lib_tests.items():
        (tests / "lib" / (name + ".py")).write_text(text)


def clean_env(**extra):
    # The inner pytest must not think it is an xdist worker of `make test`.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(extra)
    return env


def run_pytest(root, *args, env=None):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=root, capture_output=True, text=True, timeout=300, env=clean_env(**(env or {})))
    return done.returncode, done.stdout + done.stderr


def outcome_counts(output):
    last = output.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped)", last)}


def test_each_lib_test_also_runs_under_micropython(tmp_path):
    make_layout(tmp_path, test_sample=LIB_TEST)
    status, output = run_pytest(tmp_path, str(tmp_path))
    assert status == 1, output
    # CPython: 3 pass, 1 skip; MicroPython: 2 pass, 1 fail, 1 skip.
    assert outcome_counts(output) == {"passed": 5, "failed": 1, "skipped": 2}, output
    assert "PASSED tests/lib/test_sample.py::test_passes[micropython]" in output
    assert "PASSED tests/lib/test_sample.py::test_fails_only_on_micropython\n" in output
    assert "FAILED tests/lib/test_sample.py::test_fails_only_on_micropython[micropython]" \
        in output
    assert "PASSED tests/lib/test_sample.py::test_prints_without_newline[micropython]" in output
    assert "ran on micropython" in output  # the MicroPython traceback is the failure text
    assert output.count("not on this board") == 2
    assert "interpreters: lib tests: 3 under CPython, 3 under MicroPython (micropython v" \
        in output
    assert "host and end-to-end tests: 0" in output


def test_one_micropython_item_can_be_selected(tmp_path):
    make_layout(tmp_path, test_sample=LIB_TEST)
    status, output = run_pytest(
        tmp_path, "tests/lib/test_sample.py::test_passes[micropython]", "-m", "micropython")
    assert status == 0, output
    assert outcome_counts(output) == {"passed": 1}, output


def test_import_error_under_micropython_fails_every_item(tmp_path):
    make_layout(tmp_path, test_broken=BROKEN_TEST)
    status, output = run_pytest(tmp_path, str(tmp_path))
    assert status == 1, output
    assert outcome_counts(output) == {"passed": 2, "failed": 2}, output
    assert "no_such_module_on_micropython" in output


def test_missing_interpreter_fails_and_says_make_test(tmp_path):
    make_layout(tmp_path, test_sample=LIB_TEST)
    python = tmp_path / "bin" / "python"  # a python with no micropython beside it
    python.parent.mkdir()
    python.symlink_to(sys.executable)
    done = subprocess.run(
        [str(python), "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path),
         "-m", "micropython"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=clean_env(PATH=str(python.parent), PYTHONPATH=os.pathsep.join(sys.path)))
    output = done.stdout + done.stderr
    assert outcome_counts(output) == {"failed": 4}, output
    assert "make test" in output
