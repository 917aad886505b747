# A DLMS push listener (protocol dlms-push): a customer interface or HAN port
# that sends Data-Notifications on a UART of its own, in M-Bus long frames,
# HDLC UI frames or bare APDUs (framing "raw": an APDU per burst). Ciphered
# frames are opened with the configured keys, the GCM tag always checked
# (ek without ak: the meter sends no tag, and only then are untagged frames
# taken); bad frames are counted by kind and skipped.
from compat import const, ticks_diff, ticks_ms
from dlms import push, security
from gateway.meters.dlms_common import Counters, derive, quantity_of, to_quantity, triples

_MAX_APDU = const(2048)
_GAP_CHARS = const(300)  # a pause this long (in characters, >= 0.5 s) ends a burst

_TRANSPORT = {"mbus": "mbus", "hdlc": "hdlc", "raw": "apdu"}


def _kind(err):
    # a PushReceiver error object -> the health counter it goes to
    if isinstance(err, security.InvocationCounterError):
        return "replay"
    if isinstance(err, security.AuthenticationError):
        return "auth"
    if isinstance(err, security.SecurityError):
        return "security"
    reason = getattr(err, "reason", None)
    if reason in ("bad_fcs", "bad_hcs", "bad_checksum"):
        return "crc"
    return "frame"


class Driver:
    def __init__(self, cfg, service, health):
        self.cfg = cfg
        self.health = health
        self.bus = service.serial_line(cfg)
        self.title = cfg.get("system_title")  # the meter's, if configured
        self.sc = None
        self.counters = None
        if cfg.get("ek") is not None:
            ak = cfg.get("ak")
            self.sc = security.SecurityContext(None, cfg["ek"], ak, 0, ak is None)
            self.counters = Counters(cfg["name"])
            for t in self.counters.peers:
                self.sc.set_peer_counter(t, self.counters.peers[t])
        self.framing = cfg["framing"]
        self.rx = push.PushReceiver(self.sc, _TRANSPORT[self.framing], _MAX_APDU)
        self._raw = bytearray() if self.framing == "raw" else None
        self._raw_over = False
        self.gap_ms = max(500, _GAP_CHARS * self.bus.char_us // 1000)
        self.frames = 0  # notifications taken
        self.skipped = 0  # good notifications with nothing we can map
        self.unmapped = 0  # values of the last notification not mapped
        self.last = None  # (meter date-time octets, invocation counter, security control)
        self._silent = False

    def info(self):
        rows = [("device", "push on %s (%s), %s framing, %s" % (
            self.cfg.get("bus") or "uart%d" % self.cfg["uart"], self.bus.describe(), self.framing,
            "plain" if self.sc is None else ("ciphered, tag checked" if self.sc.ak is not None
                                             else "ciphered, no tag (ak not set)")))]
        rows.append(("frames", "%d taken, %d with nothing mapped, %d errors; last had %d values unmapped"
                     % (self.frames, self.skipped, self.rx.errors, self.unmapped)))
        if self.last is not None:
            dt, ic, sc = self.last
            rows.append(("last push", "%s, IC %s, SC %s" % (
                "-" if dt is None else _when(dt), "-" if ic is None else ic,
                "-" if sc is None else "0x%02x" % sc)))
        if self.counters is not None:
            rows.append(("counters", " ".join("%s:%d" % (t.hex(), self.counters.peers[t])
                                              for t in self.counters.peers) or "none yet"))
        return rows

    async def run(self, on_reading):
        bus = self.bus
        period = self.cfg["period_s"] * 1000
        heard = ticks_ms()
        busy = False  # bytes arrived since the last gap
        while True:
            n = await bus.recv(self.gap_ms)
            now = ticks_ms()
            if n:
                heard = now
                busy = True
                self._silent = False
                self._take(self._feed(bus.mv[:n]), on_reading)
                continue
            if busy:
                busy = False
                self._take(self._gap(), on_reading)
            if not self._silent and ticks_diff(now, heard) > 3 * period:
                self._silent = True  # once per silent spell
                self.health.count("timeout", "no push for %d s" % (ticks_diff(now, heard) // 1000))

    async def close(self):
        if self.counters is not None:
            self.counters.flush()

    def _feed(self, data):
        if self._raw is None:
            return self.rx.feed(data)
        if len(self._raw) + len(data) > _MAX_APDU:
            self._raw_over = True
            self._raw = bytearray()
        elif not self._raw_over:
            self._raw.extend(data)
        return []

    def _gap(self):
        # a burst is over: a raw APDU is complete, partial frames are dropped
        if self._raw is None:
            return self.rx.flush()
        data = self._raw
        over = self._raw_over
        self._raw = bytearray()
        self._raw_over = False
        if over:
            return [push.PushError("oversized")]
        return self.rx.feed_apdu(bytes(data)) if data else []

    def _take(self, items, on_reading):
        for it in items:
            if not isinstance(it, push.DataNotification):
                self.health.count(_kind(it), "%s: %s" % (type(it).__name__, it))
                continue
            if self.title is not None and it.system_title is not None and it.system_title != self.title:
                self.health.count("security", "system title %s is not the meter's" % it.system_title.hex())
                continue
            values = self.values(it.body)
            self.last = (it.date_time, it.invocation_counter, it.security_control)
            if self.counters is not None and it.system_title is not None:
                self.counters.peer(it.system_title, it.invocation_counter)
            if not values:
                self.skipped += 1
                self.health.count("layout", "no value with OBIS code, scaler and unit in the body")
                continue
            self.frames += 1
            on_reading(values)

    def values(self, body):
        out = {}
        unmapped = 0
        for ln, v, scaler, unit in triples(body, []):
            q = quantity_of(ln)
            x = None if q is None else to_quantity(q, v, scaler, unit)
            if x is None:
                unmapped += 1
            else:
                out[q] = x
        self.unmapped = unmapped
        derive(out)
        return out


def _when(dt):
    # the 12 date-time octets of the notification -> local wall-clock text
    return "%04d-%02d-%02d %02d:%02d:%02d" % ((dt[0] << 8) | dt[1], dt[2], dt[3], dt[5], dt[6], dt[7])
