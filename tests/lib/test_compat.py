# lib/compat.py on both interpreters: on MicroPython the names come from
# `micropython` and `time`, on CPython from compat's own stand-ins, and lib
# code must see the same arithmetic either way.
#
# The ticks period is read from the interpreter, not assumed: it is 2**30
# for compat's CPython stand-in and on 32-bit boards, but 2**62 on the
# 64-bit unix port (MP_SMALL_INT_POSITIVE_MASK + 1, checked with
# v1.29.0-preview: ticks_add(0, -1) == 0x3fffffffffffffff).
import io
import sys

import compat
from compat import const, heap32, heap_free_alloc32, ticks_add, ticks_diff, ticks_ms

ON_MICROPYTHON = sys.implementation.name == "micropython"


def ticks_period():
    # ticks_add wraps modulo the period, so one step back from 0 is period - 1.
    return ticks_add(0, -1) + 1


def test_const_returns_its_argument():
    assert const(160) == 160, const(160)
    assert const(0x1B) == 27, const(0x1B)
    assert const(-1) == -1, const(-1)
    assert const(0) == 0, const(0)


def test_ticks_period_is_a_power_of_two():
    period = ticks_period()
    assert period >= 1 << 30, period
    assert period & (period - 1) == 0, hex(period)
    if not ON_MICROPYTHON:
        assert period == 1 << 30, hex(period)


def test_ticks_add_and_diff_across_the_wrap():
    period = ticks_period()
    start = period - 50
    later = ticks_add(start, 100)
    assert later == 50, later
    assert ticks_diff(later, start) == 100, ticks_diff(later, start)
    assert ticks_diff(start, later) == -100, ticks_diff(start, later)
    assert ticks_add(50, -100) == start, ticks_add(50, -100)
    assert ticks_add(period - 1, 1) == 0, ticks_add(period - 1, 1)
    assert ticks_diff(0, period - 1) == 1, ticks_diff(0, period - 1)
    assert ticks_diff(period - 1, 0) == -1, ticks_diff(period - 1, 0)


def test_ticks_near_two_to_the_thirty():
    # Where a 32-bit board wraps; on the 64-bit unix port this is an
    # ordinary value, and the differences must come out the same.
    start = (1 << 30) - 50
    for delta in (0, 1, 49, 50, 51, 100, 1000, -1, -100, -1000):
        got = ticks_diff(ticks_add(start, delta), start)
        assert got == delta, (delta, got)


def test_ticks_diff_range_is_minus_half_to_half_minus_one():
    half = ticks_period() // 2
    assert ticks_diff(half - 1, 0) == half - 1, ticks_diff(half - 1, 0)
    assert ticks_diff(half, 0) == -half, ticks_diff(half, 0)
    assert ticks_diff(half + 1, 0) == -half + 1, ticks_diff(half + 1, 0)
    assert ticks_diff(0, half - 1) == -(half - 1), ticks_diff(0, half - 1)


def test_ticks_diff_of_ticks_add_round_trips():
    period = ticks_period()
    half = period // 2
    starts = (0, 1, 1000, half - 1, half, period - 1, period - 50)
    deltas = (0, 1, -1, 7, -7, 86400000, -86400000, half - 1, -(half - 1))
    for start in starts:
        for delta in deltas:
            later = ticks_add(start, delta)
            assert 0 <= later < period, (start, delta, later)
            got = ticks_diff(later, start)
            assert got == delta, (start, delta, got)


def test_ticks_ms_is_within_the_period():
    now = ticks_ms()
    assert isinstance(now, int), now
    assert 0 <= now < ticks_period(), now


def test_word_bytes_follows_the_build():
    want = 8 if sys.maxsize > 0xFFFFFFFF else 4
    assert compat.WORD_BYTES == want, compat.WORD_BYTES


def test_heap32_scales_to_32_bit_words():
    assert heap32(0) == 0, heap32(0)
    if compat.WORD_BYTES == 8:
        assert heap32(1024) == 512, heap32(1024)
        assert heap32(1000) == 500, heap32(1000)
        assert heap32(7) == 3, heap32(7)  # floor, never rounded up
        assert heap32(2 * 1036288) == 1036288, heap32(2 * 1036288)
    else:
        assert heap32(1024) == 1024, heap32(1024)
        assert heap32(7) == 7, heap32(7)


def test_heap_free_alloc32():
    free, used = heap_free_alloc32()
    if not ON_MICROPYTHON:
        assert (free, used) == (None, None), (free, used)
        return
    assert isinstance(free, int) and isinstance(used, int), (free, used)
    assert free > 0 and used > 0, (free, used)
    import gc

    # 32-bit equivalent: never more than the interpreter's own byte count.
    total = gc.mem_free() + gc.mem_alloc()
    assert free + used <= total, (free, used, total)
    if compat.WORD_BYTES == 8:
        assert total // 2 - 64 <= free + used <= total // 2, (free, used, total)


def test_heap_leaves_out_what_the_virtual_board_holds():
    # On the virtual board, vboard_rom.RESERVED is all the board holds in
    # the heap (ROM partition, stand-in modules, ballast); with no such
    # module, as on a real board and here, nothing is left out.
    assert compat._rom_in_heap() == 0, compat._rom_in_heap()

    class FakeRom:  # stands in for the vboard_rom module
        RESERVED = 4096

    saved = compat._rom_reserved
    compat._rom_reserved = None
    sys.modules["vboard_rom"] = FakeRom
    try:
        assert compat._rom_in_heap() == 4096, compat._rom_in_heap()
    finally:
        del sys.modules["vboard_rom"]
        compat._rom_reserved = saved


def test_print_exception_writes_the_traceback():
    buf = io.StringIO()
    try:
        raise ValueError("boom")
    except ValueError as exc:
        compat.print_exception(exc, buf)
    text = buf.getvalue()
    assert text.startswith("Traceback (most recent call last):"), text
    assert text.endswith("ValueError: boom\n"), text
