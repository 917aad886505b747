"""The virtual board: real MicroPython behind a pty, driven like a USB board.

Two pty pairs carry the USB console. Clients (mpremote, `pgw console`) open
the *link* pty, which lives as long as the supervisor does; the interpreter
runs on its own pty, made anew at every boot and set as its controlling
terminal so that Ctrl-C raises KeyboardInterrupt. The supervisor copies
bytes between the two and plays the parts of a board the unix port lacks:

* a reset (Ctrl-D, `machine.reset()`, the watchdog) ends the process; the
  supervisor starts it again and prints the `soft reboot` banner where a
  board would, so mpremote works without `resume`;
* after a soft reboot from the raw REPL it re-enters the raw REPL and only
  then lets the host talk, as a board does;
* the stand-in `machine` module reports pins, PWM and the watchdog over a
  loopback socket (see boards/virtual/vboard_link.py), and the host sees
  them, time-stamped, on the GPIO channel (a unix socket, JSON lines);
* each board UART is a pty of its own for a meter simulator to open; bytes
  cross it no faster than the line the firmware opened (baud rate, bits,
  parity, stop bits) would carry them, in both directions;
* a board file with ESP32 OTA partitions gets a flash file for them and,
  at every reset (not at a soft reboot), ESP-IDF's second-stage bootloader
  (host_tools/vboard/otadata.py): it keeps otadata by ESP-IDF's rollback
  rules and reports the app partition it booted on the GPIO channel; the
  interpreter stays the host's unix port whatever image that partition holds.
"""

import collections
import errno
import fcntl
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path

from host_tools.boards import load_board
from host_tools.vboard.otadata import ESP_ERR_INVALID_ARG, ESP_ERR_NOT_FOUND, AppFlash, OtaDataError

REPO = Path(__file__).resolve().parents[2]
VIRTUAL_DIR = REPO / "boards" / "virtual"
ROM = VIRTUAL_DIR / "rom.py"

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b'Type "help()" for more information.'
SOFT_REBOOT = b"MPY: soft reboot\r\n"
EVENT_HISTORY = 20000
HELD_MAX = 65536
VIRTUAL_UARTS = (1, 2)
UART_QUEUE_MAX = 4096  # bytes waiting for the line per direction; more waits in the kernel


def micropython_path():
    exe = Path(sys.executable).parent / "micropython"
    if exe.exists():
        return str(exe)
    found = shutil.which("micropython")
    if not found:
        raise FileNotFoundError("no micropython interpreter: run `make test` or install the project")
    return found


def _make_link(path, target):
    path = Path(path)
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        raise FileExistsError(f"{path} exists and is not a symlink; refusing to replace it")
    path.symlink_to(target)


class HostPort:
    """The host end of a pty: its slave is what a client opens by path.

    While no client has the slave open the master reports POLLHUP; output
    for the port is then dropped, as a USB CDC port drops it, instead of
    piling up for whoever opens the port next.
    """

    def __init__(self, link):
        self.master, slave = os.openpty()
        tty.setraw(slave)  # no echo: an echoing line discipline would loop output back as input
        self.slave_path = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self.master, False)
        self.link = Path(link)
        _make_link(self.link, self.slave_path)
        self.connected = False
        self.dropped = 0
        self._probe = select.poll()
        self._probe.register(self.master, select.POLLIN)

    def check(self):
        """Return True when a client has just opened the port."""
        if self.connected:
            return False
        hup = any(ev & select.POLLHUP for _fd, ev in self._probe.poll(0))
        if not hup:
            self.connected = True
            return True
        return False

    def read(self):
        try:
            return os.read(self.master, 4096)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            # The last client closed the port: forget what it did not read.
            self.connected = False
            termios.tcflush(self.master, termios.TCIOFLUSH)
            return None

    def write(self, data):
        if not self.connected:
            self.dropped += len(data)
            return
        try:
            n = os.write(self.master, data)
        except (BlockingIOError, OSError):
            n = 0
        self.dropped += len(data) - n

    def close(self):
        try:
            if self.link.is_symlink():
                self.link.unlink()
        finally:
            os.close(self.master)


class PacedLine:
    """One direction of a UART line: bytes come out no faster than the baud rate allows.

    A character takes (1 start + bits + parity + stop) / baud seconds; a byte
    is released when its last bit would have arrived at the far end. The
    supervisor loop calls `take(now)` and sleeps at most until `due`, so
    pacing never blocks it. The queue is bounded: the caller stops reading
    from the source while `full()`, and the sender's kernel buffer (then its
    blocking write) takes the backpressure, as a real UART's FIFO does.
    """

    def __init__(self, limit=UART_QUEUE_MAX):
        self.buf = bytearray()
        self.limit = limit
        self.char_s = 0.0  # 0: unpaced (no hello yet)
        self.due = 0.0  # when the head byte has fully arrived
        self.idle_at = 0.0  # when the line finished its last byte

    def configure(self, baudrate, bits, parity, stop):
        frame_bits = 1 + bits + (0 if parity == "N" else 1) + stop
        self.char_s = frame_bits / baudrate if baudrate > 0 else 0.0

    def full(self):
        return len(self.buf) >= self.limit

    def push(self, data, now):
        if not data:
            return
        if not self.buf:
            self.due = max(now, self.idle_at) + self.char_s
        self.buf += data

    def take(self, now):
        """Bytes whose time has come (b"" if none)."""
        if not self.buf or now < self.due:
            return b""
        if self.char_s:
            n = min(len(self.buf), int((now - self.due) / self.char_s) + 1)
        else:
            n = len(self.buf)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        self.due += n * self.char_s
        if not self.buf:
            self.idle_at = self.due - self.char_s
        return out

    def wait(self, now):
        """Seconds until the next byte is due, or None when nothing is queued."""
        if not self.buf:
            return None
        return max(0.0, self.due - now)

    def clear(self):
        self.buf = bytearray()


# Heap allowed for what the virtual board compiles before the firmware
# starts (32-bit-equivalent bytes): rom.py and the stand-ins for
# `machine`, `network` and the flash, their qstrs, the interpreter's own
# start-up. On a board these are C code in flash. The ROM measures what
# they took and holds back the rest (boards/virtual/vboard_rom.py), so the
# firmware's heap is heap_kb either way; it says so at boot if they
# outgrow this. Measured 12.7 KB (docs/virtual-board.md#heap).
STANDINS_KB = 16


def heap_bytes(budget32, rom_bytes=0):
    """-X heapsize (bytes) for a heap of `budget32` 32-bit-equivalent bytes
    (scaled to the host's word size: the interpreter is built for it) plus
    a `rom_bytes` buffer allocated in it: the buffer and its object, and the
    GC's tables for its blocks (3 bits per 4-word block), so that the budget
    left for everything else stays what it was."""
    word = 8 if sys.maxsize > 2**32 else 4
    extra = rom_bytes + 128 + rom_bytes * 3 // (8 * 4 * word) if rom_bytes else 0
    return budget32 * word // 4 + extra


def board_heap_bytes(budget32, rom_bytes=0, standins32=STANDINS_KB * 1024):
    """-X heapsize for a virtual board whose firmware gets a heap
    (gc.mem_free() + gc.mem_alloc()) of exactly `budget32` 32-bit-equivalent
    bytes: room for that, the ROM partition's `rom_bytes` buffer and the
    stand-ins' allowance, with their objects (128 bytes), plus the GC's
    tables for all of it (3 bits per 4-word block) and a block for
    alignment. The ROM holds back what the firmware is not to have."""
    word = 8 if sys.maxsize > 2**32 else 4
    pool = (budget32 + standins32) * word // 4 + rom_bytes + 128
    return pool + -(-pool * 3 // (8 * 4 * word)) + 4 * word


# The stand-ins rom.py imports, compiled once per supervisor (not at every
# boot from source): compiling in the board's heap would leave it full of
# holes before the firmware starts, and intern every local name.
STANDIN_MODULES = ("vboard_rom", "vboard_link", "machine", "network", "flash", "esp32")
# What the `esp32` stand-in adds on a board with ESP32 OTA partitions (rom.py
# imports it there only), on top of STANDINS_KB. Measured 2.8 KB.
ESP32_STANDIN_KB = 3


def _compile_standins(out, arch):
    """boards/virtual's stand-ins as .mpy (for `arch`, as the firmware is)
    in `out` -> out. Each one's source name is the path it is imported
    from, so __file__ shares its qstr."""
    from host_tools.deploy import compile_mpy

    out.mkdir(parents=True, exist_ok=True)
    for name in STANDIN_MODULES:
        dest = out / (name + ".mpy")
        compile_mpy(VIRTUAL_DIR / (name + ".py"), dest, arch, str(dest))
    return out


class VirtualBoard:
    def __init__(self, root, link, board="virtual", heap_kb=None, uid=None, log=None):
        self.board = load_board(board)
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.link = Path(link)
        self.heap_kb = heap_kb or self.board.heap_kb
        # The ROM partition's bytes: a host file beside the flash directory.
        self.romfs = self.root.with_name(self.root.name + ".romfs")
        self.standins = _compile_standins(self.root.with_name(self.root.name + ".standins"),
                                          self.board.mpy_cross_arch)
        self.uid = uid or _uid_for(self.root)
        # ESP32 OTA partitions: their bytes in a host file, the bootloader's choice of app
        self.app_flash = app_flash(self.root, self.board) if self.board.ota_apps else None
        self.app = None  # the app partition the bootloader booted at the last reset
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.token = secrets.token_hex(8)
        self.roles = {str(g): r for g, r in self.board.role_of_gpio().items()}
        self.gpios = {r: str(g) for g, r in self.roles.items()}
        self.inputs = {}  # gpio -> value, held across reboots like a held button
        self.wifi_up = True  # the access point's state outlives the board's reboots

        _refuse_if_in_use(self.link)
        self.console = HostPort(self.link)
        self.uarts = {}
        self.uart_tx = {}  # uart id -> PacedLine, board to host
        self.uart_rx = {}  # uart id -> PacedLine, host to board
        rs485 = self.board.buses.get("rs485_uart")
        for uid_ in sorted(set(VIRTUAL_UARTS) | ({rs485} if rs485 is not None else set())):
            port = HostPort(f"{self.link}.uart{uid_}")
            self.uarts[str(uid_)] = port
            self.uart_tx[str(uid_)] = PacedLine()
            self.uart_rx[str(uid_)] = PacedLine()
        self.extra_links = []
        if rs485 is not None:
            alias = Path(f"{self.link}.rs485")
            _make_link(alias, self.uarts[str(rs485)].slave_path)
            self.extra_links.append(alias)

        self.ctl = socket.socket()
        self.ctl.bind(("127.0.0.1", 0))
        self.ctl.listen(8)
        self.gpio_path = Path(f"{self.link}.gpio")
        if self.gpio_path.exists() or self.gpio_path.is_symlink():
            self.gpio_path.unlink()
        self.gpio_srv = socket.socket(socket.AF_UNIX)
        self.gpio_srv.bind(str(self.gpio_path))
        self.gpio_srv.listen(8)
        self.gpio_clients = {}  # socket -> receive buffer

        self.events = collections.deque(maxlen=EVENT_HISTORY)
        self.seq = 0
        self.proc = None
        self.pty = None
        self.board_conn = None
        self.board_rx = b""
        self.uart_conns = {}  # socket -> uart id
        self.pending_conns = {}  # socket -> first-line buffer
        self.i2c_devices = {}  # (bus, addr) -> model with write(bytes) / read(n)

        self.raw = False  # the interpreter is in the raw REPL
        self.swallow = None  # None | "prompt" | "banner": re-entering the raw REPL
        self.hush = False  # re-entering it unseen, as after a Ctrl-C
        self.swallowed = b""
        self.held = bytearray()  # host input held while the board is not listening
        self.listening = False  # the interpreter takes console input (and Ctrl-C) safely
        self.unanswered = bytearray()  # keys sent since the board last printed anything
        self.tail = b""  # last console bytes, for banners split across reads
        self.cause = "PWRON_RESET"
        self.pending = None  # (cause, mode, soft_banner, delay_s) of a requested restart
        self.wdt_timeout = None
        self.wdt_deadline = None
        self.boots = 0
        self.wake = None  # (monotonic time, mode, cause, reset) of a board in deep sleep
        self.recent_spawns = collections.deque(maxlen=5)
        self.stopping = False
        # PGW_VBOARD_TRACE=1: console bytes and events, written to the log at exit
        self.trace = [] if os.environ.get("PGW_VBOARD_TRACE") else None

    # ---- events seen by the host (GPIO channel) ----

    def emit(self, kind, **fields):
        if self.trace is not None:
            self.trace.append((time.monotonic(), "event", kind, fields))
        self.seq += 1
        ev = {"seq": self.seq, "t": time.time(), "kind": kind, **fields}
        self.events.append(ev)
        line = (json.dumps(ev) + "\n").encode()
        for client in list(self.gpio_clients):
            self._gpio_send(client, line)

    def _gpio_send(self, client, data):
        try:
            client.sendall(data)
        except OSError:
            self._gpio_drop(client)

    def _gpio_drop(self, client):
        self.gpio_clients.pop(client, None)
        client.close()

    # ---- the interpreter process ----

    def spawn(self, mode, cause, reset=True):
        """Start the interpreter; `reset`: a reset, not a soft reboot, so the bootloader runs first."""
        self.recent_spawns.append(time.monotonic())
        if reset and self.app_flash is not None:
            booted = self.app_flash.boot()
            self.app = booted["app"] or self.app_flash.apps[0]  # no image anywhere: the unix port runs on
            self.emit("bootloader", **booted)
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] |= termios.ISIG  # Ctrl-C -> SIGINT -> KeyboardInterrupt, as a board's UART IRQ does
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        env = dict(os.environ)
        env.update(
            PGW_VBOARD_PORT=str(self.ctl.getsockname()[1]),
            PGW_VBOARD_TOKEN=self.token,
            PGW_VBOARD_ROOT=str(self.root),
            PGW_VBOARD_MODE=mode,
            PGW_VBOARD_RESET_CAUSE=cause,
            PGW_VBOARD_UID=self.uid,
            PGW_VBOARD_CPU_HZ=str(self.board.cpu_hz),
            PGW_VBOARD_BOARD=self.board.name,
            PGW_VBOARD_ROMFS=str(self.romfs),
            PGW_VBOARD_STANDINS=str(self.standins),
            PGW_VBOARD_ROMFS_BYTES=str(self.board.romfs_bytes),
            PGW_VBOARD_ROMFS_SEGMENTS=str(self.board.romfs_segments),
            PGW_VBOARD_HEAP_KB=str(self.heap_kb),
        )
        if self.app_flash is not None:
            env.update(PGW_VBOARD_FLASH=str(self.app_flash.path), PGW_VBOARD_PARTITIONS=self.app_flash.env(),
                       PGW_VBOARD_APP=self.app)
        cmd = [micropython_path(), "-X", f"heapsize={self.heapsize()}", "-i", str(ROM)]

        def controlling_tty():
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            cmd, stdin=slave, stdout=slave, stderr=slave, cwd=str(self.root), env=env,
            start_new_session=True, preexec_fn=controlling_tty, close_fds=True,
        )
        os.close(slave)
        os.set_blocking(master, False)
        self.pty = master
        self.cause = cause
        self.raw = mode == "raw"
        self.tail = b""  # the last boot's banners say nothing about this one
        self.swallow = "pending" if mode == "raw" else None
        # Hold the host's keys until the flash is mounted (friendly) or the raw
        # REPL is back (raw): a Ctrl-C earlier would interrupt the ROM itself.
        self.listening = False
        self.wdt_timeout = self.wdt_deadline = None
        self.boots += 1
        self.emit("boot", boot=self.boots, cause=cause, mode=mode, pid=self.proc.pid)

    def heapsize(self):
        """-X heapsize: the board's budget (32-bit KB, scaled to this build's
        word size), plus what a board keeps in flash and the virtual board in
        its heap: the ROM partition and the stand-in modules (boards/virtual/vboard_rom.py)."""
        standins = (STANDINS_KB + (ESP32_STANDIN_KB if self.app_flash is not None else 0)) * 1024
        return board_heap_bytes(self.heap_kb * 1024, self.board.romfs_bytes, standins)

    def kill(self, cause, mode="friendly", soft_banner=False, delay_s=0.0):
        """End the interpreter now; it boots again with the given reset cause."""
        self.listening = False  # keys from now on are for the next boot
        if b"\x03" in self.unanswered:
            # A Ctrl-C the dying boot never answered (mpremote sends one right
            # after `reset`) is meant for the board: the next boot gets it.
            self.held[:0] = b"\x03"
        self.unanswered = bytearray()
        if self.proc is None:  # asleep: the reset wakes it at once
            self.wake = None
            self.spawn(mode, cause, reset=not soft_banner)
            return
        if self.pending is None:
            self.pending = (cause, mode, soft_banner, delay_s)
        if self.proc.poll() is None:
            self.proc.kill()

    def _reap(self):
        code = self.proc.wait()
        unanswered = self.unanswered  # before the last output clears it
        self._drain_pty()
        os.close(self.pty)
        self.pty = None
        self.proc = None
        self._close_board_conns()
        self.emit("exit", code=code)
        if self.stopping:
            return
        self.hush = False
        reset = False  # a soft reboot or a Ctrl-C restart: the bootloader does not run
        if self.pending is not None:
            cause, mode, soft_banner, delay_s = self.pending
            self.pending = None
            reset = not soft_banner
        elif code >= 0:
            # Ctrl-D or sys.exit() at a REPL ends the unix port; a board
            # soft-reboots and keeps its reset cause. From the raw REPL
            # main.py is skipped.
            cause, mode, soft_banner, delay_s = self.cause, "raw" if self.raw else "friendly", True, 0.0
        elif code == -signal.SIGINT:
            # Between REPL lines the unix port leaves SIGINT at its default, so
            # a Ctrl-C landing there (mpremote sends one right after Ctrl-B)
            # ends the process where a board would print a new prompt. Come
            # back to the same REPL, main.py skipped, and hand the new process
            # the keys the dead one never read.
            cause, mode, soft_banner, delay_s = self.cause, "raw" if self.raw else "friendly", False, 0.0
            # The line discipline flushed what came before the Ctrl-C; a
            # friendly boot that sees a Ctrl-C skips main.py.
            unread = unanswered[unanswered.rfind(b"\x03") + 1:]
            self.held[:0] = unread if mode == "raw" else b"\x03" + unread
            self.unanswered = bytearray()
            self.hush = mode == "raw"
        else:
            cause, mode, soft_banner, delay_s = "HARD_RESET", "friendly", False, 0.0
            reset = True
            self.console.write(b"\r\n[vboard] interpreter died (signal %d): hard reset\r\n" % -code)
        if soft_banner:
            self.console.write(SOFT_REBOOT)
        now = time.monotonic()
        if not delay_s and len(self.recent_spawns) == self.recent_spawns.maxlen \
                and now - self.recent_spawns[0] < 1.0:
            delay_s = 0.5  # a boot loop: pace it as a real board's boot time would
        if delay_s:
            # Deep sleep (or a paced boot loop): off until the timer wakes it.
            self.wake = (now + min(delay_s, 3600.0), mode, cause, reset)
            return
        self.spawn(mode, cause, reset)

    def _close_board_conns(self):
        for s in [self.board_conn, *self.uart_conns, *self.pending_conns]:
            if s is not None:
                s.close()
        self.board_conn = None
        self.board_rx = b""
        self.uart_conns.clear()
        self.pending_conns.clear()
        for line in self.uart_rx.values():
            line.clear()  # nobody is left to receive them

    # ---- console bytes ----

    def _drain_pty(self):
        while self.pty is not None:
            try:
                data = os.read(self.pty, 4096)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self._from_board(data)

    def _from_board(self, data):
        if self.trace is not None:
            self.trace.append((time.monotonic(), "board>", data, self.swallow))
        self.unanswered = bytearray()
        if self.swallow in ("prompt", "banner"):
            self.swallowed += data
            if self.swallow == "prompt":
                i = self.swallowed.find(b">>> ")
                if i < 0:
                    return
                self.swallowed = self.swallowed[i + 4 :]
                self.swallow = "banner"
                os.write(self.pty, b"\x01")
            # After a Ctrl-C the raw REPL shows nothing: hide its banner and prompt.
            banner = RAW_BANNER + b">" if self.hush else RAW_BANNER
            i = self.swallowed.find(banner)
            if i < 0:
                return
            data = self.swallowed[i + len(banner):] if self.hush else self.swallowed[i:]
            self.hush = False
            self.swallowed = b""
            self.swallow = None
            self.raw = True
            self._listen()
        scan = self.tail + data
        r, f = scan.rfind(RAW_BANNER), scan.rfind(FRIENDLY_BANNER)
        if r >= 0 or f >= 0:
            self.raw = r > f
        self.tail = scan[-64:]
        self.console.write(data)

    def _to_board(self, data):
        if self.trace is not None:
            self.trace.append((time.monotonic(), "host>", data, self.listening))
        if self.proc is None or self.pty is None or not self.listening:
            if len(self.held) + len(data) <= HELD_MAX:  # a board that is off hears nothing more
                self.held += data
            return
        try:
            os.write(self.pty, data)
        except OSError:
            self.held += data
            return
        if len(self.unanswered) < HELD_MAX:
            self.unanswered += data

    def _listen(self):
        self.listening = True
        if self.held and self.pty is not None:
            data, self.held = bytes(self.held), bytearray()
            self._to_board(data)

    # ---- the board's control link ----

    def _board_line(self, line):
        parts = line.split()
        if not parts:
            return
        op = parts[0]
        if op == "out" and len(parts) == 3:
            self.emit("out", gpio=parts[1], role=self.roles.get(parts[1]), value=int(parts[2]))
        elif op == "pwm" and len(parts) == 4:
            self.emit("pwm", gpio=parts[1], role=self.roles.get(parts[1]),
                      freq=int(parts[2]), duty_u16=int(parts[3]))
        elif op == "wdt" and len(parts) == 2:
            self.wdt_timeout = int(parts[1]) / 1000.0
            self.wdt_deadline = time.monotonic() + self.wdt_timeout
            self.emit("wdt", timeout_ms=int(parts[1]))
        elif op == "feed":
            if self.wdt_timeout is not None:
                self.wdt_deadline = time.monotonic() + self.wdt_timeout
        elif op == "reset" and len(parts) >= 2:
            delay = int(parts[2]) / 1000.0 if len(parts) > 2 else 0.0
            self.emit("reset", cause=parts[1])
            self.kill(parts[1], delay_s=delay)
        elif op == "softreboot":
            self.emit("reset", cause="SOFT_REBOOT")
            self.kill(self.cause, mode="raw" if self.raw else "friendly", soft_banner=True)
        elif op == "ready":
            self._drain_pty()
            if self.swallow == "pending":
                self.swallow = "prompt"
            self._board_send("go")
            self.emit("ready", mode="raw" if self.swallow else "friendly")
        elif op == "mounted":
            i = self.held.rfind(b"\x03")
            if i >= 0:
                # Ctrl-C pressed during the reset: a line discipline would
                # drop what came before it; the ROM skips main.py.
                del self.held[: i + 1]
            self._board_send("go interrupt" if i >= 0 else "go")
            if self.swallow is None:  # friendly boot: keys now reach boot.py and main.py
                self._listen()
        elif op == "i2c":
            self._board_send(self._i2c(parts[1:]))
        elif op == "ota":
            self._board_send(self._ota(parts[1:]))
        else:
            self.log(f"vboard: unknown message from board: {line!r}")

    def _i2c(self, args):
        bus = args[0] if args else "0"
        if len(args) == 2 and args[1] == "scan":
            addrs = sorted(a for b, a in self.i2c_devices if b == bus)
            return "i2c ok " + bytes(addrs).hex()
        try:
            dev = self.i2c_devices.get((bus, int(args[1])))
            if dev is None:
                return "i2c nack"
            if args[2] == "r":
                return "i2c ok " + bytes(dev.read(int(args[3]))).hex()
            dev.write(b"" if args[3] == "-" else bytes.fromhex(args[3]))
            return "i2c ok"
        except (IndexError, ValueError, OSError):
            return "i2c nack"

    def _ota(self, args):
        # ESP-IDF's side of the esp32 stand-in: "ota ok [label]" or "ota err CODE"
        if self.app_flash is None or not args:
            return "ota err %d" % ESP_ERR_NOT_FOUND
        try:
            if args[0] == "boot":
                return "ota ok " + self.app_flash.boot_partition()
            if args[0] == "set_boot" and len(args) == 2:
                entry = self.app_flash.set_boot(args[1])
                self.emit("otadata", op="set_boot", app=args[1], ota_seq=entry.seq, state="NEW")
                return "ota ok"
            if args[0] == "valid":
                entry = self.app_flash.mark_valid()
                self.emit("otadata", op="mark_app_valid_cancel_rollback", app=self.app,
                          ota_seq=entry.seq if entry else None, state="VALID")
                return "ota ok"
        except OtaDataError as e:
            self.emit("otadata", op=args[0], error=str(e), code=e.code)
            return "ota err %d" % e.code
        return "ota err %d" % ESP_ERR_INVALID_ARG

    def _board_send(self, line):
        if self.board_conn is not None:
            try:
                self.board_conn.sendall(line.encode() + b"\n")
            except OSError:
                pass

    def _accept_ctl(self):
        conn, _ = self.ctl.accept()
        conn.setblocking(False)
        # Paced UART bytes go out a few at a time: Nagle's algorithm with the
        # peer's delayed ACK would hold them back ~40 ms, a false line silence.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending_conns[conn] = b""

    def _pending_read(self, conn):
        data = _recv(conn, 256)
        if data is None:
            return
        if not data:
            self.pending_conns.pop(conn, None)
            conn.close()
            return
        buf = self.pending_conns[conn] + data
        if b"\n" not in buf:
            if len(buf) > 256:
                self.pending_conns.pop(conn)
                conn.close()
            else:
                self.pending_conns[conn] = buf
            return
        first, rest = buf.split(b"\n", 1)
        del self.pending_conns[conn]
        parts = first.decode(errors="replace").split()
        if len(parts) >= 2 and parts[1] == self.token and parts[0] == "hello":
            self.board_conn = conn
            for gpio, value in self.inputs.items():
                self._board_send(f"in {gpio} {value}")
            self._board_send("wifi " + ("up" if self.wifi_up else "down"))
            self._board_send("sync")
            self.board_rx = rest
            self._board_process()
        elif len(parts) == 7 and parts[0] == "uart" and parts[1] == self.token and parts[2] in self.uarts:
            uid_ = parts[2]
            self.uart_conns[conn] = uid_
            baud, bits, parity, stop = int(parts[3]), int(parts[4]), parts[5], int(parts[6])
            self.uart_tx[uid_].configure(baud, bits, parity, stop)
            self.uart_rx[uid_].configure(baud, bits, parity, stop)
            self.emit("uart", id=uid_, baudrate=baud, bits=bits, parity=parity, stop=stop)
            self.uart_tx[uid_].push(rest, time.monotonic())
        else:
            conn.close()

    def _board_read(self):
        data = _recv(self.board_conn)
        if data is None:
            return
        if not data:
            self.board_conn.close()
            self.board_conn = None
            return
        self.board_rx += data
        self._board_process()

    def _board_process(self):
        while b"\n" in self.board_rx:
            line, self.board_rx = self.board_rx.split(b"\n", 1)
            self._board_line(line.decode(errors="replace"))

    def _uart_read(self, conn):
        data = _recv(conn)
        if data is None:
            return
        uid_ = self.uart_conns.get(conn)
        if not data:
            self.uart_conns.pop(conn, None)
            conn.close()
            return
        self.uart_tx[uid_].push(data, time.monotonic())

    def _uart_from_host(self, uid_, data):
        if uid_ in self.uart_conns.values():
            self.uart_rx[uid_].push(data, time.monotonic())
        # else no firmware has this UART open: the bytes fall on the floor.

    def _uart_release(self, now):
        # Bytes whose time on the line is over go on; -> seconds until the next is due.
        wait = None
        for uid_, line in self.uart_tx.items():
            data = line.take(now)
            if data:
                self.uarts[uid_].write(data)
            w = line.wait(now)
            if w is not None and (wait is None or w < wait):
                wait = w
        for uid_, line in self.uart_rx.items():
            data = line.take(now)
            if data:
                for conn, u in list(self.uart_conns.items()):
                    if u == uid_:
                        try:
                            conn.sendall(data)
                        except OSError:
                            pass
                        break
            w = line.wait(now)
            if w is not None and (wait is None or w < wait):
                wait = w
        return wait

    # ---- the host's GPIO channel ----

    def _gpio_accept(self):
        client, _ = self.gpio_srv.accept()
        self.gpio_clients[client] = b""
        hello = {"kind": "hello", "board": self.board.name, "pins": self.gpios,
                 "uarts": {u: str(p.link) for u, p in self.uarts.items()}, "inputs": self.inputs}
        self._gpio_send(client, (json.dumps(hello) + "\n").encode())
        if client in self.gpio_clients:
            self._gpio_send(client, b"".join((json.dumps(e) + "\n").encode() for e in self.events))

    def _gpio_read(self, client):
        data = _recv(client)
        if data is None:
            return
        if not data:
            self._gpio_drop(client)
            return
        buf = self.gpio_clients.get(client, b"") + data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            reply = self._gpio_command(line)
            self._gpio_send(client, (json.dumps(reply) + "\n").encode())
            if client not in self.gpio_clients:
                return
        self.gpio_clients[client] = buf[-65536:]

    def _gpio_command(self, line):
        try:
            cmd = json.loads(line)
            if "set" in cmd:
                name, value = str(cmd["set"]), int(cmd["value"])
                gpio = self.gpios.get(name, name)
                if gpio not in self.roles:
                    return {"kind": "reply", "ok": False, "error": f"no pin role or gpio {name!r} on this board"}
                self.inputs[gpio] = value
                self._board_send(f"in {gpio} {value}")
                self.emit("in", gpio=gpio, role=self.roles.get(gpio), value=value)
                return {"kind": "reply", "ok": True}
            if "wifi" in cmd:
                state = "up" if cmd["wifi"] in ("up", True) else "down"
                self.wifi_up = state == "up"
                self._board_send(f"wifi {state}")
                self.emit("wifi", state=state)
                return {"kind": "reply", "ok": True}
            if cmd.get("power") == "cycle":
                self.emit("reset", cause="PWRON_RESET")
                self.kill("PWRON_RESET")
                return {"kind": "reply", "ok": True}
            return {"kind": "reply", "ok": False, "error": "unknown command"}
        except (ValueError, TypeError, KeyError) as e:
            return {"kind": "reply", "ok": False, "error": f"bad command: {e}"}

    # ---- main loop ----

    def run(self):
        self.log(
            f"vboard: board {self.board.name} ({self.heap_kb} KB heap), flash {self.root}, "
            f"console {self.link}, uarts {', '.join(str(p.link) for p in self.uarts.values())}, "
            f"gpio {self.gpio_path}"
        )
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.spawn("friendly", "PWRON_RESET")
        try:
            while not self.stopping:
                self._step(0.05)
        finally:
            self.shutdown()

    def _on_signal(self, signum, frame):
        self.stopping = True

    def _step(self, timeout):
        self.console.check()
        for port in self.uarts.values():
            port.check()
        wait = self._uart_release(time.monotonic())
        if wait is not None:
            timeout = min(timeout, wait)
        # A full line queue stops reading its source: backpressure, not loss.
        rd = [self.ctl, self.gpio_srv, *self.gpio_clients, *self.pending_conns,
              *(c for c, u in self.uart_conns.items() if not self.uart_tx[u].full())]
        if self.board_conn is not None:
            rd.append(self.board_conn)
        if self.pty is not None:
            rd.append(self.pty)
        if self.console.connected:
            rd.append(self.console.master)
        host_uarts = {p.master: u for u, p in self.uarts.items()
                      if p.connected and not self.uart_rx[u].full()}
        rd.extend(host_uarts)
        try:
            ready, _, _ = select.select(rd, [], [], timeout)
        except InterruptedError:
            return
        # Board messages first: a reset must be seen before keys meant for the next boot.
        ready.sort(key=lambda r: r is not self.board_conn)
        for r in ready:
            if r is self.pty:
                try:
                    data = os.read(self.pty, 4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    self._from_board(data)
                elif self.proc is not None and self.proc.poll() is None:
                    # The interpreter closed its terminal: it is on its way out.
                    try:
                        self.proc.wait(timeout=2)
                    except subprocess.TimeoutExpired:
                        self.kill("HARD_RESET")
            elif r == self.console.master:
                data = self.console.read()
                if data:
                    self._to_board(data)
            elif r in host_uarts:
                data = self.uarts[host_uarts[r]].read()
                if data:
                    self._uart_from_host(host_uarts[r], data)
            elif r is self.ctl:
                self._accept_ctl()
            elif r is self.gpio_srv:
                self._gpio_accept()
            elif r is self.board_conn:
                self._board_read()
            elif r in self.pending_conns:
                self._pending_read(r)
            elif r in self.uart_conns:
                self._uart_read(r)
            elif r in self.gpio_clients:
                self._gpio_read(r)
        if self.wdt_deadline is not None and time.monotonic() > self.wdt_deadline:
            self.wdt_deadline = None
            self.emit("reset", cause="WDT_RESET")
            self.kill("WDT_RESET")
        if self.proc is not None and self.proc.poll() is not None:
            self._reap()
        if self.wake is not None and time.monotonic() >= self.wake[0]:
            _, mode, cause, reset = self.wake
            self.wake = None
            self.spawn(mode, cause, reset)

    def shutdown(self):
        self.stopping = True
        for entry in self.trace or ():
            self.log("vboard trace %.3f %s %r %r" % entry)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for client in list(self.gpio_clients):
            client.close()
        self.gpio_srv.close()
        if self.gpio_path.exists():
            self.gpio_path.unlink()
        self.ctl.close()
        self.console.close()
        for port in self.uarts.values():
            port.close()
        for alias in self.extra_links:
            if alias.is_symlink():
                alias.unlink()


def app_flash(root, board):
    """The ESP32 app partitions and otadata of the virtual board at `root`:
    a host file beside it, `<root>.flash`, erased when new."""
    root = Path(root).resolve()
    return AppFlash(root.with_name(root.name + ".flash"), board.flash["partitions"])


def _refuse_if_in_use(link):
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(f"{link}.gpio")
    except OSError:
        return  # nobody answers: stale files from an ended run, safe to replace
    finally:
        probe.close()
    raise FileExistsError(f"another virtual board is running on {link}; stop it or pick another --link")


def _recv(conn, n=4096):
    """Bytes from a socket; b"" once it is closed or broken, None if nothing is there yet."""
    try:
        return conn.recv(n)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _uid_for(root):
    import hashlib

    return hashlib.sha256(str(root).encode()).hexdigest()[:12]
