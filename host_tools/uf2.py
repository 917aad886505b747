"""Read a UF2 file (the format a BOOTSEL drive takes) and check its blocks.

A UF2 file is a run of 512-byte blocks, each: eight little-endian words
(magic 0x0A324655, magic 0x9E5D5157, flags, target address, payload size,
block number, block count, family id or file size), 476 bytes of data of
which the first `payload size` count, and a closing magic 0x0AB16F30.

Rules kept here:
- the file is whole blocks; every block has the three magics, a payload
  of at most 476 bytes, and the same block count; numbers run 0..count-1;
- every block names its family (flag 0x2000), and all name the same one:
  a boot ROM ignores blocks of another family without a word, so a mixed
  or unnamed file is refused rather than half written;
- blocks flagged "not main flash" (0x1) are counted but not written.

Nothing here writes UF2; tests make theirs with esptool's writer or by hand.
Every refusal is a `UF2Error` with a short `reason`.
"""

import struct

BLOCK_SIZE = 512
MAX_PAYLOAD = 476
MAGIC_START0 = 0x0A324655
MAGIC_START1 = 0x9E5D5157
MAGIC_END = 0x0AB16F30
FLAG_NOT_MAIN_FLASH = 0x00000001
FLAG_FILE_CONTAINER = 0x00001000
FLAG_FAMILY_ID = 0x00002000

_HEADER = struct.Struct("<8I")

# The family ids of the UF2 specification's table that this project meets.
FAMILIES = {
    0xE48BFF56: "RP2040",
    0xE48BFF57: "RP2XXX absolute",
    0xE48BFF58: "RP2XXX data",
    0xE48BFF59: "RP2350 ARM secure",
    0xE48BFF5A: "RP2350 RISC-V",
    0xE48BFF5B: "RP2350 ARM non-secure",
}


class UF2Error(ValueError):
    """A UF2 file that cannot be written as it is; `reason` says why in one word."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


class UF2Image:
    """What a checked UF2 file would write: `family`, the main-flash `ranges`
    as (start, end) addresses in file order, and the counts."""

    def __init__(self, family, blocks, ranges, skipped):
        self.family = family
        self.blocks = blocks
        self.ranges = ranges
        self.skipped = skipped  # blocks flagged "not main flash"

    @property
    def start(self):
        return min(s for s, _ in self.ranges)

    @property
    def end(self):
        return max(e for _, e in self.ranges)

    @property
    def payload_bytes(self):
        return sum(e - s for s, e in self.ranges)

    def payload_sizes(self):
        return {e - s for s, e in self.ranges}


def family_name(family, extra=None):
    """'RP2040 (0xe48bff56)'; `extra` adds {id: name} (e.g. esptool's chips)."""
    names = dict(FAMILIES)
    names.update(extra or {})
    return "%s (0x%08x)" % (names.get(family, "unknown family"), family)


def parse(data):
    """Check every block of `data` (bytes) -> UF2Image; UF2Error on the first fault."""
    if len(data) == 0:
        raise UF2Error("empty", "the file is empty")
    if len(data) % BLOCK_SIZE:
        raise UF2Error("truncated", "%d bytes is not a whole number of %d-byte UF2 blocks"
                       % (len(data), BLOCK_SIZE))
    count = len(data) // BLOCK_SIZE
    family = None
    total = None
    ranges = []
    skipped = 0
    for i in range(count):
        at = i * BLOCK_SIZE
        m0, m1, flags, addr, size, number, blocks, fam = _HEADER.unpack_from(data, at)
        (end_magic,) = struct.unpack_from("<I", data, at + BLOCK_SIZE - 4)
        if m0 != MAGIC_START0 or m1 != MAGIC_START1 or end_magic != MAGIC_END:
            what = "is not a UF2 file" if i == 0 else "has a bad magic number in block %d" % i
            raise UF2Error("bad_magic", "the file %s" % what)
        if flags & FLAG_FILE_CONTAINER:
            raise UF2Error("file_container", "block %d is a file-container block, not a flash image" % i)
        if size == 0 or size > MAX_PAYLOAD:
            raise UF2Error("bad_block", "block %d has a payload of %d bytes (1..%d allowed)" % (i, size, MAX_PAYLOAD))
        if not flags & FLAG_FAMILY_ID:
            raise UF2Error("no_family", "block %d names no family id: the boot ROM could not tell "
                           "whether it is meant for this chip" % i)
        if family is None:
            family, total = fam, blocks
        elif fam != family:
            raise UF2Error("mixed_family", "block %d is for %s, block 0 for %s"
                           % (i, family_name(fam), family_name(family)))
        if blocks != total or number != i:
            raise UF2Error("bad_sequence", "block %d says it is block %d of %d; expected %d of %d"
                           % (i, number, blocks, i, total))
        if addr + size > 0xFFFFFFFF:
            raise UF2Error("bad_block", "block %d runs past the 32-bit address space" % i)
        if flags & FLAG_NOT_MAIN_FLASH:
            skipped += 1
            continue
        ranges.append((addr, addr + size))
    if total != count:
        raise UF2Error("bad_sequence", "the blocks say there are %d, the file holds %d" % (total, count))
    if not ranges:
        raise UF2Error("empty", "no block of the file is meant for main flash")
    return UF2Image(family, count, ranges, skipped)
