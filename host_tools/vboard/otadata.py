"""The virtual board's ESP-IDF bootloader: otadata, app selection, app image checks.

A board file with ESP32 OTA partitions (``ota_0``, ``ota_1``, ``otadata``)
gets a host file as its flash (``<root>.flash``, offsets as in the board
file). The stand-in ``esp32`` module (boards/virtual/esp32.py) reads and
writes the app partitions there itself, and asks the supervisor for what
ESP-IDF does in C: ``set_boot()``, ``mark_app_valid_cancel_rollback()``
and the BOOT partition. At every reset the supervisor runs `AppFlash.boot`,
the second-stage bootloader, built with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE
as MicroPython's ESP32_GENERIC-OTA is.

The rules, as ESP-IDF's bootloader_utility.c and esp_ota_ops.c apply them:

* otadata is two 4 KB sectors, each holding one 32-byte entry
  ``<ota_seq u32, seq_label 20 bytes, ota_state u32, crc u32>``; crc is
  CRC-32 (binascii's, from 0xFFFFFFFF) over the 4 bytes of ota_seq. An
  entry is valid when its seq is not 0xFFFFFFFF, its crc matches and its
  state is neither INVALID nor ABORTED; the valid entry with the higher seq
  is active and boots app ``(seq - 1) % app_count``;
* at each boot every PENDING_VERIFY entry becomes ABORTED first (an app not
  marked valid before this reset), then an active NEW entry becomes
  PENDING_VERIFY;
* no valid entry: ota_0 (there is no factory app); if both entries are
  empty, the bootloader writes entry 0 as seq 1, VALID, once it booted;
* an app that fails the image check is skipped: the next lower app index,
  then the higher ones;
* ``set_boot`` checks the image, then writes the other entry with the
  smallest seq above the active one that maps to that app, state NEW;
* ``mark_app_valid_cancel_rollback`` makes the active entry VALID.

Pure file and byte work, no processes: tests/host/test_vboard_otadata.py.
"""

import binascii
import hashlib
import struct
from pathlib import Path

SECTOR = 4096
ENTRY = struct.Struct("<I20sII")  # ota_seq, seq_label, ota_state, crc: 32 bytes
EMPTY_SEQ = 0xFFFFFFFF
NEW, PENDING_VERIFY, VALID, INVALID, ABORTED, UNDEFINED = 0, 1, 2, 3, 4, 0xFFFFFFFF
STATE_NAMES = {NEW: "NEW", PENDING_VERIFY: "PENDING_VERIFY", VALID: "VALID", INVALID: "INVALID",
               ABORTED: "ABORTED", UNDEFINED: "UNDEFINED"}
# esp_err_t values the stand-in raises as OSError(-value), as MicroPython's esp32 module does
ESP_FAIL = -1
ESP_ERR_INVALID_ARG = 0x102
ESP_ERR_NOT_FOUND = 0x105
ESP_ERR_OTA_VALIDATE_FAILED = 0x1503

SUBTYPE_OTA_0 = 0x10  # ESP-IDF: app partition ota_N has type 0 (app), subtype 0x10 + N; otadata is data/0x00

IMAGE_MAGIC = 0xE9
IMAGE_HEADER = 24  # esp_image_header_t, extended header included
CHIP_ID_ESP32 = 0  # the virtual board models an ESP32 (esp32_devkitc_ota's layout)
MAX_SEGMENTS = 16
CHECKSUM_SEED = 0xEF


def entry_crc(seq):
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF)


class Entry:
    """One otadata sector's entry."""

    def __init__(self, seq=EMPTY_SEQ, state=UNDEFINED, label=b"\xff" * 20, crc=None):
        self.seq, self.state, self.label = seq, state, label
        self.crc = entry_crc(seq) if crc is None else crc

    @classmethod
    def decode(cls, data):
        seq, label, state, crc = ENTRY.unpack(bytes(data[:ENTRY.size]))
        return cls(seq, state, label, crc)

    def encode(self):
        return ENTRY.pack(self.seq, self.label, self.state, self.crc)

    def invalid(self):  # bootloader_common_ota_select_invalid
        return self.seq == EMPTY_SEQ or self.state in (INVALID, ABORTED)

    def valid(self):  # bootloader_common_ota_select_valid
        return not self.invalid() and self.crc == entry_crc(self.seq)

    def empty_or_bad(self):  # both empty or corrupt: "initial contents"
        return self.seq == EMPTY_SEQ or self.crc != entry_crc(self.seq)


def active(entries):
    """bootloader_common_get_active_otadata: the index of the valid entry with the higher seq, or None."""
    ok = [e.valid() for e in entries]
    if ok[0] and ok[1]:
        return 0 if entries[0].seq >= entries[1].seq else 1
    return 0 if ok[0] else 1 if ok[1] else None


def select(entries, app_count):
    """The bootloader's choice (get_selected_boot_partition) ->
    (app index, initial, {sector: Entry} to write). Entries are updated in place."""
    writes = {}
    for i, e in enumerate(entries):
        if e.state == PENDING_VERIFY:  # not marked valid before this reset
            e.state = ABORTED
            writes[i] = e
    if (entries[0].invalid() and entries[1].invalid()) or not app_count:
        initial = entries[0].empty_or_bad() and entries[1].empty_or_bad()
        return 0, initial, writes
    a = active(entries)
    if a is None:
        return 0, False, writes  # "ota data partition invalid and no factory": the apps in order
    if entries[a].state == NEW:
        entries[a].state = PENDING_VERIFY
        writes[a] = entries[a]
    return (entries[a].seq - 1) % app_count, False, writes


def set_boot(entries, app, app_count):
    """esp_rewrite_ota_data: -> (sector, Entry) that makes app boot next, state NEW."""
    if not 0 <= app < app_count:
        raise OtaDataError(ESP_ERR_INVALID_ARG, "no app %d of %d" % (app, app_count))
    a = active(entries)
    if a is None:
        return 0, Entry(app + 1, NEW, entries[0].label)
    seq, i = entries[a].seq, 0
    while seq > (app + 1) % app_count + i * app_count:
        i += 1
    other = 1 - a
    return other, Entry((app + 1) % app_count + i * app_count, NEW, entries[other].label)


def mark_valid(entries, app_count):
    """esp_ota_current_ota_is_workable(true) -> (sector, Entry) to write, or None."""
    a = active(entries)
    if a is None or not app_count:
        raise OtaDataError(ESP_FAIL, "running firmware is factory")  # no active entry
    if entries[a].state == VALID:
        return None
    entries[a].state = VALID
    return a, entries[a]


def boot_partition(entries, app_count):
    """esp_ota_get_boot_partition: the app index the next reset boots (before any image check)."""
    if (entries[0].invalid() and entries[1].invalid()) or not app_count:
        return 0
    a = active(entries)
    return 0 if a is None else (entries[a].seq - 1) % app_count


class OtaDataError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code  # an esp_err_t


class ImageError(ValueError):
    """Why an app partition holds no bootable image (esp_image_verify's checks, less the memory map)."""

    def __init__(self, reason, message):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def check_image(read, size):
    """The ESP32 app image at the start of a partition of `size` bytes ->
    (image length, SHA-256 of those bytes). `read(offset, n)` -> bytes.
    Checks: magic, chip id, segment count, every segment inside the
    partition, the XOR checksum and, when the header says so, the appended
    SHA-256. ImageError otherwise."""
    header = read(0, IMAGE_HEADER)
    if header[0] != IMAGE_MAGIC:
        raise ImageError("magic", "first byte 0x%02x, not 0xE9" % header[0])
    segments = header[1]
    chip_id = struct.unpack_from("<H", header, 12)[0]
    if chip_id != CHIP_ID_ESP32:
        raise ImageError("chip", "image for chip id %d, this is an ESP32 (0)" % chip_id)
    if not 0 < segments <= MAX_SEGMENTS:
        raise ImageError("segments", "%d segments" % segments)
    at, checksum = IMAGE_HEADER, CHECKSUM_SEED
    sha = hashlib.sha256(header)
    for n in range(segments):
        seg = read(at, 8)
        length = struct.unpack_from("<I", seg, 4)[0]
        if at + 8 + length > size:
            raise ImageError("length", "segment %d ends past the partition" % n)
        data = read(at + 8, length)
        sha.update(seg)
        sha.update(data)
        for i in range(0, len(data), 4):  # the XOR of all bytes, a word at a time
            checksum ^= int.from_bytes(data[i:i + 4].ljust(4, b"\0"), "little")
        at += 8 + length
    checksum = (checksum ^ checksum >> 16) & 0xFFFF
    checksum = (checksum ^ checksum >> 8) & 0xFF
    pad = 15 - at % 16  # zeros, then the checksum byte ends a 16-byte line
    tail = read(at, pad + 1)
    if at + pad + 1 > size or tail[-1] != checksum:
        raise ImageError("checksum", "checksum 0x%02x, computed 0x%02x" % (tail[-1] if tail else -1, checksum))
    sha.update(tail)
    at += pad + 1
    if header[23] == 1:  # hash_appended
        if at + 32 > size or read(at, 32) != sha.digest():
            raise ImageError("hash", "the appended SHA-256 does not match")
        sha.update(read(at, 32))
        at += 32
    return at, sha.digest()


class AppFlash:
    """The app partitions and otadata of a virtual board, in a host file."""

    def __init__(self, path, partitions):
        self.path = Path(path)
        self.parts = {p["name"]: (p["offset"], p["size"]) for p in partitions
                      if p["name"] == "otadata" or p["name"].startswith("ota_")}
        self.apps = sorted((n for n in self.parts if n.startswith("ota_")), key=lambda n: int(n[4:]))
        self.end = max(o + s for o, s in self.parts.values())
        if not self.path.exists() or self.path.stat().st_size < self.end:
            self.erase()

    def erase(self):
        """All of it erased (0xFF), as `esptool erase-flash` leaves it."""
        with open(self.path, "wb") as f:
            for at in range(0, self.end, 1 << 16):
                f.write(b"\xff" * min(1 << 16, self.end - at))

    def env(self):
        """The partitions as the stand-in reads them (PGW_VBOARD_PARTITIONS)."""
        kinds = {n: (0, SUBTYPE_OTA_0 + int(n[4:])) if n.startswith("ota_") else (1, 0) for n in self.parts}
        return ";".join("%s,%d,%d,%d,%d" % (n, *kinds[n], o, s) for n, (o, s) in self.parts.items())

    def read(self, name, offset, n):
        base, size = self.parts[name]
        with open(self.path, "rb") as f:
            f.seek(base + offset)
            return f.read(max(0, min(n, size - offset)))

    def write(self, name, offset, data):
        base, _ = self.parts[name]
        with open(self.path, "r+b") as f:
            f.seek(base + offset)
            f.write(data)

    def write_image(self, image, name="ota_0"):
        """An app image into a partition, the rest of it erased (what `pgw flash` does to ota_0)."""
        size = self.parts[name][1]
        if len(image) > size:
            raise ValueError(f"image of {len(image)} bytes, {name} holds {size}")
        self.write(name, 0, bytes(image) + b"\xff" * (size - len(image)))

    def entries(self):
        return [Entry.decode(self.read("otadata", i * SECTOR, ENTRY.size)) for i in range(2)]

    def _put(self, sector, entry):  # rewrite_ota_seq: erase the sector, write the entry
        self.write("otadata", sector * SECTOR, entry.encode() + b"\xff" * (SECTOR - ENTRY.size))

    def image(self, name):
        """(length, sha256) of the app image in partition `name`; ImageError if none."""
        return check_image(lambda at, n: self.read(name, at, n), self.parts[name][1])

    def boot(self):
        """The second-stage bootloader at a reset -> what it booted:
        {"app", "state", "ota_seq", "sha256", "size", "error"} (app None: no bootable image)."""
        entries = self.entries()
        start, initial, writes = select(entries, len(self.apps))
        for sector, entry in writes.items():
            self._put(sector, entry)
        order = list(range(start, -1, -1)) + list(range(start + 1, len(self.apps)))
        errors = []
        for index in order:
            name = self.apps[index]
            try:
                length, digest = self.image(name)
            except ImageError as e:
                errors.append(f"{name}: {e}")
                continue
            if initial:  # set_actual_ota_seq: the app found is written down as seq index + 1
                self._put(0, Entry(index + 1, VALID))
            entries = self.entries()
            a = active(entries)
            mine = a is not None and (entries[a].seq - 1) % len(self.apps) == index
            return {"app": name, "state": STATE_NAMES.get(entries[a].state) if mine else None,
                    "ota_seq": entries[a].seq if mine else None, "sha256": digest.hex(), "size": length,
                    "error": "; ".join(errors) or None}
        return {"app": None, "state": None, "ota_seq": None, "sha256": None, "size": None,
                "error": "; ".join(errors) or "no app partitions"}

    def set_boot(self, name):
        """esp_ota_set_boot_partition: OtaDataError unless `name` holds a bootable image."""
        if name not in self.apps:
            raise OtaDataError(ESP_ERR_INVALID_ARG, f"{name} is not an app partition")
        try:
            self.image(name)
        except ImageError as e:
            raise OtaDataError(ESP_ERR_OTA_VALIDATE_FAILED, str(e)) from None
        sector, entry = set_boot(self.entries(), self.apps.index(name), len(self.apps))
        self._put(sector, entry)
        return entry

    def mark_valid(self):
        """esp_ota_mark_app_valid_cancel_rollback -> the entry made VALID, or None if it was."""
        entries = self.entries()
        change = mark_valid(entries, len(self.apps))
        if change is not None:
            self._put(*change)
            return change[1]
        return None

    def boot_partition(self):
        return self.apps[boot_partition(self.entries(), len(self.apps))]
