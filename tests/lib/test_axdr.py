# lib/dlms/axdr.py: A-XDR decoding/encoding of COSEM Data and the streaming
# array decoder. Runs on CPython and MicroPython. The byte-for-byte agreement
# with gurux-dlms and dlms-cosem is checked in tests/host/test_axdr_interop.py.
from fuzzing import Xorshift32, iterations
from mpcompat import raises
from push_vectors import AIDON_FRAME

from dlms import axdr
from dlms.axdr import (
    ARRAY, BIT_STRING, BOOLEAN, COMPACT_ARRAY, DATE, DATE_TIME, DONT_CARE, DOUBLE_LONG_UNSIGNED,
    FLOAT32, FLOAT64, INTEGER, LONG_UNSIGNED, NULL, OCTET_STRING, STRUCTURE, TIME, UTF8_STRING,
    VISIBLE_STRING, ArrayStream, AxdrError, BitString, Date, DateTime, Time,
)

# Type tags and a clock status bit that dlms.axdr keeps as private const()
DOUBLE_LONG, BCD, LONG, UNSIGNED, LONG64, LONG64_UNSIGNED, ENUM = 5, 13, 16, 17, 20, 21, 22
STATUS_DST = 0x80


def h(text):
    # hex with spaces for readability (not every MicroPython fromhex skips them)
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


# AIDON_FRAME (push_vectors.py): an Aidon 6540 (Norway) list-2 push, HDLC frame
# from toreamun/amshan-homeassistant issue #47; its FCS checks out.
# Data-Notification body: array of 12 structures.
AIDON_DATA_AT = 18  # after flag, format, addresses, control, HCS, LLC, 0F, invoke id, 00
AIDON_DATA_END = 266  # before FCS and flag

# Load profile from a meter's GET response (24 hourly rows: date-time as
# octet-string, status, value), from u9n/dlms-cosem tests/test_a_xdr.py
# (test_decode_array_and_structure). The first octet 00 is Get-Data-Result "data".
PROFILE_24 = (
    "0001180203090C07E2020C0500000000800000110006000186A00203090C07E2020C050"
    "1000000800000110006000188400203090C07E2020C0502000000800000110006000189E00203"
    "090C07E2020C050300000080000011000600018B800203090C07E2020C0504000000800000110"
    "00600018D200203090C07E2020C050500000080000011000600018EC00203090C07E2020C0506"
    "000000800000110006000190600203090C07E2020C05070000008000001100060001920002030"
    "90C07E2020C0508000000800000110006000193A00203090C07E2020C05090000008000001100"
    "06000195400203090C07E2020C050A000000800000110006000196E00203090C07E2020C050B0"
    "00000800000110006000198800203090C07E2020C050C00000080000011000600019A20020309"
    "0C07E2020C050D00000080000011000600019BC00203090C07E2020C050E00000080000011000"
    "600019D600203090C07E2020C050F00000080000011000600019F000203090C07E2020C051000"
    "00008000001100060001A0A00203090C07E2020C05110000008000001100060001A2400203090"
    "C07E2020C05120000008000001100060001A3E00203090C07E2020C0513000000800000110006"
    "0001A5800203090C07E2020C05140000008000001100060001A7200203090C07E2020C0515000"
    "0008000001100060001A8C00203090C07E2020C05160000008000001100060001AA600203090C"
    "07E2020C05170000008000001100060001AC00"
)

# One value of every simple type: (hex, tag, value). Layout per the Data CHOICE
# (IEC 62056-6-2 / Green Book 9.5); the same bytes come out of gurux-dlms
# setData (tests/host/test_axdr_interop.py).
SIMPLE = (
    ("00", NULL, None),
    ("0301", BOOLEAN, True),
    ("0300", BOOLEAN, False),
    ("05fffffffe", DOUBLE_LONG, -2),
    ("057fffffff", DOUBLE_LONG, 0x7FFFFFFF),
    ("06ffffffff", DOUBLE_LONG_UNSIGNED, 0xFFFFFFFF),
    ("06000186a0", DOUBLE_LONG_UNSIGNED, 100000),
    ("0906 0100010800ff", OCTET_STRING, h("0100010800ff")),
    ("0900", OCTET_STRING, b""),
    ("0a0b 4149444f4e5f5630303031", VISIBLE_STRING, "AIDON_V0001"),
    ("0c06 c3a9c3a8c3a0", UTF8_STRING, "\u00e9\u00e8\u00e0"),
    ("0d42", BCD, 0x42),
    ("0f80", INTEGER, -128),
    ("0f7f", INTEGER, 127),
    ("10fffe", LONG, -2),
    ("108000", LONG, -32768),
    ("11ff", UNSIGNED, 255),
    ("120944", LONG_UNSIGNED, 2372),
    ("148000000000000000", LONG64, -0x8000000000000000),
    ("14fffffffffffffffe", LONG64, -2),
    ("15ffffffffffffffff", LONG64_UNSIGNED, 0xFFFFFFFFFFFFFFFF),
    ("161b", ENUM, 27),
    ("173fc00000", FLOAT32, 1.5),
    ("17c1480000", FLOAT32, -12.5),
    ("183ff8000000000000", FLOAT64, 1.5),
    ("18400921fb54442d18", FLOAT64, 3.141592653589793),
    ("040aaa80", BIT_STRING, BitString(h("aa80"), 10)),
    ("0400", BIT_STRING, BitString(b"", 0)),
    ("1907e40101ff000300 00ff88ff", DATE_TIME, DateTime(2020, 1, 1, 0, 3, 0, 0, -120, 0xFF, 0xFF)),
    ("1a07e8030502", DATE, Date(2024, 3, 5)),
    ("1b0c1e00ff", TIME, Time(12, 30, 0)),
    ("ff", DONT_CARE, None),
)


def test_simple_types_decode_and_encode():
    for text, tag, value in SIMPLE:
        data = h(text)
        got, pos = axdr.decode(data)
        assert pos == len(data), (text, pos)
        assert got == value and type(got) is type(value), (text, got, value)
        (gtag, gval), pos = axdr.decode_typed(data)
        assert gtag == tag and gval == value and pos == len(data), (text, gtag, gval)
        enc = axdr.encode(tag, value)
        assert enc == data, (text, enc.hex())


def test_decode_from_bytearray_and_memoryview():
    data = h(AIDON_FRAME)
    want = axdr.decode(data, AIDON_DATA_AT)
    for buf in (bytearray(data), memoryview(data), memoryview(bytearray(data))):
        got = axdr.decode(buf, AIDON_DATA_AT)
        assert got == want, type(buf)
        assert type(got[0][0][0]) is bytes, "octet-strings are copied out as bytes"
    got = axdr.decode(memoryview(h("1907e40101ff00030000ff88ff")))[0]
    assert got == DateTime(2020, 1, 1, 0, 3, 0, 0, -120, 0xFF, 0xFF), got


def test_decode_at_offset_and_bool_nonzero():
    got = axdr.decode(h("aabb 1200ff cc"), 2)
    assert got == (255, 5), got
    assert axdr.decode(h("0302"))[0] is True, "any non-zero octet is true"


def test_length_forms():
    # short form, then 0x81..0x84 long forms (0x83 is decoded though never emitted)
    vectors = (("05", 5, 1), ("7f", 127, 1), ("8180", 128, 2), ("81ff", 255, 2),
               ("820100", 256, 3), ("830100 00", 65536, 4), ("8400010000", 65536, 5),
               ("8105", 5, 2))  # long form of a small length is tolerated
    for text, n, size in vectors:
        got = axdr.decode_length(h(text))
        assert got == (n, size), (text, got)
    for n, text in ((0, "00"), (127, "7f"), (128, "8180"), (255, "81ff"), (256, "820100"),
                    (0xFFFF, "82ffff"), (0x10000, "8400010000")):
        got = axdr.encode_length(n)
        assert got == h(text), (n, got.hex())
    for text in ("80", "85", "ff"):
        exc = raises(axdr.LengthError, axdr.decode_length, h(text + "0000000000"))
        assert exc.reason == "length_overflow", exc.reason
    raises(axdr.TruncatedError, axdr.decode_length, h("82 01"))
    raises(axdr.EncodeError, axdr.encode_length, -1)


def test_long_octet_string_uses_long_length():
    data = bytes(range(256)) * 2
    enc = axdr.encode(OCTET_STRING, data)
    assert enc[:4] == h("09820200"), enc[:4].hex()
    assert axdr.decode(enc) == (data, len(enc))
    enc = axdr.encode(OCTET_STRING, data[:200])
    assert enc[:3] == h("0981c8"), enc[:3].hex()


def test_aidon_push_payload():
    frame = h(AIDON_FRAME)
    value, pos = axdr.decode(frame, AIDON_DATA_AT)
    assert pos == AIDON_DATA_END, pos
    assert len(value) == 12, len(value)
    assert value[0] == [h("0101000281ff"), "AIDON_V0001"], value[0]
    assert value[1][1] == "7359992902081206", value[1]
    # 1-0:1.7.0 active power import 17 W, scaler 0, unit 27 (W)
    assert value[3] == [h("0100010700ff"), 17, [0, 27]], value[3]
    # 1-0:31.7.0 current L1: long 0, scaler -1, unit 33 (A)
    assert value[7] == [h("01001f0700ff"), 0, [-1, 33]], value[7]
    # 1-0:32.7.0 voltage L1: 2372 * 10**-1 V
    assert value[9] == [h("0100200700ff"), 2372, [-1, 35]], value[9]
    typed, pos2 = axdr.decode_typed(frame, AIDON_DATA_AT)
    assert pos2 == pos
    assert typed[1][9][1] == [(OCTET_STRING, h("0100200700ff")), (LONG_UNSIGNED, 2372),
                              (STRUCTURE, [(INTEGER, -1), (ENUM, 35)])], typed[1][9]
    again = axdr.encode(typed[0], typed[1])
    assert again == frame[AIDON_DATA_AT:AIDON_DATA_END], "typed decode re-encodes to the same bytes"


def test_load_profile_capture():
    data = h(PROFILE_24)
    rows, pos = axdr.decode(data, 1)
    assert pos == len(data) == 555, pos
    assert len(rows) == 24, len(rows)
    assert rows[0] == [h("07E2020C0500000000800000"), 0, 100000], rows[0]
    assert rows[23][2] == 0x1AC00, rows[23]
    dt = DateTime.from_octets(rows[1][0])
    assert (dt.year, dt.month, dt.day, dt.hour, dt.deviation, dt.status) == (2018, 2, 12, 1, None, 0), dt
    typed, pos = axdr.decode_typed(data, 1)
    assert axdr.encode(typed[0], typed[1]) == data[1:], "re-encodes to the same bytes"


def test_date_time_fields_and_unix():
    # u9n/dlms-cosem tests/test_time.py: 2020-01-01T00:03:00+02:00 (deviation -120,
    # Blue Book sign: local time to UTC), status 0xFF = not specified
    dt = DateTime.from_octets(h("07e40101ff00030000ff88ff"))
    fields = (dt.year, dt.month, dt.day, dt.weekday, dt.hour, dt.minute, dt.second,
              dt.hundredths, dt.deviation, dt.status)
    assert fields == (2020, 1, 1, 0xFF, 0, 3, 0, 0, -120, 0xFF), fields
    assert dt.to_unix() == 1577829780, dt.to_unix()  # 2019-12-31T22:03:00Z
    assert dt.to_unix(sign=-1) == 1577829780 + 240 * 60, "the other sign convention"
    assert dt.local_seconds() == 1577836980, dt.local_seconds()
    assert dt.to_octets() == h("07e40101ff00030000ff88ff")
    # u9n/dlms-cosem tests/test_xdlms/test_selective_access.py: a range-read
    # bound 2017-10-01 00:00 (Sunday), deviation -60, status 0x80 (DST active)
    dt = DateTime(2017, 10, 1, 0, 0, 0, 0, -60, STATUS_DST)
    assert dt.to_octets() == h("07e10a0107000000 00ffc480"), dt.to_octets().hex()
    assert dt.weekday == 7, dt.weekday


def test_date_time_not_specified():
    dt = DateTime()
    assert dt.to_octets() == h("ffffffffffffffffff800000"), dt.to_octets().hex()
    assert dt.deviation is None and dt.to_unix() is None and dt.local_seconds() is None
    dt = DateTime.from_octets(h("ffffffffffffffffff8000ff"))
    assert dt.deviation is None and dt.status == 0xFF and dt.year == 0xFFFF, dt
    # DST begin month 0xFE, last day of month 0xFE: kept raw, no wall-clock time
    dt = DateTime.from_octets(h("ffff fe fe 07 02 00 00 00 ff c4 00"))
    assert (dt.month, dt.day, dt.weekday, dt.local_seconds()) == (0xFE, 0xFE, 7, None), dt
    assert DateTime(2024, 2, 30, 0, 0, 0, deviation=0).to_unix() is None, "no 30 February"
    assert DateTime(2024, 1, 1, 24, 0, 0, deviation=0).to_unix() is None, "hour 24"
    raises(axdr.BadValueError, DateTime.from_octets, bytes(11))
    raises(axdr.EncodeError, DateTime, 2024, 256)
    raises(axdr.EncodeError, DateTime, 2024, 1, 1, deviation=40000)
    assert DateTime(deviation=-0x8000).deviation is None, "0x8000 read as a number"


def test_date_time_from_unix_round_trip():
    # leap years, century years, the epoch, 2038 and beyond
    for secs in (0, 951782400, 951868799, 4107542400, 2147483647, 2147483648,
                 1709638200, 4102444799, 86399, 1234567890):
        for dev in (None, 0, -60, -120, 330):
            dt = DateTime.from_unix(secs, dev)
            back = DateTime.from_octets(dt.to_octets())
            if dev is None:
                assert back.local_seconds() == secs, (secs, dt)
            else:
                assert back.to_unix() == secs, (secs, dev, dt)
            days = (secs - (dev or 0) * 60) // 86400
            assert back.weekday == (days + 3) % 7 + 1, (secs, dev, back)
    # 2000-02-29 is a Tuesday (2), 2100-03-01 a Monday (1), 1970-01-01 a Thursday (4)
    for secs, want in ((951782400, (2000, 2, 29, 2)), (4107542400, (2100, 3, 1, 1)), (0, (1970, 1, 1, 4))):
        dt = DateTime.from_unix(secs)
        assert (dt.year, dt.month, dt.day, dt.weekday) == want, (secs, dt)


def test_date_and_time():
    d = Date.from_octets(h("07e8030502"))
    assert (d.year, d.month, d.day, d.weekday) == (2024, 3, 5, 2), d
    assert Date(2024, 3, 5).to_octets() == h("07e8030502")
    assert Date().to_octets() == h("ffffffffff")
    t = Time.from_octets(h("0c1e00ff"))
    assert (t.hour, t.minute, t.second, t.hundredths) == (12, 30, 0, 0xFF), t
    assert hash(Time(1, 2, 3)) == hash(Time(1, 2, 3, 0xFF)) and Time(1, 2, 3) != Time(1, 2, 4)
    raises(axdr.BadValueError, Date.from_octets, bytes(4))
    raises(axdr.BadValueError, Time.from_octets, bytes(5))
    raises(axdr.EncodeError, axdr.encode, DATE, Time(1, 2, 3))


def test_bit_string():
    b = BitString.from_str("1010101010")
    assert (b.bits, b.nbits, len(b), str(b)) == (h("aa80"), 10, 10, "1010101010"), b
    assert b.bit(0) == 1 and b.bit(9) == 0
    raises(IndexError, b.bit, 10)
    # padding bits are zeroed, so equal strings compare equal
    assert BitString(h("aabf"), 10) == b, BitString(h("aabf"), 10)
    assert axdr.decode(h("040a aabf"))[0] == b
    assert axdr.encode(BIT_STRING, BitString(h("0f"))) == h("04080f")
    raises(axdr.EncodeError, BitString, b"\x00", 9)
    raises(axdr.EncodeError, BitString.from_str, "102")
    raises(axdr.TruncatedError, axdr.decode, h("0411 ffff"))  # 17 bits need 3 octets


def test_visible_string_octets_map_one_to_one():
    # meters put non-ASCII octets into visible-strings: kept one character per octet
    got = axdr.decode(h("0a03 41e942"))[0]
    assert got == "A\u00e9B", got
    assert axdr.encode(VISIBLE_STRING, got) == h("0a0341e942")
    raises(axdr.EncodeError, axdr.encode, VISIBLE_STRING, "\u20ac")
    exc = raises(axdr.BadValueError, axdr.decode, h("0c02 c328"))
    assert exc.reason == "bad_value", exc.reason


# compact-array vectors, laid out per the Green Book (Data ::= compact-array:
# contents-description TypeDescription, array-contents OCTET STRING); gurux-dlms
# decodes the same bytes to the same rows (tests/host/test_axdr_interop.py).
COMPACT = (
    # three long-unsigned
    ("13 12 06 0001 0002 0003", 18, [1, 2, 3]),
    # rows of structure {unsigned, long-unsigned, octet-string}
    ("13 02 03 11 12 09 0a 01 0002 02 6162 03 0004 00", (STRUCTURE, [17, 18, 9]),
     [[1, 2, h("6162")], [3, 4, b""]]),
    # rows of structure {date-time, array[2] of double-long}
    ("13 02 02 19 01 0002 05 14"
     " 07e8030502 0c0000ff 8000 00 00000001 fffffffe", (STRUCTURE, [25, (ARRAY, 2, 5)]),
     [[DateTime(2024, 3, 5, 12, 0, 0, 0xFF, None, 0), [1, -2]]]),
    # empty
    ("13 11 00", 17, []),
)


def test_compact_array():
    for text, desc, rows in COMPACT:
        data = h(text)
        got, pos = axdr.decode(data)
        assert pos == len(data) and got == rows, (text, got)
        (tag, (gdesc, grows)), pos = axdr.decode_typed(data)
        assert tag == COMPACT_ARRAY and gdesc == desc and grows == rows, (text, gdesc, grows)
        assert axdr.encode(COMPACT_ARRAY, (desc, rows)) == data, text
    # compact-array inside a structure
    data = h("0202 1100 13 11 02 0506")
    assert axdr.decode(data) == ([0, [5, 6]], len(data))


def test_compact_array_bad_input():
    bad = (
        ("13 00 03 000000", axdr.BadValueError),  # null elements take no octets
        ("13 02 00 02 0000", axdr.BadValueError),  # empty structure rows
        ("13 01 0003 00 01 00", axdr.BadValueError),  # array of three nulls
        ("13 12 03 000102", axdr.LengthError),  # 1.5 long-unsigned
        ("13 01 ffff 11 04 00010203", axdr.LengthError),  # rows longer than the contents
        ("13 13 00", axdr.BadTagError),  # compact-array in a description
        ("13 07 00", axdr.BadTagError),
        ("13 02 05 11 11", axdr.TruncatedError),
        ("13 12 08 0001", axdr.TruncatedError),
        ("13 09 03 05 6162", axdr.LengthError),  # octet-string runs past the contents
    )
    for text, exc_type in bad:
        exc = raises(exc_type, axdr.decode, h(text))
        assert isinstance(exc, AxdrError), (text, exc)
    raises(axdr.EncodeError, axdr.encode, COMPACT_ARRAY, (NULL, [None, None]))
    raises(axdr.EncodeError, axdr.encode, COMPACT_ARRAY, ((STRUCTURE, [17]), [[1, 2]]))
    raises(axdr.EncodeError, axdr.encode, COMPACT_ARRAY, ((ARRAY, 2, 17), [[1]]))
    raises(axdr.EncodeError, axdr.encode, COMPACT_ARRAY, (COMPACT_ARRAY, []))


def test_nesting_depth_is_bounded():
    def nested(n):
        return h("0201" * n + "00")
    axdr.decode(nested(16))
    exc = raises(axdr.TooDeepError, axdr.decode, nested(17))
    assert exc.reason == "too_deep", exc.reason
    raises(axdr.TooDeepError, axdr.decode, nested(5), 0, 4)
    raises(axdr.TooDeepError, axdr.decode, h("0101" * 15 + "13 02 01 02 01 11 00"))
    value = (NULL, None)
    for _ in range(17):
        value = (STRUCTURE, [value])
    raises(axdr.EncodeError, axdr.encode, value[0], value[1])


def test_hostile_lengths_do_not_allocate():
    # counts and lengths far beyond the data are rejected before anything is built
    for text in ("01 84ffffffff 00", "02 84 7fffffff", "09 84ffffffff 00",
                 "04 84ffffffff", "0a 83ffffff", "13 11 84ffffffff 00",
                 "13 02 84ffffffff 11"):
        exc = raises(axdr.TruncatedError, axdr.decode, h(text))
        assert exc.need > len(h(text)), (text, exc.need)


def test_every_truncation_is_reported():
    vectors = [h(t) for t, _, _ in SIMPLE] + [h(t) for t, _, _ in COMPACT]
    vectors.append(h(AIDON_FRAME)[AIDON_DATA_AT:AIDON_DATA_END])
    for data in vectors:
        for cut in range(len(data)):
            try:
                axdr.decode(data[:cut])
            except AxdrError as e:
                assert isinstance(e, (axdr.TruncatedError, axdr.LengthError)), (data.hex(), cut, e)
            else:
                # only a prefix that is itself complete may decode (e.g. "00")
                assert data[0] in (NULL, DONT_CARE), (data.hex(), cut)


def test_bad_tags():
    for tag in (7, 8, 11, 14, 28, 100, 254):
        exc = raises(axdr.BadTagError, axdr.decode, bytes((tag, 0, 0, 0, 0)))
        assert exc.reason == "bad_tag", exc.reason
        raises(axdr.BadTagError, axdr.decode, bytes((2, 1, tag, 0)))
        raises(axdr.EncodeError, axdr.encode, tag, 0)


def test_encode_rejects_values_that_do_not_fit():
    bad = ((INTEGER, 128), (INTEGER, -129), (UNSIGNED, -1), (UNSIGNED, 256), (LONG, 32768),
           (LONG_UNSIGNED, 65536), (DOUBLE_LONG, 2 ** 31), (DOUBLE_LONG_UNSIGNED, 2 ** 32),
           (LONG64, 2 ** 63), (LONG64_UNSIGNED, -1), (LONG64_UNSIGNED, 2 ** 64), (ENUM, 256),
           (BCD, 256), (UNSIGNED, True), (UNSIGNED, 1.0), (LONG, "1"), (FLOAT32, 1e39),
           (FLOAT32, "1"), (OCTET_STRING, "text"), (VISIBLE_STRING, 5), (NULL, 0),
           (BOOLEAN, 2), (BIT_STRING, "101"), (DATE_TIME, bytes(11)), (STRUCTURE, [1, 2]),
           (ARRAY, 5), (STRUCTURE, [(UNSIGNED, 300)]), ("1", 1), (COMPACT_ARRAY, [1]))
    for tag, value in bad:
        exc = raises(axdr.EncodeError, axdr.encode, tag, value)
        assert exc.reason == "encode", (tag, value)


def test_encode_accepts_friendly_forms():
    assert axdr.encode(FLOAT64, 2) == h("184000000000000000")
    assert axdr.encode(FLOAT32, float("inf")) == h("177f800000")
    assert axdr.encode(DATE_TIME, bytes(12)) == h("19") + bytes(12)
    assert axdr.encode(OCTET_STRING, bytearray(b"ab")) == h("09026162")
    assert axdr.encode(STRUCTURE, ((UNSIGNED, 1),)) == h("02011101")
    out = bytearray(b"\xc4")
    axdr.encode_into(out, UNSIGNED, 7)
    assert out == bytearray(h("c41107")), out


def _rows(n):
    # a typical 15-minute profile row: date-time octet-string, status, two registers
    items = []
    for i in range(n):
        dt = DateTime.from_unix(1704067200 + 900 * i, -60)
        items.append((STRUCTURE, [(OCTET_STRING, dt.to_octets()), (UNSIGNED, i & 0xFF),
                                  (DOUBLE_LONG_UNSIGNED, 1000 * i), (DOUBLE_LONG_UNSIGNED, 7 * i)]))
    return axdr.encode(ARRAY, items)


def _stream_all(data, chunk, **kw):
    s = ArrayStream(**kw)
    out = []
    peak = 0
    for i in range(0, len(data), chunk):
        for row in s.feed(data[i:i + chunk]):
            out.append(row)
        if s.buffered() > peak:
            peak = s.buffered()
    s.close()
    return out, peak


def test_stream_yields_rows_in_any_chunking():
    data = _rows(40)
    whole = axdr.decode(data)[0]
    for chunk in (1, 2, 7, 31, 64, 200, len(data)):
        rows, peak = _stream_all(data, chunk)
        assert rows == whole, chunk
        if chunk < len(data):
            # only the incomplete tail stays buffered: less than a row (34 octets) + a chunk
            assert peak < 34 + chunk, (chunk, peak)


def test_stream_meter_capture_in_blocks():
    data = h(PROFILE_24)[1:]
    whole = axdr.decode(data)[0]
    for chunk in (1, 13, 100, 239):
        rows, _ = _stream_all(data, chunk)
        assert rows == whole, chunk
    s = ArrayStream(typed=True)
    rows = list(s.feed(data))
    assert rows[0][0] == STRUCTURE and rows[0][1][2] == (DOUBLE_LONG_UNSIGNED, 100000), rows[0]
    assert s.count == 24 and s.received == 24 and s.done(), (s.count, s.received)


def test_stream_compact_array():
    desc = (STRUCTURE, [DOUBLE_LONG_UNSIGNED, LONG, OCTET_STRING])
    rows = [[i * 1000, -i, bytes(i % 5)] for i in range(50)]
    data = axdr.encode(COMPACT_ARRAY, (desc, rows))
    for chunk in (1, 3, 17, len(data)):
        got, _ = _stream_all(data, chunk)
        assert got == rows, chunk


def test_stream_leaves_unread_rows_buffered_until_asked():
    data = _rows(3)
    s = ArrayStream()
    s.feed(data[:50])  # not iterated: nothing lost
    got = list(s.feed(data[50:]))
    assert got == axdr.decode(data)[0], got
    assert s.done()


def test_stream_empty_and_errors():
    s = ArrayStream()
    assert list(s.feed(h("0100"))) == [] and s.done()
    raises(axdr.LengthError, s.feed, b"\x00")
    # hostile element length: refused at once, not after buffering 2 GB
    s = ArrayStream(max_element=256)
    exc = raises(axdr.LengthError, list, s.feed(h("0102 09 84 7fffffff 00")))
    assert exc.reason == "length_overflow", exc
    s = ArrayStream(max_element=64)
    raises(axdr.LengthError, list, s.feed(h("0101 0950") + bytes(70)))
    s = ArrayStream()
    raises(axdr.BadTagError, list, s.feed(h("0203")))
    s = ArrayStream()
    raises(axdr.BadTagError, list, s.feed(h("0102 1101 07")))
    s = ArrayStream()
    list(s.feed(h("0102 1101")))
    exc = raises(axdr.TruncatedError, s.close)
    assert "1 element" in str(exc), str(exc)
    s = ArrayStream()
    raises(axdr.LengthError, list, s.feed(h("0101 1101 1102")))  # data after the array
    s = ArrayStream(max_depth=3)
    raises(axdr.TooDeepError, list, s.feed(h("0101 0201 0201 0201 00")))
    s = ArrayStream()
    raises(axdr.LengthError, list, s.feed(h("13 09 03 05 6162")))


def _profile_blocks(n, block):
    # the encoding of an n-row profile (row i: date-time, status, i, 2 * i),
    # produced block by block as a block transfer delivers it, never whole
    row = bytearray(axdr.encode(STRUCTURE, [(OCTET_STRING, DateTime(2024, 1, 1, 0, 0, 0).to_octets()),
                                            (UNSIGNED, 0), (DOUBLE_LONG_UNSIGNED, 0),
                                            (DOUBLE_LONG_UNSIGNED, 0)]))
    pending = bytearray(b"\x01" + axdr.encode_length(n))
    for i in range(n):
        row[19:23] = i.to_bytes(4, "big")
        row[24:28] = (2 * i).to_bytes(4, "big")
        pending.extend(row)
        while len(pending) >= block:
            yield bytes(pending[:block])
            pending[0:block] = b""
    if pending:
        yield bytes(pending)


def test_stream_of_1000_rows_keeps_only_the_tail():
    import gc
    s = ArrayStream()
    n = 0
    peak = 0
    base = None
    grown = 0
    block = 239  # a typical block-transfer block
    for chunk in _profile_blocks(1000, block):
        for row in s.feed(chunk):
            assert row[2] == n and row[3] == 2 * n, (n, row)
            n += 1
        peak = max(peak, s.buffered())
        if hasattr(gc, "mem_alloc") and n % 100 < 8:
            gc.collect()
            if base is None:
                base = gc.mem_alloc()
            grown = max(grown, gc.mem_alloc() - base)
    s.close()
    assert n == 1000 and s.count == 1000, n
    assert peak < 34 + block, peak
    # MicroPython: the live heap does not grow with the rows decoded
    assert grown < 2048, grown


def _mutate(rng, data):
    buf = bytearray(data)
    kind = rng.below(6)
    at = rng.below(len(buf) + 1)
    state = rng.next()
    if kind == 0 and buf:  # flip bits of one octet
        buf[at % len(buf)] ^= (state & 0xFF) or 1
    elif kind == 1:  # cut
        buf = buf[:at]
    elif kind == 2:  # insert a random octet
        buf = buf[:at] + bytes((state & 0xFF,)) + buf[at:]
    elif kind == 3 and buf:  # an interesting value at a random place
        buf[at % len(buf)] = (0x00, 0x01, 0x02, 0x13, 0x7F, 0x80, 0x81, 0x84, 0xFF)[state % 9]
    elif kind == 4:  # duplicate a slice
        n = state % 16
        buf = buf[:at] + buf[at:at + n] + buf[at:]
    else:  # drop a slice
        n = state % 8
        buf = buf[:at] + buf[at + n:]
    return bytes(buf)


def test_fuzz_decode_mutated_data():
    seeds = [h(t) for t, _, _ in SIMPLE] + [h(t) for t, _, _ in COMPACT]
    seeds.append(h(AIDON_FRAME)[AIDON_DATA_AT:AIDON_DATA_END])
    seeds.append(h(PROFILE_24)[1:120])
    rng = Xorshift32(0x2545F491)
    ok = 0
    for i in range(iterations(2000)):
        data = seeds[i % len(seeds)]
        for _ in range(1 + i % 3):
            data = _mutate(rng, data)
        try:
            typed, pos = axdr.decode_typed(data)
        except AxdrError:
            continue
        ok += 1
        axdr.decode(data)  # the plain decoder agrees
        # what decodes re-encodes (canonical lengths) and decodes to the same
        # encoding again; compared as bytes, since a NaN never equals itself
        again = axdr.encode(typed[0], typed[1])
        typed2, pos2 = axdr.decode_typed(again)
        assert pos2 == len(again) and axdr.encode(typed2[0], typed2[1]) == again, data.hex()
    assert ok > 0, "some mutants stay valid"


def test_fuzz_stream_mutated_data():
    seeds = (h(PROFILE_24)[1:], _rows(5), axdr.encode(COMPACT_ARRAY, ((STRUCTURE, [18, 9]), [[1, b"ab"], [2, b""]])))
    rng = Xorshift32(0x9E3779B9)
    for i in range(iterations(2000) // 3 + 1):
        data = seeds[i % len(seeds)]
        for _ in range(1 + i % 2):
            data = _mutate(rng, data)
        chunk = 1 + rng.below(40)
        s = ArrayStream(max_element=512)
        rows = []
        try:
            for j in range(0, len(data), chunk):
                for row in s.feed(data[j:j + chunk]):
                    rows.append(row)
            s.close()
        except AxdrError:
            continue
        # a stream that completes agrees with the one-shot decoder (repr: NaN)
        assert repr(rows) == repr(axdr.decode(data)[0]), data.hex()
