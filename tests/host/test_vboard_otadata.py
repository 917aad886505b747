"""The virtual board's ESP-IDF bootloader (host_tools/vboard/otadata.py):
otadata entries and their CRC, the rollback rules at each boot, set_boot and
mark_app_valid_cancel_rollback, and the app image check against images made
by esptool's elf2image (and esptool's own verdict on damaged ones)."""

import hashlib
import struct

import pytest
from esptool.bin_image import LoadFirmwareImage
from esptool.cmds import elf2image

from host.test_flash import make_elf
from host_tools.boards import load_board
from host_tools.vboard import otadata
from host_tools.vboard.otadata import ABORTED, NEW, PENDING_VERIFY, VALID, AppFlash, Entry, ImageError, OtaDataError

BOARD = load_board("virtual_ota")


def app_image(fill=0, code_kb=8):
    """An ESP32 app image by esptool's elf2image: code mapped from flash, data in DRAM."""
    code = bytes((i * 7 + fill) & 0xFF for i in range(code_kb * 1024))
    return elf2image(make_elf(0x400D0018, [(".flash.text", 0x400D0018, code, True),
                                           (".dram0.data", 0x3FFB0000, b"meter reading\0" * 8, False)]), "esp32")


@pytest.fixture
def flash(tmp_path):
    return AppFlash(tmp_path / "vb.flash", BOARD.flash["partitions"])


def test_an_entry_is_32_bytes_with_the_crc_esp_idf_computes():
    # ota_seq 1 little-endian, crc32 from 0xFFFFFFFF over those 4 bytes: the
    # 9a 98 43 47 every ESP32 otadata dump after a first OTA shows
    e = Entry(1, VALID)
    data = e.encode()
    assert len(data) == 32
    assert data[:4] == b"\x01\0\0\0" and data[4:24] == b"\xff" * 20
    assert data[24:28] == struct.pack("<I", VALID) and data[28:] == bytes.fromhex("9a984347")
    assert Entry.decode(data).valid()
    assert not Entry.decode(data[:28] + b"\0\0\0\0").valid()  # a torn write
    assert not Entry(1, ABORTED).valid() and not Entry().valid()


def test_a_fresh_flash_boots_ota_0_and_writes_seq_1_valid(flash):
    image = app_image()
    flash.write_image(image, "ota_0")
    booted = flash.boot()
    assert booted["app"] == "ota_0" and booted["state"] == "VALID" and booted["ota_seq"] == 1
    assert booted["sha256"] == hashlib.sha256(image).hexdigest() and booted["size"] == len(image)
    e0, e1 = flash.entries()
    assert (e0.seq, e0.state) == (1, VALID) and e1.seq == otadata.EMPTY_SEQ


def test_a_new_app_is_pending_until_marked_valid_else_the_next_reset_aborts_it(flash):
    old, new = app_image(1), app_image(2)
    flash.write_image(old, "ota_0")
    flash.boot()
    flash.write_image(new, "ota_1")
    entry = flash.set_boot("ota_1")
    assert (entry.seq, entry.state) == (2, NEW) and flash.boot_partition() == "ota_1"
    booted = flash.boot()
    assert (booted["app"], booted["state"], booted["ota_seq"]) == ("ota_1", "PENDING_VERIFY", 2)
    # not marked valid: this reset aborts it and the previous app boots
    booted = flash.boot()
    assert (booted["app"], booted["state"]) == ("ota_0", "VALID")
    assert booted["sha256"] == hashlib.sha256(old).hexdigest()
    assert [e.state for e in flash.entries()] == [VALID, ABORTED]
    # again, and this time it is committed: it stays over resets
    flash.set_boot("ota_1")
    assert flash.entries()[1].seq == 2  # (0 + 1) % 2 + 2: the smallest seq above 1 that maps to ota_1
    assert flash.boot()["state"] == "PENDING_VERIFY"
    assert flash.mark_valid().state == VALID
    assert flash.mark_valid() is None  # once is enough; more is harmless
    for _ in range(2):
        booted = flash.boot()
        assert (booted["app"], booted["state"]) == ("ota_1", "VALID")
    # the next update goes back to ota_0, with seq 3
    flash.write_image(old, "ota_0")
    assert flash.set_boot("ota_0").seq == 3
    assert flash.boot()["app"] == "ota_0"


def test_set_boot_refuses_what_the_bootloader_could_not_boot(flash):
    flash.write_image(app_image(), "ota_0")
    flash.boot()
    with pytest.raises(OtaDataError) as e:
        flash.set_boot("ota_1")  # erased
    assert e.value.code == otadata.ESP_ERR_OTA_VALIDATE_FAILED
    with pytest.raises(OtaDataError) as e:
        flash.set_boot("otadata")
    assert e.value.code == otadata.ESP_ERR_INVALID_ARG
    assert [x.seq for x in flash.entries()] == [1, otadata.EMPTY_SEQ]


def test_an_image_damaged_after_set_boot_is_skipped_for_the_other_app(flash):
    old = app_image(1)
    flash.write_image(old, "ota_0")
    flash.boot()
    flash.write_image(app_image(2), "ota_1")
    flash.set_boot("ota_1")
    flash.write("ota_1", 100, b"\0")  # a bit flipped behind the bootloader's back
    booted = flash.boot()
    assert booted["app"] == "ota_0" and "ota_1" in booted["error"]
    assert booted["state"] is None  # ota_1's entry is the active one; ota_0 runs by fallback


def test_mark_valid_with_no_active_entry_is_esp_fail(flash):
    with pytest.raises(OtaDataError) as e:
        flash.mark_valid()
    assert e.value.code == otadata.ESP_FAIL


def test_the_rules_on_entries_alone():
    a, b = Entry(5, VALID), Entry(6, PENDING_VERIFY)
    start, initial, writes = otadata.select([a, b], 2)
    assert (start, initial) == (0, False) and writes == {1: b} and b.state == ABORTED  # seq 5 -> ota_0
    a, b = Entry(5, VALID), Entry(6, NEW)
    assert otadata.select([a, b], 2)[0] == 1 and b.state == PENDING_VERIFY
    sector, entry = otadata.set_boot([Entry(5, VALID), Entry()], 1, 2)
    assert (sector, entry.seq, entry.state) == (1, 6, NEW)  # ota_1 after seq 5
    sector, entry = otadata.set_boot([Entry(5, VALID), Entry()], 0, 2)
    assert (sector, entry.seq) == (1, 5)  # the app that is active already: the same seq, as ESP-IDF writes it
    sector, entry = otadata.set_boot([Entry(), Entry()], 1, 2)
    assert (sector, entry.seq) == (0, 2)


@pytest.mark.parametrize("damage", ["none", "magic", "checksum", "hash", "truncated", "chip"])
def test_the_image_check_agrees_with_esptool(damage):
    image = bytearray(app_image(3))
    if damage == "magic":
        image[0] = 0xE8
    elif damage == "checksum":
        image[-33] ^= 1  # the checksum byte, before the appended SHA-256
    elif damage == "hash":
        image[-1] ^= 1
    elif damage == "truncated":
        image = image[:len(image) // 2]
    elif damage == "chip":
        image[12] = 9  # ESP32-S3's chip id
        image[-32:] = hashlib.sha256(image[:-32]).digest()
    padded = bytes(image) + b"\xff" * 4096

    def read(at, n):
        return padded[at:at + n]

    if damage == "none":
        length, digest = otadata.check_image(read, len(padded))
        assert (length, digest) == (len(image), hashlib.sha256(image).digest())
        esp = LoadFirmwareImage("esp32", bytes(image))
        assert esp.checksum == esp.calculate_checksum() and esp.stored_digest == esp.calc_digest
        return
    with pytest.raises(ImageError) as e:
        otadata.check_image(read, len(image) if damage == "truncated" else len(padded))
    assert e.value.reason == {"magic": "magic", "checksum": "checksum", "hash": "hash",
                              "truncated": "length", "chip": "chip"}[damage]
    if damage in ("checksum", "hash"):  # esptool sees the same damage
        esp = LoadFirmwareImage("esp32", bytes(image))
        assert esp.checksum != esp.calculate_checksum() or esp.stored_digest != esp.calc_digest


@pytest.mark.parametrize("change, message", [
    (lambda parts: [p for p in parts if p["name"] != "otadata"], "OTA app partitions need an 'otadata' partition"),
    (lambda parts: [p for p in parts if p["name"] != "ota_0"], "must be ota_0, ota_1, ... without gaps"),
    (lambda parts: [dict(p, size=4096) if p["name"] == "otadata" else p for p in parts], "two 4 KB sectors"),
    (lambda parts: [dict(p, offset=p["offset"] + 4096, size=p["size"] - 4096) if p["name"] == "ota_1" else p
                    for p in parts],
     "app partition 'ota_1' at 1642496 (0x191000): ESP-IDF needs app partitions on 64 KB boundaries"),
])
def test_the_board_validator_checks_ota_partitions_as_esp_idf_needs_them(change, message):
    import copy
    import json

    from host_tools.boards import BOARDS_DIR, BoardError, validate_board

    data = json.loads((BOARDS_DIR / "virtual_ota.json").read_text())
    data["flash"]["partitions"] = change(copy.deepcopy(data["flash"]["partitions"]))
    with pytest.raises(BoardError) as e:
        validate_board(data, "virtual_ota")
    assert message in str(e.value), str(e.value)
    assert BOARD.ota_apps == [("ota_0", 0x10000, 0x180000), ("ota_1", 0x190000, 0x180000)]
    assert load_board("esp32_devkitc_ota").ota_apps and not load_board("virtual").ota_apps
