# BitString, Date and Time of A-XDR, loaded by dlms.axdr on first use.
from dlms.axdr import BadValueError, EncodeError, NOT_SPECIFIED, YEAR_NOT_SPECIFIED
from dlms.axdr_dt import _check, _weekday


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
