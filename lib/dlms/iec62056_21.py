# IEC 62056-21 mode E opening: optical-probe sign-on at 300 baud, then HDLC (IEC 62056-46).
#
#   client -> meter   / ? [address] ! CR LF              (300 baud, 7E1)
#   meter  -> client  / X X X Z \2 identification CR LF  (\2: mode E, HDLC)
#   client -> meter   ACK 2 Z 2 CR LF                    (HDLC protocol, binary mode)
#   both switch to the baud rate of Z, 8N1, and HDLC starts with the SNRM.
#
# Sans-I/O: the firmware adapter owns the UART and switches its settings
# (the line constants below) when Opening says so.
from compat import const, ticks_add, ticks_diff

# line settings
SIGN_ON_BAUD = const(300)
SIGN_ON_BITS = const(7)
SIGN_ON_PARITY = "E"  # even
SIGN_ON_STOP = const(1)
_HDLC_BITS = const(8)
HDLC_PARITY = None
_HDLC_STOP = const(1)

# timing (IEC 62056-21 reaction and character times)
_REACTION_MIN_MS = const(200)  # the meter answers no sooner (20 ms if XXX ends lowercase)
_REACTION_MAX_MS = const(1500)  # ... and no later
_CHAR_TIMEOUT_MS = const(1500)  # longest gap between characters of a message
_ACK_DRAIN_MS = const(250)  # 6 characters at 300 baud 7E1 take 200 ms

ACK = const(0x06)
PROTOCOL_HDLC = "2"  # V in the acknowledgement: HDLC protocol procedure (mode E)
MODE_BINARY = "2"  # Y in the acknowledgement: binary mode

# Z -> baud rate: '0'..'6' for modes C and E, 'A'..'F' for mode B
_BAUD_CE = (300, 600, 1200, 2400, 4800, 9600, 19200)
_BAUD_B = (600, 1200, 2400, 4800, 9600, 19200)

_MAX_LINE = const(64)


class Iec21Error(ValueError):
    # reason: "bad_identification", "baud", "address", "not_mode_e",
    # "no_answer", "too_long"
    def __init__(self, reason, detail=None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def baud_rate(z):
    # baud rate character (str or its code) -> baud rate
    c = z if isinstance(z, int) else (ord(z) if len(z) == 1 else -1)
    if 0x30 <= c <= 0x36:
        return _BAUD_CE[c - 0x30]
    if 0x41 <= c <= 0x46:
        return _BAUD_B[c - 0x41]
    raise Iec21Error("baud", z)


def baud_char(baud):
    # baud rate -> its mode C/E character
    for i in range(len(_BAUD_CE)):
        if _BAUD_CE[i] == baud:
            return chr(0x30 + i)
    raise Iec21Error("baud", baud)


def sign_on(address=""):
    # request message; address: the device address (up to 32 of 0-9 A-Z a-z space)
    if len(address) > 32:
        raise Iec21Error("address", address)
    for ch in address:
        if not ("0" <= ch <= "9" or "A" <= ch <= "Z" or "a" <= ch <= "z" or ch == " "):
            raise Iec21Error("address", address)
    return b"/?" + address.encode() + b"!\r\n"


def option_select(z, protocol=PROTOCOL_HDLC, mode=MODE_BINARY):
    # acknowledgement/option select message; the mode E one is ACK 2 Z 2 CR LF
    baud_rate(z)
    return bytes((ACK, ord(protocol), ord(z), ord(mode), 0x0D, 0x0A))


class Identification:
    def __init__(self, manufacturer, z, enhanced, ident):
        self.manufacturer = manufacturer  # XXX, e.g. "LGZ"
        self.z = z  # baud rate character the meter offers
        self.baud = baud_rate(z)
        self.enhanced = enhanced  # W of "\W", or None
        self.mode_e = enhanced == "2"
        self.ident = ident
        c = manufacturer[2]
        self.fast_reaction = "a" <= c <= "z"  # 20 ms reaction time

    def __repr__(self):
        return "Identification(%s, %s, %r, %s)" % (self.manufacturer, self.z, self.enhanced, self.ident)


def parse_identification(line):
    # b"/XXXZ\\2ident\r\n" (CR LF optional) -> Identification; the 7-bit
    # characters of a 7E1 line are taken with the parity bit cleared. The
    # "/XXX\\2Z..." order is accepted too.
    s = "".join(chr(b & 0x7F) for b in line)
    if s.endswith("\r\n"):
        s = s[:-2]
    if len(s) < 5 or s[0] != "/" or len(s) > _MAX_LINE:
        raise Iec21Error("bad_identification", line)
    man = s[1:4]
    for ch in man:
        if not ("A" <= ch <= "Z" or "a" <= ch <= "z"):
            raise Iec21Error("bad_identification", line)
    p = 4
    w = None
    if s[p] == "\\" and len(s) > p + 2:
        w = s[p + 1]
        p += 2
    z = s[p]
    p += 1
    if w is None and len(s) > p + 1 and s[p] == "\\":
        w = s[p + 1]
        p += 2
    ident = s[p:]
    for ch in ident:
        if ch < " " or ch == "/" or ch == "!":
            raise Iec21Error("bad_identification", line)
    try:
        return Identification(man, z, w, ident)
    except Iec21Error:
        raise Iec21Error("bad_identification", line)


# Opening states
SIGN_ON = const(0)  # sign-on sent, waiting for the identification
SWITCH = const(1)  # acknowledgement handed out: write it, wait _ACK_DRAIN_MS, switch
FAILED = const(2)


class Opening:
    # The sign-on exchange as a state machine. start() -> request bytes;
    # receive_data(bytes) -> the acknowledgement to write once the
    # identification is in (state SWITCH; .baud is the new rate), else b"";
    # tick(now_ms) -> the request again after a silence, b"" otherwise; after
    # `retries` repeats the state is FAILED with .error set.
    def __init__(self, address="", max_baud=9600, require_mode_e=True,
                 timeout_ms=_REACTION_MAX_MS + _CHAR_TIMEOUT_MS, retries=2):
        self._request = sign_on(address)
        self.max_baud = max_baud
        self.require_mode_e = require_mode_e
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.state = SIGN_ON
        self.identification = None
        self.baud = None
        self.error = None
        self._line = bytearray()
        self._deadline = None
        self._tries = 0

    def start(self, now_ms=None):
        self.state = SIGN_ON
        self._line = bytearray()
        self._deadline = None if now_ms is None else ticks_add(now_ms, self.timeout_ms)
        return self._request

    def receive_data(self, data):
        if self.state != SIGN_ON:
            return b""
        for b in data:
            b &= 0x7F
            if b == 0x2F:  # "/" starts a message (anything before is noise)
                self._line = bytearray()
            elif not self._line:
                continue
            if len(self._line) >= _MAX_LINE:
                self._line = bytearray()
                continue
            self._line.append(b)
            if b == 0x0A and self._line[-2:] == b"\r\n":
                line = bytes(self._line)
                self._line = bytearray()
                if line == self._request:
                    continue  # the echo of our own request
                return self._identified(line)
        return b""

    def _identified(self, line):
        try:
            ident = parse_identification(line)
        except Iec21Error as e:
            self._fail(e)
            return b""
        if self.require_mode_e and not ident.mode_e:
            self._fail(Iec21Error("not_mode_e", ident))
            return b""
        z = ident.z
        if not "0" <= z <= "6":
            z = baud_char(ident.baud)  # a mode B character: the same rate
        while baud_rate(z) > self.max_baud and z > "0":
            z = chr(ord(z) - 1)
        self.identification = ident
        self.baud = baud_rate(z)
        self.state = SWITCH
        return option_select(z)

    def _fail(self, err):
        self.state = FAILED
        self.error = err

    def tick(self, now_ms):
        if self.state != SIGN_ON:
            return b""
        if self._deadline is None:
            self._deadline = ticks_add(now_ms, self.timeout_ms)
            return b""
        if ticks_diff(now_ms, self._deadline) < 0:
            return b""
        if self._tries >= self.retries:
            self._fail(Iec21Error("no_answer", self._tries))
            return b""
        self._tries += 1
        self._line = bytearray()
        self._deadline = ticks_add(now_ms, self.timeout_ms)
        return self._request
