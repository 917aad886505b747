# Interpreter behaviour lib/ relies on, checked on CPython and on MicroPython
# (tests/mprunner.py): if one of these fails on one side only, lib code built
# on it is wrong there too. Also keeps the MicroPython runner itself exercised.

import struct

from mpcompat import raises

P25519 = 2**255 - 19
STRUCT_ERRORS = (ValueError, getattr(struct, "error", ValueError))  # MicroPython: ValueError

# Vector: CPython 3.11, hex(pow(3, 200, 2**255 - 19)).
POW_3_200_MOD_P25519 = 0x421A937A76F3432FFD73D97E447606B683ECF6F6E4A7AE2715ACEC0FF9232C28


def test_bignum_modular_power():
    assert pow(3, 200, P25519) == POW_3_200_MOD_P25519


def test_modular_inverse_by_fermat():
    # pow(x, -1, m) returns 0 on MicroPython; lib/ inverts with Fermat instead.
    inverse = pow(7, P25519 - 2, P25519)
    assert inverse * 7 % P25519 == 1


def test_int_bytes_round_trip():
    assert (2**64 + 1).to_bytes(9, "big") == bytes.fromhex("010000000000000001")
    assert int.from_bytes(b"\x01\x02", "little") == 0x0201
    assert int.from_bytes(b"\x01\x02", "big") == 0x0102


def test_struct_little_and_big_endian():
    assert struct.pack("<HI", 0x1234, 0xDEADBEEF) == bytes.fromhex("3412efbeadde")
    assert struct.pack(">HI", 0x1234, 0xDEADBEEF) == bytes.fromhex("1234deadbeef")
    assert struct.unpack_from("<H", b"\x00\x01\x02", 1) == (0x0201,)


def test_struct_rejects_short_buffer():
    raises(STRUCT_ERRORS, struct.unpack, "<I", b"\x00\x01")


def test_bytes_slicing():
    data = b"abc"
    assert data[1] == 0x62
    assert data[1:2] == b"b"
    assert data[5:] == b""
    assert bytes(3) == b"\x00\x00\x00"
    assert b"\x01\xab".hex() == "01ab"


def test_memoryview_writes_through_to_its_bytearray():
    buf = bytearray(b"abcdef")
    view = memoryview(buf)
    view[1:3] = b"XY"
    assert buf == bytearray(b"aXYdef")
    assert bytes(view[2:4]) == b"Yd"
    assert isinstance(buf[1:2], bytearray)


def test_sorted_dict_items_are_deterministic():
    fields = {"obis": 1, "interval": 2, "journal": 3, "amount": 4}
    encoded = ",".join("%s=%d" % kv for kv in sorted(fields.items()))
    assert encoded == "amount=4,interval=2,journal=3,obis=1"


def test_floor_division_and_shift_of_negatives():
    assert -7 // 2 == -4
    assert -7 % 2 == 1
    assert -1 >> 1 == -1


def test_raises_returns_the_exception():
    exc = raises(ZeroDivisionError, lambda: 1 // 0)
    assert isinstance(exc, ZeroDivisionError)
    assert isinstance(raises(AssertionError, raises, ValueError, int, "7"), AssertionError)
