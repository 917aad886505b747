# A-XDR codec for COSEM Data (IEC 62056-6-2 / Green Book 9.5, A-XDR of IEC 61334-6),
# and ArrayStream, which decodes a long array (a profile-generic buffer) element by
# element while block-transfer blocks arrive, keeping only the incomplete tail.
#
# Values decode to None, bool, int, float, bytes (octet-string), str
# (visible-string as Latin-1, utf8-string), list (array, structure, compact-array),
# BitString, DateTime, Date, Time. bcd and enum decode to the raw octet (int).
# decode_typed keeps the tags: (tag, value), containers as lists of (tag, value);
# a compact-array as (description, rows) with plain rows; encode takes that form.
# Bad input raises an AxdrError subclass (.reason); nesting is bounded by
# max_depth and no count or length is trusted beyond the octets present.
# A port with single-precision floats (ESP32) reads float64 to the nearest float32.
import struct

from compat import const

NULL = const(0)
ARRAY = const(1)
STRUCTURE = const(2)
BOOLEAN = const(3)
BIT_STRING = const(4)
_DOUBLE_LONG = const(5)
DOUBLE_LONG_UNSIGNED = const(6)
OCTET_STRING = const(9)
VISIBLE_STRING = const(10)
UTF8_STRING = const(12)
_BCD = const(13)
INTEGER = const(15)
_LONG = const(16)
_UNSIGNED = const(17)
LONG_UNSIGNED = const(18)
COMPACT_ARRAY = const(19)
_LONG64 = const(20)
_LONG64_UNSIGNED = const(21)
_ENUM = const(22)
FLOAT32 = const(23)
FLOAT64 = const(24)
DATE_TIME = const(25)
DATE = const(26)
TIME = const(27)
DONT_CARE = const(255)

MAX_DEPTH = const(16)  # nested containers; a profile row is 2-3 deep

# date/time fields: 0xFF (year 0xFFFF) = not specified; deviation None = 0x8000
NOT_SPECIFIED = const(0xFF)
YEAR_NOT_SPECIFIED = const(0xFFFF)
# clock status bits (Blue Book 4.1.6.1)
_STATUS_INVALID = const(0x01)
_STATUS_DOUBTFUL = const(0x02)
_STATUS_DIFFERENT_BASE = const(0x04)
_STATUS_INVALID_STATUS = const(0x08)
_STATUS_DST = const(0x80)


class AxdrError(ValueError):
    reason = "axdr"


class TruncatedError(AxdrError):
    # the data ends inside an element; need = buffer index it would have to reach
    reason = "truncated"

    def __init__(self, need, msg="data ends inside an element"):
        super().__init__(msg)
        self.need = need


class BadTagError(AxdrError):
    reason = "bad_tag"


class TooDeepError(AxdrError):
    reason = "too_deep"


class LengthError(AxdrError):
    reason = "length_overflow"


class BadValueError(AxdrError):
    reason = "bad_value"


class EncodeError(AxdrError):
    reason = "encode"


# per tag < 28: struct format of fixed-size numbers, and value size in octets
_FMT = (None, None, None, None, None, ">i", ">I", None, None, None, None, None, None,
        ">B", None, ">b", ">h", ">B", ">H", None, ">q", ">Q", ">B", ">f", ">d",
        None, None, None)
_SIZE = b"\x00\x00\x00\x01\x00\x04\x04\x00\x00\x00\x00\x00\x00\x01\x00\x01\x02\x01\x02\x00\x08\x08\x01\x04\x08\x0c\x05\x04"
_F32_MAX = 3.4028234663852886e38
_NEED = object()  # ArrayStream: no complete element yet


def _known(tag):
    return (tag < 28 and tag != 7 and tag != 8 and tag != 11 and tag != 14) or tag == DONT_CARE


# ---- lengths: short form < 0x80, long form 0x81..0x84 + 1..4 octets


def decode_length(buf, pos=0):
    return _length(buf, pos, len(buf))


def _length(buf, p, end):
    if p >= end:
        raise TruncatedError(p + 1)
    n = buf[p]
    p += 1
    if n < 0x80:
        return n, p
    k = n - 0x80
    if k == 0 or k > 4:
        raise LengthError("bad length form 0x%02x at %d" % (n, p - 1))
    if p + k > end:
        raise TruncatedError(p + k)
    n = 0
    for i in range(p, p + k):
        n = (n << 8) | buf[i]
    return n, p + k


def put_length(out, n):
    # what Gurux emits and reads: 0x81/0x82/0x84 (0x83 is only decoded)
    if n < 0 or n > 0xFFFFFFFF:
        raise EncodeError("length %r out of range" % (n,))
    if n < 0x80:
        out.append(n)
    elif n < 0x100:
        out.append(0x81)
        out.append(n)
    elif n < 0x10000:
        out.append(0x82)
        out.extend(struct.pack(">H", n))
    else:
        out.append(0x84)
        out.extend(struct.pack(">I", n))


def encode_length(n):
    out = bytearray()
    put_length(out, n)
    return bytes(out)


# ---- decoding


def decode(buf, pos=0, max_depth=MAX_DEPTH):
    # -> (value, newpos)
    return _item(buf, pos, len(buf), max_depth, False)


def decode_typed(buf, pos=0, max_depth=MAX_DEPTH):
    # -> ((tag, value), newpos)
    return _item(buf, pos, len(buf), max_depth, True)


def _item(buf, p, end, room, typed):
    if p >= end:
        raise TruncatedError(p + 1)
    tag = buf[p]
    v, p = _value(buf, p + 1, end, tag, room, typed)
    if typed:
        return (tag, v), p
    return v, p


def _value(buf, p, end, tag, room, typed):
    # the value of a `tag` element at p; room = containers still allowed
    if tag < 28:
        fmt = _FMT[tag]
        if fmt is not None:
            q = p + _SIZE[tag]
            if q > end:
                raise TruncatedError(q)
            return struct.unpack_from(fmt, buf, p)[0], q
    if tag == STRUCTURE or tag == ARRAY:
        if room <= 0:
            raise TooDeepError("nesting deeper than allowed at %d" % p)
        n, p = _length(buf, p, end)
        if n > end - p:  # every element takes at least its tag octet
            raise TruncatedError(p + n)
        out = []
        for _ in range(n):
            if p >= end:
                raise TruncatedError(p + 1)
            t = buf[p]
            v, p = _value(buf, p + 1, end, t, room - 1, typed)
            out.append((t, v) if typed else v)
        return out, p
    if tag == OCTET_STRING or tag == VISIBLE_STRING or tag == UTF8_STRING:
        n, p = _length(buf, p, end)
        q = p + n
        if q > end:
            raise TruncatedError(q)
        b = bytes(buf[p:q])
        if tag == OCTET_STRING:
            return b, q
        if tag == UTF8_STRING:
            try:
                return b.decode(), q
            except UnicodeError:
                raise BadValueError("utf8-string is not UTF-8 at %d" % p)
        return _latin1(b), q
    if tag == BOOLEAN:
        if p >= end:
            raise TruncatedError(p + 1)
        return buf[p] != 0, p + 1
    if tag == NULL or tag == DONT_CARE:
        return None, p
    if tag == BIT_STRING:
        n, p = _length(buf, p, end)
        q = p + ((n + 7) >> 3)
        if q > end:
            raise TruncatedError(q)
        from dlms.axdr_types import BitString

        return BitString(bytes(buf[p:q]), n), q
    if tag == DATE_TIME or tag == DATE or tag == TIME:
        q = p + _SIZE[tag]
        if q > end:
            raise TruncatedError(q)
        if tag == DATE_TIME:
            from dlms.axdr_dt import DateTime

            return DateTime.from_octets(buf[p:q]), q
        from dlms import axdr_types

        return (axdr_types.Date if tag == DATE else axdr_types.Time).from_octets(buf[p:q]), q
    if tag == COMPACT_ARRAY:
        if room <= 0:
            raise TooDeepError("nesting deeper than allowed at %d" % p)
        from dlms import axdr_compact
        return axdr_compact.decode(buf, p, end, room, typed)
    raise BadTagError("unknown data tag %d at %d" % (tag, p - 1))


def _latin1(b):
    for c in b:
        if c > 0x7F:
            return "".join([chr(c) for c in b])
    return b.decode()


# ---- loaded on first use (module __getattr__): the encoder and the
# date/time/bit-string classes cost heap that reading registers does not need

_LAZY = {"encode": "axdr_enc", "encode_into": "axdr_enc", "DateTime": "axdr_dt",
         "BitString": "axdr_types", "Date": "axdr_types", "Time": "axdr_types"}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(name)
    return getattr(__import__("dlms." + mod, None, None, (name,)), name)


# ---- streaming


class ArrayStream:
    # Sans-I/O decoder for one array (tag 1) or compact-array (tag 19) arriving
    # in pieces: feed(data) buffers the data and returns an iterator over the
    # elements completed so far (each row of a profile buffer). Only the
    # incomplete tail stays buffered; an element may not exceed max_element
    # octets. Feed the Data encoding itself, starting at the array tag.
    # block: the usual size of a piece fed at once. The buffer starts at two
    # blocks (rows are short), is compacted in place, and grows (doubling, to
    # max_element + block) only when an element needs more.
    def __init__(self, max_element=4096, max_depth=MAX_DEPTH, typed=False, block=256):
        self._buf = bytearray(min(max_element, block) + block)
        self._cap = max_element + block
        self._len = 0  # octets of _buf in use
        self._pos = 0  # next undecoded octet in _buf
        self._base = 0  # stream offset of _buf[0]
        self._need = 0  # stream offset the next element reaches at least
        self._max = max_element
        self._room = max_depth - 1  # the array itself is one level
        self._typed = typed
        self._desc = None  # compact-array contents description
        self._end = -1  # compact-array: stream offset of the end of the contents
        self.count = None  # declared elements of an array (None: compact or no header yet)
        self.received = 0  # elements returned so far
        self.started = False  # header decoded

    def done(self):
        if not self.started:
            return False
        if self._desc is None:
            return self.received == self.count
        return self._base + self._pos >= self._end

    def feed(self, data):
        if data:
            if self.done():
                raise LengthError("data after the end of the array")
            buf = self._buf
            n = len(data)
            p = self._pos
            if self._len + n > len(buf):
                # drop what is decoded: move the tail to the front, in place
                k = self._len - p
                if k + n > len(buf):
                    grown = bytearray(max(k + n, min(2 * len(buf), self._cap)))
                    grown[0:k] = memoryview(buf)[p:self._len]
                    self._buf = buf = grown
                elif p:
                    buf[0:k] = memoryview(buf)[p:self._len]
                self._base += p
                self._pos = 0
                self._len = k
            buf[self._len:self._len + n] = data
            self._len += n
        return self._drain()

    def close(self):
        # the caller has no more data: an unfinished array is an error
        if not self.done():
            raise TruncatedError(self._base + self._len + 1,
                                 "stream ended after %d elements" % self.received)

    def buffered(self):
        return self._len - self._pos

    def _drain(self):
        while True:
            v = self._next()
            if v is _NEED:
                return
            yield v

    def _next(self):
        buf = self._buf
        p = self._pos
        end = self._len
        if self._base + end < self._need:
            return _NEED
        if not self.started:
            return self._header(buf, p, end)
        if self._desc is None:
            if self.received == self.count:
                if p < end:
                    raise LengthError("data after the end of the array")
                return _NEED
            lim = end
        else:
            cend = self._end - self._base
            if p >= cend:
                if p < end:
                    raise LengthError("data after the end of the compact-array")
                return _NEED
            lim = end if end < cend else cend
        try:
            if self._desc is None:
                v, q = _item(buf, p, lim, self._room, self._typed)
            else:
                from dlms import axdr_compact
                v, q = axdr_compact.by_desc(buf, p, lim, self._desc)
        except TruncatedError as e:
            if self._desc is not None and self._base + e.need > self._end:
                raise LengthError("compact-array element runs past its contents")
            if e.need - p > self._max:
                raise LengthError("element longer than %d octets" % self._max)
            self._need = self._base + e.need
            return _NEED
        if q - p > self._max:
            raise LengthError("element longer than %d octets" % self._max)
        self._pos = q
        self.received += 1
        return v

    def _header(self, buf, p, end):
        if p >= end:
            return _NEED
        tag = buf[p]
        try:
            if tag == ARRAY:
                n, q = _length(buf, p + 1, end)
                self.count = n
            elif tag == COMPACT_ARRAY:
                if self._room < 0:
                    raise TooDeepError("nesting deeper than allowed")
                from dlms import axdr_compact
                desc, q = axdr_compact.read_desc(buf, p + 1, end, self._room)
                n, q = _length(buf, q, end)
                if n:
                    size = axdr_compact.min_size(desc)
                    if size == 0:
                        raise BadValueError("compact-array of zero-size elements")
                    if size > n:
                        raise LengthError("compact-array element longer than its contents")
                self._desc = desc
                self._end = self._base + q + n
            else:
                raise BadTagError("stream does not start with an array: tag %d" % tag)
        except TruncatedError as e:
            if e.need - p > self._max:
                raise LengthError("array header longer than %d octets" % self._max)
            self._need = self._base + e.need
            return _NEED
        self._pos = q
        self.started = True
        return self._next()


# ---- value types
