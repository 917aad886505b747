# A millisecond count since boot that does not wrap: ticks_ms() wraps (after
# 12.4 days on the ESP32's 30-bit ticks); a gateway runs for years. It must
# be read at least once per wrap period; the app's tasks read it every few
# seconds.
from compat import ticks_diff, ticks_ms


class Monotonic:
    def __init__(self, start=None):
        # start: the ticks_ms() the count is 0 at (default: now)
        self._last = ticks_ms() if start is None else start
        self._ms = 0

    def ms(self):
        now = ticks_ms()
        self._ms += ticks_diff(now, self._last)
        self._last = now
        return self._ms

    def at(self, ticks):
        # the count at an earlier ticks_ms() value (within one wrap period)
        return self.ms() - ticks_diff(ticks_ms(), ticks)
