# HDLC for DLMS/COSEM (IEC 62056-46): frames, a resynchronising framer, the client link.
#
#   7E | A0+S+len(11 bits) | dest 1/2/4 | src 1/2/4 | control | [HCS info] | FCS | 7E
#
# Frame format type 3: the length field counts every byte between the flags,
# so 0x7E inside the information field needs no escaping and the framer never
# looks for a closing flag inside a frame. HCS and FCS are CRC-16/X.25,
# little-endian; a frame without information carries only the FCS.
# Address bytes hold 7 bits each; bit 0 = 1 marks the last byte of an address.
# A client address is 1 byte; a server address is the upper (logical) address
# alone (1 byte), or upper + lower (physical) address of 1 or 2 bytes each.
#
# The link is sans-I/O: connect/send/disconnect/receive_data/tick return the
# bytes to write, next_event() hands out what happened. Time comes from the
# caller (tick(now_ms) and optional now_ms arguments), in compat.ticks_ms units.
from compat import const, ticks_add, ticks_diff
from crc16 import X25_GOOD, crc16_x25

_FLAG = const(0x7E)
_FLAG_B = const(b"\x7e")

# Control field values with the P/F bit clear. I frames: N(S) in bits 1-3,
# N(R) in bits 5-7; S frames (RR, RNR, REJ): N(R) in bits 5-7.
_I = const(0x00)
_RR = const(0x01)
_RNR = const(0x05)
_REJ = const(0x09)
_SNRM = const(0x83)
_DISC = const(0x43)
_UA = const(0x63)
_DM = const(0x0F)
_FRMR = const(0x87)
_UI = const(0x03)
_PF = const(0x10)

_MAX_FRAME_LEN = const(2047)  # the 11-bit length field
_MAX_INFO_LEN = const(2030)  # fits a frame even with two 4-byte addresses
_DEFAULT_INFO_LEN = const(128)  # IEC 62056-46 defaults, used without negotiation
_DEFAULT_WINDOW = const(1)

# SNRM/UA parameter negotiation field: format 0x81, group 0x80, group length.
_PARAM_FORMAT = const(0x81)
_PARAM_GROUP = const(0x80)
_P_INFO_TX = const(0x05)
_P_INFO_RX = const(0x06)
_P_WINDOW_TX = const(0x07)
_P_WINDOW_RX = const(0x08)

# framer scan outcomes
_NEED = const(0)
_SKIP = const(1)
_FRAME = const(2)
_ERROR = const(3)

# link states
DISCONNECTED = const(0)
_CONNECTING = const(1)
_CONNECTED = const(2)
_DISCONNECTING = const(3)

_MAX_EVENTS = const(32)


class HdlcError(ValueError):
    pass


class FrameError(HdlcError):
    # reason: "garbage" (detail: bytes skipped), "bad_hcs", "bad_fcs",
    # "truncated" (the closing flag is not where the length field says),
    # "oversized" (detail: the length field), "bad_params" (SNRM/UA field)
    def __init__(self, reason, detail=None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class LinkStateError(HdlcError):
    # the caller asked for something the link's state does not allow
    pass


# ---- addresses -------------------------------------------------------------


def client_address(sap):
    # 1-byte client address (SAP 0..127, e.g. 0x10 public client)
    if not 0 <= sap < 0x80:
        raise HdlcError("client address")
    return bytes((sap << 1 | 1,))


def server_address(upper, lower=None, size=0):
    # Server address field: upper (logical) alone -> 1 byte; with lower
    # (physical) -> 2 bytes (7 bits each) or 4 bytes (14 bits each).
    # size 0 picks the shortest; 1, 2 or 4 forces a size.
    if lower is None and size <= 1:
        if not 0 <= upper < 0x80:
            raise HdlcError("server address")
        return bytes((upper << 1 | 1,))
    if lower is None:
        lower = 0
    if size == 0:
        size = 2 if upper < 0x80 and lower < 0x80 else 4
    if size == 2 and 0 <= upper < 0x80 and 0 <= lower < 0x80:
        return bytes((upper << 1, lower << 1 | 1))
    if size == 4 and 0 <= upper < 0x4000 and 0 <= lower < 0x4000:
        return bytes(((upper >> 7) << 1, (upper & 0x7F) << 1,
                      (lower >> 7) << 1, (lower & 0x7F) << 1 | 1))
    raise HdlcError("server address")


def address_parts(addr):
    # address field bytes -> (upper, lower); lower is None for 1 byte
    n = len(addr)
    if n == 1:
        return addr[0] >> 1, None
    if n == 2:
        return addr[0] >> 1, addr[1] >> 1
    if n == 4:
        return ((addr[0] >> 1) << 7) | (addr[1] >> 1), ((addr[2] >> 1) << 7) | (addr[3] >> 1)
    raise HdlcError("address length")


def _address(addr):
    if isinstance(addr, int):
        return client_address(addr)
    n = len(addr)
    if n not in (1, 2, 4) or not addr[n - 1] & 1:
        raise HdlcError("address field")
    for i in range(n - 1):
        if addr[i] & 1:
            raise HdlcError("address field")
    return bytes(addr)


def _same_address(a, b):
    if a == b:
        return True
    try:
        ua, la = address_parts(a)
        ub, lb = address_parts(b)
    except HdlcError:
        return False
    return ua == ub and (la or 0) == (lb or 0)


# ---- frames ----------------------------------------------------------------


def encode(dest, src, control, info=b"", segmented=False, start=0, end=None):
    # One frame with flags -> bytes; info[start:end] is the information field.
    # dest and src are address field bytes (see client_address/server_address).
    if end is None:
        end = len(info)
    ni = end - start
    hl = 3 + len(dest) + len(src)  # format, addresses, control
    flen = hl + 2 + (ni + 2 if ni > 0 else 0)
    if flen > _MAX_FRAME_LEN or ni < 0:
        raise HdlcError("frame too long")
    out = bytearray(flen + 2)
    out[0] = _FLAG
    out[1] = 0xA0 | (0x08 if segmented else 0) | (flen >> 8)
    out[2] = flen & 0xFF
    p = 3 + len(dest)
    out[3:p] = dest
    out[p:p + len(src)] = src
    out[hl] = control
    crc = crc16_x25(out, 0xFFFF, 1, hl + 1)
    out[hl + 1] = crc & 0xFF
    out[hl + 2] = crc >> 8
    if ni > 0:
        p = hl + 3
        if start == 0 and end == len(info):
            out[p:p + ni] = info
        else:
            out[p:p + ni] = memoryview(info)[start:end]
        crc = crc16_x25(out, 0xFFFF, 1, flen - 1)
        out[flen - 1] = crc & 0xFF
        out[flen] = crc >> 8
    out[flen + 1] = _FLAG
    return bytes(out)


class Frame:
    # dest/src: address field bytes (an int is taken as a 1-byte address);
    # control: the control byte; info: the information field.
    def __init__(self, dest, src, control, info=b"", segmented=False):
        self.dest = _address(dest)
        self.src = _address(src)
        self.control = control
        self.info = info
        self.segmented = segmented

    @property
    def kind(self):
        # I, RR, RNR, REJ, SNRM, DISC, UA, DM, FRMR, UI (or another U value)
        c = self.control
        if not c & 1:
            return _I
        if c & 3 == 1:
            return c & 0x0F
        return c & 0xEF

    @property
    def pf(self):
        return bool(self.control & _PF)

    @property
    def ns(self):
        return (self.control >> 1) & 7

    @property
    def nr(self):
        return self.control >> 5

    def to_bytes(self):
        return encode(self.dest, self.src, self.control, self.info, self.segmented)

    @classmethod
    def from_bytes(cls, data, max_frame_len=_MAX_FRAME_LEN):
        # exactly one frame, flags included -> Frame; raises FrameError
        n = len(data)
        if n == 0 or data[0] != _FLAG:
            raise FrameError("garbage")
        st, end, res = _scan(data, 0, n, max_frame_len)
        if st == _ERROR:
            raise res
        if st == _FRAME and end == n - 1:
            return res
        if st == _FRAME:
            raise FrameError("garbage", n - 1 - end)
        if st == _SKIP:
            raise FrameError("garbage")
        raise FrameError("truncated")

    def __eq__(self, other):
        return (isinstance(other, Frame) and self.dest == other.dest and self.src == other.src
                and self.control == other.control and self.info == other.info
                and self.segmented == other.segmented)

    def __repr__(self):
        return "Frame(%s, %s, 0x%02x, %s%s)" % (
            bytes(self.dest).hex(), bytes(self.src).hex(), self.control,
            bytes(self.info).hex(), ", segmented" if self.segmented else "")


def _scan(buf, r, n, max_len, mv=None):
    # buf[r] is a flag. -> (outcome, next index, Frame or FrameError or None)
    # (mv: a memoryview of buf, to copy the information field only once)
    if n - r < 3:
        return _NEED, r, None
    f = buf[r + 1]
    if f & 0xF0 != 0xA0:
        return _SKIP, r + 1, None  # a closing flag, a fill flag, or noise
    flen = ((f & 7) << 8) | buf[r + 2]
    if flen < 7:
        return _SKIP, r + 1, None
    if flen > max_len:
        return _ERROR, r + 1, FrameError("oversized", flen)
    d = r + 3  # destination address
    q = d
    while True:
        if q >= n:
            return _NEED, r, None
        if buf[q] & 1:
            break
        q += 1
        if q - d == 4:
            return _SKIP, r + 1, None
    s = q + 1  # source address
    if s - d == 3:
        return _SKIP, r + 1, None
    q = s
    while True:
        if q >= n:
            return _NEED, r, None
        if buf[q] & 1:
            break
        q += 1
        if q - s == 4:
            return _SKIP, r + 1, None
    c = q + 1  # control
    if c - s == 3:
        return _SKIP, r + 1, None
    hlen = c - r  # format + addresses + control
    if flen != hlen + 2 and flen < hlen + 5:
        return _SKIP, r + 1, None  # too short for the header it announces
    if n < c + 3:
        return _NEED, r, None
    # the header's check sequence (the FCS of a frame without information)
    # is verified first: a corrupt length never makes the framer wait
    if crc16_x25(buf, 0xFFFF, r + 1, c + 3) != X25_GOOD:
        return _ERROR, r + 1, FrameError("bad_fcs" if flen == hlen + 2 else "bad_hcs")
    end = r + 1 + flen  # closing flag
    if n <= end:
        return _NEED, r, True  # the header is good: a frame is arriving
    if buf[end] != _FLAG:
        return _ERROR, r + 1, FrameError("truncated")
    if flen == hlen + 2:
        info = b""
    else:
        if crc16_x25(buf, 0xFFFF, r + 1, end) != X25_GOOD:
            return _ERROR, end, FrameError("bad_fcs")
        info = bytes(buf[c + 3:end - 2] if mv is None else mv[c + 3:end - 2])
    fr = object.__new__(Frame)  # its fields are known good: no checks again
    fr.dest = bytes(buf[d:s])
    fr.src = bytes(buf[s:c])
    fr.control = buf[c]
    fr.info = info
    fr.segmented = bool(f & 0x08)
    return _FRAME, end, fr


class Framer:
    # Bytes in any chunking -> Frame and FrameError objects, in order.
    # One preallocated buffer. Bytes outside frames are dropped and reported
    # once per run, as FrameError("garbage", count) before the next frame or
    # error (or flush(), or after a buffer's worth); after a bad frame the
    # bytes up to the next flag are dropped without a second report.
    # feed() never raises on any input.
    def __init__(self, max_frame_len=_MAX_FRAME_LEN):
        if not 7 <= max_frame_len <= _MAX_FRAME_LEN:
            raise HdlcError("max_frame_len")
        self.max_frame_len = max_frame_len
        self._cap = max_frame_len + 2 + 62
        self._buf = bytearray(self._cap)
        self._mv = memoryview(self._buf)
        self._n = 0
        self._junk = 0
        self._quiet = False
        self._partial = False
        self.frames = 0  # counters for health reporting
        self.errors = 0
        self.garbage_bytes = 0

    @property
    def partial(self):
        # True while a frame whose header checked out is still arriving
        return self._partial

    def feed(self, data):
        out = []
        total = len(data)
        src = memoryview(data) if total else data
        off = 0
        while True:
            k = min(self._cap - self._n, total - off)
            if k > 0:
                self._mv[self._n:self._n + k] = src[off:off + k]
                self._n += k
                off += k
            self._parse(out)
            if off >= total:
                break
        if self._junk >= self._cap:
            self._report_junk(out)  # a line of noise still gets reported
        return out

    def flush(self):
        # Drop what is buffered (e.g. on a response timeout) -> list with a
        # FrameError("truncated") if a frame had started.
        out = []
        buf = self._buf
        started = False
        for i in range(self._n):
            if buf[i] != _FLAG:
                started = True
                break
        self._n = 0
        self._partial = False
        self._report_junk(out)
        if started:
            self.errors += 1
            out.append(FrameError("truncated"))
        self._quiet = False
        return out

    def reset(self):
        self._n = 0
        self._junk = 0
        self._quiet = False
        self._partial = False

    def _report_junk(self, out):
        if self._junk:
            self.garbage_bytes += self._junk
            if not self._quiet:
                self.errors += 1
                out.append(FrameError("garbage", self._junk))
            self._junk = 0

    def _parse(self, out):
        buf = self._buf
        n = self._n
        r = 0
        partial = False
        while r < n:
            i = buf.find(_FLAG_B, r, n)
            if i < 0:
                self._junk += n - r
                r = n
                break
            if i > r:
                self._junk += i - r
                r = i
            st, r2, res = _scan(buf, r, n, self.max_frame_len, self._mv)
            if st == _NEED:
                partial = res is True
                break
            if st == _SKIP:
                r = r2
                continue
            self._report_junk(out)
            if st == _FRAME:
                self.frames += 1
                self._quiet = False
            else:
                self.errors += 1
                self._quiet = True
            out.append(res)
            r = r2
        self._partial = partial
        if r:
            self._mv[0:n - r] = self._mv[r:n]
            self._n = n - r


# ---- SNRM/UA parameters ----------------------------------------------------


def snrm_info(max_info_tx=_DEFAULT_INFO_LEN, max_info_rx=_DEFAULT_INFO_LEN,
              window_tx=_DEFAULT_WINDOW, window_rx=_DEFAULT_WINDOW):
    # Parameter field for an SNRM (or UA) -> bytes; b"" when all are default.
    # Only non-default values are sent, lengths as 1 or 2 bytes, windows as
    # 4 bytes (the layout Gurux sends and meters accept).
    p = bytearray(b"\x81\x80\x00")
    for pid, v, dflt, wide in ((_P_INFO_TX, max_info_tx, _DEFAULT_INFO_LEN, False),
                               (_P_INFO_RX, max_info_rx, _DEFAULT_INFO_LEN, False),
                               (_P_WINDOW_TX, window_tx, _DEFAULT_WINDOW, True),
                               (_P_WINDOW_RX, window_rx, _DEFAULT_WINDOW, True)):
        if v == dflt:
            continue
        if wide:
            p += bytes((pid, 4, v >> 24 & 0xFF, v >> 16 & 0xFF, v >> 8 & 0xFF, v & 0xFF))
        elif v < 0x100:
            p += bytes((pid, 1, v))
        else:
            p += bytes((pid, 2, v >> 8, v & 0xFF))
    if len(p) == 3:
        return b""
    p[2] = len(p) - 3
    return bytes(p)


def parse_params(info):
    # SNRM/UA parameter field -> (max_info_tx, max_info_rx, window_tx,
    # window_rx) from the sender's point of view; absent ones are defaults.
    # Unknown parameters are skipped; a malformed field raises FrameError.
    vals = [_DEFAULT_INFO_LEN, _DEFAULT_INFO_LEN, _DEFAULT_WINDOW, _DEFAULT_WINDOW]
    n = len(info)
    if n == 0:
        return tuple(vals)
    if n < 3 or info[0] != _PARAM_FORMAT or info[1] != _PARAM_GROUP:
        raise FrameError("bad_params")
    end = 3 + info[2]
    if end > n:
        raise FrameError("bad_params")
    p = 3
    while p < end:
        if p + 2 > end:
            raise FrameError("bad_params")
        pid = info[p]
        ln = info[p + 1]
        p += 2
        if ln < 1 or ln > 4 or p + ln > end:
            raise FrameError("bad_params")
        v = 0
        for i in range(p, p + ln):
            v = v << 8 | info[i]
        p += ln
        if _P_INFO_TX <= pid <= _P_WINDOW_RX:
            vals[pid - _P_INFO_TX] = v
    if vals[0] < 1 or vals[1] < 1 or vals[2] < 1 or vals[3] < 1:
        raise FrameError("bad_params")
    return tuple(vals)


# ---- link events -----------------------------------------------------------


class Connected:
    def __init__(self, max_info_tx, max_info_rx, window_tx, window_rx):
        self.max_info_tx = max_info_tx
        self.max_info_rx = max_info_rx
        self.window_tx = window_tx
        self.window_rx = window_rx

    def __repr__(self):
        return "Connected(tx=%d, rx=%d, window_tx=%d, window_rx=%d)" % (
            self.max_info_tx, self.max_info_rx, self.window_tx, self.window_rx)


class Data:
    # info: the information field (bytes, or a bytearray when reassembled from
    # segmented I frames), LLC header included; more: True for a segment when
    # the link does not reassemble; ui: it came in a UI frame (e.g. a push)
    def __init__(self, info, more=False, ui=False):
        self.info = info
        self.more = more
        self.ui = ui

    def __repr__(self):
        return "Data(%s%s%s)" % (bytes(self.info).hex(), ", more" if self.more else "",
                                 ", ui" if self.ui else "")


class Disconnected:
    # reason: "ua", "dm", "frmr", "timeout", "inactivity"
    def __init__(self, reason):
        self.reason = reason

    def __repr__(self):
        return "Disconnected(%s)" % self.reason


class Error:
    # reason: a FrameError reason, or "timeout" (a retransmission),
    # "no_response" (retries exhausted), "out_of_sequence", "bad_nr", "frmr",
    # "too_long" (reassembly over max_data_len), "unexpected";
    # fatal: the link is down (a Disconnected event follows)
    def __init__(self, reason, detail=None, fatal=False):
        self.reason = reason
        self.detail = detail
        self.fatal = fatal

    def __repr__(self):
        return "Error(%s, %r%s)" % (self.reason, self.detail, ", fatal" if self.fatal else "")


# ---- the client (primary station) link -------------------------------------


class Link:
    # One client's HDLC connection to one server, in normal response mode.
    # server: address field bytes (server_address()) or an int upper address;
    # client: the client SAP. max_info_*/window_* are proposed in the SNRM;
    # the UA decides (our tx is capped by the proposal, rx is what the meter
    # announces). On a response timeout the unacknowledged frames (or the
    # SNRM, DISC, RR poll) are sent again, `retries` times, then the link is
    # down. reassemble=False hands out every I frame as Data(more=...) so a
    # long response can be decoded as it arrives.
    def __init__(self, server, client=0x10, max_info_tx=_DEFAULT_INFO_LEN,
                 max_info_rx=_DEFAULT_INFO_LEN, window_tx=_DEFAULT_WINDOW,
                 window_rx=_DEFAULT_WINDOW, response_timeout_ms=3000, retries=3,
                 inactivity_timeout_ms=120000, max_data_len=4096,
                 max_frame_len=_MAX_FRAME_LEN, reassemble=True):
        self.server = _address(server)
        self.client = client_address(client)
        for v in (max_info_tx, max_info_rx):
            if not 1 <= v <= _MAX_INFO_LEN:
                raise HdlcError("max info length")
        for v in (window_tx, window_rx):
            if not 1 <= v <= 7:
                raise HdlcError("window")
        self._prop = (max_info_tx, max_info_rx, window_tx, window_rx)
        self.response_timeout_ms = response_timeout_ms
        self.retries = retries
        self.inactivity_timeout_ms = inactivity_timeout_ms
        self.max_data_len = max_data_len
        self.reassemble = reassemble
        self.framer = Framer(max_frame_len)
        self.state = DISCONNECTED
        self.max_info_tx = _DEFAULT_INFO_LEN
        self.max_info_rx = _DEFAULT_INFO_LEN
        self.window_tx = _DEFAULT_WINDOW
        self.window_rx = _DEFAULT_WINDOW
        self._events = []
        self.dropped_events = 0
        self.retransmissions = 0
        self.ignored = 0  # frames of other stations, echoes of ours
        self._last = None
        self._touched = False
        self._reset_transfer()

    def _reset_transfer(self):
        self._vs = 0
        self._vr = 0
        self._unacked = []  # (N(S), frame bytes) sent, not yet acknowledged
        self._pending = None  # info still to send
        self._pos = 0
        self._waiting = False  # the turn is the server's (we sent P=1)
        self._expect_reply = False  # a request went out, its response has not come
        self._rx = None  # reassembly
        self._rx_drop = False
        self._retry = 0
        self._armed = False
        self._deadline = None
        self._ctrl = None  # the last U frame sent (SNRM or DISC)

    @property
    def connected(self):
        return self.state == _CONNECTED

    @property
    def busy(self):
        # a request is on its way or its response has not come
        return self._waiting or self._pending is not None or self._expect_reply

    def next_event(self):
        if self._events:
            return self._events.pop(0)
        return None

    def _event(self, ev):
        if len(self._events) >= _MAX_EVENTS:
            self._events.pop(0)
            self.dropped_events += 1
        self._events.append(ev)

    # -- timers --

    def _arm(self, now_ms):
        self._armed = True
        if now_ms is not None:
            self._deadline = ticks_add(now_ms, self.response_timeout_ms)
        else:
            self._deadline = None  # starts at the next tick

    def _disarm(self):
        self._armed = False
        self._deadline = None

    def _touch(self, now_ms):
        if now_ms is not None:
            self._last = now_ms
        else:
            self._touched = True

    # -- commands --

    def connect(self, now_ms=None):
        # -> bytes of the SNRM; a Connected event follows the UA
        self._reset_transfer()
        self.framer.reset()
        self.state = _CONNECTING
        self._ctrl = encode(self.server, self.client, _SNRM | _PF, snrm_info(*self._prop))
        self._arm(now_ms)
        self._touch(now_ms)
        return self._ctrl

    def disconnect(self, now_ms=None):
        # -> bytes of the DISC; a Disconnected event follows the UA or DM
        self._reset_transfer()
        self.state = _DISCONNECTING
        self._ctrl = encode(self.server, self.client, _DISC | _PF)
        self._arm(now_ms)
        self._touch(now_ms)
        return self._ctrl

    def send(self, info, now_ms=None):
        # info (LLC header + APDU) -> list of frames' bytes for the first
        # window; later windows come out of receive_data as the server
        # acknowledges. Raises LinkStateError when not connected or busy.
        if self.state != _CONNECTED:
            raise LinkStateError("not connected")
        if self.busy:
            raise LinkStateError("busy")
        if not len(info):
            raise HdlcError("empty information field")
        self._pending = info
        self._pos = 0
        out = []
        self._send_window(out)
        self._arm(now_ms)
        self._touch(now_ms)
        return out

    def receive_data(self, data, now_ms=None):
        # bytes from the line -> list of frames' bytes to write (an RR asking
        # for the next segment, the next window of ours, a retransmission)
        out = []
        for item in self.framer.feed(data):
            if isinstance(item, FrameError):
                self._event(Error(item.reason, item.detail))
            else:
                self._on_frame(item, out, now_ms)
        if self._armed and self.framer.partial:
            self._arm(now_ms)  # a frame is arriving: the server answers
        return out

    def tick(self, now_ms):
        # the time now -> list of frames' bytes to send again
        out = []
        if self._touched:
            self._touched = False
            self._last = now_ms
        if self._armed:
            if self._deadline is None:
                self._deadline = ticks_add(now_ms, self.response_timeout_ms)
            elif ticks_diff(now_ms, self._deadline) >= 0:
                self._timeout(out, now_ms)
        elif (self.state == _CONNECTED and self.inactivity_timeout_ms and self._last is not None
              and ticks_diff(now_ms, self._last) >= self.inactivity_timeout_ms):
            self._down("inactivity", None)
        return out

    # -- internals --

    def _timeout(self, out, now_ms):
        for item in self.framer.flush():
            self._event(Error(item.reason, item.detail))
        if self._retry >= self.retries:
            if self.state == _DISCONNECTING:
                self._down("timeout", None)
            else:
                self._down("timeout", Error("no_response", self._retry, True))
            return
        self._retry += 1
        self.retransmissions += 1
        self._event(Error("timeout", self._retry))
        if self.state != _CONNECTED:
            out.append(self._ctrl)
        elif self._unacked:
            for _, b in self._unacked:
                out.append(b)
        else:
            out.append(self._rr())
        self._arm(now_ms)

    def _down(self, reason, error):
        if error is not None:
            self._event(error)
        self._reset_transfer()
        self.state = DISCONNECTED
        self._event(Disconnected(reason))

    def _rr(self):
        return encode(self.server, self.client, _RR | _PF | self._vr << 5)

    def _send_window(self, out):
        info = self._pending
        n = len(info)
        k = len(self._unacked)
        while self._pos < n and k < self.window_tx:
            end = min(self._pos + self.max_info_tx, n)
            seg = end < n
            control = self._vs << 1 | self._vr << 5
            if not seg or k == self.window_tx - 1:
                control |= _PF
            b = encode(self.server, self.client, control, info, seg, self._pos, end)
            self._unacked.append((self._vs, b))
            self._vs = (self._vs + 1) & 7
            self._pos = end
            k += 1
            out.append(b)
        if self._pos >= n:
            self._pending = None
            self._expect_reply = True
        self._waiting = True

    def _ack(self, nr):
        # N(R) acknowledges our frames before it -> how many it took, or -1
        # if it is outside the frames in flight
        un = self._unacked
        va = un[0][0] if un else self._vs
        k = (nr - va) & 7
        if k > len(un):
            return -1
        if k:
            del un[:k]
        return k

    def _on_frame(self, f, out, now_ms):
        if not (_same_address(f.dest, self.client) and _same_address(f.src, self.server)):
            self.ignored += 1
            return
        kind = f.kind
        st = self.state
        if st == _CONNECTING:
            if kind == _UA:
                self._on_ua(f)
                self._touch(now_ms)
            elif kind == _DM:
                self._down("dm", None)
            else:
                self._event(Error("unexpected", f.control))
            return
        if st == _DISCONNECTING:
            if kind == _UA or kind == _DM:
                self._down("ua" if kind == _UA else "dm", None)
            return
        if st != _CONNECTED:
            self.ignored += 1
            return
        self._touch(now_ms)
        if kind == _I:
            self._on_i(f, out, now_ms)
        elif kind == _RR or kind == _RNR or kind == _REJ:
            self._on_s(f, kind, out, now_ms)
        elif kind == _UI:
            self._event(Data(f.info, False, True))
        elif kind == _DM:
            self._down("dm", None)
        elif kind == _FRMR:
            self._down("frmr", Error("frmr", f.info, True))
        else:
            self._event(Error("unexpected", f.control))

    def _on_ua(self, f):
        try:
            tx, rx, wtx, wrx = parse_params(f.info)
        except FrameError as e:
            self._event(Error(e.reason, f.info))
            tx, rx, wtx, wrx = _DEFAULT_INFO_LEN, _DEFAULT_INFO_LEN, _DEFAULT_WINDOW, _DEFAULT_WINDOW
        # the UA's values are the server's: its rx limits our tx
        self.max_info_tx = min(self._prop[0], rx, _MAX_INFO_LEN)
        self.max_info_rx = min(tx, _MAX_INFO_LEN)
        self.window_tx = min(self._prop[2], wrx, 7)
        self.window_rx = min(wtx, 7)
        self._reset_transfer()
        self.state = _CONNECTED
        self._event(Connected(self.max_info_tx, self.max_info_rx, self.window_tx, self.window_rx))

    def _reject(self, f, reason, detail, out, now_ms):
        # a frame we cannot take: ask again from V(R) if it is our turn
        self._event(Error(reason, detail))
        if f.pf and self._waiting:
            if self._retry >= self.retries:
                self._down("timeout", Error("no_response", self._retry, True))
                return
            self._retry += 1
            self.retransmissions += 1
            out.append(self._rr())
            self._arm(now_ms)

    def _on_i(self, f, out, now_ms):
        if f.ns != self._vr:
            # a repeat of a frame we have, or one after a lost frame
            self._reject(f, "out_of_sequence", f.ns, out, now_ms)
            return
        if self._ack(f.nr) < 0:
            self._reject(f, "bad_nr", f.nr, out, now_ms)
            return
        self._vr = (self._vr + 1) & 7
        self._retry = 0
        if self._unacked:
            # the server answers before taking all of ours: drop them
            self._unacked = []
            self._pending = None
        self._deliver(f)
        if f.pf:
            if f.segmented:
                out.append(self._rr())
                self._waiting = True
                self._arm(now_ms)
            else:
                self._waiting = False
                self._disarm()
        else:
            self._arm(now_ms)  # more frames of this window follow

    def _deliver(self, f):
        if not self.reassemble:
            self._event(Data(f.info, f.segmented))
            if not f.segmented:
                self._expect_reply = False
            return
        if f.segmented or self._rx is not None:
            if self._rx is None:
                self._rx = bytearray()
                self._rx_drop = False
            if not self._rx_drop:
                if len(self._rx) + len(f.info) > self.max_data_len:
                    self._rx_drop = True
                    self._rx = bytearray()
                    self._event(Error("too_long", self.max_data_len))
                else:
                    self._rx += f.info
            if f.segmented:
                return
            data = self._rx
            drop = self._rx_drop
            self._rx = None
            self._expect_reply = False
            if not drop:
                self._event(Data(data))
            return
        self._expect_reply = False
        self._event(Data(f.info))

    def _on_s(self, f, kind, out, now_ms):
        k = self._ack(f.nr)
        if k < 0:
            self._reject(f, "bad_nr", f.nr, out, now_ms)
            return
        if k:
            self._retry = 0
        if not f.pf:
            return
        if kind == _RNR:
            self._arm(now_ms)  # busy: ask again after the timeout
        elif self._unacked:
            # go back to N(R): the server lost what followed
            if self._retry >= self.retries:
                self._down("timeout", Error("no_response", self._retry, True))
                return
            self._retry += 1
            self.retransmissions += 1
            for _, b in self._unacked:
                out.append(b)
            self._arm(now_ms)
        elif self._pending is not None:
            self._send_window(out)
            self._arm(now_ms)
        elif self._expect_reply or self._rx is not None:
            self._arm(now_ms)  # acknowledged, the response is not ready: poll later
        else:
            self._waiting = False
            self._disarm()
