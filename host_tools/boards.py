"""Board definitions: load ``boards/<name>.json`` and check it before anything is built or flashed.

A board file names its pins by role ("relay_battery", "rs485_dir", ...) rather than
by position, and carries a schema version, so a new role or a renumbered GPIO never
shifts the meaning of the others. Every mistake is reported as a `BoardError` whose
message starts with the board's name. See docs/boards.md for the format.

    python -m host_tools.boards                   # check every board in boards/
    python -m host_tools.boards pico_w x.json     # check the ones named
"""

import copy
import json
import re
import sys
from pathlib import Path

SCHEMA = 1
BOARDS_DIR = Path(__file__).resolve().parents[1] / "boards"

# Pin role -> direction. "out" and "i2c" need an output driver; "analog" reads an ADC.
ROLE_DIRECTIONS = {
    "rs485_tx": "out",
    "rs485_rx": "in",
    "rs485_dir": "out",
    "relay_battery": "out",
    "relay_ev_enable": "out",
    "ev_pilot_pwm": "out",
    "ev_pilot_feedback": "analog",
    "status_led": "out",
    "button": "in",
    "i2c_scl": "i2c",
    "i2c_sda": "i2c",
}
PIN_ROLES = tuple(ROLE_DIRECTIONS)
REQUIRED_PIN_ROLES = (
    "rs485_tx",
    "rs485_rx",
    "rs485_dir",
    "relay_battery",
    "relay_ev_enable",
    "ev_pilot_pwm",
    "status_led",
    "button",
)
DRIVEN_ROLES = tuple(r for r, d in ROLE_DIRECTIONS.items() if d in ("out", "i2c"))

TOP_KEYS = ("schema", "board", "title", "port", "chip", "mpy_cross_arch", "cpu_hz", "heap_kb", "flash", "pins", "buses")
FLASH_KEYS = ("size_kb", "image_format", "image_offset", "partitions", "filesystem")
PARTITION_KEYS = ("name", "offset", "size")
FILESYSTEM_KEYS = ("offset", "size_kb", "type")
ROMFS_KEYS = ("offset", "size_kb")
ROMFS_SEGMENTS_MAX = 2  # segments 0 and 1: the A/B code slots (docs/ota.md)
# ESP32 OTA partitions (ESP-IDF's rules): app partitions ota_0, ota_1, ...
# on 64 KB boundaries, and otadata, two 4 KB sectors. They are what lets a
# bundle carry a full MicroPython image (docs/ota.md).
OTA_APP_RE = re.compile(r"^ota_([0-9]|1[0-5])$")
OTA_APP_ALIGN = 0x10000
OTADATA_SIZE = 0x2000
OTA_PORTS = ("esp32", "unix")  # unix: the virtual board's stand-in esp32 module
PIN_KEYS = ("gpio", "active_low", "pull", "adc")
BUS_KEYS = ("rs485_uart", "i2c", "secure_element_address")

PORTS = ("esp32", "rp2", "unix")
IMAGE_FORMATS = {"esp32": "bin", "rp2": "uf2", "unix": "none"}
FILESYSTEM_TYPES = {"esp32": ("littlefs2", "fat"), "rp2": ("littlefs2", "fat"), "unix": ("host-directory",)}
HEAP_KB_RANGE = (16, 4096)
CPU_HZ_RANGE = (1_000_000, 1_000_000_000)  # catches MHz written where Hz belongs
NAME_RE = re.compile(r"^[a-z0-9_]+$")


class Chip:
    """What a chip allows; one entry per chip in CHIPS, so a new chip is a new row, not new code."""

    def __init__(self, port, archs, image_offset, gpios=None, reserved=(), input_only=(), adc=None, adc_note=""):
        self.port = port
        self.archs = archs  # mpy-cross -march values whose native code runs on it
        self.image_offset = image_offset  # where esptool writes MicroPython's image
        self.gpios = frozenset(gpios) if gpios is not None else None  # None: any int >= 0
        self.reserved = reserved  # ((gpios, why), ...): unusable for any role
        self.input_only = frozenset(input_only)
        self.adc = frozenset(adc) if adc is not None else None  # None: any gpio
        self.adc_note = adc_note


def _span(lo, hi):
    return range(lo, hi + 1)


CHIPS = {
    "esp32": Chip(
        port="esp32",
        archs=("xtensawin",),
        image_offset=0x1000,  # the second-stage bootloader sits at 0x1000 on the original ESP32
        gpios=[*_span(0, 19), 21, 22, 23, 25, 26, 27, *_span(32, 39)],
        reserved=((frozenset(_span(6, 11)), "wired to the SPI flash on ESP32 modules"),),
        input_only=_span(34, 39),
        # ADC2 stops working while WiFi is on, and the gateway always runs WiFi.
        adc=_span(32, 39),
        adc_note="ADC1 inputs are GPIO 32-39; ADC2 does not work while WiFi is on",
    ),
    "esp32s3": Chip(
        port="esp32",
        archs=("xtensawin",),
        image_offset=0x0,
        gpios=[*_span(0, 21), *_span(26, 48)],
        reserved=(
            (frozenset(_span(26, 32)), "wired to the SPI flash/PSRAM on ESP32-S3 modules"),
            (frozenset((19, 20)), "the native USB port (MicroPython's REPL on ESP32_GENERIC_S3)"),
        ),
        adc=_span(1, 10),
        adc_note="ADC1 inputs are GPIO 1-10; ADC2 does not work while WiFi is on",
    ),
    "rp2040": Chip(
        port="rp2",
        archs=("armv6m",),
        image_offset=0x0,  # a UF2 file carries its own addresses
        gpios=_span(0, 29),
        adc=_span(26, 29),
        adc_note="ADC inputs are GPIO 26-29",
    ),
    "host": Chip(port="unix", archs=("x64", "x86", "armv6", "rv64imc"), image_offset=0),
}


class BoardError(ValueError):
    """A board definition that cannot be used; str() always starts with "board '<name>': "."""

    def __init__(self, board, detail):
        super().__init__(f"board '{board}': {detail}")
        self.board = board
        self.detail = detail


class Board:
    """A validated board definition.

    Made by `validate_board` (and so `load_board`) only: its attributes can be
    trusted without further checks. ``pins`` maps role -> {"gpio", "active_low",
    "pull", "adc"} with the defaults filled in.
    """

    def __init__(self, data, path=None):
        self.name = data["board"]
        self.title = data["title"]
        self.port = data["port"]
        self.chip = data["chip"]
        self.mpy_cross_arch = data["mpy_cross_arch"]
        self.cpu_hz = data["cpu_hz"]
        self.heap_kb = data["heap_kb"]
        self.flash = copy.deepcopy(data["flash"])
        rom = self.flash.get("romfs")
        self.romfs_bytes = rom["size_kb"] * 1024 if rom else 0  # 0: no ROM partition
        self.romfs_segments = rom.get("segments", 1) if rom else 0  # equal parts, vfs.rom_ioctl ids 0..n-1
        # [(name, offset, size)] of the ESP32 OTA app partitions, by number; [] without them
        self.ota_apps = sorted(((p["name"], p["offset"], p["size"]) for p in self.flash["partitions"]
                                if OTA_APP_RE.match(p["name"])), key=lambda a: int(a[0][4:]))
        self.pins = {
            role: {
                "gpio": spec["gpio"],
                "active_low": spec.get("active_low", False),
                "pull": spec.get("pull"),
                "adc": spec.get("adc", False),
            }
            for role, spec in data["pins"].items()
        }
        self.buses = dict(data["buses"])
        self.path = path

    def __repr__(self):
        return f"<Board {self.name} ({self.port}/{self.chip})>"

    def gpio(self, role):
        """The gpio (int, or a name such as "LED") assigned to `role`."""
        if role not in ROLE_DIRECTIONS:
            raise BoardError(self.name, f"unknown pin role '{role}' (known roles: {', '.join(PIN_ROLES)})")
        if role not in self.pins:
            raise BoardError(self.name, f"no pin is assigned to role '{role}'")
        return self.pins[role]["gpio"]

    def device_config(self):
        """What the device reads from /board.json: nothing that only the host needs.

        Serialise with ``json.dumps(..., sort_keys=True)`` so the file is the same bytes every time.
        """
        return {
            "schema": SCHEMA,
            "board": self.name,
            "title": self.title,
            "heap_kb": self.heap_kb,
            "pins": copy.deepcopy(self.pins),
            "buses": dict(self.buses),
        }

    def role_of_gpio(self):
        """gpio -> role (unique, the validator guarantees it)."""
        return {spec["gpio"]: role for role, spec in self.pins.items()}


def board_names():
    """Names of the boards in BOARDS_DIR, sorted."""
    return sorted(p.stem for p in BOARDS_DIR.glob("*.json"))


def load_board(name_or_path):
    """Load and validate one board: a name from BOARDS_DIR, or a path to a .json file."""
    path = _board_path(name_or_path)
    name = path.stem
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BoardError(name, f"no such file: {path}") from None
    except OSError as e:
        raise BoardError(name, f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise BoardError(name, f"{path.name} is not UTF-8 text") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise BoardError(name, f"{path.name} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except _DuplicateKey as e:
        # json.loads would silently keep the last of two equal keys: a pin role lost without a word.
        raise BoardError(name, f"{path.name} has the key '{e.args[0]}' twice in one object") from None
    return validate_board(data, name, path)


def load_all():
    """Every board in BOARDS_DIR, validated: {name: Board}, sorted by name."""
    return {name: load_board(name) for name in board_names()}


def validate_board(data, name, path=None):
    """Check a parsed board definition and return its Board; `name` is what the file is called."""
    _Check(name).board(data)
    return Board(data, path)


def _board_path(name_or_path):
    if isinstance(name_or_path, Path) or name_or_path.endswith(".json") or "/" in name_or_path or "\\" in name_or_path:
        return Path(name_or_path)
    path = BOARDS_DIR / f"{name_or_path}.json"
    if not path.is_file():
        available = ", ".join(board_names()) or "none"
        raise BoardError(name_or_path, f"no such board in {BOARDS_DIR} (available: {available})")
    return path


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _json_type(value):
    # bool before int: in Python, True is an int.
    kinds = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"), (dict, "object"))
    for kind, name in kinds:
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1


def _hex(n):
    return f"{n} (0x{n:x})"


class _Check:
    """The checks, in the order a reader would fix them; the first failure raises."""

    def __init__(self, name):
        self.name = name

    def fail(self, detail):
        raise BoardError(self.name, detail)

    def keys(self, obj, where, required, optional=()):
        if not isinstance(obj, dict):
            self.fail(f"{where} must be an object, got {_json_type(obj)}")
        allowed = required + optional
        for key in obj:
            if key not in allowed:
                self.fail(f"unknown key '{key}' in {where} (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in obj:
                self.fail(f"missing key '{key}' in {where}")

    def integer(self, value, where, lo=0, hi=None):
        if not _is_int(value):
            self.fail(f"{where} must be an integer, got {_json_type(value)}")
        if value < lo or (hi is not None and value > hi):
            bounds = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            self.fail(f"{where} is {value}, must be {bounds}")
        return value

    def text(self, value, where):
        if not isinstance(value, str) or not value:
            self.fail(f"{where} must be a non-empty string, got {_json_type(value)}")
        return value

    def choice(self, value, where, choices):
        self.text(value, where)
        if value not in choices:
            self.fail(f"{where} '{value}' is not one of: {', '.join(choices)}")
        return value

    def board(self, data):
        if not isinstance(data, dict):
            self.fail(f"the file must hold a JSON object, got {_json_type(data)}")
        # The schema first: a newer file may differ in every other key.
        if "schema" not in data:
            self.fail("missing key 'schema' (this tool reads schema 1)")
        schema = data["schema"]
        if not _is_int(schema):
            self.fail(f"schema must be an integer, got {_json_type(schema)}")
        if schema != SCHEMA:
            self.fail(f"schema {schema} is not supported (this tool reads schema {SCHEMA})")
        self.keys(data, "the top level", TOP_KEYS)

        board = self.text(data["board"], "board")
        if board != self.name:
            self.fail(f"'board' is '{board}' but must equal the file name ('{self.name}.json')")
        if not NAME_RE.match(board):
            self.fail("board names use lower-case letters, digits and '_' only")
        self.text(data["title"], "title")

        port = self.choice(data["port"], "port", PORTS)
        chip_name = self.choice(data["chip"], "chip", tuple(CHIPS))
        chip = CHIPS[chip_name]
        if chip.port != port:
            self.fail(f"chip '{chip_name}' belongs to port '{chip.port}', not '{port}'")
        arch = self.text(data["mpy_cross_arch"], "mpy_cross_arch")
        if arch not in chip.archs:
            self.fail(f"mpy_cross_arch '{arch}' does not run on {port}/{chip_name} (use: {', '.join(chip.archs)})")
        self.integer(data["cpu_hz"], "cpu_hz", *CPU_HZ_RANGE)
        self.integer(data["heap_kb"], "heap_kb", *HEAP_KB_RANGE)

        self.flash(data["flash"], port, chip_name, chip)
        self.pins(data["pins"], chip_name, chip)
        self.buses(data["buses"])

    def flash(self, flash, port, chip_name, chip):
        self.keys(flash, "flash", FLASH_KEYS, ("romfs", "image"))
        size = self.integer(flash["size_kb"], "flash.size_kb", 1) * 1024

        fmt = self.text(flash["image_format"], "flash.image_format")
        if fmt != IMAGE_FORMATS[port]:
            self.fail(f"flash.image_format is '{fmt}', port '{port}' uses '{IMAGE_FORMATS[port]}'")
        if "image" in flash:  # the official MicroPython image to flash, e.g. ESP32_GENERIC (pgw flash names it)
            self.text(flash["image"], "flash.image")
            if fmt == "none":
                self.fail("flash.image names an image, but image_format 'none' flashes nothing")
        offset = self.integer(flash["image_offset"], "flash.image_offset")
        if offset != chip.image_offset:
            self.fail(f"flash.image_offset is {_hex(offset)}, {chip_name} boots from {_hex(chip.image_offset)}")

        parts = flash["partitions"]
        if not isinstance(parts, list):
            self.fail(f"flash.partitions must be an array, got {_json_type(parts)}")
        regions = []
        for i, part in enumerate(parts):
            where = f"flash.partitions[{i}]"
            self.keys(part, where, PARTITION_KEYS)
            pname = self.text(part["name"], f"{where}.name")
            start = self.integer(part["offset"], f"{where}.offset")
            end = start + self.integer(part["size"], f"{where}.size", 1)
            if end > size:
                self.fail(f"partition '{pname}' ends at {_hex(end)}, past the {flash['size_kb']} KB flash")
            for other, o_start, o_end in regions:
                if other == pname:
                    self.fail(f"two partitions are named '{pname}'")
                if start < o_end and o_start < end:
                    self.fail(f"partitions '{other}' and '{pname}' overlap")
            regions.append((pname, start, end))
        self.ota_partitions(port, regions)

        fs = flash["filesystem"]
        self.keys(fs, "flash.filesystem", FILESYSTEM_KEYS)
        fs_start = self.integer(fs["offset"], "flash.filesystem.offset")
        fs_size = self.integer(fs["size_kb"], "flash.filesystem.size_kb", 1) * 1024
        self.choice(fs["type"], "flash.filesystem.type", FILESYSTEM_TYPES[port])
        if fs_start + fs_size > size:
            self.fail(f"flash.filesystem ends at {_hex(fs_start + fs_size)}, past the {flash['size_kb']} KB flash")
        # When a layout is given, the filesystem must be one of its regions: a typo otherwise formats firmware.
        if regions and not any(s == fs_start and e == fs_start + fs_size for _, s, e in regions):
            self.fail(f"flash.filesystem ({_hex(fs_start)}, {fs['size_kb']} KB) matches no partition")
        if "romfs" in flash:
            # A ROMFS partition (MicroPython's VfsRom, mounted at /rom): the
            # firmware's .mpy run from it in place instead of being loaded into the heap.
            rom = flash["romfs"]
            self.keys(rom, "flash.romfs", ROMFS_KEYS, ("segments",))
            r_start = self.integer(rom["offset"], "flash.romfs.offset")
            r_size = self.integer(rom["size_kb"], "flash.romfs.size_kb", 1) * 1024
            # Segments split the partition equally, each a whole number of 4 KB
            # erase blocks: one per code slot, so an update is written beside
            # the version that runs.
            segments = self.integer(rom.get("segments", 1), "flash.romfs.segments", 1, ROMFS_SEGMENTS_MAX)
            if r_size % (segments * 4096):
                self.fail(f"flash.romfs.size_kb ({rom['size_kb']}) does not split into {segments} "
                          "segments of whole 4 KB blocks")
            if r_start + r_size > size:
                self.fail(f"flash.romfs ends at {_hex(r_start + r_size)}, past the {flash['size_kb']} KB flash")
            if regions and not any(n == "romfs" and s == r_start and e == r_start + r_size for n, s, e in regions):
                self.fail(f"flash.romfs ({_hex(r_start)}, {rom['size_kb']} KB) matches no partition named 'romfs'")
            if r_start < fs_start + fs_size and fs_start < r_start + r_size:
                self.fail("flash.romfs overlaps flash.filesystem")

    def ota_partitions(self, port, regions):
        # ESP32 OTA: ota_0, ota_1 ... and otadata come together, where ESP-IDF's bootloader can use them
        apps = {n: (s, e) for n, s, e in regions if OTA_APP_RE.match(n)}
        otadata = [(s, e) for n, s, e in regions if n == "otadata"]
        if not apps and not otadata:
            return
        if port not in OTA_PORTS:
            self.fail(f"OTA partitions (ota_N, otadata) need an ESP32 (port {', '.join(OTA_PORTS)}), not port '{port}'")
        if sorted(int(n[4:]) for n in apps) != list(range(max(len(apps), 2))):
            self.fail(f"OTA app partitions must be ota_0, ota_1, ... without gaps (got {', '.join(sorted(apps)) or 'none'})")
        if not otadata:
            self.fail("OTA app partitions need an 'otadata' partition")
        s, e = otadata[0]
        if e - s != OTADATA_SIZE or s % 4096:
            self.fail(f"partition 'otadata' must be {OTADATA_SIZE} bytes (two 4 KB sectors) on a 4 KB boundary")
        for name, (s, _) in sorted(apps.items()):
            if s % OTA_APP_ALIGN:
                self.fail(f"app partition '{name}' at {_hex(s)}: ESP-IDF needs app partitions on 64 KB boundaries")

    def pins(self, pins, chip_name, chip):
        if not isinstance(pins, dict):
            self.fail(f"pins must be an object, got {_json_type(pins)}")
        for role in pins:
            if role not in ROLE_DIRECTIONS:
                self.fail(f"unknown pin role '{role}' (known roles: {', '.join(PIN_ROLES)})")
        for role in REQUIRED_PIN_ROLES:
            if role not in pins:
                self.fail(f"missing pin role '{role}'")
        if ("i2c_scl" in pins) != ("i2c_sda" in pins):
            self.fail("i2c_scl and i2c_sda come as a pair: give both or neither")

        owner = {}
        for role, spec in pins.items():
            where = f"pins.{role}"
            self.keys(spec, where, ("gpio",), ("active_low", "pull", "adc"))
            gpio = spec["gpio"]
            if isinstance(gpio, str):
                self.text(gpio, f"{where}.gpio")
            else:
                self.integer(gpio, f"{where}.gpio")
            for key in ("active_low", "adc"):
                if key in spec and not isinstance(spec[key], bool):
                    self.fail(f"{where}.{key} must be true or false, got {_json_type(spec[key])}")
            if "pull" in spec:
                self.choice(spec["pull"], f"{where}.pull", ("up", "down"))
            if gpio in owner:
                self.fail(f"gpio {gpio} is used by both '{owner[gpio]}' and '{role}'")
            owner[gpio] = role
            if spec.get("adc") and ROLE_DIRECTIONS[role] != "analog":
                self.fail(f"{where}.adc: role '{role}' is not an analog input")
            if _is_int(gpio):
                self.gpio(role, spec, gpio, chip_name, chip)

    def gpio(self, role, spec, gpio, chip_name, chip):
        if chip.gpios is not None and gpio not in chip.gpios:
            self.fail(f"pins.{role}: {chip_name} has no gpio {gpio}")
        for gpios, why in chip.reserved:
            if gpio in gpios:
                self.fail(f"pins.{role}: gpio {gpio} is {why}")
        if gpio in chip.input_only:
            if role in DRIVEN_ROLES:
                self.fail(f"pins.{role}: gpio {gpio} is input-only on {chip_name}, role '{role}' drives its pin")
            if "pull" in spec:
                self.fail(f"pins.{role}: gpio {gpio} has no internal pull resistor on {chip_name}")
        if spec.get("adc") and chip.adc is not None and gpio not in chip.adc:
            self.fail(f"pins.{role}: gpio {gpio} cannot be read by the ADC on {chip_name} ({chip.adc_note})")

    def buses(self, buses):
        self.keys(buses, "buses", BUS_KEYS)
        self.integer(buses["rs485_uart"], "buses.rs485_uart")
        self.integer(buses["i2c"], "buses.i2c")
        self.integer(buses["secure_element_address"], "buses.secure_element_address", 0x08, 0x77)  # 7-bit, non-reserved


def main(argv=None):
    """Validate boards and print one line each; 1 if any failed."""
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print("usage: python -m host_tools.boards [NAME|PATH.json ...]  (no argument: every board in boards/)")
        return 0
    targets = args or board_names()
    if not targets:
        print(f"no board files in {BOARDS_DIR}", file=sys.stderr)
        return 1
    failed = 0
    for target in targets:
        try:
            b = load_board(target)
        except BoardError as e:
            print(f"FAIL {e}", file=sys.stderr)
            failed += 1
            continue
        print(
            f"ok   {b.name:<20} {b.port + '/' + b.chip:<14} {b.mpy_cross_arch:<9} "
            f"{b.cpu_hz // 1_000_000} MHz  heap {b.heap_kb} KB  flash {b.flash['size_kb']} KB  {len(b.pins)} pins"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
