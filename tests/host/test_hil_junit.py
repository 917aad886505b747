"""`pgw hil` without a board: the JUnit writer, the runner's bookkeeping
(needs, skips with reasons, failures versus errors, the exit status), the
cases' declarations, the hardware target's reasons for skipping, and the
board half's marker protocol, its MicroPython side run on the unix port."""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from host_tools.hil import case, junit, runner
from host_tools.hil.board import PRELUDE, BoardHalf, BoardHalfError, BoardSkip
from host_tools.hil.target import HardwareTarget

ROOT = Path(__file__).resolve().parents[2]
MICROPYTHON = Path(sys.executable).parent / "micropython"


def sample_results():
    return [
        junit.CaseResult("hil.console", "help", junit.PASSED, 0.25, output="status: ok"),
        junit.CaseResult("hil.meters", "modbus", junit.FAILED, 1.5, "power 12 W, model 13 W",
                         "Traceback ...\nAssertionError: power", "board said \x04\x04>", "AssertionError"),
        junit.CaseResult("hil.gpio", "relay", junit.SKIPPED, message="needs the GPIO channel"),
        junit.CaseResult("hil.ota", "update", junit.ERROR, 0.5, "KeyError: 'x'", "Traceback ...", kind="KeyError"),
    ]


def test_the_report_parses_and_counts_every_outcome(tmp_path):
    path = tmp_path / "out.xml"
    junit.write(path, sample_results(), properties={"board": "virtual", "target": "virtual"})
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    for el in (root, suite):
        assert (el.get("tests"), el.get("failures"), el.get("errors"), el.get("skipped")) == ("4", "1", "1", "1")
    assert float(suite.get("time")) == pytest.approx(2.25)
    assert {p.get("name"): p.get("value") for p in suite.find("properties")} == {"board": "virtual",
                                                                               "target": "virtual"}
    cases = {tc.get("name"): tc for tc in suite.findall("testcase")}
    assert list(cases) == ["help", "modbus", "relay", "update"]
    assert cases["help"].get("classname") == "hil.console" and list(cases["help"]) == [cases["help"][0]]
    assert cases["help"].find("system-out").text == "status: ok"
    failure = cases["modbus"].find("failure")
    assert failure.get("message") == "power 12 W, model 13 W" and failure.get("type") == "AssertionError"
    assert "AssertionError: power" in failure.text
    # the board's raw-REPL Ctrl-Ds are not XML 1.0 characters: written escaped
    assert cases["modbus"].find("system-out").text == "board said \\x04\\x04>"
    skipped = cases["relay"].find("skipped")
    assert skipped.get("message") == "needs the GPIO channel"
    assert cases["relay"].find("failure") is None and cases["relay"].find("error") is None
    assert cases["update"].find("error").get("type") == "KeyError"


def test_a_skip_needs_its_reason_and_outcomes_are_known():
    with pytest.raises(ValueError, match="reason"):
        junit.CaseResult("hil.gpio", "relay", junit.SKIPPED, message="  ")
    with pytest.raises(ValueError, match="outcome"):
        junit.CaseResult("hil.gpio", "relay", "xfail")


def test_an_empty_run_is_a_valid_report():
    root = ET.fromstring(junit.to_bytes([]))
    assert root.find("testsuite").get("tests") == "0"


class FakeTarget:
    kind = "fake"

    def __init__(self, missing=(), setup_error=None):
        self.missing = dict(missing)
        self.setup_error = setup_error
        self.closed = False

    def lacks(self, need):
        return self.missing.get(need)

    def setup(self):
        if self.setup_error:
            raise self.setup_error

    def close(self):
        self.closed = True


def fake_case(fn, needs=()):
    fn.hil_needs = tuple(needs)
    return runner.Case(SimpleNamespace(__name__="host_tools.hil.cases.fake"), fn)


def test_the_runner_sorts_outcomes_and_keeps_reasons_and_logs():
    def case_passes(hil):
        hil.log("measured 42")

    def case_fails(hil):
        assert 1 + 1 == 3, "arithmetic"

    def case_breaks(hil):
        {}["missing"]

    def case_skips(hil):
        raise case.Skip("the board has a PIN of its own")

    def case_needs_gpio(hil):
        raise AssertionError("must not run")

    target = FakeTarget(missing={case.GPIO: "no GPIO channel on hardware"})
    cases = [fake_case(case_passes), fake_case(case_fails), fake_case(case_breaks), fake_case(case_skips),
             fake_case(case_needs_gpio, [case.RAW_REPL, case.GPIO])]
    lines = []
    results = runner.run_suite(target, cases, out=lines.append)
    assert target.closed
    assert [r.outcome for r in results] == ["passed", "failed", "error", "skipped", "skipped"]
    passed, failed, broken, skipped, lacking = results
    assert passed.output == "measured 42" and passed.id == "hil.fake::passes"
    assert failed.message == "arithmetic" and failed.kind == "AssertionError" and "case_fails" in failed.detail
    assert broken.message == "KeyError: 'missing'" and broken.kind == "KeyError"
    assert skipped.message == "the board has a PIN of its own"
    assert lacking.message == "no GPIO channel on hardware"
    assert lines[0].startswith("fake::passes PASSED [")
    assert lines[1].startswith("fake::fails FAILED (arithmetic) [")
    assert lines[4] == "fake::needs_gpio SKIPPED (no GPIO channel on hardware)"
    assert runner.totals_line(results, 3.04) == "== 1 passed, 1 failed, 1 error, 2 skipped in 3.0 s =="


def test_a_board_that_cannot_be_set_up_is_one_error_and_nothing_runs():
    ran = []
    results = runner.run_suite(FakeTarget(setup_error=OSError("no serial port /dev/ttyUSB9")),
                               [fake_case(lambda hil: ran.append(1))], out=lambda line: None)
    assert ran == []
    assert [(r.id, r.outcome, r.message) for r in results] == [
        ("hil.setup::target", "error", "OSError: no serial port /dev/ttyUSB9")]


def test_every_case_declares_known_needs_and_says_what_it_proves():
    cases = runner.discover()
    assert len(cases) >= 6
    assert len({c.id for c in cases}) == len(cases)
    assert cases[0].module == "console" and cases[-1].module == "ota"  # the update changes the slots: last
    for c in cases:
        assert set(c.needs) <= set(case.NEEDS), c.id
        assert c.doc, "%s has no docstring to list" % c.id
    assert {c.module for c in cases} == {"console", "meters", "gpio", "power", "ota"}
    assert [c.id for c in runner.discover(["meters::"])] == [c.id for c in cases if c.module == "meters"]


def test_a_real_board_says_why_each_missing_thing_skips_a_case():
    bare = HardwareTarget("/dev/ttyUSB0", "esp32_devkitc")
    assert "GPIO channel" in bare.lacks(case.GPIO)
    assert "--meter-port" in bare.lacks(case.METER_LINE)
    assert "--power-cmd" in bare.lacks(case.POWER_CUT) and "--interactive" in bare.lacks(case.POWER_CUT)
    assert "esp32_devkitc has no A/B code slots" in bare.lacks(case.ROM_SLOTS)
    assert bare.lacks(case.RAW_REPL) is None and bare.lacks(case.CONSOLE) is None
    rigged = HardwareTarget("/dev/ttyUSB0", "esp32_devkitc", meter_port="/dev/ttyUSB1", power_cmd="true")
    assert rigged.lacks(case.METER_LINE) is None and rigged.lacks(case.POWER_CUT) is None
    assert HardwareTarget("/dev/ttyACM0", "pico_w", interactive=True).lacks(case.POWER_CUT) is None


def test_the_power_command_runs_and_its_failure_is_reported(tmp_path):
    port = tmp_path / "ttyUSB0"
    port.write_text("")  # a device node that is back at once
    flag = tmp_path / "cycled"
    target = HardwareTarget(str(port), "esp32_devkitc", power_cmd="touch %s" % flag, log=lambda line: None)
    target.power_cut()
    assert flag.exists()
    asked = []
    HardwareTarget(str(port), "pico_w", interactive=True, ask=asked.append, log=lambda line: None).power_cut()
    assert asked and "power off and on" in asked[0]
    with pytest.raises(RuntimeError, match="exited 3"):
        HardwareTarget(str(port), "esp32_devkitc", power_cmd="exit 3", log=lambda line: None).power_cut()


def test_the_command_line_refuses_mixed_targets_and_writes_a_report_when_setup_fails(tmp_path):
    def hil(*args):
        return subprocess.run([sys.executable, "-m", "host_tools.cli", "hil", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    mixed = hil("--board", "virtual", "--port", "/dev/ttyUSB0")
    assert mixed.returncode == 1 and "leave out --port" in mixed.stderr
    assert "needs --port" in hil("--board", "esp32_devkitc").stderr
    out = tmp_path / "out.xml"
    gone = hil("--board", "esp32_devkitc", "--port", str(tmp_path / "ttyUSB9"), "--junit", str(out))
    assert gone.returncode == 1, gone.stdout + gone.stderr
    assert "setup::target ERROR (OSError: no serial port" in gone.stdout
    suite = ET.parse(out).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("errors"), suite.get("failures")) == ("1", "1", "0")
    listed = hil("--list")
    assert listed.returncode == 0 and "gpio::" in listed.stdout and "needs raw_repl, gpio" in listed.stdout


# ---- the board half's markers ----------------------------------------------


class FakeSerial:
    """What a board sends, in the chunks it arrives in."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.written = b""
        self.timeout = 0

    @property
    def in_waiting(self):
        return len(self.chunks[0]) if self.chunks else 0

    def read(self, n):
        return self.chunks.pop(0) if self.chunks else b""

    def write(self, data):
        self.written += data


def half_reading(*chunks):
    half = BoardHalf.__new__(BoardHalf)  # no port: the transport is a stand-in
    half.t = SimpleNamespace(serial=FakeSerial(chunks), exec_raw_no_follow=lambda code: None)
    half.port = "fake"
    half.transcript = ""
    half.start("pass")
    return half


def test_markers_split_across_reads_are_parsed_once():
    half = half_reading(b"@@HIL NEXT rea", b"dy\r\n@@HIL SET power_w -39", b"13\r\nnoise @@HIL NEXT no\r\n",
                        b'@@HIL SET where "unit 1"\n@@HIL SET v [1, null]\n', b"\x04\x04>")
    half.next("ready", timeout=1)
    assert half.value("power_w", timeout=1) == -3913
    assert half.value("v", timeout=1) == [1, None] and half.values["where"] == "unit 1"
    assert half.points == ["ready"]  # a marker in the middle of a line is not one
    assert "@@HIL SET where" in half.done(timeout=1)
    half.go("meter")
    assert half.t.serial.written == b"@@HIL GO meter\n"


def test_a_traceback_or_a_skip_from_the_board_ends_the_half():
    half = half_reading(b"@@HIL NEXT a\n\x04Traceback (most recent call last):\n"
                        b"  File \"<stdin>\", line 3\nValueError: no profile sdm999\n\x04>")
    with pytest.raises(BoardHalfError, match="the board raised: ValueError: no profile sdm999") as e:
        half.done(timeout=1)
    assert "line 3" in e.value.detail
    half = half_reading(b"\x04Traceback (most recent call last):\nMemoryError: memory allocation failed\n\x04>")
    with pytest.raises(BoardHalfError, match=r"ended before hil.next\('ready'\): MemoryError"):
        half.next("ready", timeout=5)  # at once, not after the timeout
    half = half_reading(b"@@HIL SKIP no RS-485 UART on this board\n\x04\x04>")
    with pytest.raises(BoardSkip, match="no RS-485 UART"):
        half.done(timeout=1)
    half = half_reading(b"@@HIL NEXT a\n")
    with pytest.raises(BoardHalfError, match=r"timed out after 0 s waiting for hil.next\('b'\)"):
        half.next("b", timeout=0.2)


def test_the_board_side_runs_on_micropython(tmp_path):
    # The prelude as the board runs it, on the unix port: stdin is the host's
    # line; a GO for another label is passed over; STOP ends the half.
    script = tmp_path / "half.py"
    script.write_text(PRELUDE + "hil.next('a')\nhil.wait('x')\nhil.set('v', [1, 'two', None])\n"
                                "hil.wait('y')\nhil.set('never', 1)\n")
    proc = subprocess.run([str(MICROPYTHON), str(script)], input="@@HIL GO z\n@@HIL GO x\n@@HIL STOP\n",
                          capture_output=True, text=True, timeout=30)
    said = proc.stdout + proc.stderr  # the unix port prints its traceback on stdout
    assert said.splitlines()[:3] == ["@@HIL NEXT a", '@@HIL SET v [1, "two", null]',
                                     "Traceback (most recent call last):"], said
    assert said.rstrip().endswith("KeyboardInterrupt: hil: stopped by the host") and "never" not in said, said
