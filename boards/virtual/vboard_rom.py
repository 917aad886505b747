# The virtual board's ROM partition, and the heap the board holds back.
#
# The partition is the flash a MicroPython build with ROMFS
# (MICROPY_VFS_ROM) maps into memory, so that .mpy files in it run in place
# instead of being copied into the heap. The unix port cannot map memory
# outside its heap, so the partition is one buffer allocated here, first
# thing at boot. The partition's bytes live in a host file
# (PGW_VBOARD_ROMFS) that outlives reboots, as flash does.
#
# The stand-ins for `machine`, `network` and the flash are compiled into
# the heap at boot too; on a board they are C code in flash. So hold(),
# called by rom.py once they are in, keeps all of the heap but the board's
# budget (PGW_VBOARD_HEAP_KB, 32-bit equivalent) as a ballast buffer; the
# supervisor sized `-X heapsize` for the budget, the partition and an
# allowance for the stand-ins. RESERVED is then all the board holds:
# compat.heap_free_alloc32() leaves it out, so the heap the firmware
# reports is the board's RAM.
#
# The partition is split into PGW_VBOARD_ROMFS_SEGMENTS equal segments
# (the board file's flash.romfs.segments), ids 0, 1, ...: the A/B code
# slots of an update (docs/ota.md). rom_ioctl() answers as vfs.rom_ioctl()
# does on a port built with MICROPY_VFS_ROM_IOCTL (the unix port is not),
# the stm32 port's two-segment one included: 1 segment count, 2 id the
# segment's memory, 3 id [offset] length prepare (erase) for writing,
# 4 id offset data write, 5 id writing done, 6 id block size. Negative
# numbers are -errno: -EINVAL for an id out of range or a range outside
# the segment. Segment 0 is what a port mounts at /rom when it starts.

import errno
import gc
import os
import sys

import vfs

BLOCK = 4096
_WORD = 8 if sys.maxsize > 2**32 else 4

_path = os.getenv("PGW_VBOARD_ROMFS") or ""
_size = int(os.getenv("PGW_VBOARD_ROMFS_BYTES") or 0)
SEGMENTS = int(os.getenv("PGW_VBOARD_ROMFS_SEGMENTS") or 1) if _size else 0
_seg = _size // SEGMENTS if SEGMENTS else 0  # bytes per segment

gc.collect()
RESERVED = -gc.mem_alloc()
PARTITION = bytearray(_size)  # erased flash reads as zeros here
_ZEROS = bytes(256)  # what an erase writes, a piece at a time
RESERVED += gc.mem_alloc()  # what the partition took, until hold()
STANDINS = 0  # the rest of what the board took (rom.py, the stand-ins, the link), set by hold()
_ballast = None


def hold():
    # rom.py calls this once the stand-ins are imported, before the flash
    # is mounted: all the heap holds now is the board's.
    global RESERVED, STANDINS, _ballast
    budget = int(os.getenv("PGW_VBOARD_HEAP_KB") or 0) * 256 * _WORD  # before collecting: getenv allocates
    gc.collect()
    STANDINS = gc.mem_alloc() - RESERVED
    if budget:
        spare = gc.mem_free() - budget
        if spare < 0:
            print("vboard: the stand-ins left the firmware %d bytes (32-bit) short of its "
                  "heap: raise STANDINS_KB in host_tools/vboard/supervisor.py" % (-spare * 4 // _WORD))
        elif spare >= 4 * _WORD:  # the buffer's object takes one block (4 words), its bytes the rest
            _ballast = bytearray(spare - 4 * _WORD)
    gc.collect()
    RESERVED = gc.mem_alloc()


_host = vfs.VfsPosix()  # the host's files, still reachable once "/" is the board's flash
if _size and _path:
    try:
        with _host.open(_path, "rb") as f:
            f.readinto(PARTITION)
    except OSError:  # never written: an erased partition
        pass


def _open():
    # the host file behind the partition, created on the first write
    try:
        return _host.open(_path, "r+b")
    except OSError:
        return _host.open(_path, "wb")


def _store(offset, data, f=None):
    # write through to the host file (opened here unless the caller has it open)
    g = f or _open()
    try:
        g.seek(offset)
        g.write(data)
    finally:
        if f is None:
            g.close()


def rom_ioctl(op, rom_id=0, *args):
    if op == 1:
        return SEGMENTS
    if not _size:
        return -errno.ENODEV
    if not 0 <= rom_id < SEGMENTS:
        return -errno.EINVAL
    base = rom_id * _seg
    if op == 2:
        return memoryview(PARTITION)[base:base + _seg]
    if op == 6:
        return BLOCK
    if op == 3:  # (length) or (offset, length): erase that much
        offset, length = (0, args[0]) if len(args) == 1 else args
        if offset < 0 or length < 0 or offset + length > _seg:
            return -errno.EINVAL
        # In small steps from one buffer made at start-up: on a board the
        # erase is C code, and it must not need a 4 KB block of a
        # fragmented heap here either (an update is written late in a day).
        part, zeros = memoryview(PARTITION), memoryview(_ZEROS)
        f = _open()  # once for the whole erase, not once a piece
        try:
            for at in range(base + offset, base + offset + length, len(_ZEROS)):
                n = min(len(_ZEROS), base + offset + length - at)
                part[at:at + n] = zeros[:n]
                _store(at, zeros[:n], f)
        finally:
            f.close()
        return 4  # the smallest write
    if op == 4:  # (offset, data)
        offset, data = args
        if offset < 0 or offset + len(data) > _seg:
            return -errno.EINVAL
        PARTITION[base + offset:base + offset + len(data)] = data
        _store(base + offset, data)
        return 0
    if op == 5:
        return 0
    return -errno.EINVAL


def mount():
    """Mount segment 0 at /rom if it holds a ROMFS image, as a port does
    at start-up; True if mounted. boot.py may then mount another segment
    there (docs/ota.md)."""
    if not _size:
        return False
    try:
        vfs.mount(vfs.VfsRom(memoryview(PARTITION)[:_seg]), "/rom")
    except OSError:  # erased, or not a ROMFS image
        return False
    return True
