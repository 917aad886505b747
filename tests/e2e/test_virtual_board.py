"""The virtual board behaves like a USB-attached MicroPython board."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mpremote.transport_serial import SerialTransport

from host_tools.vboard import ChannelError, VirtualBoardProcess
from host_tools.vboard.supervisor import STANDINS_KB, VIRTUAL_DIR, micropython_path

from conftest import SerialExpect, run_tool

REPO = Path(__file__).resolve().parents[2]


def test_mpremote_exec_runs_on_micropython(vboard):
    out = run_tool("mpremote", "connect", vboard.link, "exec",
                   "import sys; print(sys.implementation.name)")
    assert out.stdout.strip() == "micropython"


def test_fs_ls_lists_only_the_boards_own_files(vboard, tmp_path):
    (vboard.root / "hello.txt").write_text("hi\n")
    (vboard.root / "lib").mkdir()
    out = run_tool("mpremote", "connect", vboard.link, "fs", "ls", ":").stdout.split("\n")
    names = sorted(line.split()[-1] for line in out[1:] if line.strip())
    assert names == ["hello.txt", "lib/"], out
    # Sizes are reported as littlefs reports them on a board.
    assert any(line.split()[0] == "3" for line in out if line.endswith("hello.txt")), out


def test_nothing_outside_the_flash_directory_is_written(vboard, tmp_path):
    outside = tmp_path / "escape.txt"
    proc = run_tool("mpremote", "connect", vboard.link, "exec",
                    "f = open('/../escape.txt', 'w'); f.write('x'); f.close()", check=False)
    run_tool("mpremote", "connect", vboard.link, "exec",
             "import os; os.rename('/nonexistent', '/../escape2.txt')", check=False)
    assert not outside.exists()
    assert not (tmp_path / "escape2.txt").exists()
    assert proc.returncode != 0 or not outside.exists()


def test_ctrl_c_interrupts_main_and_ctrl_d_reboots(vboard):
    (vboard.root / "main.py").write_text(
        "import time\nprint('main started')\nwhile True:\n    time.sleep_ms(10)\n")
    con = SerialExpect(vboard.link)
    try:
        mark = vboard.channel.mark()
        vboard.channel.power_cycle()
        vboard.channel.wait_kind("boot", since=mark, cause="PWRON_RESET")
        con.expect("main started")
        con.send(b"\x03")
        con.expect("KeyboardInterrupt")
        con.expect(">>> ")
        con.send("print(6 * 7)\r")
        con.expect("42")
        mark = vboard.channel.mark()
        con.send(b"\x04")  # Ctrl-D at the friendly REPL: soft reboot
        con.expect("soft reboot")
        con.expect("main started")
        ev = vboard.channel.wait_kind("boot", since=mark)
        assert ev["cause"] == "PWRON_RESET"  # a soft reboot keeps the reset cause
        assert ev["mode"] == "friendly"
    finally:
        con.close()


def test_ctrl_c_between_repl_lines_is_not_a_reset(vboard):
    """The unix port dies of a SIGINT that lands between REPL lines, where a
    board prints a new prompt; mpremote's Ctrl-B then Ctrl-C can land there.
    The board comes back at the same REPL: same reset cause, main.py not run
    again, and the keys sent after the Ctrl-C still arrive."""
    (vboard.root / "main.py").write_text("print('main started')\n")
    con = SerialExpect(vboard.link)
    try:
        mark = vboard.channel.mark()
        vboard.channel.power_cycle()
        boot = vboard.channel.wait_kind("boot", since=mark, cause="PWRON_RESET")
        con.expect("main started")
        vboard.channel.wait_kind("ready", since=mark)
        con.expect(">>> ")
        mark = vboard.channel.mark()
        os.kill(boot["pid"], signal.SIGINT)  # the window, made certain
        con.send("print(6 * 7)\r")
        assert vboard.channel.wait_kind("exit", since=mark)["code"] == -signal.SIGINT
        again = vboard.channel.wait_kind("boot", since=mark)
        assert (again["cause"], again["mode"]) == ("PWRON_RESET", "friendly")
        said = con.expect("42").string
        assert "main started" not in said and "interpreter died" not in said

        # the raw REPL too: mpremote's exec after the process died under it
        con.close()
        t = SerialTransport(str(vboard.link), baudrate=115200)
        try:
            t.enter_raw_repl(soft_reset=False)
            mark = vboard.channel.mark()
            os.kill(again["pid"], signal.SIGINT)
            assert t.exec("print(7 * 6)").strip() == b"42"
            again = vboard.channel.wait_kind("boot", since=mark)
            assert (again["cause"], again["mode"]) == ("PWRON_RESET", "raw")
        finally:
            t.close()
    finally:
        con.close()


def test_machine_reset_reboots_with_soft_reset_cause(vboard):
    mark = vboard.channel.mark()
    run_tool("mpremote", "connect", vboard.link, "reset")
    vboard.channel.wait_kind("boot", since=mark, cause="SOFT_RESET")
    out = run_tool("mpremote", "connect", vboard.link, "exec",
                   "import machine; print(machine.reset_cause() == machine.SOFT_RESET)")
    assert out.stdout.strip() == "True"


def test_unfed_watchdog_resets_the_board(vboard):
    mark = vboard.channel.mark()
    run_tool("mpremote", "connect", vboard.link, "exec",
             "import machine; machine.WDT(timeout=1000)")
    armed = vboard.channel.wait_kind("wdt", since=mark, timeout_ms=1000)
    boot = vboard.channel.wait_kind("boot", since=mark, cause="WDT_RESET", timeout=10)
    assert 0.9 <= boot["t"] - armed["t"] <= 5.0
    out = run_tool("mpremote", "connect", vboard.link, "exec",
                   "import machine; print(machine.reset_cause() == machine.WDT_RESET)")
    assert out.stdout.strip() == "True"


def test_fed_watchdog_does_not_reset(vboard):
    mark = vboard.channel.mark()
    out = run_tool("mpremote", "connect", vboard.link, "exec",
                   "import machine, time\nw = machine.WDT(timeout=500)\n"
                   "for i in range(15):\n    time.sleep_ms(100)\n    w.feed()\nprint('survived')",
                   timeout=30)
    assert "survived" in out.stdout
    boots = [e for e in vboard.channel.events[mark:] if e["kind"] == "boot" and e["cause"] == "WDT_RESET"]
    assert boots == []


# Run at the REPL of a board with nothing but lib/compat.py on it: the
# firmware's heap as `status` counts it, what the stand-ins took, whether
# one buffer of NEAR or of OVER KB (32-bit equivalent) fits, then how much
# of the heap small objects can fill.
HEAP_PROBE = """
import gc, sys, compat, vboard_rom
w = 8 if sys.maxsize > 2**32 else 4
free, used = compat.heap_free_alloc32()
print(free + used, vboard_rom.STANDINS * 4 // w)
for kb in (%d, %d):
    gc.collect()
    try:
        b = bytearray(kb * 256 * w)
        b = None
        print('allocated')
    except MemoryError:
        print('MemoryError')
gc.collect()
chunks = [None] * 6000
n = 0
try:
    while n < len(chunks):
        chunks[n] = bytearray(16)
        n += 1
except MemoryError:
    pass
free, used = compat.heap_free_alloc32()
chunks = None
print(n, free, used)
"""


def check_firmware_heap(vb, heap_kb):
    (vb.root / "lib").mkdir(exist_ok=True)
    shutil.copy(REPO / "lib" / "compat.py", vb.root / "lib" / "compat.py")
    budget = heap_kb * 1024
    # Compiled source leaves holes between the stand-ins' objects (measured
    # ~21 KB): free heap that small objects fill first, but not one piece.
    near, over = heap_kb - 32, heap_kb + 4
    out = run_tool("mpremote", "connect", vb.link, "exec", HEAP_PROBE % (near, over))
    total, standins, near_fits, over_fits, chunks, free_left, used = out.stdout.split()
    # Everything the board holds (ROM partition, stand-ins, ballast) is left
    # out, and what is left is the board's budget: no more, no less.
    assert int(total) == budget, out.stdout
    # The stand-ins fit the allowance the supervisor sized the heap with.
    assert 4 * 1024 < int(standins) < STANDINS_KB * 1024, out.stdout
    assert (near_fits, over_fits) == ("allocated", "MemoryError"), out.stdout
    assert int(chunks) < 6000 and int(free_left) < 1024, out.stdout
    assert int(free_left) + int(used) == budget, out.stdout


def test_firmware_heap_is_the_board_budget(vboard):
    check_firmware_heap(vboard, 160)  # virtual.json: heap_kb 160


def test_firmware_heap_follows_heap_kb(tmp_path):
    with VirtualBoardProcess(tmp_path / "flash", tmp_path / "vb.tty", heap_kb=110) as vb:
        vb.channel.wait_kind("ready", timeout=20)
        check_firmware_heap(vb, 110)


def test_stand_ins_over_their_allowance_say_so():
    # A heap 10 KB short of the budget: the ROM says by how much, once,
    # and holds nothing back.
    env = dict(os.environ, PGW_VBOARD_HEAP_KB="160", PGW_VBOARD_ROMFS_BYTES="0")
    out = subprocess.run(
        [micropython_path(), "-X", "heapsize=150wK", "-c",
         "import sys\nsys.path.insert(0, %r)\nimport vboard_rom\nvboard_rom.hold()\n"
         "print(vboard_rom._ballast is None)" % str(VIRTUAL_DIR)],
        capture_output=True, text=True, env=env, timeout=30, check=True)
    warning, no_ballast = out.stdout.splitlines()
    assert warning.startswith("vboard: the stand-ins left the firmware "), out.stdout
    assert "raise STANDINS_KB in host_tools/vboard/supervisor.py" in warning, out.stdout
    short = int(warning.split("firmware ")[1].split()[0])
    # the 10 KB, the GC tables and what vboard_rom itself took
    assert 10 * 1024 < short < 16 * 1024, out.stdout
    assert no_ballast == "True", out.stdout


def test_gpio_outputs_are_observed_and_inputs_set_from_the_host(vboard):
    mark = vboard.channel.mark()
    vboard.channel.set_input("button", 0)
    out = run_tool("mpremote", "connect", vboard.link, "exec",
                   "from machine import Pin, PWM\n"
                   "Pin(4, Pin.OUT).value(1)\n"
                   "PWM(Pin(6), freq=1000, duty_u16=32768)\n"
                   "print(Pin(9, Pin.IN, Pin.PULL_UP).value())")
    assert out.stdout.strip() == "0"
    ev = vboard.channel.wait_kind("out", since=mark, role="relay_battery", value=1)
    assert ev["gpio"] == "4"
    ev = vboard.channel.wait_kind("pwm", since=mark, role="ev_pilot_pwm")
    assert (ev["freq"], ev["duty_u16"]) == (1000, 32768)
    vboard.channel.set_input("button", 1)
    out = run_tool("mpremote", "connect", vboard.link, "exec",
                   "from machine import Pin\nprint(Pin(9, Pin.IN).value())")
    assert out.stdout.strip() == "1"
    with pytest.raises(ChannelError):
        vboard.channel.set_input("no_such_role", 1)


def test_uart_is_a_host_pty_a_simulator_can_open(vboard):
    import serial

    sim = serial.Serial(f"{vboard.link}.rs485", 9600, timeout=0.1)
    try:
        mark = vboard.channel.mark()
        # The board opens its RS-485 UART, sends a request and waits for the answer.
        proc = __import__("subprocess").Popen(
            [str(__import__("conftest").BIN / "mpremote"), "connect", str(vboard.link), "exec",
             # timeout_char: the pty may hand the answer over in pieces on a busy machine
             "from machine import UART\nu = UART(1, baudrate=9600, timeout=5000, timeout_char=1000)\n"
             "u.write(b'ping')\nprint(u.read(4))"],
            stdout=__import__("subprocess").PIPE, text=True)
        ev = vboard.channel.wait_kind("uart", since=mark, id="1")
        assert ev["baudrate"] == 9600
        got = b""
        deadline = time.monotonic() + 10
        while len(got) < 4 and time.monotonic() < deadline:
            got += sim.read(4 - len(got))
        assert got == b"ping"
        sim.write(b"pong")
        out, _ = proc.communicate(timeout=20)
        assert out.strip() == "b'pong'"
    finally:
        sim.close()


def test_wlan_follows_the_host_wifi_switch(vboard):
    script = ("import network\nw = network.WLAN(network.STA_IF)\nw.active(True)\n"
              "w.connect('home', 'secret')\nprint(w.isconnected(), w.ifconfig()[0])")
    out = run_tool("mpremote", "connect", vboard.link, "resume", "exec", script)
    assert out.stdout.split() == ["True", "127.0.0.1"]
    vboard.channel.wifi(False)
    out = run_tool("mpremote", "connect", vboard.link, "resume", "exec", script)
    assert out.stdout.split() == ["False", "0.0.0.0"]


def test_unique_id_rtc_and_empty_i2c_bus(vboard):
    out = run_tool("mpremote", "connect", vboard.link, "exec",
                   "import machine, time\n"
                   "print(machine.unique_id().hex())\n"
                   "r = machine.RTC()\nr.datetime((2030, 1, 2, 0, 3, 4, 5, 0))\n"
                   "print(r.datetime()[:3], r.datetime()[4:6])\n"
                   "i2c = machine.I2C(0, scl=machine.Pin(10), sda=machine.Pin(11))\n"
                   "print(i2c.scan())\n"
                   "try:\n    i2c.readfrom(0x60, 4)\nexcept OSError as e:\n    print('OSError', e.errno)\n")
    uid, clock, scan, err = out.stdout.strip().splitlines()
    assert len(uid) == 12 and uid == vboard_uid(vboard), uid
    assert clock == "(2030, 1, 2) (3, 4)", clock
    assert scan == "[]"
    assert err == "OSError 19"  # ENODEV: nobody acknowledged, as on an ESP32


def vboard_uid(vb):
    import hashlib

    return hashlib.sha256(str(vb.root.resolve()).encode()).hexdigest()[:12]
