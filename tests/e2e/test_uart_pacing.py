"""Virtual board UARTs run at the speed of the line the firmware opened.

Bytes cross the supervisor no faster than (1 start + bits + parity + stop)
bits per character at the baud rate, in both directions; `UART.read`
follows timeout / timeout_char. Durations are measured from the arrival of
bytes (host) or with ticks_ms (board), never by sleeping.
"""

import subprocess
import time

import serial

from conftest import BIN


def board_exec(vb, script):
    """Run `script` on the board through mpremote, in the background."""
    return subprocess.Popen([str(BIN / "mpremote"), "connect", str(vb.link), "exec", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def board_output(proc, timeout=30):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (out, err)
    return out


def host_read(port, n, timeout=10.0):
    """Read n bytes; -> (data, time of the first byte, time of the last byte)."""
    data = b""
    first = None
    deadline = time.monotonic() + timeout
    while len(data) < n and time.monotonic() < deadline:
        # One byte while waiting for the first: read(n) would hold it back
        # until n bytes or the port's timeout, skewing the time of arrival.
        chunk = port.read(n - len(data) if data else 1)
        if chunk:
            if first is None:
                first = time.monotonic()
            data += chunk
    return data, first, time.monotonic()


def char_s(baud, bits=8, parity="N", stop=1):
    return (1 + bits + (parity != "N") + stop) / baud


def board_to_host(vb, baud, parity_arg, parity):
    n = 960
    port = serial.Serial(f"{vb.link}.rs485", baud, timeout=0.05)
    try:
        mark = vb.channel.mark()
        proc = board_exec(vb, "from machine import UART\n"
                              "u = UART(1, baudrate=%d, parity=%s)\n"
                              "u.write(bytes(range(96)) * 10)\nprint('sent')" % (baud, parity_arg))
        ev = vb.channel.wait_kind("uart", since=mark, id="1", timeout=20)
        assert (ev["baudrate"], ev["bits"], ev["parity"], ev["stop"]) == (baud, 8, parity, 1), ev
        data, first, last = host_read(port, n)
        assert data == bytes(range(96)) * 10, len(data)
        assert "sent" in board_output(proc)
    finally:
        port.close()
    return last - first, (n - 1) * char_s(baud, parity=parity)


def test_board_to_host_takes_the_line_time_at_9600(vboard):
    took, line = board_to_host(vboard, 9600, "None", "N")
    assert line * 0.95 <= took <= line + 1.0, (took, line)  # ~1.0 s for 960 bytes at 8N1


def test_parity_bit_lengthens_each_character(vboard):
    took, line = board_to_host(vboard, 9600, "0", "E")  # 11 bits a character
    assert line > 1.09, line
    assert line * 0.95 <= took <= line + 1.0, (took, line)


def test_board_to_host_at_115200_is_far_faster(vboard):
    took, line = board_to_host(vboard, 115200, "None", "N")
    assert line < 0.09, line
    assert took < 0.4, (took, line)


def test_host_to_board_takes_the_line_time(vboard):
    # The board times the arrival from its first byte to its 960th.
    port = serial.Serial(f"{vboard.link}.rs485", 9600, timeout=0.05)
    try:
        mark = vboard.channel.mark()
        proc = board_exec(vboard, (
            "import time\nfrom machine import UART\n"
            "u = UART(1, baudrate=9600, timeout=10000, timeout_char=500)\n"
            "first = u.read(1)\nt0 = time.ticks_ms()\n"
            "rest = b''\n"
            "while len(rest) < 959:\n"
            "    chunk = u.read(959 - len(rest))\n"
            "    if not chunk:\n        break\n"
            "    rest += chunk\n"
            "print(len(first + rest), time.ticks_diff(time.ticks_ms(), t0), (first + rest) == bytes(range(96)) * 10)"))
        vboard.channel.wait_kind("uart", since=mark, id="1", timeout=20)
        port.write(bytes(range(96)) * 10)
        count, ms, same = board_output(proc).split()
    finally:
        port.close()
    assert (count, same) == ("960", "True")
    line_ms = 959 * char_s(9600) * 1000
    assert line_ms * 0.95 <= int(ms) <= line_ms + 1000, (ms, line_ms)


def test_read_timeout_and_timeout_char(vboard):
    # timeout: how long read(n) waits for the first byte; timeout_char: the
    # longest gap after that before it returns what it has (fewer than n).
    port = serial.Serial(f"{vboard.link}.rs485", 9600, timeout=0.05)
    try:
        mark = vboard.channel.mark()
        proc = board_exec(vboard, (
            "import time\nfrom machine import UART\n"
            "u = UART(1, baudrate=9600, timeout=300, timeout_char=80)\n"
            "t0 = time.ticks_ms()\nr = u.read(10)\nprint(r, time.ticks_diff(time.ticks_ms(), t0))\n"
            "u.init(baudrate=9600, timeout=10000, timeout_char=80)\n"
            "while not u.any():\n    time.sleep_ms(1)\n"
            "t0 = time.ticks_ms()\nr = u.read(10)\nprint(r, time.ticks_diff(time.ticks_ms(), t0))\n"
            "print(u.any(), u.txdone())\n"))
        first = vboard.channel.wait_kind("uart", since=mark, id="1", timeout=20)
        # The second hello is the re-init: the board now waits for bytes.
        vboard.channel.wait_for(lambda e: e["kind"] == "uart" and e["seq"] > first["seq"], timeout=20)
        port.write(b"abc")
        lines = board_output(proc).splitlines()
    finally:
        port.close()
    none, waited = lines[0].split()
    assert none == "None" and 300 <= int(waited) < 1000, lines
    got, took = lines[1].split()
    assert got == "b'abc'", lines
    assert 80 <= int(took) < 600, lines  # the gap after 'c', not the 10 s timeout
    assert lines[2] == "0 True", lines
