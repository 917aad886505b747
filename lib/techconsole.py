# The technician console's line protocol, without I/O.
#
# Bytes from the USB serial go in (LineAssembler.feed); lines come out and
# CommandTable.dispatch turns each into answer lines. Every argument is
# checked against its spec before the handler runs, and an unknown
# command, a bad argument or a failing handler gives one line starting
# "ERR": never a traceback, never a stopped console.
from compat import const

PROMPT = "pgw> "
_MAX_LINE = const(160)
_ESC = const(0x1B)

# Returned by LineAssembler.feed in place of a line that was too long.
LINE_TOO_LONG = object()


class ConsoleError(Exception):
    # A handler raises this for a one-line error meant for the technician.
    pass


class LineAssembler:
    # Accepts CR, LF or CRLF line ends (terminals differ), applies
    # backspace/DEL, drops other control bytes and ANSI escape sequences
    # (arrow keys from a plain terminal), and bounds the line length.
    def __init__(self, max_len=_MAX_LINE):
        self._buf = bytearray()
        self._max = max_len
        self._overflow = False
        self._last_cr = False
        self._esc = 0  # 0: none, 1: after ESC, 2: inside CSI
        self.dropped = 0

    def feed(self, data):
        out = []
        for b in data:
            if self._esc and b != 0x0D and b != 0x0A:  # a line end always ends a line
                if self._esc == 1:
                    # ESC [ starts a CSI, ESC O an SS3 (arrow keys in application mode)
                    self._esc = 2 if b == 0x5B else (3 if b == 0x4F else 0)
                elif self._esc == 3 or 0x40 <= b <= 0x7E:
                    self._esc = 0
                continue
            self._esc = 0
            if b == 0x0A and self._last_cr:
                self._last_cr = False
                continue
            self._last_cr = b == 0x0D
            if b == 0x0D or b == 0x0A:
                if self._overflow:
                    out.append(LINE_TOO_LONG)
                else:
                    out.append(self._buf.decode())
                self._buf = bytearray()
                self._overflow = False
            elif b == 0x08 or b == 0x7F:
                if self._buf:
                    self._buf = self._buf[:-1]
            elif b == _ESC:
                self._esc = 1
            elif 0x20 <= b <= 0x7E:
                if len(self._buf) < self._max:
                    self._buf.append(b)
                else:
                    self._overflow = True
            else:
                self.dropped += 1
        return out


class Arg:
    # One positional argument: kind is "int" (with lo..hi), "word" (no
    # spaces, at most maxlen) or "choice" (one of choices).
    def __init__(self, name, kind="word", lo=None, hi=None, choices=None, optional=False, maxlen=64):
        self.name = name
        self.kind = kind
        self.lo = lo
        self.hi = hi
        self.choices = choices
        self.optional = optional
        self.maxlen = maxlen

    def usage(self):
        if self.kind == "choice":
            text = "|".join(self.choices)
        else:
            text = self.name
        return "[" + text + "]" if self.optional else "<" + text + ">"

    def parse(self, text):
        if self.kind == "int":
            try:
                v = int(text)
            except ValueError:
                raise ConsoleError("%s must be a whole number, got %r" % (self.name, text))
            if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
                raise ConsoleError("%s must be %s..%s, got %d" % (self.name, self.lo, self.hi, v))
            return v
        if self.kind == "choice":
            if text not in self.choices:
                raise ConsoleError("%s must be one of %s, got %r" % (self.name, ", ".join(self.choices), text))
            return text
        if len(text) > self.maxlen:
            raise ConsoleError("%s is longer than %d characters" % (self.name, self.maxlen))
        return text


class Command:
    def __init__(self, name, handler, summary, args):
        self.name = name
        self.handler = handler
        self.summary = summary
        self.args = args

    def usage(self):
        return " ".join([self.name] + [a.usage() for a in self.args])


class CommandTable:
    def __init__(self):
        self._commands = {}
        self.errors = 0
        self.failures = 0  # handlers that raised something other than ConsoleError
        self.add("help", self._help, "list commands, or show one command's usage",
                 (Arg("command", optional=True, maxlen=32),))

    def add(self, name, handler, summary, args=()):
        self._commands[name] = Command(name, handler, summary, tuple(args))

    def names(self):
        return sorted(self._commands)

    def _help(self, name=None):
        if name is None:
            cmds = [self._commands[n] for n in self.names()]
            return table([(c.usage(), c.summary) for c in cmds])
        cmd = self._commands.get(name)
        if cmd is None:
            raise ConsoleError("unknown command %r" % name)
        return ["usage: " + cmd.usage(), cmd.summary]

    def dispatch(self, line):
        # One input line -> a list of answer lines (possibly empty).
        if line is LINE_TOO_LONG:
            self.errors += 1
            return ["ERR line too long"]
        words = line.split()
        if not words:
            return []
        cmd = self._commands.get(words[0])
        if cmd is None:
            self.errors += 1
            return ["ERR unknown command %r; type help" % words[0]]
        given = words[1:]
        required = len([a for a in cmd.args if not a.optional])
        if not required <= len(given) <= len(cmd.args):
            self.errors += 1
            return ["ERR usage: " + cmd.usage()]
        try:
            values = [a.parse(t) for a, t in zip(cmd.args, given)]
            return _answer_lines(cmd.handler(*values))
        except ConsoleError as e:
            self.errors += 1
            return ["ERR " + _one_line(e.args[0] if e.args else "failed")]
        except Exception as e:  # a handler bug must not take the console down
            self.failures += 1
            return ["ERR %s failed: %s: %s" % (cmd.name, type(e).__name__, _one_line(e))]


def _one_line(text):
    return str(text).replace("\r", " ").replace("\n", " ")


def _answer_lines(answer):
    # A handler answers None, one str, or an iterable of str.
    if answer is None:
        return []
    if isinstance(answer, str):
        return [answer]
    lines = list(answer)
    for line in lines:
        if not isinstance(line, str):
            raise TypeError("handler answered %s, not text" % type(line).__name__)
    return lines


def table(rows):
    # Two columns, the first padded to its widest cell.
    width = 0
    for left, _right in rows:
        if len(left) > width:
            width = len(left)
    return [left + " " * (width - len(left) + 2) + str(right) for left, right in rows]
