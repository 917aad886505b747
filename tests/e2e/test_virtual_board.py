"""The virtual board behaves like a USB-attached MicroPython board."""

import os
import time

import pytest

from host_tools.vboard import ChannelError

from conftest import SerialExpect, run_tool


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


def test_heap_is_limited_to_the_board_budget(vboard):
    out = run_tool("mpremote", "connect", vboard.link, "exec",
                   "import gc, sys\nfrom vboard_rom import RESERVED\ngc.collect()\n"
                   "w = 8 if sys.maxsize > 2**32 else 4\n"
                   "print((gc.mem_free() + gc.mem_alloc() - RESERVED) * 4 // w // 1024)\n"
                   "try:\n    b = bytearray(400 * 1024)\n    print('allocated')\n"
                   "except MemoryError:\n    print('MemoryError')")
    total_kb, verdict = out.stdout.split()
    # virtual.json: heap_kb 160, besides the ROM partition's buffer (flash on a board)
    assert 150 <= int(total_kb) <= 160, out.stdout
    assert verdict == "MemoryError"


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
             "from machine import UART\nu = UART(1, baudrate=9600, timeout=5000)\n"
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
