"""`pgw` command line and the deploy build step (no board needed)."""

import subprocess
import sys

import pytest

from host_tools import deploy
from host_tools.boards import board_names, load_board
from host_tools.cli import COMMANDS, main


def test_pgw_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "host_tools.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for name in COMMANDS:
        assert name in out


def test_unknown_board_is_a_clear_error(capsys):
    assert main(["deploy", "--port", "/nonexistent", "--board", "no_such_board"]) == 1
    err = capsys.readouterr().err
    assert "no_such_board" in err and "virtual" in err


def test_missing_port_is_a_clear_error(capsys):
    assert main(["console", "--port", "/nonexistent/tty"]) == 1
    assert "cannot open /nonexistent/tty" in capsys.readouterr().err


@pytest.mark.parametrize("name", board_names())
def test_build_compiles_everything_for_each_board(name):
    board = load_board(name)
    files = deploy.build(board)
    assert files["/boot.py"].name == "boot.py" and files["/main.py"].name == "main.py"
    mpys = [p for p in files if p.endswith(".mpy")]
    assert "/gateway/app.mpy" in mpys and "/lib/techconsole.mpy" in mpys
    assert "/lib/umqtt/simple.mpy" in mpys  # the pinned device-side package
    for path in mpys:
        head = files[path].read_bytes()[:2]
        assert head == b"M\x06", (path, head)  # .mpy v6: what the pinned interpreter imports
    assert '"board":"%s"' % name in files["/board.json"].read_text()


@pytest.mark.parametrize("rom", [False, True])
def test_each_module_is_named_by_the_path_the_board_imports_it_from(rom):
    # Tracebacks name that path, and the import's __file__ shares its qstr.
    files = deploy.build(load_board("virtual"), rom=rom)
    prefix = "/rom" if rom else ""
    for path in ("/gateway/app.mpy", "/lib/journal.mpy", "/lib/dlms/hdlc.mpy", "/lib/umqtt/simple.mpy"):
        data = files[path].read_bytes()
        assert (prefix + path).encode() in data, path
        assert (b"/rom" + path.encode() in data) == rom, path


def test_build_error_names_the_file(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("def f(:\n")
    with pytest.raises(deploy.DeployError, match="broken.py"):
        deploy.compile_mpy(bad, tmp_path / "broken.mpy", "x64", "broken.py")
