# The console's log in RAM for the `log` command: the last N lines that
# usbconsole.say() printed, each with the uptime it was said at. One
# bytearray of N fixed slots, allocated at boot: adding a line never grows
# the heap, a long line is cut, and the oldest line is overwritten.
from struct import pack_into, unpack_from

from compat import const

_SLOT = const(72)  # bytes per line: 4 uptime s, 1 length, the text
_TEXT = const(67)  # _SLOT - 5: longer lines are cut


class LogRing:
    def __init__(self, lines, clock_ms):
        # clock_ms: a callable -> ms since boot (the app's Monotonic.ms)
        self.size = lines
        self._buf = bytearray(lines * _SLOT)
        self._clock_ms = clock_ms
        self._next = 0  # the slot the next line goes into
        self.kept = 0  # lines in the ring, up to size
        self.said = 0  # lines added since boot

    def add(self, line):
        data = line.encode()
        n = len(data)
        if n > _TEXT:
            n = _TEXT
            while n and data[n] & 0xC0 == 0x80:
                n -= 1  # cut between characters, not inside one
        o = self._next * _SLOT
        buf = self._buf
        pack_into(">IB", buf, o, self._clock_ms() // 1000 & 0xFFFFFFFF, n)
        buf[o + 5:o + 5 + n] = data[:n]  # same length: the bytearray is not resized
        self._next = (self._next + 1) % self.size
        if self.kept < self.size:
            self.kept += 1
        self.said += 1

    def tail(self, n):
        # The last n lines, oldest first, as (uptime s, text), one at a time
        # (the caller writes each out; a list of 500 would not fit).
        if n > self.kept:
            n = self.kept
        buf = self._buf
        k = (self._next - n) % self.size
        for _ in range(n):
            o = k * _SLOT
            t, length = unpack_from(">IB", buf, o)
            yield t, str(buf[o + 5:o + 5 + length], "utf-8")
            k = (k + 1) % self.size
