"""What a HIL case is: a function `case_*(hil)` in a module of
host_tools/hil/cases/, the host half, run in CPython. It declares what the
setup must offer with @needs(...); the runner skips it, with the target's
reason, when one is missing. A case that finds out later that it cannot
run raises Skip("why"). Plain `assert` fails it.
"""

# What a case may need. A target says for each whether it has it, and why not.
RAW_REPL = "raw_repl"  # the board's raw REPL on its USB serial (every target)
CONSOLE = "console"  # the app's technician console on the same port (every target)
GPIO = "gpio"  # outputs observed, inputs set: the virtual board's GPIO channel
METER_LINE = "meter_line"  # a serial line from the host to the board's RS-485 bus
POWER_CUT = "power_cut"  # cutting the board's power and getting it back
ROM_SLOTS = "rom_slots"  # two ROMFS code slots, for updates (docs/ota.md)
NEEDS = (RAW_REPL, CONSOLE, GPIO, METER_LINE, POWER_CUT, ROM_SLOTS)


class Skip(Exception):
    """Raised by a case that cannot run in this setup; the message is the reason."""


def needs(*what):
    """Declare what a case needs: @needs(GPIO, POWER_CUT)."""
    for n in what:
        if n not in NEEDS:
            raise ValueError("unknown need %r (one of %s)" % (n, ", ".join(NEEDS)))

    def mark(fn):
        fn.hil_needs = tuple(what)
        return fn

    return mark


class Hil:
    """What a case's host half gets: the target, a log for the report, and
    the board half and console, each closed when the case ends."""

    def __init__(self, target, verbose=False):
        self.target = target
        self.verbose = verbose
        self.lines = []
        self._open = []

    def log(self, text):
        for line in str(text).splitlines() or [""]:
            self.lines.append(line)
            if self.verbose:
                print("    | " + line, flush=True)

    def board_half(self, soft_reset=True):
        """A raw-REPL session (host_tools.hil.board.BoardHalf); the app stops."""
        half = self.target.board_half(soft_reset=soft_reset)
        self._open.append(half)
        return half

    def console(self):
        """The app's console (host_tools.sim.day.SerialExpect): command(line, contains)."""
        con = self.target.console()
        self._open.append(con)
        return con

    def release(self, thing):
        """Close a board half or console now (the port takes one client at a time)."""
        if thing in self._open:
            self._open.remove(thing)
        _close(thing, self)

    def close(self):
        while self._open:
            _close(self._open.pop(), self)

    def output(self):
        return "\n".join(self.lines)


def _close(thing, hil):
    said = getattr(thing, "transcript", None)
    if said:
        hil.lines.append("--- the board said (%s) ---" % type(thing).__name__)
        hil.lines.extend(said.replace("\r", "").replace("\x04", "<EOT>").splitlines()[-200:])
    try:
        thing.close()
    except OSError:
        pass
