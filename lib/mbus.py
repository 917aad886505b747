# Wired M-Bus (EN 13757-2) long frames, and the DLMS/COSEM transport layer on
# top that customer interfaces (Austrian Kaifa/Sagemcom/Landis+Gyr) push with.
#
#   68 | L | L | 68 | C | A | CI | data (L-3 bytes) | CS | 16
#
# L counts C, A, CI and data; CS = sum(C..data) mod 256. For DLMS the CI field
# is 0x00..0x1F (EN 13757-1: "reserved for DLMS"): bits 0-3 the segment's
# sequence number, bit 4 set on the last segment. data = STSAP | DTSAP |
# segment of the APDU. Netz NOE's customer-interface example, and
# UtilitechAS/amsreader-firmware (MbusParser.cpp), split one APDU as CI 0x00
# then 0x11; a one-frame APDU has CI 0x10.
from compat import const

START = const(0x68)
_STOP = const(0x16)
_MAX_L = const(255)
MAX_FRAME = const(261)  # 4 + 255 + 2
_MAX_SEGMENT = const(250)  # L 255 - C, A, CI - STSAP, DTSAP
_CI_FIN = const(0x10)
_CI_SEQ = const(0x0F)
_C_SND_UD = const(0x53)
_A_BROADCAST = const(0xFF)

# framer scan outcomes (defined before use: MicroPython inlines private consts)
_NEED = const(0)
_SKIP = const(1)
_FRAME = const(2)
_ERROR = const(3)


class MbusError(ValueError):
    pass


class FrameError(MbusError):
    # reason: "garbage" (detail: bytes skipped, including 0x68s whose header
    # did not check out), "bad_length" (L < 3), "bad_stop", "bad_checksum",
    # "truncated" (flush() inside a frame; from_bytes() on a short one)
    def __init__(self, reason, detail=None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class SegmentError(MbusError):
    # reason: "not_dlms" (CI above 0x1F; detail: CI), "truncated" (no
    # STSAP/DTSAP), "sequence" (a segment is missing; detail: the number
    # seen), "incomplete" (segment 0 came before the last one), "oversized"
    def __init__(self, reason, detail=None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class LongFrame:
    def __init__(self, c, a, ci, data=b""):
        self.c = c
        self.a = a
        self.ci = ci
        self.data = data

    def to_bytes(self):
        return encode(self.c, self.a, self.ci, self.data)

    @classmethod
    def from_bytes(cls, frame):
        # exactly one long frame -> LongFrame; raises FrameError
        n = len(frame)
        if n < 4 or frame[0] != START:
            raise FrameError("truncated")
        st, end, res = _scan(frame, 0, n)
        if st == _FRAME and end == n:
            return res
        if st == _ERROR:
            raise res
        if st == _FRAME:
            raise FrameError("garbage", n - end)
        raise FrameError("truncated")

    def __eq__(self, other):
        return (isinstance(other, LongFrame) and self.c == other.c and self.a == other.a
                and self.ci == other.ci and bytes(self.data) == bytes(other.data))

    def __repr__(self):
        return "LongFrame(0x%02x, 0x%02x, 0x%02x, %s)" % (self.c, self.a, self.ci, bytes(self.data).hex())


def encode(c, a, ci, data=b""):
    n = len(data) + 3
    if n > _MAX_L:
        raise MbusError("data too long for one frame")
    out = bytearray(n + 6)
    out[0] = START
    out[1] = n
    out[2] = n
    out[3] = START
    out[4] = c
    out[5] = a
    out[6] = ci
    out[7:7 + len(data)] = data
    cs = 0
    for i in range(4, 4 + n):
        cs += out[i]
    out[4 + n] = cs & 0xFF
    out[5 + n] = _STOP
    return bytes(out)


def segment(apdu, stsap=0x01, dtsap=0x67, c=_C_SND_UD, a=_A_BROADCAST, max_segment=_MAX_SEGMENT):
    # An APDU -> list of long frames (bytes), as a customer interface sends it.
    # STSAP 0x01 = management logical device, DTSAP 0x67 = push client 103.
    if not 1 <= max_segment <= _MAX_SEGMENT:
        raise MbusError("max_segment")
    frames = []
    n = len(apdu)
    off = 0
    seq = 0
    while True:
        k = min(max_segment, n - off)
        ci = seq & _CI_SEQ
        if off + k >= n:
            ci |= _CI_FIN
        frames.append(encode(c, a, ci, bytes([stsap, dtsap]) + bytes(apdu[off:off + k])))
        off += k
        seq += 1
        if off >= n:
            return frames


def _scan(buf, r, n):
    # buf[r] == START -> (outcome, next index, LongFrame or FrameError or None)
    if n - r < 4:
        return _NEED, r, None
    ln = buf[r + 1]
    if buf[r + 2] != ln or buf[r + 3] != START:
        return _SKIP, r + 1, None
    if ln < 3:
        return _ERROR, r + 1, FrameError("bad_length", ln)
    end = r + ln + 6
    if n < end:
        return _NEED, r, None
    if buf[end - 1] != _STOP:
        return _ERROR, r + 1, FrameError("bad_stop")
    cs = 0
    for i in range(r + 4, end - 2):
        cs += buf[i]
    if cs & 0xFF != buf[end - 2]:
        return _ERROR, r + 1, FrameError("bad_checksum")
    fr = LongFrame(buf[r + 4], buf[r + 5], buf[r + 6], bytes(buf[r + 7:end - 2]))
    return _FRAME, end, fr


class Framer:
    # Bytes in any chunking -> LongFrame and FrameError objects, in order.
    # One preallocated buffer of a frame and a bit. Bytes before a start are
    # reported once per run as FrameError("garbage", count), when the run
    # ends (or has reached a frame's length, or on flush). After a bad
    # frame the scan restarts one byte later (a cut frame may hide the next
    # one's start); failures that start inside the bad frame's span are not
    # reported again. A lone 0xE5 (ACK) or short frame counts as garbage: a
    # customer interface only sends long frames. feed() never raises.
    def __init__(self):
        self._cap = MAX_FRAME + 64
        self._buf = bytearray(self._cap)
        self._mv = memoryview(self._buf)
        self._n = 0
        self._junk = 0
        self._quiet = False
        self._shadow = 0  # buffer index up to which the last bad frame reached
        self.frames = 0
        self.errors = 0
        self.garbage_bytes = 0

    @property
    def partial(self):
        # True while a frame whose header checked out is still arriving
        n = self._n
        return n > 0 and _scan(self._buf, 0, n)[0] == _NEED

    def feed(self, data):
        out = []
        total = len(data)
        src = memoryview(data) if total else data
        off = 0
        while True:
            k = min(self._cap - self._n, total - off)
            if k > 0:
                self._mv[self._n:self._n + k] = src[off:off + k]
                self._n += k
                off += k
            self._parse(out)
            if off >= total:
                break
        if self._junk >= MAX_FRAME:
            self._report_junk(out)  # else: reported when the run ends
        return out

    def flush(self):
        # Drop what is buffered (e.g. after an idle gap) -> [FrameError("truncated")]
        # if a frame had started, else [].
        out = []
        started = self._n > 0 and self._buf[0] == START
        if not started:
            self._junk += self._n
        self._n = 0
        self._report_junk(out)
        if started:
            self.errors += 1
            out.append(FrameError("truncated"))
        self._quiet = False
        return out

    def reset(self):
        self._n = 0
        self._junk = 0
        self._quiet = False
        self._shadow = 0

    def _report_junk(self, out):
        if self._junk:
            self.garbage_bytes += self._junk
            if not self._quiet:
                self.errors += 1
                out.append(FrameError("garbage", self._junk))
            self._junk = 0

    def _parse(self, out):
        buf = self._buf
        n = self._n
        r = 0
        while r < n:
            i = buf.find(b"\x68", r, n)
            if i < 0:
                self._junk += n - r
                r = n
                break
            if i > r:
                self._junk += i - r
                r = i
            st, r2, res = _scan(buf, r, n)
            if st == _NEED:
                break
            if st == _SKIP or (st == _ERROR and r < self._shadow):
                self._junk += 1
                r = r2
                continue
            self._report_junk(out)
            if st == _FRAME:
                self.frames += 1
                self._quiet = False
            else:
                self.errors += 1
                self._quiet = True
                self._shadow = r + 4 if res.reason == "bad_length" else r + buf[r + 1] + 6
            out.append(res)
            r = r2
        if r:
            self._mv[0:n - r] = self._mv[r:n]
            self._n = n - r
            self._shadow = max(0, self._shadow - r)


class Reassembler:
    # DLMS transport layer: LongFrames -> whole APDUs. push(frame) -> list of
    # the APDUs (bytes) completed by that frame and SegmentErrors, in order;
    # never raises. After a lost segment the rest of that APDU is dropped
    # quietly (counted in dropped_segments) until the next segment 0.
    def __init__(self, max_apdu=2048):
        self.max_apdu = max_apdu
        self._buf = bytearray(max_apdu)  # preallocated: segments are copied in
        self._mv = memoryview(self._buf)
        self._n = 0
        self._next = -1  # expected sequence number, -1 when idle
        self._quiet = False
        self.stsap = None
        self.dtsap = None
        self.apdus = 0
        self.errors = 0
        self.dropped_segments = 0

    @property
    def busy(self):
        return self._next >= 0

    def reset(self):
        self._n = 0
        self._next = -1

    def _fail(self, out, reason, detail):
        self.reset()
        if self._quiet:
            self.dropped_segments += 1
        else:
            self.errors += 1
            out.append(SegmentError(reason, detail))
            self._quiet = True

    def push(self, frame):
        out = []
        ci = frame.ci
        if ci > 0x1F:
            self.errors += 1
            out.append(SegmentError("not_dlms", ci))
            return out
        data = frame.data
        if len(data) < 2:
            self._fail(out, "truncated", None)
            return out
        seq = ci & _CI_SEQ
        if self._next < 0 or seq != self._next:
            if seq != 0:
                self._fail(out, "sequence", seq)
                return out
            if self._next >= 0:
                self.errors += 1
                out.append(SegmentError("incomplete", self._next))
            self._quiet = False
            self._n = 0
            self.stsap = data[0]
            self.dtsap = data[1]
        n = self._n
        k = len(data) - 2
        if n + k > self.max_apdu:
            self._fail(out, "oversized", None)
            return out
        self._mv[n:n + k] = memoryview(data)[2:]
        self._n = n + k
        if ci & _CI_FIN:
            out.append(bytes(self._mv[0:n + k]))
            self.apdus += 1
            self.reset()
        else:
            self._next = (seq + 1) & _CI_SEQ
        return out
