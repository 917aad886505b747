# An RS-485 bus: one UART and its driver-enable (DE) pin, shared by every
# meter on it. Half duplex, master driven: a transaction holds `lock`,
# sends with DE high for exactly the time the bytes take on the wire, then
# reads the answer with a deadline through an asyncio stream.
import time

import asyncio

from compat import const

_RXBUF = const(512)
_PARITY = {"N": None, "E": 0, "O": 1}  # settings letter -> machine.UART parity
# End of an answer: no byte for this long. Above the spec's 3.5 characters
# because a USB adapter or the virtual board's pty delivers in bursts.
_GAP_FLOOR_MS = const(25)
_BLOCK_TX_US = const(20000)  # shorter frames are sent holding the loop: DE drops on time


class Rs485Bus:
    def __init__(self, uart, settings, de=None, de_on=1):
        # settings: (baudrate, bits, parity "N"/"E"/"O", stop)
        self.uart = uart
        self.settings = settings  # the configured line; other meters on the bus compare against it
        self._timing(settings[0], settings[1], settings[2], settings[3])
        self._de = de
        self._de_on = de_on
        if de is not None:
            de.value(1 - de_on)
        self.lock = asyncio.Lock()
        self._reader = asyncio.StreamReader(uart)
        self.buf = bytearray(_RXBUF)
        self.mv = memoryview(self.buf)
        self._one = self.mv[:1]
        self._quiet = time.ticks_us()  # when the line last fell silent
        self.frames = 0
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.stale_bytes = 0  # arrived while nobody was asking: late or foreign answers

    def _timing(self, baud, bits, parity, stop):
        # Computed here rather than taken from modbus.rtu, so a DLMS-only
        # gateway does not load the Modbus modules (~11 KB of heap).
        frame_bits = 1 + bits + (parity != "N") + stop  # start, data, parity, stop
        self.char_us = (frame_bits * 1000000 + baud - 1) // baud
        # t3.5 between frames: 3.5 characters, fixed 1750 us above 19200 baud (Modbus RTU 2.5.1.1)
        self.silence_us = 1750 if baud > 19200 else (35 * frame_bits * 100000 + baud - 1) // baud
        self.gap_ms = max(_GAP_FLOOR_MS, (self.silence_us + 999) // 1000)

    def set_line(self, baud, bits, parity, stop):
        # Re-time the UART for another line setting (IEC 62056-21 mode E's
        # 300 baud 7E1, then the meter's speed). Call holding `lock`. Pins
        # stay (init without tx/rx keeps them); `settings` stays the
        # configured line.
        self.uart.init(baudrate=baud, bits=bits, parity=_PARITY[parity], stop=stop,
                       timeout=0, timeout_char=0, rxbuf=_RXBUF)
        self._timing(baud, bits, parity, stop)

    def restore_line(self):
        # Back to the configured settings.
        s = self.settings
        self.set_line(s[0], s[1], s[2], s[3])

    def describe(self):
        baud, bits, parity, stop = self.settings
        return "%d %d%s%d" % (baud, bits, parity, stop)

    def flush_input(self):
        n = self.uart.any()
        while n:
            self.stale_bytes += self.uart.readinto(self.mv, min(n, _RXBUF)) or 0
            n = self.uart.any()

    async def send(self, data):
        # Call holding `lock`. Waits out the inter-frame silence, drops stale
        # input, then transmits with DE high for the bytes' time on the wire.
        left = self.silence_us - time.ticks_diff(time.ticks_us(), self._quiet)
        if left > 0:
            await asyncio.sleep_ms((left + 999) // 1000)
        self.flush_input()
        de = self._de
        if de is not None:
            de.value(self._de_on)
        start = time.ticks_us()
        self.uart.write(data)
        tx_us = len(data) * self.char_us
        end = time.ticks_add(start, tx_us)
        if tx_us > _BLOCK_TX_US:
            # Sleep through most of a long frame; the last 5 ms are waited
            # precisely below, so DE drops before the device can answer.
            await asyncio.sleep_ms((tx_us - 5000) // 1000)
        while time.ticks_diff(end, time.ticks_us()) > 0:
            pass
        txdone = getattr(self.uart, "txdone", None)
        if txdone is not None:
            # The shift register may lag the computed time (FIFO start-up).
            limit = time.ticks_add(time.ticks_us(), 2 * self.char_us + 1000)
            while not txdone() and time.ticks_diff(limit, time.ticks_us()) > 0:
                pass
        if de is not None:
            de.value(1 - self._de_on)
        self._quiet = time.ticks_us()
        self.frames += 1
        self.tx_bytes += len(data)

    async def recv(self, timeout_ms):
        # -> number of bytes now in self.buf[:n]; 0 when none came in timeout_ms.
        uart = self.uart
        n = 0
        if not uart.any():
            if timeout_ms <= 0:
                return 0
            try:
                # Wakes on the first byte; the rest is taken below without waiting.
                n = await asyncio.wait_for_ms(self._reader.readinto(self._one), timeout_ms) or 0
            except asyncio.TimeoutError:
                return 0
        k = uart.any()
        if k:
            n += uart.readinto(self.mv[n:], min(k, _RXBUF - n)) or 0
        if n:
            self._quiet = time.ticks_us()
            self.rx_bytes += n
        return n
