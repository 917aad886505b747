# Modbus TCP: MBAP framing and a client session with several outstanding transactions (sans-I/O).
"""Modbus TCP framing (Modbus Messaging on TCP/IP Implementation Guide V1.0b, 3.1.3).

ADU::

    [ transaction id:2 ][ protocol id:2 = 0 ][ length:2 ][ unit:1 ][ fc:1 ][ data ... ]
                                               length counts unit + PDU: 2..254

decode(data) -> (used, tid, unit, pdu), used == 0 meaning "read more".

TCP delivers bytes in order and intact, so the only way to lose the framing is
a peer that writes something else (wrong protocol id, impossible length).
Nothing inside a stream marks where the next ADU starts, so there is no safe
resynchronisation: decode raises FrameError("bad_mbap"), the session drops
its buffer and reports the error with tid None; the firmware adapter should
close and reopen the connection (outstanding transactions then time out).
"""
from compat import const, ticks_diff
from modbus import FrameError, ModbusError, ResponseMismatch, ResponseTimeout, SessionBusy, StreamBuffer
from modbus.pdu import decode_response

_MAX_ADU = const(260)  # 7-byte MBAP header + 253-byte PDU
_DEFAULT_PORT = const(502)
_RESPONSE_TIMEOUT_MS = const(3000)


def encode(tid, unit, pdu):
    n = len(pdu) + 1
    if not 0 <= tid <= 0xFFFF or not 0 <= unit <= 0xFF or n > 254:
        raise ValueError("MBAP: tid %r, unit %r or PDU length %d out of range" % (tid, unit, n - 1))
    return bytes((tid >> 8, tid & 0xFF, 0, 0, n >> 8, n & 0xFF, unit)) + pdu


def decode(data):
    n = len(data)
    if n < 7:
        return 0, 0, 0, None
    if data[2] or data[3]:
        raise FrameError("bad_mbap", "protocol id 0x%02x%02x" % (data[2], data[3]))
    length = (data[4] << 8) | data[5]
    if not 2 <= length <= 254:
        raise FrameError("bad_mbap", "length %d" % length)
    if n < 6 + length:
        return 0, 0, 0, None
    tid = (data[0] << 8) | data[1]
    return 6 + length, tid, data[6], bytes(data[7:6 + length])


class TcpClientSession:
    """Client side of one Modbus TCP connection.

    request(unit, req, now_ms=None) -> (tid, adu bytes)   raises SessionBusy when
                                        max_outstanding transactions are open
    feed(data)   -> list of (tid, result); result is what pdu.decode_response
                    returns or a ModbusError (ModbusException for an exception
                    response); tid None: the stream lost its framing
    tick(now_ms) -> list of (tid, ResponseTimeout) for transactions older than timeout_ms

    Answers may come in any order; they are matched by transaction id.  An
    answer for an unknown or expired tid is dropped and counted (.unmatched).
    """

    def __init__(self, max_outstanding=8, timeout_ms=_RESPONSE_TIMEOUT_MS):
        self.max_outstanding = max_outstanding
        self.timeout_ms = timeout_ms
        self._open = {}  # tid -> [unit, request, sent_ms]
        self._next = 1
        self._now = 0
        self._buf = StreamBuffer(2 * _MAX_ADU)
        self.unmatched = 0
        self.framing_errors = 0
        self.timeouts = 0

    @property
    def outstanding(self):
        return len(self._open)

    def request(self, unit, req, now_ms=None):
        if len(self._open) >= self.max_outstanding:
            raise SessionBusy("%d transactions outstanding" % len(self._open))
        if now_ms is None:
            now_ms = self._now
        tid = self._next
        while tid in self._open:
            tid = tid % 0xFFFF + 1
        self._next = tid % 0xFFFF + 1
        adu = encode(tid, unit, req.pdu)
        self._open[tid] = [unit, req, now_ms]
        return tid, adu

    def cancel(self, tid):
        self._open.pop(tid, None)

    def feed(self, data):
        out = []
        mv = memoryview(data)
        pos = 0
        buf = self._buf
        while pos < len(mv):
            # After decoding, at most one partial ADU (< MAX_ADU) stays, so the
            # next slice always fits and nothing is lost.
            take = min(len(mv) - pos, 2 * _MAX_ADU - len(buf))
            buf.append(mv[pos:pos + take])
            pos += take
            while True:
                try:
                    used, tid, unit, pdu = decode(buf.view())
                except FrameError as exc:
                    self.framing_errors += 1
                    buf.clear()
                    out.append((None, exc))
                    pos = len(mv)  # the rest of the stream is out of step too
                    break
                if not used:
                    break
                buf.consume(used)
                entry = self._open.pop(tid, None)
                if entry is None:
                    self.unmatched += 1
                    continue
                if unit != entry[0]:
                    result = ResponseMismatch("unit %d answered for unit %d" % (unit, entry[0]))
                else:
                    try:
                        result = decode_response(entry[1], pdu)
                    except ModbusError as exc:
                        result = exc
                out.append((tid, result))
        return out

    def tick(self, now_ms):
        self._now = now_ms
        out = []
        for tid in sorted(self._open):
            entry = self._open[tid]
            if ticks_diff(now_ms, entry[2]) >= self.timeout_ms:
                out.append((tid, ResponseTimeout("no response to transaction %d (unit %d)" % (tid, entry[0]))))
        for tid, _ in out:
            del self._open[tid]
        self.timeouts += len(out)
        return out

    def clear(self):
        # The connection was closed: forget the stream and every transaction.
        self._buf.clear()
        self._open = {}
