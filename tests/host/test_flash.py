"""`pgw flash` without hardware: the plan for every board file, the checks
that refuse a wrong image, esptool's image tools for real (elf2image,
image_info, merge_bin on images made here), and the UF2 copy to a
directory that looks like a BOOTSEL drive."""

import functools
import hashlib
import json
import stat
import struct
import threading

import pytest
from esptool.bin_image import LoadFirmwareImage
from esptool.cmds import elf2image, image_info, merge_bin
from esptool.targets import CHIP_DEFS
from esptool.uf2_writer import UF2Writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host_tools import flash, uf2
from host_tools.boards import BoardError, board_names, load_board, validate_board
from host_tools.cli import main as pgw
from host_tools.flash import FlashError

PORT = "/dev/ttyUSB0"
RP2040_FAMILY = 0xE48BFF56
XIP_BASE = 0x10000000
INFO_UF2 = "UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n"

# ---- images made here --------------------------------------------------------

# Plausible load addresses (esptool's memory maps of each chip): code in IRAM, data in DRAM.
CHIP_MEMORY = {
    "esp32": {"iram": 0x40080000, "dram": 0x3FFB0000},
    "esp32s3": {"iram": 0x40370000, "dram": 0x3FC90000},
}


def make_elf(entry, sections):
    """A 32-bit little-endian Xtensa ELF (e_machine 0x5E), written field by
    field: the file header, one PT_LOAD program header per section, the
    section data, a section-name string table and the section headers.
    `sections`: [(name, address, data, executable)]."""
    ehsize, phentsize, shentsize = 52, 32, 40
    phoff = ehsize
    at = phoff + len(sections) * phentsize
    body, offsets = b"", []
    for _, _, data, _ in sections:
        offsets.append(at + len(body))
        body += data + bytes(-len(data) % 4)
    names = b"\0" + b"".join(name.encode() + b"\0" for name, _, _, _ in sections) + b".shstrtab\0"
    names_at = at + len(body)
    shoff = names_at + len(names) + (-(names_at + len(names)) % 4)
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)  # ELFCLASS32, little-endian, version 1
    header = struct.pack("<16sHHIIIIIHHHHHH", ident, 2, 0x5E, 1, entry, phoff, shoff, 0,
                         ehsize, phentsize, len(sections), shentsize, len(sections) + 2, len(sections) + 1)
    program = b"".join(struct.pack("<8I", 1, off, addr, addr, len(data), len(data), 5 if exe else 6, 4)
                       for (_, addr, data, exe), off in zip(sections, offsets))
    section_headers = bytes(shentsize)  # the null section
    name_at = 1
    for (name, addr, data, exe), off in zip(sections, offsets):
        flags = 0x6 if exe else 0x3  # SHF_ALLOC|SHF_EXECINSTR, SHF_WRITE|SHF_ALLOC
        section_headers += struct.pack("<10I", name_at, 1, flags, addr, off, len(data), 0, 0, 4, 0)
        name_at += len(name) + 1
    section_headers += struct.pack("<10I", name_at, 3, 0, 0, names_at, len(names), 0, 0, 1, 0)
    out = header + program + body + names
    return out + bytes(shoff - len(out)) + section_headers


def esp_elf(chip, code=b"\x36\x41\x00" * 300, data=b"meter reading\0" * 20):
    mem = CHIP_MEMORY[chip]
    return make_elf(mem["iram"] + 0x400, [(".iram0.text", mem["iram"], code, True),
                                          (".dram0.data", mem["dram"], data, False)])


def esp_image(chip, **kw):
    """A real ESP image made by esptool's elf2image from an ELF made here."""
    return elf2image(esp_elf(chip, **kw), chip)


# ESP-IDF partition types and subtypes by the names MicroPython's tables use.
PARTITION_KINDS = {"nvs": (1, 0x02), "phy_init": (1, 0x01), "otadata": (1, 0x00), "factory": (0, 0x00),
                   "ota_0": (0, 0x10), "ota_1": (0, 0x11), "vfs": (1, 0x81), "romfs": (1, 0x8F)}


def partition_table(partitions):
    """ESP-IDF's binary partition table: 32-byte entries, an MD5 entry, 0xFF to 3 KB."""
    entries = b""
    for p in partitions:
        ptype, subtype = PARTITION_KINDS[p["name"]]
        entries += struct.pack("<2sBBII16sI", b"\xaa\x50", ptype, subtype, p["offset"], p["size"],
                               p["name"].encode(), 0)
    entries += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(entries).digest()
    return entries + b"\xff" * (0xC00 - len(entries))


def app_partition(board):
    return min((p for p in board.flash["partitions"] if PARTITION_KINDS[p["name"]][0] == 0),
               key=lambda p: p["offset"])


def merged_image(board, chip=None, app=None, partitions=None):
    """A full image as MicroPython ships it, merged by esptool's merge_bin:
    bootloader at the board's image offset, partition table at 0x8000, app
    at its partition; returned as the bytes written from the image offset."""
    chip = chip or board.chip
    parts = [(board.flash["image_offset"], esp_image(chip)),
             (0x8000, partition_table(partitions or board.flash["partitions"])),
             (app_partition(board)["offset"], app if app is not None else esp_image(chip, code=b"\x06" * 4000))]
    return merge_bin(parts, chip, target_offset=board.flash["image_offset"])


def uf2_blocks(payloads, family=RP2040_FAMILY, flags=0x2000):
    """UF2 written block by block per the specification: [(address, payload)]."""
    out = b""
    for i, (address, payload) in enumerate(payloads):
        out += struct.pack("<8I", 0x0A324655, 0x9E5D5157, flags, address, len(payload), i, len(payloads), family)
        out += payload + bytes(476 - len(payload)) + struct.pack("<I", 0x0AB16F30)
    return out


def rp2040_uf2(size=8192, start=XIP_BASE):
    data = bytes(i * 7 & 0xFF for i in range(size))
    return uf2_blocks([(start + at, data[at:at + 256]) for at in range(0, size, 256)])


def esptool_uf2(tmp_path, family, data, address, chunk_size=256):
    """A UF2 written by esptool's UF2Writer, an independent writer."""
    path = tmp_path / "esptool.uf2"
    with UF2Writer(family, str(path), chunk_size, md5_enabled=False) as writer:
        writer.add_file(address, data)
    return path.read_bytes()


@pytest.fixture(scope="module")
def images():
    """{board name: merged image} for every ESP board file."""
    boards = [load_board(n) for n in board_names()]
    return {b.name: merged_image(b) for b in boards if b.flash["image_format"] == "bin"}


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refused(reason, fn, *args, **kw):
    with pytest.raises(FlashError) as e:
        fn(*args, **kw)
    assert e.value.reason == reason, (e.value.reason, str(e.value))
    return str(e.value)


# ---- the plan, for every board file -------------------------------------------


def expected_commands(board, file, drive=None):
    """The command lines a technician would type, from the board file's values."""
    deploy = ["pgw deploy --port %s --board %s" % (PORT, board.name), "pgw provision --port %s --hub mqtt://HUB:1883 --community C --installer-key installer.pem" % PORT]
    fmt = board.flash["image_format"]
    if fmt == "bin":
        esptool = "esptool --chip %s --port %s" % (board.chip, PORT)
        offset = "0x%x" % board.flash["image_offset"]
        return ["esptool image-info %s" % file,
                "%s flash-id" % esptool,
                "%s erase-flash" % esptool,
                "%s --baud 460800 write-flash %s %s" % (esptool, offset, file),
                "%s --baud 460800 verify-flash %s %s" % (esptool, offset, file)] + deploy
    if fmt == "uf2":
        return ["cat %s/INFO_UF2.TXT" % drive, "cp %s %s/ && sync" % (file, drive)] + deploy
    return deploy


@pytest.mark.parametrize("name", board_names())
def test_dry_run_prints_the_exact_steps_for_every_board_file(name, tmp_path, images, capsys):
    board = load_board(name)
    fmt = board.flash["image_format"]
    drive = tmp_path / "RPI-RP2"
    drive.mkdir()
    (drive / "INFO_UF2.TXT").write_text(INFO_UF2)
    firmware = None
    if fmt == "bin":
        firmware = write(tmp_path, "micropython.bin", images[name])
    elif fmt == "uf2":
        firmware = write(tmp_path, "micropython.uf2", rp2040_uf2())
    lines = []
    steps = flash.flash(name, PORT, firmware, drive=drive, dry_run=True, use_picotool=False, out=lines.append)
    commands = [line.split("$ ", 1)[1] for text in lines for line in text.splitlines() if "$ " in line]
    assert commands == expected_commands(board, firmware, drive)
    assert [s.command for s in steps if s.command] == commands
    assert "dry run, nothing is touched" in lines[0]
    if fmt == "none":
        assert "nothing to flash" in lines[1]
    else:
        assert any(line.strip().startswith("ok  ") for line in lines), lines  # the checks ran
    assert sorted(p.name for p in drive.iterdir()) == ["INFO_UF2.TXT"]  # nothing copied
    assert not capsys.readouterr().out  # and esptool was not asked to do anything


def test_dry_run_shows_the_offsets_and_filesystem_of_the_board_file():
    for name in ("esp32_devkitc", "esp32s3_devkitc", "esp32_devkitc_ota"):
        board = load_board(name)
        steps = flash.plan(board, PORT, "fw.bin")
        fs = board.flash["filesystem"]["offset"]
        assert "ending below the filesystem at 0x%x" % fs in steps[0].text
        assert steps[3].params["offset"] == board.flash["image_offset"]
        # esptool's own table agrees with the board file on where the image goes
        assert CHIP_DEFS[board.chip].BOOTLOADER_FLASH_OFFSET == board.flash["image_offset"]


def test_keep_filesystem_erases_only_below_it():
    board = load_board("esp32_devkitc_ota")
    erase = [s for s in flash.plan(board, PORT, "fw.bin", keep_filesystem=True) if s.kind == "erase"][0]
    assert erase.command == "esptool --chip esp32 --port /dev/ttyUSB0 erase-region 0x0 0x310000"
    assert (erase.params["start"], erase.params["size"]) == (0, 0x310000)


def test_dry_run_without_firmware_shows_the_steps_with_the_official_image_name(capsys):
    assert pgw(["flash", "--board", "esp32s3_devkitc", "--port", PORT, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "write-flash 0x0 ESP32_GENERIC_S3.bin" in out
    assert "not checked: no --firmware given" in out


def test_picotool_is_used_when_on_path():
    board = load_board("pico_w")
    steps = flash.plan(board, "/dev/ttyACM0", "fw.uf2", picotool="/usr/bin/picotool")
    assert [s.command for s in steps][:2] == [None, "picotool load -v -x fw.uf2"]
    assert [s.kind for s in steps] == ["check", "picotool", "deploy", "next"]


def test_no_deploy_prints_deploy_as_a_next_step():
    steps = flash.plan(load_board("esp32_devkitc"), PORT, "fw.bin", deploy=False)
    assert [s.kind for s in steps][-2:] == ["next", "next"]
    assert steps[-2].command == "pgw deploy --port /dev/ttyUSB0 --board esp32_devkitc"


def test_paths_with_spaces_are_quoted_for_the_shell():
    steps = flash.plan(load_board("esp32_devkitc"), PORT, "my images/fw.bin")
    assert steps[3].command.endswith("write-flash 0x1000 'my images/fw.bin'")


# ---- esptool's image tools, for real --------------------------------------------


@pytest.mark.parametrize("chip, chip_id", [("esp32", 0), ("esp32s3", 9)])
def test_elf2image_and_image_info_on_an_elf_made_here(chip, chip_id, capsys):
    image = esp_image(chip)
    capsys.readouterr()
    image_info(image)
    info = capsys.readouterr().out
    name = CHIP_DEFS[chip].CHIP_NAME
    assert "Detected image type: %s" % name in info
    assert "Chip ID: %d (%s)" % (chip_id, name) in info
    assert "Entry point: 0x%08x" % (CHIP_MEMORY[chip]["iram"] + 0x400) in info
    assert "Segments: 2" in info
    assert "Checksum: " in info and "(valid)" in info.split("Checksum: ")[1].splitlines()[0]
    assert "Validation hash: " in info and info.split("Validation hash: ")[1].splitlines()[0].endswith("(valid)")
    loaded = LoadFirmwareImage(chip, image)
    assert loaded.chip_id == chip_id
    assert sorted(s.addr for s in loaded.segments) == sorted(CHIP_MEMORY[chip].values())


@pytest.mark.parametrize("name", ["esp32_devkitc", "esp32s3_devkitc", "esp32_devkitc_ota"])
def test_merge_bin_puts_each_part_at_the_board_offsets(name, images):
    board = load_board(name)
    base = board.flash["image_offset"]
    merged = images[name]
    boot = esp_image(board.chip)
    table = partition_table(board.flash["partitions"])
    app_at = app_partition(board)["offset"]
    assert merged[:len(boot)] == boot
    assert set(merged[len(boot):0x8000 - base]) == {0xFF}  # padding up to the partition table
    assert merged[0x8000 - base:0x8000 - base + len(table)] == table
    assert set(merged[0x8000 - base + len(table):app_at - base]) == {0xFF}
    app = LoadFirmwareImage(board.chip, merged[app_at - base:])
    assert app.checksum == app.calculate_checksum() and app.stored_digest == app.calc_digest
    assert flash.parse_partition_table(table) == [
        (p["name"], *PARTITION_KINDS[p["name"]], p["offset"], p["size"]) for p in board.flash["partitions"]]


@pytest.mark.parametrize("name", ["esp32_devkitc", "esp32s3_devkitc", "esp32_devkitc_ota"])
def test_the_chip_check_accepts_the_image_made_for_the_board(name, images):
    findings = flash.check_image(load_board(name), images[name], "fw.bin")
    assert findings[0].startswith("the bootloader: an %s image" % CHIP_DEFS[load_board(name).chip].CHIP_NAME)
    assert any("partition table is the board file's" in f for f in findings)
    assert any("the app at 0x10000" in f for f in findings)


def test_an_image_for_another_chip_is_refused(images):
    msg = refused("wrong_chip", flash.check_image, load_board("esp32s3_devkitc"), images["esp32_devkitc"], "fw.bin")
    assert "fw.bin is for ESP32 (chip id 0); board esp32s3_devkitc has an ESP32-S3 (chip id 9)" in msg
    refused("wrong_chip", flash.check_image, load_board("esp32_devkitc"), images["esp32s3_devkitc"], "fw.bin")


def test_an_app_for_another_chip_behind_the_right_bootloader_is_refused():
    board = load_board("esp32_devkitc")
    image = merged_image(board, app=esp_image("esp32s3"))
    assert "app at 0x10000 is for ESP32-S3" in refused("wrong_chip", flash.check_image, board, image, "fw.bin")


def test_an_image_reaching_into_the_filesystem_is_refused(images):
    board = load_board("esp32_devkitc")
    fs = board.flash["filesystem"]["offset"]
    image = images["esp32_devkitc"]
    big = image + b"\xff" * (fs - 0x1000 - len(image) + 1)
    msg = refused("too_big", flash.check_image, board, big, "fw.bin")
    assert "ends at 0x200001, past the start of the filesystem at 0x200000" in msg
    flash.check_image(board, big[:-1], "fw.bin")  # one byte less fits


def test_an_app_larger_than_its_ota_slot_is_refused():
    board = load_board("esp32_devkitc_ota")
    image = merged_image(board) + b"\xff" * 0x180000  # below the filesystem, past ota_0's 1.5 MB
    assert "more than its 1536 KB partition 'ota_0'" in refused("too_big", flash.check_image, board, image, "fw.bin")


def test_an_app_alone_or_a_bootloader_alone_is_refused():
    board = load_board("esp32_devkitc")
    refused("no_partition_table", flash.check_image, board, esp_image("esp32"), "app.bin")
    head = merged_image(board)[:0x8000 - 0x1000 + 0xC00]
    refused("no_app", flash.check_image, board, head, "fw.bin")


def test_a_partition_table_unlike_the_board_files_is_refused():
    board = load_board("esp32_devkitc")
    image = merged_image(board, partitions=load_board("esp32_devkitc_ota").flash["partitions"])
    msg = refused("layout_mismatch", flash.check_image, board, image, "fw.bin")
    assert "image: nvs 0x9000 (16 KB), otadata 0xd000 (8 KB)" in msg
    assert "board: nvs 0x9000 (24 KB), phy_init 0xf000 (4 KB), factory 0x10000 (1984 KB)" in msg


def test_a_damaged_image_is_refused(images):
    board = load_board("esp32_devkitc")
    image = bytearray(images["esp32_devkitc"])
    image[0x30] ^= 0x01  # inside the bootloader's first segment
    refused("corrupt_image", flash.check_image, board, bytes(image), "fw.bin")
    image = bytearray(images["esp32_devkitc"])
    image[0x8000 - 0x1000 + 4] ^= 0x01  # the partition table, under its MD5
    refused("corrupt_image", flash.check_image, board, bytes(image), "fw.bin")


def test_a_uf2_or_text_is_not_an_esp_image():
    board = load_board("esp32_devkitc")
    assert "is a UF2 file" in refused("not_esp_image", flash.check_image, board, rp2040_uf2(), "fw.uf2")
    refused("not_esp_image", flash.check_image, board, b"#!/bin/sh\n", "fw.bin")
    refused("not_esp_image", flash.check_image, board, b"", "fw.bin")


# ---- UF2 ----------------------------------------------------------------------


def test_uf2_written_here_and_by_esptool_is_accepted():
    board = load_board("pico_w")
    data = bytes(range(256)) * 40
    ours = uf2_blocks([(XIP_BASE + at, data[at:at + 256]) for at in range(0, len(data), 256)])
    image = uf2.parse(ours)
    assert (image.family, image.blocks, image.start, image.end) == (RP2040_FAMILY, 40, XIP_BASE, XIP_BASE + 10240)
    assert "a UF2 for RP2040 (0xe48bff56): 40 blocks, 10 KB" in flash.check_image(board, ours, "fw.uf2")[0]


def test_uf2_from_esptools_writer_is_read_the_same(tmp_path):
    data = bytes(range(256)) * 40
    theirs = esptool_uf2(tmp_path, RP2040_FAMILY, data, XIP_BASE)
    image = uf2.parse(theirs)
    assert (image.family, image.blocks, image.payload_bytes, image.end) == (RP2040_FAMILY, 40, 10240, XIP_BASE + 10240)
    flash.check_image(load_board("pico_w"), theirs, "fw.uf2")


def test_a_uf2_of_another_family_is_refused(tmp_path):
    # esptool's merge_bin writes a UF2 for the ESP32-S3's USB bridge
    out = tmp_path / "s3.uf2"
    merge_bin([(0, esp_image("esp32s3"))], "esp32s3", output=str(out), format="uf2")
    msg = refused("wrong_family", flash.check_image, load_board("pico_w"), out.read_bytes(), "s3.uf2")
    assert "s3.uf2 is a UF2 for ESP32-S3 (0xc47e5767)" in msg and "0xe48bff56 only" in msg
    rp2350 = rp2040_uf2()
    rp2350 = b"".join(rp2350[i:i + 28] + struct.pack("<I", 0xE48BFF59) + rp2350[i + 32:i + 512]
                      for i in range(0, len(rp2350), 512))
    assert "RP2350 ARM secure" in refused("wrong_family", flash.check_image, load_board("pico_w"), rp2350, "x.uf2")


def test_uf2_blocks_the_rp2040_boot_rom_would_ignore_are_refused(tmp_path):
    board = load_board("pico_w")
    theirs = esptool_uf2(tmp_path, RP2040_FAMILY, bytes(4096), XIP_BASE, chunk_size=476)
    assert "256-byte payloads" in refused("bad_block", flash.check_image, board, theirs, "fw.uf2")
    refused("bad_block", flash.check_image, board, rp2040_uf2(start=XIP_BASE + 128), "fw.uf2")


def test_a_uf2_reaching_into_the_filesystem_or_into_ram_is_refused():
    board = load_board("pico_w")
    fs = board.flash["filesystem"]["offset"]
    msg = refused("too_big", flash.check_image, board, rp2040_uf2(size=512, start=XIP_BASE + fs - 256), "fw.uf2")
    assert "writes up to 0x1012c100, past the start of the filesystem at 0x1012c000" in msg
    flash.check_image(board, rp2040_uf2(size=256, start=XIP_BASE + fs - 256), "fw.uf2")  # the last page fits
    refused("not_flash", flash.check_image, board, rp2040_uf2(start=0x20000000), "ram.uf2")
    refused("not_uf2", flash.check_image, board, esp_image("esp32"), "fw.bin")


@pytest.mark.parametrize("damage, reason", [
    (lambda d: d[:-1], "truncated"),
    (lambda d: b"", "empty"),
    (lambda d: d[:512] + b"x" + d[513:], "bad_magic"),
    (lambda d: d[:512 + 20] + struct.pack("<I", 5) + d[512 + 24:], "bad_sequence"),
    (lambda d: d[:512 + 28] + struct.pack("<I", 0x1C5F21B0) + d[512 + 32:], "mixed_family"),
    (lambda d: d[:512 + 16] + struct.pack("<I", 477) + d[512 + 20:], "bad_block"),
    (lambda d: uf2_blocks([(XIP_BASE, bytes(256))], flags=0), "no_family"),
    (lambda d: uf2_blocks([(XIP_BASE, bytes(256))], flags=0x2001), "empty"),
    (lambda d: uf2_blocks([(XIP_BASE, bytes(256))], flags=0x3000), "file_container"),
])
def test_damaged_uf2_files_are_refused_with_a_reason(damage, reason):
    with pytest.raises(uf2.UF2Error) as e:
        uf2.parse(damage(rp2040_uf2(size=1024)))
    assert e.value.reason == reason, str(e.value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_images_give_a_specific_error_or_pass(data):
    """Flipped and cut bytes in a UF2 and in an ESP image: FlashError/UF2Error, never anything else."""
    uf2_file = bytearray(rp2040_uf2(size=1024))
    esp_file = bytearray(fuzz_esp_image())
    for blob in (uf2_file, esp_file):
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(blob) - 1))
            blob[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(esp_file)))
    for board, blob in ((load_board("pico_w"), bytes(uf2_file)), (load_board("esp32_devkitc"), bytes(esp_file)),
                        (load_board("esp32_devkitc"), bytes(esp_file[:cut]))):
        try:
            flash.check_image(board, blob, "fuzz")
        except FlashError as e:
            assert e.reason and str(e)


@functools.cache
def fuzz_esp_image():
    return merged_image(load_board("esp32_devkitc"))


# ---- refusals before anything is touched -------------------------------------------


def test_without_firmware_the_official_image_is_named(capsys):
    msg = refused("no_firmware", flash.flash, "esp32_devkitc", PORT)
    assert "MicroPython's ESP32_GENERIC image" in msg and ".bin" in msg and "does not download" in msg
    msg = refused("no_firmware", flash.flash, "pico_w", "/dev/ttyACM0")
    assert "RPI_PICO_W-<date>-" in msg and ".uf2" in msg
    assert pgw(["flash", "--board", "esp32_devkitc_ota", "--port", PORT]) == 1
    assert "ESP32_GENERIC-OTA" in capsys.readouterr().err


def test_a_missing_firmware_file_is_refused(tmp_path):
    refused("no_file", flash.flash, "esp32_devkitc", PORT, tmp_path / "nope.bin", dry_run=True, out=list().append)


def test_a_file_larger_than_the_flash_is_refused_unread(tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(4096 * 1024 + 1)
    assert "more than the 4096 KB flash" in refused("too_big", flash.read_image, load_board("esp32_devkitc"), big)


def test_a_wrong_image_is_refused_before_the_port_is_opened(tmp_path, images):
    firmware = write(tmp_path, "s3.bin", images["esp32s3_devkitc"])
    lines = []
    refused("wrong_chip", flash.flash, "esp32_devkitc", str(tmp_path / "no-such-port"), firmware, out=lines.append)
    assert [line.split(".")[0].strip() for line in lines[1:]] == ["1"]  # step 1, the check, and no further


def test_the_right_image_goes_on_to_the_port(tmp_path, images):
    firmware = write(tmp_path, "fw.bin", images["esp32_devkitc"])
    lines = []
    msg = refused("no_chip", flash.flash, "esp32_devkitc", str(tmp_path / "no-such-port"), firmware,
                  deploy=False, out=lines.append)
    assert "no ESP chip answered" in msg
    assert any(line.strip().startswith("2. connect to") for line in lines)


def test_the_image_hint_belongs_to_boards_that_flash_an_image():
    raw = json.loads((load_board("virtual").path).read_text())
    raw["flash"]["image"] = "ANYTHING"
    with pytest.raises(BoardError, match="image_format 'none' flashes nothing"):
        validate_board(raw, "virtual")
    raw = json.loads((load_board("pico_w").path).read_text())
    raw["flash"]["image"] = ""
    with pytest.raises(BoardError, match="flash.image must be a non-empty string"):
        validate_board(raw, "pico_w")


# ---- the BOOTSEL drive ---------------------------------------------------------------


def bootsel_drive(tmp_path, board_id="RPI-RP2", name="RPI-RP2"):
    drive = tmp_path / name
    drive.mkdir(parents=True)
    (drive / "INFO_UF2.TXT").write_text(INFO_UF2.replace("RPI-RP2", board_id))
    return drive


class BootRom(threading.Thread):
    """Plays the RP2040's boot ROM behind a drive: once the whole UF2 is
    there it keeps a copy and 'reboots' (the drive goes away)."""

    def __init__(self, drive, name, size):
        super().__init__(daemon=True)
        self.drive, self.name, self.size = drive, name, size
        self.received = None
        self.start()

    def run(self):
        target = self.drive / self.name
        if flash.wait_until(lambda: target.exists() and target.stat().st_size == self.size, 20, interval=0.01):
            self.received = target.read_bytes()
            target.unlink()
            (self.drive / "INFO_UF2.TXT").unlink()


def test_the_uf2_is_copied_to_the_bootsel_drive_and_the_drive_goes_away(tmp_path):
    drive = bootsel_drive(tmp_path)
    data = rp2040_uf2(size=200 * 1024)
    firmware = write(tmp_path, "RPI_PICO_W-test.uf2", data)
    rom = BootRom(drive, firmware.name, len(data))
    lines = []
    flash.flash("pico_w", "/dev/ttyACM0", firmware, drive=drive, deploy=False, use_picotool=False,
                out=lines.append, timeout=20)
    rom.join(5)
    assert rom.received == data
    text = "\n".join(lines)
    assert "copy: 100%  400 KB of 400 KB" in text and "the board took the image" in text
    assert "found %s" % drive in text


def test_the_bootsel_drive_is_found_by_its_board_id(tmp_path):
    other = bootsel_drive(tmp_path, board_id="RP2350", name="RP2350")
    ours = bootsel_drive(tmp_path)
    plain = tmp_path / "usbstick"
    plain.mkdir()
    assert flash.find_bootsel_drive("RPI-RP2", candidates=[str(plain), str(other), str(ours)]) == ours
    assert "Board-ID: RPI-RP2" in refused("no_drive", flash.find_bootsel_drive, "RPI-RP2",
                                          candidates=[str(plain), str(other)])
    second = bootsel_drive(tmp_path / "x")
    refused("several_drives", flash.find_bootsel_drive, "RPI-RP2", candidates=[str(ours), str(second)])
    assert "not a UF2 bootloader drive" in refused("no_drive", flash.find_bootsel_drive, "RPI-RP2", drive=plain)
    assert "RP2350 bootloader" in refused("wrong_drive", flash.find_bootsel_drive, "RPI-RP2", drive=other)


def test_a_missing_drive_is_refused_and_nothing_is_written(tmp_path):
    firmware = write(tmp_path, "fw.uf2", rp2040_uf2())
    empty = tmp_path / "empty"
    empty.mkdir()
    refused("no_drive", flash.flash, "pico_w", "/dev/ttyACM0", firmware, drive=empty, deploy=False,
            use_picotool=False, out=list().append)
    assert list(empty.iterdir()) == []


def test_a_wrong_family_never_reaches_the_drive(tmp_path):
    drive = bootsel_drive(tmp_path)
    wrong = rp2040_uf2()
    wrong = b"".join(wrong[i:i + 28] + struct.pack("<I", 0xC47E5767) + wrong[i + 32:i + 512]
                     for i in range(0, len(wrong), 512))
    firmware = write(tmp_path, "fw.uf2", wrong)
    refused("wrong_family", flash.flash, "pico_w", "/dev/ttyACM0", firmware, drive=drive, deploy=False,
            use_picotool=False, out=list().append)
    assert sorted(p.name for p in drive.iterdir()) == ["INFO_UF2.TXT"]


def test_a_drive_that_stays_means_the_boot_rom_did_not_take_it(tmp_path):
    drive = bootsel_drive(tmp_path)
    firmware = write(tmp_path, "fw.uf2", rp2040_uf2())
    msg = refused("not_taken", flash.flash, "pico_w", "/dev/ttyACM0", firmware, drive=drive, deploy=False,
                  use_picotool=False, out=list().append, timeout=0.3)
    assert "still there" in msg
    assert (drive / "fw.uf2").read_bytes() == firmware.read_bytes()


def fake_picotool(tmp_path, rc):
    """A stand-in picotool that records its arguments: what is checked is how flash calls it."""
    script = tmp_path / "picotool"
    script.write_text("#!/bin/sh\necho \"$@\" > %s/args\nexit %d\n" % (tmp_path, rc))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_picotool_loads_verifies_and_starts_the_image(tmp_path):
    firmware = write(tmp_path, "fw.uf2", rp2040_uf2())
    tool = fake_picotool(tmp_path, 0)
    flash.flash("pico_w", "/dev/ttyACM0", firmware, deploy=False, which=lambda name: tool, out=list().append)
    assert (tmp_path / "args").read_text().split() == ["load", "-v", "-x", str(firmware)]
    tool = fake_picotool(tmp_path, 1)
    refused("picotool_failed", flash.flash, "pico_w", "/dev/ttyACM0", firmware, deploy=False,
            which=lambda name: tool, out=list().append)


# ---- the virtual board: nothing to flash, then deploy ------------------------------------


def test_flash_on_a_virtual_board_goes_on_to_deploy(tmp_path, capsys):
    from host_tools.vboard import VirtualBoardProcess

    with VirtualBoardProcess(tmp_path / "flash", tmp_path / "vb.tty") as vb:
        vb.channel.wait_kind("ready", timeout=20)
        lines = []
        flash.flash("virtual", str(vb.link), None, out=lines.append)
        text = "\n".join(lines)
        assert "nothing to flash" in text
        assert "deploy: board reset" in text and "pgw flash: done" in text
        assert (vb.root / "main.py").exists() and (vb.root / "deploy.json").exists()
