# Modbus RTU: frames, timing and a client session for one RS-485 bus (sans-I/O).
"""Modbus RTU framing (Modbus over Serial Line V1.02, section 2.5).

Wire format::

    [ silence >= 3.5 chars ][ unit ][ fc ][ data ... ][ CRC lo ][ CRC hi ][ silence ]
                              1 b     1 b   0..252 b    CRC-16/MODBUS over unit..data

A character is 11 bits (start, 8 data, parity or a 2nd stop bit, stop).  The
spec delimits frames by silence, which a USB adapter or an OS driver does not
keep, so this framer delimits a response by its length instead: from the
request when one is outstanding (unit, function and byte count must match),
otherwise from the function code and byte count of the frame itself.  Silence,
when the adapter can see it, only ends a partial frame early (`silence()`).

Resynchronisation after garbage: every byte offset of the buffer is tried as a
frame start; the first offset holding a complete frame whose CRC is right wins
and everything before it is dropped.  If none does, bytes before the earliest
offset that could still be the start of an incomplete frame are dropped and the
rest waits for more data.  A frame is at most 256 bytes, so a false start costs
at most one frame's worth of waiting before its CRC fails and it is skipped.
"""
from compat import const, ticks_diff
from crc16 import crc16_modbus
from modbus import FrameError, ModbusError, ResponseTimeout, SessionBusy, StreamBuffer
from modbus.pdu import decode_response, response_pdu_length

MAX_FRAME = 256  # unit + 253-byte PDU + CRC

# After a broadcast the master waits the "turnaround delay" before the next
# request (Modbus over Serial Line V1.02, 2.4.1: typically 100 to 200 ms).
TURNAROUND_MS = 100
# The response timeout is left to the application; 1 s is the common default
# (a meter answers in tens of ms; slow inverters need several hundred).
RESPONSE_TIMEOUT_MS = 1000
_BITS_PER_CHAR = const(11)


def char_us(baud):
    # Time on the wire of one 11-bit character, rounded up.
    return (_BITS_PER_CHAR * 1000000 + baud - 1) // baud


def silence_us(baud):
    # Inter-frame silence t3.5: 3.5 characters, fixed 1750 us above 19200 baud (2.5.1.1).
    if baud > 19200:
        return 1750
    return (35 * _BITS_PER_CHAR * 100000 + baud - 1) // baud


def inter_char_us(baud):
    # Longest gap allowed inside a frame, t1.5: 1.5 characters, 750 us above 19200 baud.
    if baud > 19200:
        return 750
    return (15 * _BITS_PER_CHAR * 100000 + baud - 1) // baud


def tx_time_us(nbytes, baud):
    # How long nbytes take to leave the UART.  The RS-485 adapter holds the
    # driver-enable pin from the first byte until this has passed (or the UART
    # reports the shift register empty) and must release it within
    # silence_us(baud) after that, because the device may answer then.
    return (nbytes * _BITS_PER_CHAR * 1000000 + baud - 1) // baud


def encode(unit, pdu):
    # -> the RTU frame: unit, PDU, CRC low byte first.
    if not 0 <= unit <= 247:
        raise ValueError("RTU unit id must be 0..247, got %r" % (unit,))
    frame = bytearray(len(pdu) + 3)
    frame[0] = unit
    frame[1:len(pdu) + 1] = pdu
    crc = crc16_modbus(memoryview(frame)[:len(pdu) + 1])
    frame[-2] = crc & 0xFF
    frame[-1] = crc >> 8
    return bytes(frame)


def check_crc(frame):
    # True when the last two bytes are the CRC (low byte first) of the rest.
    n = len(frame)
    if n < 3:
        return False
    crc = crc16_modbus(memoryview(frame)[:n - 2])
    return frame[n - 2] == (crc & 0xFF) and frame[n - 1] == (crc >> 8)


class RtuFramer:
    """Delimits response frames in a byte stream (see the module docstring).

    decode(data) -> (used, unit, pdu):
      used == 0            read more (nothing to drop yet)
      pdu is None, used>0  `used` bytes of garbage to drop (reason in .last_reason)
      otherwise            a frame of `used` bytes (after any garbage before it)
    """

    def __init__(self):
        self._unit = -1
        self._fc = 0
        self._len = 0  # normal response PDU length
        self.crc_errors = 0
        self.garbage_bytes = 0
        self.last_reason = None

    def expect(self, unit, request):
        # Only a response to `request` from `unit` is a frame; None: any response.
        if request is None:
            self._unit = -1
        else:
            self._unit = unit
            self._fc = request.function
            self._len = request.response_length()

    def _size(self, data, i, n):
        # Frame length starting at data[i]: -1 no frame can start here, 0 need more.
        if n - i < 2:
            return 0
        unit = data[i]
        fc = data[i + 1]
        if self._unit >= 0:
            if unit != self._unit:
                return -1
            if fc == self._fc | 0x80:
                return 5
            if fc != self._fc:
                return -1
            if fc <= 4 or fc == 23:
                if n - i < 3:
                    return 0
                if data[i + 2] != self._len - 2:
                    return -1
            return self._len + 3
        if unit == 0 or unit > 247:
            return -1
        plen = response_pdu_length(data, i + 1)
        if plen <= 0:
            return plen
        return plen + 3

    def decode(self, data):
        n = len(data)
        first_incomplete = -1
        for i in range(n):
            size = self._size(data, i, n)
            if size < 0:
                continue
            if size == 0 or i + size > n:
                if first_incomplete < 0:
                    first_incomplete = i
                continue
            if check_crc(memoryview(data)[i:i + size]):
                if i:
                    self.garbage_bytes += i
                return i + size, data[i], bytes(data[i + 1:i + size - 2])
            self.crc_errors += 1
            self.last_reason = "bad_crc"
        if first_incomplete < 0:
            first_incomplete = n
        if first_incomplete:
            self.garbage_bytes += first_incomplete
            if self.last_reason is None:
                self.last_reason = "garbage"
        return first_incomplete, None, None


class RtuClientSession:
    """Master side of one bus: one request at a time, several units.

    request(unit, req, now_ms) -> frame bytes to send
    feed(data)                 -> list of (unit, result)
    silence()                  the adapter saw t3.5 of silence: drop a partial frame
    tick(now_ms)               -> list of (unit, ResponseTimeout) once the answer is late

    result is what pdu.decode_response returns, or a ModbusError instance
    (ModbusException for an exception response).  Frames from other unit ids,
    late answers to earlier requests and our own echo (local_echo=True, for
    adapters that hear themselves) are dropped and counted, never returned.
    """

    def __init__(self, timeout_ms=RESPONSE_TIMEOUT_MS, local_echo=False):
        self.timeout_ms = timeout_ms
        self.local_echo = local_echo
        self.framer = RtuFramer()
        self._buf = StreamBuffer(2 * MAX_FRAME)
        self._req = None
        self._unit = 0
        self._sent = 0
        self._echo = None
        self._problem = None
        self.ignored_frames = 0  # CRC-valid frames that answered nothing pending
        self.truncated = 0
        self.timeouts = 0

    @property
    def pending(self):
        return self._req is not None

    def request(self, unit, req, now_ms):
        if self._req is not None:
            raise SessionBusy("unit %d still has a request outstanding" % self._unit)
        frame = encode(unit, req.pdu)
        # The bus is master-driven: whatever arrived before this request is stale.
        self._buf.clear()
        self.framer.last_reason = None
        self._problem = None
        self._echo = frame if self.local_echo else None
        if unit == 0:
            if req.function not in b"\x05\x06\x0f\x10":
                raise ValueError("broadcast (unit 0) is for writes only")
            self.framer.expect(0, None)
            return frame  # no answer; wait TURNAROUND_MS before the next request
        self._req = req
        self._unit = unit
        self._sent = now_ms
        self.framer.expect(unit, req)
        return frame

    def cancel(self):
        self._req = None
        self.framer.expect(0, None)

    def _strip_echo(self):
        echo = self._echo
        n = min(len(echo), len(self._buf))
        if bytes(self._buf.view()[:n]) != echo[:n]:
            self._echo = None  # no echo after all: parse the buffer normally
            return
        if n == len(echo):
            self._buf.consume(n)
            self._echo = None

    def feed(self, data):
        out = []
        buf = self._buf
        # A flood: keep the newest bytes, they hold the answer.
        self.framer.garbage_bytes += buf.append(data)
        while len(buf):
            if self._echo is not None:
                self._strip_echo()
                if self._echo is not None:
                    break
            used, unit, pdu = self.framer.decode(buf.view())
            if not used:
                break
            buf.consume(used)
            if pdu is None:
                self._problem = FrameError(self.framer.last_reason or "garbage")
                continue
            if self._req is None or unit != self._unit:
                self.ignored_frames += 1
                continue
            try:
                result = decode_response(self._req, pdu)
            except ModbusError as exc:
                result = exc
            out.append((unit, result))
            self.cancel()
        return out

    def silence(self):
        if self._buf:
            self.truncated += 1
            self._problem = FrameError("truncated", "%d bytes before silence" % len(self._buf))
            self._buf.clear()
        self._echo = None

    def tick(self, now_ms):
        if self._req is None or ticks_diff(now_ms, self._sent) < self.timeout_ms:
            return []
        unit = self._unit
        last = self._problem
        if last is None and self._buf:
            last = FrameError("truncated", "%d bytes" % len(self._buf))
        self.timeouts += 1
        self.cancel()
        self._buf.clear()
        detail = "no response from unit %d" % unit
        if last is not None:
            detail = "no valid response from unit %d (%s)" % (unit, last)
        return [(unit, ResponseTimeout(detail, last))]
