# Shared by the lib decoders' fuzz tests (Modbus, SunSpec, DLMS/COSEM, HDLC,
# M-Bus, push, tech console...): a seeded generator, the iteration count and a
# byte mutator that behave the same on CPython and MicroPython.
#
# random differs between the interpreters (and is missing on some ports):
# xorshift32 (Marsaglia, "Xorshift RNGs", J. Stat. Softw. 8(14), 2003,
# shifts 13, 17, 5) gives the same stream on both.
import os


class Xorshift32:
    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFF or 1

    def next(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def below(self, n):
        return self.next() % n


def iterations(default):
    # PGW_FUZZ_ITERATIONS=100000 for the long run (make fuzz); os.getenv is
    # missing on some MicroPython ports, so it is looked up, not assumed.
    getenv = getattr(os, "getenv", None)
    text = getenv("PGW_FUZZ_ITERATIONS") if getenv else None
    return int(text) if text else default


def mutate(rng, data, extra=b""):
    # 1 to 3 edits: replace, insert, delete, repeat, truncate, splice `extra`.
    data = bytearray(data)
    for _ in range(1 + rng.below(3)):
        op = rng.below(7)
        pos = rng.below(len(data) + 1)
        if op == 0 and data:
            data[pos % len(data)] = rng.below(256)
        elif op == 1 and data:  # flip one bit
            data[pos % len(data)] ^= 1 << rng.below(8)
        elif op == 2:
            data[pos:pos] = bytes((rng.below(256),))
        elif op == 3 and data:  # no `del` on MicroPython's bytearray
            data[pos:pos + 1 + rng.below(4)] = b""
        elif op == 4:  # no bytearray * int on MicroPython
            end = pos + rng.below(len(data) - pos + 1)
            data[pos:pos] = bytes(data[pos:end]) * (1 + rng.below(3))
        elif op == 5:
            data = data[:pos]
        elif extra:
            data[pos:pos] = extra
    return bytes(data)


def noise(rng, n):
    # n random bytes
    return bytes(rng.below(256) for _ in range(n))


def mutate_apdu(rng, data):
    # 1 to 4 edits drawn from the bits of one number each: bit flips,
    # insertions, deletions, cuts, and BER/A-XDR-minded values (lengths
    # 0x80..0x84, 0x00, 0xFF) over a byte.
    a = bytearray(data)
    s = rng.next()
    for _ in range(1 + s % 4):
        s = rng.next()
        op = s & 7
        p = (s >> 3) % (len(a) + 1)
        if op <= 2 and p < len(a):
            a[p] ^= 1 << ((s >> 20) & 7)
        elif op == 3:
            a[p:p] = bytes(((s >> 12) & 0xFF,))
        elif op == 4 and p < len(a):
            a[p:p + 1] = b""
        elif op == 5:
            a = a[:p]
        elif p < len(a):
            a[p] = (0x00, 0x01, 0x80, 0x81, 0x82, 0x84, 0xFF, 0x7F)[(s >> 9) & 7]
    return bytes(a)
