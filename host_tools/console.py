"""`pgw console`: the field technician's terminal for a gateway's USB serial.

Two modes, switched with Ctrl-T:

* console mode (the start): a local line editor with history and
  completion of the gateway's commands (learnt from its `help`), so a
  slow or noisy serial line never garbles what is typed. Each line is
  sent whole; the gateway's prompt is replaced by ours and its
  unsolicited lines (heartbeat, log) print above the prompt.
* REPL mode: Ctrl-T stops the app (Ctrl-C) and asks the gateway for a
  maintenance boot (`gateway.boot.maintenance()`): no app and no watchdog,
  actuators in their fail-safe state, so the REPL lasts as long as the
  technician needs. Keys pass straight through. Ctrl-T again soft-reboots
  the board (Ctrl-D), which starts the app and returns to console mode.

Ctrl-] quits from either mode. With stdin not a terminal, lines from stdin
are sent one by one, each waiting for the gateway's prompt, which makes
`echo status | pgw console --port P` usable in scripts.
"""

import os
import re
import sys
import threading
import time

import serial

BOARD_PROMPT = "pgw> "
CTRL_C, CTRL_D, CTRL_T, CTRL_RBRACKET = b"\x03", b"\x04", b"\x14", b"\x1d"
FALLBACK_COMMANDS = ("help", "status", "reboot")
HISTORY = os.path.join(os.path.expanduser("~"), ".pgw_console_history")


class BoardLink:
    """The serial port plus a reader thread that splits board output into lines."""

    def __init__(self, port, baud):
        try:
            self.serial = serial.Serial(port, baud, timeout=0.05, exclusive=True)
        except serial.SerialException as e:
            raise OSError(f"cannot open {port}: {e}") from None
        self.raw_sink = None  # REPL mode: a callable taking raw bytes
        self.line_sink = print
        self._partial = ""
        self._prompts = 0  # prompts that end an answer, not an unsolicited line
        self._after_prompt = False
        self._unsolicited = False
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def write(self, data):
        self.serial.write(data)

    def _read(self):
        while not self._stop:
            try:
                data = self.serial.read(4096)
            except (serial.SerialException, OSError):
                self.line_sink("[console] the port went away")
                return
            if not data:
                self._flush_partial_prompt()
                continue
            if self.raw_sink is not None:
                self.raw_sink(data)
                continue
            self._feed(data.decode("utf-8", errors="replace"))

    def _feed(self, text):
        text = self._partial + text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)
        self._flush_partial_prompt()

    def _flush_partial_prompt(self):
        # A bare prompt arrives without a line end: count it, do not print it.
        with self._cond:
            if self._partial.endswith(BOARD_PROMPT):
                before = self._partial[: -len(BOARD_PROMPT)]
                self._partial = ""
                if before.strip():
                    self.line_sink(before)
                self._prompt()

    def _prompt(self):
        # An unsolicited line (heartbeat, log) is printed as "\r\n" LINE
        # "\r\n" PROMPT, so it starts with an empty line right after a
        # prompt; its closing prompt does not end an answer.
        with self._cond:
            if not self._unsolicited:
                self._prompts += 1
                self._cond.notify_all()
            self._unsolicited = False
            self._after_prompt = True

    def _line(self, line):
        while line.startswith(BOARD_PROMPT):
            line = line[len(BOARD_PROMPT):]
            self._prompt()
        if self._after_prompt and not line:
            self._unsolicited = True
        self._after_prompt = False
        if line.strip():
            self.line_sink(line)

    def prompts(self):
        with self._cond:
            return self._prompts

    def wait_prompt(self, after, timeout):
        """Wait until more than `after` board prompts have been seen."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._prompts <= after:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self):
        self._stop = True
        self._thread.join(timeout=1)
        self.serial.close()


def learn_commands(link, timeout=3.0):
    """Ask the gateway for `help` and take the first word of each line."""
    found = []
    sink = link.line_sink
    link.line_sink = lambda line: found.append(line)
    try:
        seen = link.prompts()
        link.write(b"help\r")
        if not link.wait_prompt(seen, timeout):
            return list(FALLBACK_COMMANDS)
    finally:
        link.line_sink = sink
    # Help lines are "usage  summary" with at least two spaces between.
    names = [m.group(1) for m in (re.match(r"([a-z][a-z0-9_-]*)(?:\s.*)?\s{2,}\S", line) for line in found) if m]
    return sorted(set(names)) or list(FALLBACK_COMMANDS)


def run_script(link, lines, out=sys.stdout, timeout=10.0):
    link.line_sink = lambda line: print(line, file=out, flush=True)
    for line in lines:
        line = line.rstrip("\r\n")
        seen = link.prompts()
        link.write(line.encode() + b"\r")
        if not link.wait_prompt(seen, timeout):
            print(f"[console] no prompt from the board within {timeout:.0f} s after {line!r}",
                  file=sys.stderr)
            return 1
    return 0


def run_interactive(link):
    import termios
    import tty

    from prompt_toolkit import PromptSession, print_formatted_text
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.patch_stdout import patch_stdout

    quit_, repl = object(), object()
    keys = KeyBindings()

    @keys.add("c-]")
    def _quit(event):
        event.app.exit(result=quit_)

    @keys.add("c-t")
    def _repl(event):
        event.app.exit(result=repl)

    print("pgw console: Ctrl-T toggles the MicroPython REPL, Ctrl-] quits")
    link.line_sink = lambda line: print_formatted_text(line)
    commands = learn_commands(link)
    try:
        history = FileHistory(HISTORY)
    except OSError:
        history = None
    session = PromptSession(history=history, key_bindings=keys,
                            completer=WordCompleter(commands, sentence=True))
    while True:
        with patch_stdout(raw=True):
            try:
                line = session.prompt(BOARD_PROMPT)
            except (EOFError, KeyboardInterrupt):
                line = quit_
        if line is quit_:
            return 0
        if line is repl:
            if repl_mode(link, termios, tty) == "quit":
                return 0
            continue
        link.write(line.encode() + b"\r")


def repl_mode(link, termios, tty):
    """Pass keys straight to the board until Ctrl-T (back) or Ctrl-] (quit)."""
    stdin = sys.stdin.fileno()
    saved = termios.tcgetattr(stdin)
    out = sys.stdout.buffer

    def raw_out(data):
        out.write(data)
        out.flush()

    def raw_out(data, _out=raw_out):
        _out(crlf(data))

    print("\r\n[console] REPL mode (maintenance boot: app and watchdog stopped, actuators safe);"
          " Ctrl-T returns to the gateway console, Ctrl-] quits\r")
    enter_maintenance(link)
    link.raw_sink = raw_out
    tty.setraw(stdin)
    try:
        while True:
            key = os.read(stdin, 64)
            if not key:
                return "quit"
            if CTRL_RBRACKET in key:
                return "quit"
            if CTRL_T in key:
                link.write(b"\r" + CTRL_D)  # soft reboot: boot.py and main.py run again
                return "console"
            link.write(key)
    finally:
        termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        link.raw_sink = None
        print()


def crlf(data):
    # The unix port and many boards end lines with a bare "\n"; a raw terminal needs "\r\n".
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def enter_maintenance(link, timeout=5.0):
    """Stop the app and reboot into a maintenance boot; end at its REPL prompt."""
    seen = bytearray()
    got = threading.Event()
    wanted = [b""]  # text that must have appeared before the prompt counts

    def collect(data):
        seen.extend(data)
        if seen.endswith(b">>> ") and wanted[0] in seen:
            got.set()

    link.raw_sink = collect
    link.write(CTRL_C)
    if got.wait(timeout):
        got.clear()
        wanted[0] = b"SAFE MODE (maintenance"
        link.write(b"import gateway.boot\rgateway.boot.maintenance()\r")
        got.wait(timeout)  # on firmware without gateway.boot this stays a plain REPL
    sys.stdout.buffer.write(crlf(bytes(seen)))
    sys.stdout.buffer.flush()


def run_console(port, baud=115200, script=None):
    link = BoardLink(port, baud)
    try:
        if script is not None or not sys.stdin.isatty():
            return run_script(link, script if script is not None else sys.stdin)
        return run_interactive(link)
    finally:
        link.close()
