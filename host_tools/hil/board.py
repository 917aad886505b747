"""The board half of a HIL case: MicroPython code run on the board through
mpremote's raw REPL, synchronised with the host half by text markers.

The shape is MicroPython's multitests (tests/run-multitests.py): two
instances of one test that meet at named points. Here the board half gets
a small `hil` class prepended to its code:

    hil.next(label)       prints  @@HIL NEXT label     "I am at this point"
    hil.set(name, value)  prints  @@HIL SET name JSON  a value for the host
    hil.wait(label)       reads stdin until the host sends  @@HIL GO label
                          (@@HIL STOP instead ends the half: its host half gave up)
    hil.skip(reason)      prints  @@HIL SKIP reason    "cannot run here"

and the host half waits for those lines with `next()`, `value()` and
`done()`, each with a timeout, and answers with `go()`. The raw REPL ends
the code's output with Ctrl-D, then its traceback (if any) and another
Ctrl-D: `done()` turns a traceback into BoardHalfError. Everything the
board said is kept in `said` for the report.
"""

import json
import re
import time

MARK = "@@HIL "

# Prepended to every board half; plain MicroPython, no imports from the firmware.
PRELUDE = r"""\
import sys, json
class hil:
    @staticmethod
    def next(label):
        print('@@HIL NEXT ' + label)
    @staticmethod
    def set(name, value):
        print('@@HIL SET ' + name + ' ' + json.dumps(value))
    @staticmethod
    def wait(label, timeout_ms=120000):
        # polled, not a blocking readline: a Ctrl-C from the host (the next
        # raw REPL) must be able to stop a half whose host half gave up
        import select, time
        p = select.poll()
        p.register(sys.stdin, select.POLLIN)
        want = '@@HIL GO ' + label
        line = ''
        t0 = time.ticks_ms()
        while True:
            if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
                raise OSError('hil: no GO ' + label + ' from the host')
            if p.poll(50):
                c = sys.stdin.read(1)
                if c == '\n':
                    if line.strip() == want:
                        return
                    if line.strip() == '@@HIL STOP':
                        raise KeyboardInterrupt('hil: stopped by the host')
                    line = ''
                else:
                    line += c
    @staticmethod
    def skip(reason):
        print('@@HIL SKIP ' + reason)
"""


class BoardHalfError(AssertionError):
    """The board half raised (its traceback is the detail) or never reached a point in time."""

    def __init__(self, message, detail=""):
        super().__init__(message)
        self.detail = detail


class BoardSkip(Exception):
    """The board half said it cannot run on this board (hil.skip)."""


class BoardHalf:
    """A raw-REPL session on the board's USB serial port.

    Entering it soft-resets the board: boot.py runs (slots mounted, actuators
    in their fail-safe state), the app does not, as for `mpremote exec`.
    """

    def __init__(self, port, baudrate=115200, soft_reset=True, timeout=15.0):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.port = str(port)
        try:
            self.t = SerialTransport(self.port, baudrate=baudrate)
        except TransportError as e:
            raise OSError("cannot open %s: %s" % (self.port, e)) from None
        self.said = ""  # what the board said since the last start(), decoded
        self.transcript = ""  # everything it said in this session
        self._raw = bytearray()
        self._lines_seen = 0
        self.values = {}
        self.points = []
        self.skipped = None
        self.running = False
        try:
            self.t.enter_raw_repl(soft_reset=soft_reset, timeout_overall=timeout)
        except TransportError as e:
            self.t.close()
            raise OSError("no raw REPL on %s: %s" % (self.port, e)) from None

    # ---- running code ----

    def run(self, code, timeout=30.0):
        """Run code to its end; -> what it printed. Raises BoardHalfError with its traceback."""
        from mpremote.transport import TransportError

        try:
            out, err = self.t.exec_raw(code, timeout=timeout)
        except TransportError as e:
            raise BoardHalfError("the board did not finish %r: %s" % (_first_line(code), e)) from None
        out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        self.said += out + err
        self.transcript += out + err
        if err:
            raise BoardHalfError("the board raised: %s" % _last_line(err), err)
        return out.replace("\r\n", "\n").strip()

    def start(self, code):
        """Start a board half (hil prelude + code) without waiting for it."""
        self._raw = bytearray()
        self._lines_seen = 0
        self.values = {}
        self.points = []
        self.skipped = None
        self.said = ""
        self.running = True
        self.t.exec_raw_no_follow(PRELUDE + code)

    def go(self, label):
        """Let a board half waiting in hil.wait(label) go on."""
        self.t.serial.write(("%sGO %s\n" % (MARK, label)).encode())

    def next(self, label, timeout=20.0):
        """Wait until the board half has reached hil.next(label)."""
        self.wait_until(lambda: label in self.points, "hil.next(%r)" % label, timeout)

    def value(self, name, timeout=20.0):
        """The value the board half gave with hil.set(name, ...), waiting for it."""
        self.wait_until(lambda: name in self.values, "hil.set(%r, ...)" % name, timeout)
        return self.values[name]

    def done(self, timeout=30.0):
        """Wait for the board half's end; -> its output. BoardHalfError if it raised."""
        self.wait_until(lambda: self._raw.count(b"\x04") >= 2, "the board half's end", timeout)
        self.running = False
        out, _, rest = bytes(self._raw).partition(b"\x04")
        err = rest.partition(b"\x04")[0].decode("utf-8", "replace")
        if err.strip():
            raise BoardHalfError("the board raised: %s" % _last_line(err), err)
        if self.skipped is not None:
            raise BoardSkip(self.skipped)
        return out.decode("utf-8", "replace")

    def expect(self, pattern, timeout=20.0):
        """Wait until the board's output (since start) matches a regex, e.g. a
        boot line after a reset: the port stays open across it."""
        rx = re.compile(pattern)
        self.wait_until(lambda: rx.search(self.said), "%r from the board" % pattern, timeout)
        return rx.search(self.said)

    # ---- reading ----

    def wait_until(self, ready, what, timeout=20.0):
        """Read the board until ready() holds; BoardHalfError after `timeout`
        s, or as soon as the half has ended without it."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self._raw.count(b"\x04") >= 2:
                err = bytes(self._raw).partition(b"\x04")[2].partition(b"\x04")[0].decode("utf-8", "replace")
                raise BoardHalfError("the board half ended before %s%s" % (
                    what, ": " + _last_line(err) if err.strip() else ""), err)
            left = deadline - time.monotonic()
            if left <= 0:
                raise BoardHalfError("timed out after %.0f s waiting for %s; the board said:\n%s"
                                     % (timeout, what, self.said[-1500:]), self.said)
            self._pump(min(left, 0.1))

    def _pump(self, timeout):
        s = self.t.serial
        s.timeout = timeout
        try:
            data = s.read(max(1, s.in_waiting))
        except OSError as e:  # the port went away (a USB board powered off)
            raise BoardHalfError("the port %s went away: %s" % (self.port, e)) from None
        if not data:
            return
        self._raw += data
        text = data.decode("utf-8", "replace")
        self.said += text
        self.transcript += text
        # markers come from the code's output, before the first Ctrl-D
        out = bytes(self._raw).partition(b"\x04")[0].decode("utf-8", "replace")
        lines = out.replace("\r", "").split("\n")[:-1]
        for line in lines[self._lines_seen:]:
            if line.startswith(MARK):
                self._marker(line[len(MARK):])
        self._lines_seen = len(lines)

    def _marker(self, text):
        verb, _, rest = text.partition(" ")
        if verb == "NEXT":
            self.points.append(rest)
        elif verb == "SET":
            name, _, value = rest.partition(" ")
            try:
                self.values[name] = json.loads(value)
            except ValueError:
                pass  # a line cut short by a reset: not a value
        elif verb == "SKIP":
            self.skipped = rest

    def reset_under_it(self):
        """The board was reset (power cut, switch): the half is gone, nothing to stop."""
        self.running = False

    def close(self):
        if self.running:
            # A half left waiting: tell it to stop, since a Ctrl-C does not
            # reach code run from the virtual board's raw REPL.
            self.running = False
            try:
                self.t.serial.write(("%sSTOP\n" % MARK).encode())
                self.wait_until(lambda: self._raw.count(b"\x04") >= 2, "the board half's end", 3.0)
            except (OSError, BoardHalfError):
                pass
        try:
            self.t.close()
        except OSError:
            pass  # already gone with the board's power


def _first_line(code):
    return code.strip().splitlines()[0] if code.strip() else ""


def _last_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text
