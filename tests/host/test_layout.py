"""The repository keeps the layering rules of docs/architecture.md."""

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_EVERYWHERE_ON_DEVICE = {"typing", "dataclasses", "enum", "abc"}
LIB_FORBIDDEN = FORBIDDEN_EVERYWHERE_ON_DEVICE | {"machine", "network", "asyncio", "socket", "select"}


def imports_of(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


def test_required_layout_exists():
    for name in ("firmware", "boards", "lib", "host_tools", "tests", "docs", "Makefile",
                 "README.md", "pyproject.toml", ".ci/run", "LICENSE"):
        assert (ROOT / name).exists(), name


def test_lib_is_sans_io_and_portable():
    for path in (ROOT / "lib").rglob("*.py"):
        bad = set(imports_of(path)) & LIB_FORBIDDEN
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_firmware_imports_nothing_micropython_lacks():
    for path in list((ROOT / "firmware").rglob("*.py")) + list((ROOT / "boards").rglob("*.py")):
        mods = set(imports_of(path))
        assert not mods & FORBIDDEN_EVERYWHERE_ON_DEVICE, path
        assert "host_tools" not in mods, path


def test_no_modular_inverse_by_pow_on_device():
    # MicroPython's pow(x, -1, m) returns 0.
    for path in list((ROOT / "lib").rglob("*.py")) + list((ROOT / "firmware").rglob("*.py")):
        assert not re.search(r"pow\([^)]*,\s*-1\s*,", path.read_text()), path


def test_versions_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    firmware = (ROOT / "firmware" / "gateway" / "version.py").read_text()
    assert f'VERSION = "{project["version"]}"' in firmware


def test_host_dependencies_are_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    for dep in deps:
        assert "==" in dep, dep


def test_readme_opens_with_demo_and_test():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    assert "make demo" in head and "make test" in head


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_no_registry_host_names_in_tracked_text():
    pattern = re.compile(r"pypi\.org|pythonhosted\.org|registry\.npmjs|deb\.debian\.org")
    for path in ROOT.rglob("*"):
        if any(part in {".venv", ".git", "build", "__pycache__", ".pytest_cache"} for part in path.parts):
            continue
        if path.is_file() and path.suffix in {".py", ".md", ".toml", ".txt", ".json", ""}:
            assert not pattern.search(path.read_text(errors="replace")), path


def test_gpl_peers_stay_in_the_simulator():
    # gurux-dlms is GPL-2.0: only host_tools/sim/ and tests may import it.
    for folder in ("lib", "firmware", "boards", "host_tools"):
        for path in (ROOT / folder).rglob("*.py"):
            if "sim" in path.relative_to(ROOT).parts[:2]:
                continue
            assert "gurux_dlms" not in set(imports_of(path)), path
