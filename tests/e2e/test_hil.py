"""`pgw hil` end to end, as CI and a technician run it.

1. `pgw hil --board virtual --junit out.xml`: the runner starts its own
   virtual board, deploys, runs every case; the JUnit file says every case
   passed (or was skipped with a reason), none failed.
2. The real-board path (`--port P --board B`) against a virtual board the
   test started, as if it were a USB board: deployed by the runner, meters
   through --meter-port, the power cut by --power-cmd (the GPIO channel's
   power cycle, standing in for a relay); what only the virtual board's GPIO
   channel can show is skipped, with the reason.
"""

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from host_tools.hil.runner import discover
from host_tools.vboard import VirtualBoardProcess

ROOT = Path(__file__).resolve().parents[2]


def pgw_hil(*args, timeout=240):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "host_tools.cli", "hil", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    print(proc.stdout)
    print("pgw hil %s: exit %d after %.1f s" % (" ".join(map(str, args)), proc.returncode, time.monotonic() - t0))
    return proc


def report(path):
    """-> (the <testsuite>, {case id: (outcome, message)})"""
    suite = ET.parse(path).getroot().find("testsuite")
    cases = {}
    for tc in suite.findall("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                outcome, message = tag, el.get("message")
        cases["%s::%s" % (tc.get("classname"), tc.get("name"))] = (outcome, message)
    return suite, cases


def test_pgw_hil_on_its_own_virtual_board_passes_every_case(tmp_path):
    out = tmp_path / "out.xml"
    proc = pgw_hil("--board", "virtual", "--junit", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    suite, cases = report(out)
    ids = ["hil.%s" % c.id for c in discover()]
    assert list(cases) == ids  # every case, in order, once
    assert int(suite.get("tests")) == len(ids) > 0
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0"), cases
    for cid, (outcome, message) in cases.items():
        assert outcome in ("passed", "skipped"), (cid, outcome, message)
        assert outcome == "passed" or message.strip(), "%s skipped without a reason" % cid
    # on the virtual board everything it needs is there: only a missing DLMS peer may skip
    skipped = [cid for cid, (o, _) in cases.items() if o == "skipped"]
    assert skipped in ([], ["hil.meters::dlms_meter_read_by_the_board_over_hls_gmac"]), skipped
    lines = proc.stdout.splitlines()
    for c in discover():
        assert any(line.startswith(c.id + " PASSED") or line.startswith(c.id + " SKIPPED (") for line in lines), c.id
    assert lines[-2].startswith("== %d passed" % sum(o == "passed" for o, _ in cases.values()))


def test_the_real_board_path_against_a_virtual_board_skips_what_hardware_lacks(tmp_path):
    with VirtualBoardProcess(tmp_path / "flash", tmp_path / "usb.tty") as vb:
        vb.channel.wait_kind("ready", timeout=20)
        cycle = "%s -c \"from host_tools.vboard import GpioChannel; GpioChannel('%s').power_cycle()\"" % (
            sys.executable, vb.link)
        out = tmp_path / "out.xml"
        proc = pgw_hil("--port", vb.link, "--board", ROOT / "boards" / "virtual.json",
                       "--meter-port", "%s.rs485" % vb.link, "--power-cmd", cycle, "--junit", out,
                       "-k", "console::", "-k", "modbus", "-k", "gpio::", "-k", "power::")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        suite, cases = report(out)
        assert suite.find("properties/property[@name='target']").get("value") == "hardware"
        assert cases["hil.console::help_and_status"] == ("passed", "")
        assert cases["hil.meters::modbus_rtu_meter_read_by_the_board"] == ("passed", "")
        assert cases["hil.power::power_cut_while_writing_the_journal"] == ("passed", "")
        outcome, why = cases["hil.gpio::relay_and_pilot_stay_within_the_envelope"]
        assert outcome == "skipped" and "GPIO channel" in why, why
        outcome, why = cases["hil.console::config_set_is_checked_and_refusals_change_nothing"]
        assert outcome == "skipped" and "signing key" in why, why  # a fresh board: no key, no hub
        assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "0", "0")
        # the power cut was the command's: a power-on reset of the board, seen on its channel
        assert any(e["kind"] == "boot" and e["cause"] == "PWRON_RESET" for e in vb.channel.events[2:])
