# The virtual board's ROM partition: the flash a MicroPython build with
# ROMFS (MICROPY_VFS_ROM) maps into memory, so that .mpy files in it run in
# place instead of being copied into the heap.
#
# The unix port cannot map memory outside its heap, so the partition is one
# buffer allocated here, first thing at boot, and the supervisor adds its
# size to `-X heapsize` on top of the board's budget. RESERVED is what it
# took; compat.heap_free_alloc32() leaves it out, so the heap the firmware
# reports is the board's RAM. The partition's bytes live in a host file
# (PGW_VBOARD_ROMFS) that outlives reboots, as flash does.
#
# rom_ioctl() answers as vfs.rom_ioctl() does on a port built with
# MICROPY_VFS_ROM_IOCTL (the unix port is not): 1 segment count,
# 2 the segment's memory, 3 prepare (erase) for writing, 4 write,
# 5 writing done, 6 block size. Negative numbers are -errno.

import gc
import os

import vfs

_EINVAL = 22
_ENODEV = 19
BLOCK = 4096
MIN_WRITE = 4

_path = os.getenv("PGW_VBOARD_ROMFS") or ""
_size = int(os.getenv("PGW_VBOARD_ROMFS_BYTES") or 0)

gc.collect()
_before = gc.mem_alloc()
PARTITION = bytearray(_size)  # erased flash reads as zeros here
RESERVED = gc.mem_alloc() - _before
del _before

_host = vfs.VfsPosix()  # the host's files, still reachable once "/" is the board's flash
if _size and _path:
    try:
        with _host.open(_path, "rb") as f:
            f.readinto(PARTITION)
    except OSError:  # never written: an erased partition
        pass


def _store(offset, data):
    # write through to the host file, creating it on the first write
    try:
        f = _host.open(_path, "r+b")
    except OSError:
        f = _host.open(_path, "wb")
    try:
        f.seek(offset)
        f.write(data)
    finally:
        f.close()


def rom_ioctl(op, rom_id=0, *args):
    if op == 1:
        return 1 if _size else 0
    if not _size or rom_id != 0:
        return -_ENODEV
    if op == 2:
        return memoryview(PARTITION)
    if op == 6:
        return BLOCK
    if op == 3:  # (length) or (offset, length): erase that much
        offset, length = (0, args[0]) if len(args) == 1 else args
        if offset < 0 or length < 0 or offset + length > _size:
            return -_EINVAL
        zeros = bytes(BLOCK)
        for at in range(offset, offset + length, BLOCK):
            n = min(BLOCK, offset + length - at)
            PARTITION[at:at + n] = zeros[:n]
            _store(at, zeros[:n])
        return MIN_WRITE
    if op == 4:  # (offset, data)
        offset, data = args
        if offset < 0 or offset + len(data) > _size:
            return -_EINVAL
        PARTITION[offset:offset + len(data)] = data
        _store(offset, data)
        return 0
    if op == 5:
        return 0
    return -_EINVAL


def mount():
    """Mount the partition at /rom if it holds a ROMFS image, as a port does
    at start-up; True if mounted."""
    if not _size:
        return False
    try:
        vfs.mount(vfs.VfsRom(memoryview(PARTITION)), "/rom")
    except OSError:  # erased, or not a ROMFS image
        return False
    return True
