# What differs between MicroPython and CPython, in one place.
# lib/ modules import these names from here and run unchanged on both.
import sys

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


try:
    from time import ticks_add, ticks_diff, ticks_ms, sleep_ms
except ImportError:
    import time as _time

    _TICKS_PERIOD = const(1 << 30)  # MicroPython's ticks wrap at 2**30 ms
    _TICKS_HALF = const(_TICKS_PERIOD // 2)

    def ticks_ms():
        return int(_time.monotonic() * 1000) & (_TICKS_PERIOD - 1)

    def ticks_add(ticks, delta):
        return (ticks + delta) % _TICKS_PERIOD

    def ticks_diff(end, start):
        return ((end - start + _TICKS_HALF) % _TICKS_PERIOD) - _TICKS_HALF

    def sleep_ms(ms):
        _time.sleep(ms / 1000)


try:
    print_exception = sys.print_exception
except AttributeError:
    import traceback as _traceback

    def print_exception(exc, file=sys.stdout):
        _traceback.print_exception(type(exc), exc, exc.__traceback__, file=file)


# Heap figures are reported as a 32-bit MCU would have them: on a 64-bit
# build with `-X heapsize=NwK` every object is twice as many bytes.
WORD_BYTES = 8 if sys.maxsize > 0xFFFFFFFF else 4


def heap32(nbytes):
    return nbytes * 4 // WORD_BYTES


def heap_free_alloc32():
    # (free, allocated) heap in 32-bit-equivalent bytes; (None, None) on CPython.
    try:
        import gc

        return heap32(gc.mem_free()), heap32(gc.mem_alloc() - _rom_in_heap())
    except AttributeError:
        return None, None


_rom_reserved = None


def _rom_in_heap():
    # What the virtual board holds in the heap before the firmware starts:
    # its ROM partition and its stand-in machine/network modules (flash on
    # a board), and a ballast that leaves the firmware the board's budget.
    # The RAM a firmware uses leaves it out. 0 on a real board.
    global _rom_reserved
    if _rom_reserved is None:
        try:
            from vboard_rom import RESERVED as _rom_reserved
        except ImportError:
            _rom_reserved = 0
    return _rom_reserved
