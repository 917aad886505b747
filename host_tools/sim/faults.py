"""Fault injection for the simulators: what tests make a meter do wrong.

Each simulator's transport passes every response through `Faults.apply()`
just before it goes on the line, and sleeps `take_delay()` first. Tests
arm a fault, run their client, and read the counters.
"""

import threading


class Faults:
    def __init__(self):
        self._lock = threading.Lock()
        self.silent = False  # a dead meter: nothing is answered
        self._drop = 0
        self._corrupt = 0
        self._delays = []  # seconds, one per coming response
        self.exceptions = []  # Modbus: exception codes for the coming requests
        self.dropped = 0
        self.corrupted = 0
        self.delayed = 0

    def drop_next(self, n=1):
        """Swallow the next n responses (a half-dead meter, a lost frame)."""
        with self._lock:
            self._drop += n

    def corrupt_next(self, n=1):
        """Flip a bit in the CRC/FCS of the next n responses."""
        with self._lock:
            self._corrupt += n

    def delay_next(self, seconds, n=1):
        """Hold each of the next n responses back by `seconds`."""
        with self._lock:
            self._delays.extend([float(seconds)] * n)

    def exception_next(self, code, n=1):
        """Modbus: answer the next n requests with exception `code` (e.g. 2, 4, 6)."""
        with self._lock:
            self.exceptions.extend([int(code)] * n)

    def take_exception(self):
        with self._lock:
            return self.exceptions.pop(0) if self.exceptions else None

    def clear(self):
        with self._lock:
            self.silent = False
            self._drop = self._corrupt = 0
            self._delays = []
            self.exceptions = []

    def take_delay(self):
        with self._lock:
            if not self._delays:
                return 0.0
            self.delayed += 1
            return self._delays.pop(0)

    def apply(self, chunk):
        """The response as it goes on the line, or None if it is lost."""
        with self._lock:
            if self.silent:
                self.dropped += 1
                return None
            if self._drop:
                self._drop -= 1
                self.dropped += 1
                return None
            if self._corrupt and chunk:
                self._corrupt -= 1
                self.corrupted += 1
                b = bytearray(chunk)
                # HDLC: the FCS sits before the closing flag; elsewhere the CRC ends the frame.
                i = len(b) - 2 if len(b) > 3 and b[-1] == 0x7E else len(b) - 1
                b[i] ^= 0x01
                return bytes(b)
        return chunk
