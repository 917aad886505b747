# CBOR (RFC 8949), the subset COSE (RFC 9052) needs: ints, byte and text
# strings, arrays, maps with int/str keys, tags, false/true/null.
# dumps() writes core deterministic encoding (section 4.2.1): shortest heads,
# definite lengths, map keys sorted bytewise by their encodings.
# loads() faces network input: no recursion (explicit stack), every length
# is checked against the input left before anything is allocated, and
# depth and item count are capped. Floats, other simple values, indefinite
# lengths and reserved additional info are refused.
from compat import const

_ARRAY = const(4)
_MAP_KEY = const(5)  # map awaiting a key
_TAG = const(6)
_MAP_VALUE = const(8)  # map awaiting the value of `key`
_U64 = const(0xFFFFFFFFFFFFFFFF)

# dumps() stack markers: a container ends; the next entry is encoded bytes
_END = object()
_RAW = object()


class CborError(ValueError):
    def __init__(self, reason, offset=None):
        if offset is None:
            super().__init__("cbor: " + reason)
        else:
            super().__init__("cbor: %s at byte %d" % (reason, offset))
        self.reason = reason
        self.offset = offset


class Tag:
    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Tag(%r, %r)" % (self.tag, self.value)


# -- encoding ------------------------------------------------------------------


def _head(out, major, n):
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        out.append(mt | 26)
        out.extend(n.to_bytes(4, "big"))
    else:
        out.append(mt | 27)
        out.extend(n.to_bytes(8, "big"))


def _int(out, x):
    if 0 <= x <= _U64:
        _head(out, 0, x)
    elif -_U64 - 1 <= x < 0:
        _head(out, 1, -1 - x)
    else:
        raise CborError("int range")


def _text(out, s):
    try:
        b = s.encode()
    except UnicodeError:  # CPython: lone surrogates
        raise CborError("utf8")
    # MicroPython encodes lone surrogates; the decoder would refuse them
    if len(b) != len(s) and not _utf8_valid(b):
        raise CborError("utf8")
    _head(out, 3, len(b))
    out.extend(b)


def _key_bytes(k):
    kb = bytearray()
    if k is True or k is False or not isinstance(k, (int, str)):
        raise CborError("key type")
    if isinstance(k, str):
        _text(kb, k)
    else:
        _int(kb, k)
    return bytes(kb)


def dumps(obj, max_depth=16):
    # Iterative; max_depth (arrays, maps and tags, as in loads) also stops
    # a container that holds itself.
    out = bytearray()
    stack = [obj]
    depth = 0
    while stack:
        x = stack.pop()
        if x is _END:
            depth -= 1
        elif x is _RAW:
            out.extend(stack.pop())
        elif x is False:
            out.append(0xF4)
        elif x is True:
            out.append(0xF5)
        elif x is None:
            out.append(0xF6)
        elif isinstance(x, int):
            _int(out, x)
        elif isinstance(x, (bytes, bytearray, memoryview)):
            if isinstance(x, memoryview):
                x = bytes(x)  # len() counts items, not bytes, for wider formats
            _head(out, 2, len(x))
            out.extend(x)
        elif isinstance(x, str):
            _text(out, x)
        elif isinstance(x, (list, tuple, dict, Tag)):
            depth += 1
            if depth > max_depth:
                raise CborError("depth")
            stack.append(_END)
            if isinstance(x, (list, tuple)):
                _head(out, 4, len(x))
                for i in range(len(x) - 1, -1, -1):
                    stack.append(x[i])
            elif isinstance(x, dict):
                _head(out, 5, len(x))
                # distinct int/str keys have distinct encodings: the tuples
                # never compare their second items
                keys = [(_key_bytes(k), k) for k in x]
                keys.sort()
                for i in range(len(keys) - 1, -1, -1):
                    kb, k = keys[i]
                    stack.append(x[k])
                    stack.append(kb)
                    stack.append(_RAW)
            else:
                t = x.tag
                if t is True or t is False or not isinstance(t, int):
                    raise CborError("type")
                if not 0 <= t <= _U64:
                    raise CborError("int range")
                _head(out, 6, t)
                stack.append(x.value)
        else:
            raise CborError("type")  # floats included: the protocol is integers only
    return bytes(out)


# -- decoding ------------------------------------------------------------------


def _utf8_valid(b):
    # RFC 3629 section 4: no overlong forms, no surrogates, nothing above
    # U+10FFFF. MicroPython's own decoder lets all three through.
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        i += 1
        if c < 0x80:
            continue
        if c < 0xC2 or c > 0xF4:
            return False
        lo = 0x80
        hi = 0xBF
        if c < 0xE0:
            need = 1
        elif c < 0xF0:
            need = 2
            if c == 0xE0:
                lo = 0xA0
            elif c == 0xED:
                hi = 0x9F
        else:
            need = 3
            if c == 0xF0:
                lo = 0x90
            elif c == 0xF4:
                hi = 0x8F
        if i + need > n or not lo <= b[i] <= hi:
            return False
        for j in range(i + 1, i + need):
            if not 0x80 <= b[j] <= 0xBF:
                return False
        i += need
    return True


# smallest argument each additional info 24..27 may carry in canonical form
_SHORTEST = const((24, 0x100, 0x10000, 0x100000000))


def loads(data, max_depth=16, max_items=1024, canonical=False):
    if not isinstance(data, bytes):
        if not isinstance(data, (bytearray, memoryview)):
            raise TypeError("cbor: bytes-like input expected")
        data = bytes(data)
    end = len(data)
    pos = 0
    items = 1  # data items so far, counting every declared one
    depth = 0
    stack = []  # outer open containers, as (cont, kind, left, key, pk0, pk1)
    # the innermost open container; kind 0: none, at top level
    cont = None
    kind = 0
    left = 0
    key = None
    pk0 = pk1 = 0  # where its previous key's encoding lies (canonical check)
    while True:
        if pos >= end:
            raise CborError("truncated", pos)
        start = pos
        ib = data[pos]
        pos += 1
        major = ib >> 5
        ai = ib & 31
        if kind == _MAP_KEY and major != 0 and major != 1 and major != 3:
            raise CborError("key type", start)
        if major == 7:
            if ai == 20:
                val = False
            elif ai == 21:
                val = True
            elif ai == 22:
                val = None
            elif 25 <= ai <= 27:
                raise CborError("float", start)
            elif ai == 31:
                raise CborError("indefinite", start)
            elif ai >= 28:
                raise CborError("reserved", start)
            else:
                raise CborError("simple", start)
        else:
            if ai < 24:
                arg = ai
            elif ai < 28:
                n = 1 << (ai - 24)
                if n > end - pos:
                    raise CborError("truncated", start)
                if n == 1:
                    arg = data[pos]
                else:
                    arg = int.from_bytes(data[pos:pos + n], "big")
                pos += n
                if canonical and arg < _SHORTEST[ai - 24]:
                    raise CborError("non-canonical", start)
            elif ai == 31:
                raise CborError("indefinite", start)
            else:
                raise CborError("reserved", start)
            if major == 0:
                val = arg
            elif major == 1:
                val = -1 - arg
            elif major <= 3:
                if arg > end - pos:
                    raise CborError("truncated", start)
                val = data[pos:pos + arg]
                pos += arg
                if major == 3:
                    try:
                        s = str(val, "utf-8")
                    except UnicodeError:
                        raise CborError("utf8", start)
                    if len(s) != arg and not _utf8_valid(val):
                        raise CborError("utf8", start)
                    val = s
            else:
                # array, map or tag: each declared item needs at least one byte
                need = arg * 2 if major == 5 else 1 if major == 6 else arg
                if need > end - pos:
                    raise CborError("truncated", start)
                items += need
                if items > max_items:
                    raise CborError("items", start)
                depth += 1
                if depth > max_depth:
                    raise CborError("depth", start)
                if arg or major == 6:
                    stack.append((cont, kind, left, key, pk0, pk1))
                    left = arg
                    if major == 4:
                        cont = []
                        kind = _ARRAY
                    elif major == 5:
                        cont = {}
                        kind = _MAP_KEY
                        pk1 = 0
                    else:
                        cont = arg  # the tag number, until its content arrives
                        kind = _TAG
                    continue
                val = [] if major == 4 else {}
                depth -= 1
        # val is complete: hand it to its container, closing every container
        # it completes
        while True:
            if kind == _ARRAY:
                cont.append(val)
                left -= 1
                if left:
                    break
                val = cont
            elif kind == _MAP_KEY:
                if val in cont:
                    raise CborError("duplicate key", start)
                # a key is a single head (+ text): it spans start..pos
                if canonical and pk1 and data[pk0:pk1] >= data[start:pos]:
                    raise CborError("non-canonical", start)
                pk0 = start
                pk1 = pos
                key = val
                kind = _MAP_VALUE
                break
            elif kind == _MAP_VALUE:
                cont[key] = val
                left -= 1
                if left:
                    kind = _MAP_KEY
                    break
                val = cont
            elif kind == _TAG:
                val = Tag(cont, val)
            else:
                if pos != end:
                    raise CborError("trailing", pos)
                return val
            cont, kind, left, key, pk0, pk1 = stack.pop()
            depth -= 1
