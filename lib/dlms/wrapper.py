# IEC 62056-47 wrapper: DLMS/COSEM APDUs over TCP (and UDP), as the second transport.
#
#   version (2) = 0x0001 | source wPort (2) | destination wPort (2) | length (2) | APDU
#
# All fields big-endian; length counts the APDU only. A client's wPort is its
# SAP (0x10 public client), a server's its logical device (1 management).
# decode() works like a pymodbus framer: it reports how many bytes it used,
# 0 meaning "read more". Framer keeps one bounded buffer across TCP reads.
from compat import const

HEADER_LEN = const(8)
VERSION = const(1)
MAX_APDU_LEN = const(2048)  # default bound; the 16-bit field allows 65535


class WrapperError(ValueError):
    # reason: "bad_version" (the stream is out of step: reported once, then
    # bytes are skipped to the next plausible header), "oversized" (detail:
    # the length field; the frame is skipped)
    def __init__(self, reason, detail=None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class WrapperFrame:
    def __init__(self, src, dst, apdu):
        self.src = src
        self.dst = dst
        self.apdu = apdu

    def to_bytes(self):
        return encode(self.src, self.dst, self.apdu)

    def __eq__(self, other):
        return (isinstance(other, WrapperFrame) and self.src == other.src
                and self.dst == other.dst and self.apdu == other.apdu)

    def __repr__(self):
        return "WrapperFrame(%d, %d, %s)" % (self.src, self.dst, bytes(self.apdu).hex())


def encode(src, dst, apdu):
    n = len(apdu)
    if not (0 <= src <= 0xFFFF and 0 <= dst <= 0xFFFF) or n > 0xFFFF:
        raise WrapperError("field range")
    out = bytearray(HEADER_LEN + n)
    out[0] = 0
    out[1] = VERSION
    out[2] = src >> 8
    out[3] = src & 0xFF
    out[4] = dst >> 8
    out[5] = dst & 0xFF
    out[6] = n >> 8
    out[7] = n & 0xFF
    out[HEADER_LEN:] = apdu
    return bytes(out)


def decode(buf, start=0, end=None, max_len=MAX_APDU_LEN):
    # buf[start:end] -> (used, WrapperFrame) or (0, None) when more bytes are
    # needed. Raises WrapperError for a header that is not version 1 or
    # announces more than max_len.
    if end is None:
        end = len(buf)
    if end - start < HEADER_LEN:
        if end - start >= 2 and (buf[start] != 0 or buf[start + 1] != VERSION):
            raise WrapperError("bad_version")
        return 0, None
    if buf[start] != 0 or buf[start + 1] != VERSION:
        raise WrapperError("bad_version")
    n = buf[start + 6] << 8 | buf[start + 7]
    if n > max_len:
        raise WrapperError("oversized", n)
    if end - start < HEADER_LEN + n:
        return 0, None
    p = start + HEADER_LEN
    return HEADER_LEN + n, WrapperFrame(buf[start + 2] << 8 | buf[start + 3],
                                        buf[start + 4] << 8 | buf[start + 5],
                                        bytes(buf[p:p + n]))


class Framer:
    # Stream bytes in any chunking -> WrapperFrame and WrapperError objects.
    # An oversized frame is skipped by its length as it streams past, never
    # buffered; after a bad version the framer looks for the next 00 01 that
    # starts a plausible header (with the expected wPorts, if given) and
    # fits max_len. TCP does not garble bytes: a WrapperError means the peer
    # is out of step, and the adapter should rather reconnect; resynchronising
    # is best effort. feed() never raises.
    def __init__(self, max_len=MAX_APDU_LEN, src=None, dst=None):
        self.max_len = max_len
        self.src = src  # expected source wPort of incoming frames, or None
        self.dst = dst
        self._cap = HEADER_LEN + max_len
        self._buf = bytearray(self._cap)
        self._mv = memoryview(self._buf)
        self._n = 0
        self._skip = 0  # bytes of an oversized frame still to drop
        self._resync = False
        self.frames = 0
        self.errors = 0
        self.garbage_bytes = 0

    def reset(self):
        self._n = 0
        self._skip = 0
        self._resync = False

    def feed(self, data):
        out = []
        total = len(data)
        src = memoryview(data) if total else data
        off = 0
        while off < total:
            if self._skip:
                k = min(self._skip, total - off)
                self._skip -= k
                off += k
                continue
            k = min(self._cap - self._n, total - off)
            self._mv[self._n:self._n + k] = src[off:off + k]
            self._n += k
            off += k
            self._parse(out)
        return out

    def _plausible(self, buf, r, n):
        # a header could start at r (as far as the bytes present tell)
        if buf[r] != 0 or (n - r >= 2 and buf[r + 1] != VERSION):
            return False
        if n - r >= 4 and self.src is not None and buf[r + 2] << 8 | buf[r + 3] != self.src:
            return False
        if n - r >= 6 and self.dst is not None and buf[r + 4] << 8 | buf[r + 5] != self.dst:
            return False
        return True

    def _parse(self, out):
        buf = self._buf
        n = self._n
        r = 0
        while r < n:
            if not self._plausible(buf, r, n):
                if not self._resync:
                    self._resync = True
                    self.errors += 1
                    out.append(WrapperError("bad_version"))
                # resynchronise: the next 00 01 that could start a header
                q = r + 1
                while q < n and not self._plausible(buf, q, n):
                    q += 1
                self.garbage_bytes += q - r
                r = q
                continue
            try:
                used, frame = decode(buf, r, n, self.max_len)
            except WrapperError as e:
                if self._resync:
                    r += 1  # a length read out of step means nothing
                    self.garbage_bytes += 1
                    continue
                self.errors += 1
                out.append(e)
                # in step: drop the announced frame as it streams past
                ln = e.detail or 0
                have = n - r - HEADER_LEN
                if have >= ln:
                    r += HEADER_LEN + ln
                else:
                    self._skip = ln - have
                    r = n
                continue
            if not used:
                break
            self._resync = False
            self.frames += 1
            out.append(frame)
            r += used
        if r:
            self._mv[0:n - r] = self._mv[r:n]
            self._n = n - r
