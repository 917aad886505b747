# A-XDR encoding (dlms.axdr.encode, encode_into), loaded by dlms.axdr on
# first use: reading a meter needs none of it.
import struct

from dlms.axdr import ARRAY, BIT_STRING, BOOLEAN, COMPACT_ARRAY, DATE, DATE_TIME, DONT_CARE, EncodeError, FLOAT32, FLOAT64, MAX_DEPTH, NULL, OCTET_STRING, STRUCTURE, TIME, UTF8_STRING, VISIBLE_STRING, _F32_MAX, _FMT, _SIZE, _known, put_length


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
        from dlms.axdr_types import BitString

        if not isinstance(value, BitString):
            raise EncodeError("bit-string needs a BitString, not %r" % (value,))
        put_length(out, value.nbits)
        out.extend(value.bits)
    elif tag == DATE_TIME or tag == DATE or tag == TIME:
        if tag == DATE_TIME:
            from dlms.axdr_dt import DateTime as cls
        else:
            from dlms import axdr_types

            cls = axdr_types.Date if tag == DATE else axdr_types.Time
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
