"""Per-device message budgets for the hub: a token bucket per topic kid.

A device sends a few messages per interval, and a journal's backlog after an
outage comes in a burst. A flood from one device (a bug, or a device someone
else controls) must not take the hub's time from the others. Each `dev/<kid>/`
topic gets `burst` messages at once and `rate` a second after that. What goes
over is dropped before its signature is checked: that check is the costly
part of a message. The device resends what gets no ACK.

The kid in a topic is not authenticated; a broker ACL that lets each device
publish only under its own kid keeps one device from spending another's
budget (docs/hub.md, "Floods")."""

from __future__ import annotations

import time


class DeviceBudgets:
    def __init__(self, rate=50.0, burst=400, clock=time.monotonic, max_devices=100_000):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.clock = float(rate), float(burst), clock
        self.max_devices = max_devices
        self._buckets = {}  # topic kid -> [tokens, last refill]

    def allow(self, kid: str) -> bool:
        """True if a message on kid's topics may be handled now."""
        now = self.clock()
        b = self._buckets.get(kid)
        if b is None:
            if len(self._buckets) >= self.max_devices:
                self._forget_full(now)
            b = self._buckets[kid] = [self.burst, now]
        tokens = min(self.burst, b[0] + (now - b[1]) * self.rate)
        b[1] = now
        if tokens < 1.0:
            b[0] = tokens
            return False
        b[0] = tokens - 1.0
        return True

    def _forget_full(self, now):
        # Buckets that have refilled hold nothing a new bucket would not:
        # unknown kids in topics cannot grow the table without bound.
        full = [k for k, (t, last) in self._buckets.items() if t + (now - last) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_devices:
            self._buckets.clear()
