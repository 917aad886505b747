"""An SNTP server (RFC 4330) that tells the simulation's time: virtual
boards of a demo or a test whose clock runs faster than the wall's ask it,
as a real board asks pool.ntp.org. Loopback only; any port (a normal user
cannot bind 123, and the firmware's ntp.port can point anywhere)."""

from __future__ import annotations

import socket
import struct
import threading
import time

_NTP_UNIX = 2208988800


def _ntp(unix_s: float):
    sec = int(unix_s) + _NTP_UNIX
    return sec % (1 << 32), int((unix_s % 1) * (1 << 32))


class SimNtpServer:
    """clock() -> unix seconds (float) of the simulation."""

    def __init__(self, clock=time.time, host="127.0.0.1", port=0):
        self.clock = clock
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.answered = 0
        self.paused = False  # a test's way to make the server silent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sim-ntp", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _serve(self):
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(512)
            except (socket.timeout, OSError):
                continue
            if len(data) < 48 or data[0] & 7 != 3 or self.paused:
                continue
            now = self.clock()
            r = _ntp(now)
            reply = struct.pack("!BBbbII4s", 0x24, 1, 6, -20, 0, 0, b"SIM\x00")
            reply += struct.pack("!II", *r) + data[40:48] + struct.pack("!IIII", *r, *_ntp(self.clock()))
            self.sock.sendto(reply, addr)
            self.answered += 1

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
