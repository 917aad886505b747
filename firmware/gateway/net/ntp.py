# One SNTP exchange over UDP without blocking the event loop (lib/sntp.py
# has the packets). -> (unix ms at our receive instant, local ms then).
import os
import socket

import asyncio

import sntp
from compat import ticks_diff, ticks_ms


async def query(host, port, timeout_ms=2000, rate=1):
    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        r = os.urandom(4)
        nonce = 1577836800000 + (r[0] << 24 | r[1] << 16 | r[2] << 8 | r[3])
        t1 = ticks_ms()
        s.sendto(sntp.request(nonce), addr)
        while True:
            try:
                reply = s.recv(64)
            except OSError:
                reply = None
            if reply:
                t4 = ticks_ms()
                try:
                    _, sent = sntp.parse(reply, nonce)
                except sntp.SntpError as e:
                    if e.reason != "origin":  # a stale answer to an earlier try: keep waiting
                        raise
                else:
                    # half the round trip, on the simulation's time scale
                    return sent + ticks_diff(t4, t1) * rate // 2, t4
            if ticks_diff(ticks_ms(), t1) >= timeout_ms:
                raise OSError("ntp: no answer from %s:%d in %d ms" % (host, port, timeout_ms))
            await asyncio.sleep_ms(10)
    finally:
        s.close()
