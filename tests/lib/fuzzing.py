# Shared by the Modbus lib tests: a seeded generator and a byte mutator that
# behave the same on CPython and MicroPython.
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
    return bytes(rng.below(256) for _ in range(n))
