# A-XDR compact-array (decode, encode, the streaming helpers): rarely met, so
# dlms.axdr imports this module only when a compact-array shows up.
import struct

from dlms.axdr import (ARRAY, BIT_STRING, COMPACT_ARRAY, OCTET_STRING, STRUCTURE, UTF8_STRING,
                       VISIBLE_STRING, _SIZE, BadTagError, BadValueError, EncodeError,
                       LengthError, TooDeepError, TruncatedError, _known, _length, _value,
                       put_length)


# compact-array: contents-description (TypeDescription), then the contents as an
# octet-string of untagged values. A description is a tag (int), (STRUCTURE,
# [descriptions]) or (ARRAY, count, description).
def decode(buf, p, end, room, typed):
    desc, p = read_desc(buf, p, end, room - 1)
    n, p = _length(buf, p, end)
    q = p + n
    if q > end:
        raise TruncatedError(q)
    rows = []
    if n:
        size = min_size(desc)
        if size == 0:
            raise BadValueError("compact-array of zero-size elements")
        if size > n:
            raise LengthError("compact-array element longer than its contents")
        while p < q:
            try:
                v, p = by_desc(buf, p, q, desc)
            except TruncatedError:
                raise LengthError("compact-array element runs past its contents")
            rows.append(v)
    if typed:
        return (desc, rows), q
    return rows, q


def read_desc(buf, p, end, room):
    if p >= end:
        raise TruncatedError(p + 1)
    tag = buf[p]
    p += 1
    if tag == STRUCTURE:
        if room <= 0:
            raise TooDeepError("description deeper than allowed at %d" % p)
        n, p = _length(buf, p, end)
        if n > end - p:
            raise TruncatedError(p + n)
        items = []
        for _ in range(n):
            d, p = read_desc(buf, p, end, room - 1)
            items.append(d)
        return (STRUCTURE, items), p
    if tag == ARRAY:
        if room <= 0:
            raise TooDeepError("description deeper than allowed at %d" % p)
        if p + 2 > end:
            raise TruncatedError(p + 2)
        n = (buf[p] << 8) | buf[p + 1]
        d, p = read_desc(buf, p + 2, end, room - 1)
        return (ARRAY, n, d), p
    if tag < 28 and tag != COMPACT_ARRAY and _known(tag):
        return tag, p
    raise BadTagError("bad type in compact-array description: %d at %d" % (tag, p - 1))


def min_size(desc):
    if type(desc) is int:
        if desc in (BIT_STRING, OCTET_STRING, VISIBLE_STRING, UTF8_STRING):
            return 1  # the length octet
        return _SIZE[desc]
    if desc[0] == STRUCTURE:
        total = 0
        for d in desc[1]:
            total += min_size(d)
        return total
    size = min_size(desc[2])
    if size == 0 and desc[1]:
        raise BadValueError("compact-array of zero-size elements")
    return desc[1] * size


def by_desc(buf, p, end, desc):
    if type(desc) is int:
        return _value(buf, p, end, desc, 0, False)
    out = []
    if desc[0] == STRUCTURE:
        for d in desc[1]:
            v, p = by_desc(buf, p, end, d)
            out.append(v)
    else:
        d = desc[2]
        for _ in range(desc[1]):
            v, p = by_desc(buf, p, end, d)
            out.append(v)
    return out, p


def put_desc(out, desc, room):
    if type(desc) is int:
        if desc >= 28 or desc == COMPACT_ARRAY or desc == STRUCTURE or desc == ARRAY or not _known(desc):
            raise EncodeError("bad type in compact-array description: %r" % (desc,))
        out.append(desc)
        return
    if room <= 0:
        raise EncodeError("description deeper than allowed")
    if isinstance(desc, tuple) and len(desc) == 2 and desc[0] == STRUCTURE:
        out.append(STRUCTURE)
        put_length(out, len(desc[1]))
        for d in desc[1]:
            put_desc(out, d, room - 1)
    elif isinstance(desc, tuple) and len(desc) == 3 and desc[0] == ARRAY:
        n = desc[1]
        if type(n) is not int or n < 0 or n > 0xFFFF:
            raise EncodeError("compact-array description count %r" % (n,))
        out.append(ARRAY)
        out.extend(struct.pack(">H", n))
        put_desc(out, desc[2], room - 1)
    else:
        raise EncodeError("bad compact-array description %r" % (desc,))


def put_by_desc(out, desc, value):
    if type(desc) is int:
        from dlms.axdr_enc import _put

        _put(out, desc, value, 0)
        return
    if not isinstance(value, (list, tuple)):
        raise EncodeError("compact-array element %r is not a list" % (value,))
    if desc[0] == STRUCTURE:
        items = desc[1]
        if len(value) != len(items):
            raise EncodeError("compact-array row has %d fields, description %d" % (len(value), len(items)))
        for i in range(len(items)):
            put_by_desc(out, items[i], value[i])
    else:
        if len(value) != desc[1]:
            raise EncodeError("compact-array element has %d entries, description %d" % (len(value), desc[1]))
        for v in value:
            put_by_desc(out, desc[2], v)


def encode(out, desc, rows, room):
    # the COMPACT_ARRAY branch of axdr._put (room checked there)
    put_desc(out, desc, room - 1)
    if rows:
        try:
            size = min_size(desc)
        except BadValueError:
            size = 0
        if size == 0:
            raise EncodeError("compact-array of zero-size elements")
    body = bytearray()
    for row in rows:
        put_by_desc(body, desc, row)
    put_length(out, len(body))
    out.extend(body)
