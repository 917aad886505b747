# The virtual board's wire to its supervisor (`pgw vboard`).
#
# The stand-in `machine` and `network` modules report every output change
# here and read host-set inputs from here, so tests observe the GPIO
# channel on the host instead of trusting the firmware's own account.
# Line protocol, ASCII, one message per line:
#   board -> host: hello TOKEN | out GPIO V | pwm GPIO FREQ DUTY16 | adc GPIO
#                  wdt TIMEOUT_MS | feed | reset CAUSE | ready | i2c ...
#   host -> board: in GPIO V | sync | go | wifi up|down | i2c ok HEX | i2c nack
import os
import select
import socket

_sock = None
_poller = None
_rx = b""
inputs = {}  # gpio (str) -> int, set by the host
wifi_up = True


def _open():
    global _sock, _poller
    port = os.getenv("PGW_VBOARD_PORT")
    if not port:
        raise OSError("not running under pgw vboard (PGW_VBOARD_PORT unset)")
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", int(port))[0][-1])
    _sock = s
    _poller = select.poll()
    _poller.register(s, select.POLLIN)
    send("hello " + os.getenv("PGW_VBOARD_TOKEN", ""))
    # The host answers with the current inputs and then "sync", so a button
    # held at power-on is seen by boot.py.
    wait_for("sync")


def send(line):
    if _sock is None:
        _open()
    _sock.write(line.encode() + b"\n")


def _apply(line):
    global wifi_up
    parts = line.split()
    if not parts:
        return None
    if parts[0] == "in" and len(parts) == 3:
        inputs[parts[1]] = int(parts[2])
        return None
    if parts[0] == "wifi" and len(parts) == 2:
        wifi_up = parts[1] == "up"
        return None
    return line


def _read_lines(timeout_ms):
    # Yields complete lines that are not input updates.
    global _rx
    out = []
    if _poller.poll(timeout_ms):
        data = _sock.recv(512)
        if not data:
            raise OSError("vboard supervisor closed the link")
        _rx += data
    while b"\n" in _rx:
        line, _rx = _rx.split(b"\n", 1)
        line = _apply(line.decode())
        if line is not None:
            out.append(line)
    return out


def poll():
    # Take in whatever input updates have arrived, without waiting.
    if _sock is None:
        _open()
    while _poller.poll(0):
        _read_lines(0)


def wait_for(prefix):
    # Block until the host sends a line starting with prefix; return it.
    while True:
        for line in _read_lines(-1):
            if line.startswith(prefix):
                return line


def request(line, prefix):
    send(line)
    return wait_for(prefix)
