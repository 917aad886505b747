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
DOUBLE_LONG = const(5)
DOUBLE_LONG_UNSIGNED = const(6)
OCTET_STRING = const(9)
VISIBLE_STRING = const(10)
UTF8_STRING = const(12)
BCD = const(13)
INTEGER = const(15)
LONG = const(16)
UNSIGNED = const(17)
LONG_UNSIGNED = const(18)
COMPACT_ARRAY = const(19)
LONG64 = const(20)
LONG64_UNSIGNED = const(21)
ENUM = const(22)
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
STATUS_INVALID = const(0x01)
STATUS_DOUBTFUL = const(0x02)
STATUS_DIFFERENT_BASE = const(0x04)
STATUS_INVALID_STATUS = const(0x08)
STATUS_DST = const(0x80)


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
        return BitString(bytes(buf[p:q]), n), q
    if tag == DATE_TIME or tag == DATE or tag == TIME:
        q = p + _SIZE[tag]
        if q > end:
            raise TruncatedError(q)
        if tag == DATE_TIME:
            return DateTime.from_octets(buf[p:q]), q
        if tag == DATE:
            return Date.from_octets(buf[p:q]), q
        return Time.from_octets(buf[p:q]), q
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


# ---- encoding


def encode(tag, value):
    out = bytearray()
    encode_into(out, tag, value)
    return bytes(out)


def encode_into(out, tag, value, max_depth=MAX_DEPTH):
    # appends tag and value to the bytearray `out`
    if type(tag) is not int or not _known(tag):
        raise EncodeError("unknown data tag %r" % (tag,))
    out.append(tag)
    _put(out, tag, value, max_depth)


_RANGE = {"b": (-0x80, 0x7F), "B": (0, 0xFF), "h": (-0x8000, 0x7FFF), "H": (0, 0xFFFF),
          "i": (-0x80000000, 0x7FFFFFFF), "I": (0, 0xFFFFFFFF),
          "q": (-0x8000000000000000, 0x7FFFFFFFFFFFFFFF), "Q": (0, 0xFFFFFFFFFFFFFFFF)}


def _put(out, tag, value, room):
    if tag < 28 and _FMT[tag] is not None:
        fmt = _FMT[tag]
        t = type(value)
        if tag == FLOAT32 or tag == FLOAT64:
            if t is not float and t is not int:
                raise EncodeError("tag %d needs a number, not %r" % (tag, value))
            try:
                value = float(value)
            except OverflowError:
                raise EncodeError("%r does not fit tag %d" % (value, tag))
            if tag == FLOAT32 and value == value and _F32_MAX < abs(value) < float("inf"):
                raise EncodeError("%r does not fit float32" % (value,))
        else:
            lo, hi = _RANGE[fmt[1]]
            if t is not int or value < lo or value > hi:
                raise EncodeError("%r does not fit tag %d" % (value, tag))
        out.extend(struct.pack(fmt, value))
    elif tag == STRUCTURE or tag == ARRAY:
        if room <= 0:
            raise EncodeError("nesting deeper than allowed")
        if not isinstance(value, (list, tuple)):
            raise EncodeError("tag %d needs a list of (tag, value)" % tag)
        put_length(out, len(value))
        for item in value:
            if not isinstance(item, tuple) or len(item) != 2:
                raise EncodeError("element %r is not (tag, value)" % (item,))
            encode_into(out, item[0], item[1], room - 1)
    elif tag == OCTET_STRING:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise EncodeError("octet-string needs bytes, not %r" % (value,))
        put_length(out, len(value))
        out.extend(value)
    elif tag == VISIBLE_STRING or tag == UTF8_STRING:
        if isinstance(value, (bytes, bytearray)):
            b = value
        elif type(value) is str:
            b = value.encode()
            if tag == VISIBLE_STRING and len(b) != len(value):
                b = bytearray()
                for c in value:
                    c = ord(c)
                    if c > 0xFF:
                        raise EncodeError("visible-string character beyond Latin-1")
                    b.append(c)
        else:
            raise EncodeError("tag %d needs str, not %r" % (tag, value))
        put_length(out, len(b))
        out.extend(b)
    elif tag == BOOLEAN:
        if value is not True and value is not False and value != 0 and value != 1:
            raise EncodeError("boolean needs True/False, not %r" % (value,))
        out.append(1 if value else 0)
    elif tag == NULL or tag == DONT_CARE:
        if value is not None:
            raise EncodeError("tag %d carries no value, not %r" % (tag, value))
    elif tag == BIT_STRING:
        if not isinstance(value, BitString):
            raise EncodeError("bit-string needs a BitString, not %r" % (value,))
        put_length(out, value.nbits)
        out.extend(value.bits)
    elif tag == DATE_TIME or tag == DATE or tag == TIME:
        cls = DateTime if tag == DATE_TIME else (Date if tag == DATE else Time)
        if isinstance(value, cls):
            out.extend(value.to_octets())
        elif isinstance(value, (bytes, bytearray)) and len(value) == _SIZE[tag]:
            out.extend(value)
        else:
            raise EncodeError("tag %d needs a %s, not %r" % (tag, cls.__name__, value))
    elif tag == COMPACT_ARRAY:
        if room <= 0:
            raise EncodeError("nesting deeper than allowed")
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise EncodeError("compact-array needs (description, rows)")
        from dlms import axdr_compact
        axdr_compact.encode(out, value[0], value[1], room)


# ---- streaming


class ArrayStream:
    # Sans-I/O decoder for one array (tag 1) or compact-array (tag 19) arriving
    # in pieces: feed(data) buffers the data and returns an iterator over the
    # elements completed so far (each row of a profile buffer). Only the
    # incomplete tail stays buffered; an element may not exceed max_element
    # octets. Feed the Data encoding itself, starting at the array tag.
    def __init__(self, max_element=4096, max_depth=MAX_DEPTH, typed=False):
        self._buf = bytearray()
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
        if self._pos:
            self._buf[0:self._pos] = b""  # drop what is decoded
            self._base += self._pos
            self._pos = 0
        if data:
            if self.done():
                raise LengthError("data after the end of the array")
            self._buf.extend(data)
        return self._drain()

    def close(self):
        # the caller has no more data: an unfinished array is an error
        if not self.done():
            raise TruncatedError(self._base + len(self._buf) + 1,
                                 "stream ended after %d elements" % self.received)

    def buffered(self):
        return len(self._buf) - self._pos

    def _drain(self):
        while True:
            v = self._next()
            if v is _NEED:
                return
            yield v

    def _next(self):
        buf = self._buf
        p = self._pos
        end = len(buf)
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


class BitString:
    # bits: octets, first bit in the most significant bit of bits[0];
    # nbits: how many are used (the padding bits of the last octet are zeroed)
    def __init__(self, bits, nbits=None):
        if nbits is None:
            nbits = 8 * len(bits)
        if type(nbits) is not int or nbits < 0 or len(bits) != (nbits + 7) >> 3:
            raise EncodeError("bit-string of %d octets cannot hold %r bits" % (len(bits), nbits))
        pad = -nbits & 7
        if pad and bits[-1] & ((1 << pad) - 1):
            bits = bytearray(bits)
            bits[-1] &= 0xFF ^ ((1 << pad) - 1)
        self.bits = bytes(bits)
        self.nbits = nbits

    @classmethod
    def from_str(cls, text):
        # "10110" -> first bit 1
        b = bytearray((len(text) + 7) >> 3)
        for i in range(len(text)):
            c = text[i]
            if c == "1":
                b[i >> 3] |= 0x80 >> (i & 7)
            elif c != "0":
                raise EncodeError("bit-string text has %r" % (c,))
        return cls(b, len(text))

    def bit(self, i):
        if i < 0 or i >= self.nbits:
            raise IndexError("bit %d of %d" % (i, self.nbits))
        return (self.bits[i >> 3] >> (7 - (i & 7))) & 1

    def __len__(self):
        return self.nbits

    def __str__(self):
        return "".join(["1" if self.bit(i) else "0" for i in range(self.nbits)])

    def __repr__(self):
        return "BitString(%r)" % str(self)

    def __eq__(self, other):
        return isinstance(other, BitString) and other.nbits == self.nbits and other.bits == self.bits

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self.bits) ^ self.nbits


def _check(name, v, hi):
    if type(v) is not int or v < 0 or v > hi:
        raise EncodeError("%s %r out of range 0..%d" % (name, v, hi))
    return v


def _days_from_civil(y, m, d):
    # days since 1970-01-01 of the proleptic Gregorian date (H. Hinnant's algorithm)
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _civil_from_days(z):
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


def _month_days(y, m):
    if m == 2:
        return 29 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 28
    return 30 if m in (4, 6, 9, 11) else 31


def _date_valid(y, m, d):
    return y != 0xFFFF and 1 <= m <= 12 and 1 <= d <= _month_days(y, m)


def _weekday(y, m, d):
    # 1 = Monday .. 7 = Sunday; 1970-01-01 was a Thursday
    if not _date_valid(y, m, d):
        return NOT_SPECIFIED
    return (_days_from_civil(y, m, d) + 3) % 7 + 1


class Date:
    # date (5 octets): year (0xFFFF = not specified), month (0xFD/0xFE DST end/begin),
    # day (0xFD/0xFE second last/last), weekday 1 = Monday; 0xFF = not specified.
    # weekday=None computes it from a valid date.
    def __init__(self, year=YEAR_NOT_SPECIFIED, month=NOT_SPECIFIED, day=NOT_SPECIFIED, weekday=None):
        self.year = _check("year", year, 0xFFFF)
        self.month = _check("month", month, 0xFF)
        self.day = _check("day", day, 0xFF)
        self.weekday = _weekday(year, month, day) if weekday is None else _check("weekday", weekday, 0xFF)

    @classmethod
    def from_octets(cls, b):
        if len(b) != 5:
            raise BadValueError("date needs 5 octets, not %d" % len(b))
        return cls((b[0] << 8) | b[1], b[2], b[3], b[4])

    def to_octets(self):
        return bytes((self.year >> 8, self.year & 0xFF, self.month, self.day, self.weekday))

    def __eq__(self, other):
        return isinstance(other, Date) and other.to_octets() == self.to_octets()

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self.to_octets())

    def __repr__(self):
        return "Date(%d, %d, %d, weekday=%d)" % (self.year, self.month, self.day, self.weekday)


class Time:
    # time (4 octets): hour, minute, second, hundredths; 0xFF = not specified
    def __init__(self, hour=NOT_SPECIFIED, minute=NOT_SPECIFIED, second=NOT_SPECIFIED,
                 hundredths=NOT_SPECIFIED):
        self.hour = _check("hour", hour, 0xFF)
        self.minute = _check("minute", minute, 0xFF)
        self.second = _check("second", second, 0xFF)
        self.hundredths = _check("hundredths", hundredths, 0xFF)

    @classmethod
    def from_octets(cls, b):
        if len(b) != 4:
            raise BadValueError("time needs 4 octets, not %d" % len(b))
        return cls(b[0], b[1], b[2], b[3])

    def to_octets(self):
        return bytes((self.hour, self.minute, self.second, self.hundredths))

    def __eq__(self, other):
        return isinstance(other, Time) and other.to_octets() == self.to_octets()

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self.to_octets())

    def __repr__(self):
        return "Time(%d, %d, %d, %d)" % (self.hour, self.minute, self.second, self.hundredths)


class DateTime:
    # date-time (12 octets): date, time, deviation (int16 minutes, Blue Book: local
    # time to UTC, so UTC = local + deviation; None = 0x8000 not specified), clock
    # status (STATUS_* bits, 0xFF = not specified). Fields keep their wire values.
    def __init__(self, year=YEAR_NOT_SPECIFIED, month=NOT_SPECIFIED, day=NOT_SPECIFIED,
                 hour=NOT_SPECIFIED, minute=NOT_SPECIFIED, second=NOT_SPECIFIED,
                 hundredths=NOT_SPECIFIED, deviation=None, status=0, weekday=None):
        self.year = _check("year", year, 0xFFFF)
        self.month = _check("month", month, 0xFF)
        self.day = _check("day", day, 0xFF)
        self.weekday = _weekday(year, month, day) if weekday is None else _check("weekday", weekday, 0xFF)
        self.hour = _check("hour", hour, 0xFF)
        self.minute = _check("minute", minute, 0xFF)
        self.second = _check("second", second, 0xFF)
        self.hundredths = _check("hundredths", hundredths, 0xFF)
        if deviation == -0x8000:
            deviation = None
        if deviation is not None and (type(deviation) is not int or not -0x7FFF <= deviation <= 0x7FFF):
            raise EncodeError("deviation %r out of range" % (deviation,))
        self.deviation = deviation
        self.status = _check("status", status, 0xFF)

    @classmethod
    def from_octets(cls, b):
        # also for date-times carried in an octet-string (what most meters send)
        if len(b) != 12:
            raise BadValueError("date-time needs 12 octets, not %d" % len(b))
        dev = (b[9] << 8) | b[10]
        if dev & 0x8000:
            dev -= 0x10000
        return cls((b[0] << 8) | b[1], b[2], b[3], b[5], b[6], b[7], b[8], dev, b[11], b[4])

    def to_octets(self):
        dev = 0x8000 if self.deviation is None else self.deviation & 0xFFFF
        return bytes((self.year >> 8, self.year & 0xFF, self.month, self.day, self.weekday,
                      self.hour, self.minute, self.second, self.hundredths,
                      dev >> 8, dev & 0xFF, self.status))

    def local_seconds(self):
        # seconds from 1970-01-01 00:00 to this wall-clock time, ignoring the
        # deviation; None if a field is not specified or out of range
        if not _date_valid(self.year, self.month, self.day):
            return None
        if self.hour > 23 or self.minute > 59 or self.second > 59:
            return None
        return (_days_from_civil(self.year, self.month, self.day) * 86400
                + self.hour * 3600 + self.minute * 60 + self.second)

    def to_unix(self, sign=1):
        # UTC seconds since 1970 (hundredths dropped), None without a deviation.
        # sign=-1 for meters that send the deviation as UTC to local time.
        s = self.local_seconds()
        if s is None or self.deviation is None:
            return None
        return s + sign * self.deviation * 60

    @classmethod
    def from_unix(cls, seconds, deviation=None, status=0, sign=1, hundredths=NOT_SPECIFIED):
        # the local wall-clock time of UTC `seconds` at `deviation` (see to_unix)
        local = seconds - (sign * deviation * 60 if deviation is not None else 0)
        days = local // 86400
        rest = local - days * 86400
        y, m, d = _civil_from_days(days)
        return cls(y, m, d, rest // 3600, rest // 60 % 60, rest % 60, hundredths, deviation, status)

    def __eq__(self, other):
        return isinstance(other, DateTime) and other.to_octets() == self.to_octets()

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self.to_octets())

    def __repr__(self):
        return "DateTime(%d, %d, %d, %d, %d, %d, %d, deviation=%r, status=0x%02x, weekday=%d)" % (
            self.year, self.month, self.day, self.hour, self.minute, self.second,
            self.hundredths, self.deviation, self.status, self.weekday)
