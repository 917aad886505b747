# OBIS codes (IEC 62056-61): parse and format "A-B:C.D.E*F", "A.B.C.D.E.F" and
# 12 hex digits; the 6-octet logical name; a small table of readable names.
from compat import const

_MAX_TEXT = const(40)


class ObisError(ValueError):
    pass


class Obis:
    # Six value groups A..F, 0..255 each, kept as the 6-octet logical name.
    def __init__(self, a, b, c, d, e, f=255):
        for v in (a, b, c, d, e, f):
            if type(v) is not int or v < 0 or v > 255:
                raise ObisError("OBIS value group %r out of 0..255" % (v,))
        self._ln = bytes((a, b, c, d, e, f))

    @classmethod
    def from_bytes(cls, b6):
        if not isinstance(b6, (bytes, bytearray, memoryview)) or len(b6) != 6:
            raise ObisError("logical name needs 6 octets")
        o = object.__new__(cls)
        o._ln = bytes(b6)
        return o

    @classmethod
    def parse(cls, text, a=1, b=0):
        # "1-0:1.8.0*255", "1-0:1.8.0" (F = 255), "1-0:1.8.0.255", "1.8.0" or "1.8.0*255" (A-B: left
        # out as in D0 readouts and meter manuals: A, B given by the caller,
        # electricity channel 0 by default), "1.0.1.8.0.255", "0100010800FF".
        if type(text) is not str:
            raise ObisError("OBIS text must be str")
        s = text.strip()
        if len(s) > _MAX_TEXT:
            raise ObisError("OBIS text too long")
        if len(s) == 12 and "." not in s and ":" not in s:
            for ch in s:
                if not ("0" <= ch <= "9" or "a" <= ch <= "f" or "A" <= ch <= "F"):
                    raise ObisError("bad OBIS hex %r" % text)
            return cls.from_bytes(bytes.fromhex(s))
        f = 255
        star = s.find("*")
        if star < 0:
            star = s.find("&")  # IEC 62056-61 billing-period separator
        if star >= 0:
            f = _group(s[star + 1:], text)
            s = s[:star]
        colon = s.find(":")
        if colon >= 0:
            ab = s[:colon].split("-")
            if len(ab) != 2:
                raise ObisError("bad OBIS %r" % text)
            a = _group(ab[0], text)
            b = _group(ab[1], text)
            cde = s[colon + 1:].split(".")
            if len(cde) == 4 and star < 0:  # "1-0:1.8.0.255", as dlms-cosem writes it
                f = _group(cde[3], text)
                cde = cde[:3]
            if len(cde) != 3:
                raise ObisError("bad OBIS %r" % text)
        else:
            parts = s.split(".")
            if len(parts) == 6 and star < 0:
                a = _group(parts[0], text)
                b = _group(parts[1], text)
                f = _group(parts[5], text)
                cde = parts[2:5]
            elif len(parts) == 3:
                cde = parts
            else:
                raise ObisError("bad OBIS %r" % text)
        return cls(a, b, _group(cde[0], text), _group(cde[1], text), _group(cde[2], text), f)

    def to_bytes(self):
        return self._ln

    def __getattr__(self, name):
        # the value groups a..f, one lookup for six (six properties cost heap)
        i = "abcdef".find(name) if len(name) == 1 else -1
        if i < 0:
            raise AttributeError(name)
        return self._ln[i]

    def dotted(self):
        return "%d.%d.%d.%d.%d.%d" % tuple(self._ln)

    def hex(self):
        return "%02X%02X%02X%02X%02X%02X" % tuple(self._ln)

    def __str__(self):
        return "%d-%d:%d.%d.%d*%d" % tuple(self._ln)

    def __repr__(self):
        return "Obis('%s')" % self

    def __eq__(self, other):
        return isinstance(other, Obis) and other._ln == self._ln

    def __ne__(self, other):
        return not self.__eq__(other)

    def __lt__(self, other):
        return self._ln < other._ln

    def __hash__(self):
        return hash(self._ln)


def _group(s, text):
    # 1..3 ASCII digits (str.isdigit would take other scripts' digits on CPython)
    if not 1 <= len(s) <= 3:
        raise ObisError("bad OBIS value group %r in %r" % (s, text))
    v = 0
    for ch in s:
        if not "0" <= ch <= "9":
            raise ObisError("bad OBIS value group %r in %r" % (s, text))
        v = v * 10 + ord(ch) - 48
    if v > 255:
        raise ObisError("OBIS value group %d out of 0..255 in %r" % (v, text))
    return v


# Readable names (name, codes, table_size): in dlms.cosem_names, loaded on first use.


def __getattr__(name):
    if name != "name" and name != "codes" and name != "table_size":
        raise AttributeError(name)
    from dlms import cosem_names

    return getattr(cosem_names, "obis_" + name)
