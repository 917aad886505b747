"""The firmware on a virtual board: deploy, console, fail-safe, crashes, safe mode, watchdog."""

import json
import os
import re

import pexpect

from conftest import BIN, SerialExpect, run_tool


def test_deploy_then_status_on_pgw_console(vboard):
    # The acceptance sequence: vboard, deploy, then `pgw console` and `status`.
    # `pgw deploy` itself, not the fixture's copy of what it wrote.
    mark = vboard.channel.mark()
    run_tool("pgw", "deploy", "--port", vboard.link, timeout=120)
    vboard.channel.wait_kind("wdt", since=mark, timeout=20)
    deployed = vboard
    env = dict(os.environ, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm")
    con = pexpect.spawn(str(BIN / "pgw"), ["console", "--port", str(deployed.link)], env=env,
                        encoding="utf-8", timeout=15, dimensions=(40, 120))
    try:
        con.expect("Ctrl-T toggles")
        con.expect("pgw>")
        con.send("sta")
        con.expect("sta")
        con.send("\t")  # completion learnt from the board's `help`
        con.expect("tus")
        con.send("\r")
        con.expect(r"firmware +0\.1\.0")
        con.expect(r"board +virtual")
        con.expect(r"reset +SOFT_RESET")
        # Ctrl-T drops to the MicroPython REPL in a maintenance boot (no app, no
        # watchdog); Ctrl-T again soft-reboots into the app.
        con.send("\x14")
        con.expect(r"SAFE MODE \(maintenance boot requested\)")
        con.expect(">>> ")
        con.send("print(6 * 7)\r")
        con.expect("42")
        con.send("\x14")
        con.expect("pgw: boot")
        con.expect("pgw>")
        con.send("\x1d")  # Ctrl-] quits
        con.expect(pexpect.EOF)
    finally:
        con.close()
    assert con.exitstatus == 0


def test_console_script_mode_and_bad_input(deployed):
    out = run_tool("pgw", "console", "--port", deployed.link,
                   input="status\nbogus 1\nreboot soon\nreboot 999999\nhelp status\n\n").stdout
    lines = out.splitlines()
    assert any(l.startswith("firmware") and "0.1.0" in l for l in lines), out
    errors = [l for l in lines if l.startswith("ERR")]
    assert errors == [
        "ERR unknown command 'bogus'; type help",
        "ERR delay_ms must be a whole number, got 'soon'",
        "ERR delay_ms must be 0..60000, got 999999",
    ], out
    assert "usage: status" in lines, out


def test_reboot_command_resets_the_board(deployed):
    mark = deployed.channel.mark()
    out = run_tool("pgw", "console", "--port", deployed.link, input="reboot 50\n").stdout
    assert "rebooting in 50 ms" in out
    deployed.channel.wait_kind("boot", since=mark, cause="SOFT_RESET")
    deployed.channel.wait_kind("wdt", since=mark)


def test_console_survives_garbage_and_long_lines(deployed):
    con = SerialExpect(deployed.link)
    try:
        con.send(bytes(range(0x80, 0x100)) + b"\x00\x01\x02\x1b[A\r")
        con.expect("pgw> ")
        con.send(b"x" * 5000 + b"\r")
        con.expect("ERR line too long")
        answer = con.command("status", "firmware")
        assert "virtual" in answer, answer
    finally:
        con.close()
    assert deployed.proc.poll() is None


def test_second_deploy_copies_nothing_and_removes_stale_files(deployed):
    manifest = deployed.root / "deploy.json"
    paths = json.loads(manifest.read_text())
    assert paths == ["/board.json", "/boot.py", "/lib/otaslots.mpy", "/main.py"], paths  # the rest is in the ROM
    stale = deployed.root / "retired_module.mpy"
    stale.write_bytes(b"M\x06old")
    manifest.write_text(json.dumps(paths + ["/retired_module.mpy"]))
    out = run_tool("pgw", "deploy", "--port", deployed.link, timeout=120).stdout
    assert f"deploy: 0 of {len(paths)} files copied" in out, out
    assert "removed /retired_module.mpy" in out
    assert re.search(r"rom: image [\d.]+ KB in the 1024 KB partition, unchanged", out), out
    assert not stale.exists()


def test_firmware_runs_in_place_from_the_rom_partition(deployed):
    mark = deployed.channel.mark()
    deployed.channel.power_cycle()
    deployed.channel.wait_kind("wdt", since=mark, timeout=20)
    out = run_tool("pgw", "console", "--port", deployed.link, input="status\n").stdout
    assert re.search(r"^code +rom partition$", out, re.M), out
    out = run_tool("mpremote", "connect", deployed.link, "exec",
                   "import sys, gateway.app, dlms.hdlc\n"
                   "print(sys.path)\nprint(gateway.app.__file__, dlms.hdlc.__file__)").stdout
    assert "['/rom', '/rom/lib', '', '.frozen', '/lib']" in out, out
    assert "/rom/gateway/app.mpy /rom/lib/dlms/hdlc.mpy" in out, out
    image = (deployed.root.parent / (deployed.root.name + ".romfs")).read_bytes()
    assert image[:3] == b"\xd2\xcd\x31", "the partition, a host file beside the flash, holds a ROMFS image"


def test_boot_puts_every_actuator_in_its_failsafe_state(deployed):
    ch = deployed.channel
    mark = ch.mark()
    ch.power_cycle()
    boot = ch.wait_kind("boot", since=mark, cause="PWRON_RESET")
    since = ch.events.index(boot)
    for role in ("relay_battery", "relay_ev_enable"):
        ev = ch.wait_kind("out", since=since, role=role)
        assert ev["value"] == 0, ev
    pilot = ch.wait_kind("pwm", since=since, role="ev_pilot_pwm")
    assert (pilot["freq"], pilot["duty_u16"]) == (1000, 65535)  # +12 V: no EV may charge
    # ...and all of that before the app arms its watchdog.
    wdt = ch.wait_kind("wdt", since=since)
    assert wdt["seq"] > pilot["seq"]


def test_heartbeat_blinks_the_status_led(deployed):
    (deployed.root / "config.json").write_text(json.dumps({"heartbeat_s": 1}))
    ch = deployed.channel
    con = SerialExpect(deployed.link)
    try:
        mark = ch.mark()
        ch.power_cycle()
        boot = ch.wait_kind("boot", since=mark)
        since = ch.events.index(boot)
        con.expect(r"hb up \d+s heap [\d.]+ KB free")
        con.expect(r"hb up \d+s heap")
        on = ch.wait_kind("out", since=since, role="status_led", value=1)
        off = ch.wait_kind("out", since=ch.events.index(on), role="status_led", value=0)
        assert 0.5 <= off["t"] - on["t"] <= 3.0
    finally:
        con.close()


def test_app_crash_leaves_a_repl_and_repeated_crashes_end_in_safe_mode(deployed):
    # A faulty release: its console task fails as soon as the app starts. It
    # is deployed as files (--no-romfs, as on a board without a ROM
    # partition), so that one module can be replaced by a faulty source.
    ch = deployed.channel
    mark = ch.mark()
    out = run_tool("pgw", "deploy", "--port", deployed.link, "--no-romfs", timeout=120).stdout
    assert "rom: image erased (--no-romfs)" in out, out
    assert (deployed.root / "gateway" / "usbconsole.mpy").exists()
    # deploy resets the board: let that boot finish reading its config before
    # the files change, or it checks the new config itself and the power-on
    # boot below finds it already checked.
    ch.wait_kind("wdt", since=mark, timeout=20)
    (deployed.root / "config.json").write_text(
        json.dumps({"watchdog_ms": 1000, "safe_mode_after": 3, "healthy_after_s": 60}))
    (deployed.root / "gateway" / "usbconsole.py").write_text(
        "async def serve(commands):\n    raise RuntimeError('injected fault')\n\n"
        "def say(line):\n    pass\n")
    con = SerialExpect(deployed.link)
    try:
        mark = ch.mark()
        ch.power_cycle()
        con.expect("RuntimeError: injected fault")
        con.expect("app crashed; outputs in the fail-safe; REPL available")
        con.expect(">>> ")
        con.send("print(6 * 7)\r")  # the REPL is usable after the crash
        con.expect("42")
        # Unfed, the watchdog resets the board; each boot crashes again,
        # until the third unhealthy start in a row is followed by safe mode.
        con.expect("SAFE MODE \\(app crashed before reporting healthy\\)", timeout=30)
        con.expect(">>> ")
        boots = [e for e in ch.events[mark:] if e["kind"] == "boot"]
        # the power-on boot checks the new config and soft-reboots (the cause stays)
        assert [b["cause"] for b in boots[:2]] == ["PWRON_RESET"] * 2, boots
        assert [b["cause"] for b in boots[2:]] == ["WDT_RESET"] * (len(boots) - 2), boots
        assert (deployed.root / "state" / "boot.txt").read_text().split()[1] == "unhealthy=3"
        # In safe mode: no app, no watchdog, relays stay open, and the REPL works.
        con.send("print(7 * 6)\r")
        con.expect("42")
        later = ch.events[ch.events.index(boots[-1]):]
        assert not [e for e in later if e["kind"] == "wdt"], later
        assert all(e["value"] == 0 for e in later if e["kind"] == "out" and e["role"].startswith("relay"))
    finally:
        con.close()
    # A fixed release, deployed, gets a fresh start.
    (deployed.root / "gateway" / "usbconsole.py").unlink()
    (deployed.root / "config.json").unlink()
    mark = ch.mark()
    out = run_tool("pgw", "deploy", "--port", deployed.link, timeout=120).stdout
    assert re.search(r"rom: image [\d.]+ KB in the 1024 KB partition, written", out), out
    assert "removed /gateway/usbconsole.mpy" in out, out  # the files deploy's copies go
    ch.wait_kind("wdt", since=mark, timeout=20)
    out = run_tool("pgw", "console", "--port", deployed.link, input="status\n").stdout
    assert "firmware" in out


def test_button_held_at_boot_enters_safe_mode(deployed):
    ch = deployed.channel
    con = SerialExpect(deployed.link)
    try:
        ch.set_input("button", 0)  # active low: pressed
        ch.power_cycle()
        con.expect(r"SAFE MODE \(button held at boot\)")
        con.expect(">>> ")
        ch.set_input("button", 1)
        mark = ch.mark()
        ch.power_cycle()
        ch.wait_kind("wdt", since=mark)  # the app runs again
        answer = con.command("status", "firmware")
        assert "PWRON_RESET" in answer, answer
    finally:
        con.close()


def test_status_reports_a_watchdog_reset(deployed):
    # The technician stops the app with Ctrl-C; the armed watchdog is no
    # longer fed and resets the board, which says so afterwards.
    ch = deployed.channel
    con = SerialExpect(deployed.link)
    try:
        mark = ch.mark()
        con.send(b"\x03")
        con.expect(">>> ")
        ch.wait_kind("boot", since=mark, cause="WDT_RESET", timeout=20)
        answer = con.command("status", "firmware", timeout=20)
        assert "reset     WDT_RESET" in answer, answer
    finally:
        con.close()


def test_deploy_refuses_a_board_file_for_another_board(vboard):
    proc = run_tool("pgw", "deploy", "--port", vboard.link, "--board", "esp32_devkitc", check=False)
    assert proc.returncode == 1
    assert "this virtual board emulates 'virtual'" in proc.stderr, proc.stderr
    assert not (vboard.root / "board.json").exists()  # nothing was copied


def test_interrupting_the_app_is_not_a_crash(deployed):
    # mpremote stops the app with Ctrl-C each time; that must never add up to safe mode.
    for _ in range(4):
        run_tool("mpremote", "connect", deployed.link, "exec", "pass", "reset")
    # At most the start now in progress is counted, never the interrupted ones.
    record = (deployed.root / "state" / "boot.txt").read_text()
    assert record.split()[1] in ("unhealthy=0", "unhealthy=1"), record
    mark = deployed.channel.mark()
    deployed.channel.power_cycle()
    deployed.channel.wait_kind("wdt", since=mark)  # the app starts: no safe mode


def test_script_mode_waits_for_each_answer_despite_heartbeats(deployed):
    (deployed.root / "config.json").write_text(json.dumps({"heartbeat_s": 1}))
    mark = deployed.channel.mark()
    deployed.channel.power_cycle()
    deployed.channel.wait_kind("wdt", since=mark)
    out = run_tool("pgw", "console", "--port", deployed.link, input="status\nhelp\nstatus\n").stdout
    assert out.count("firmware  0.1.0") == 2, out
    assert "reboot [delay_ms]" in out, out
