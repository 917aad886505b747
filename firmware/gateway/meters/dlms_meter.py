# DLMS/COSEM meters the gateway polls: HDLC on an RS-485 line or an optical
# probe (optionally opened by IEC 62056-21 mode E), or the IEC 62056-47 TCP
# wrapper. lib/dlms/client.py speaks the protocol; this adapter moves its
# bytes, keeps its time, maps registers onto quantities and persists the
# invocation counters. The association stays open between polls.
import time

import asyncio

from compat import const, ticks_diff, ticks_ms
from dlms import acse, cosem, hdlc
from dlms.acse import AssociationError
from dlms.apdu import AccessError, DlmsError, ServiceException
from dlms.client import CipheringError, Client, HdlcTransport, TransportError
from dlms.obis import Obis
from gateway.meters import MeterError
from gateway.meters.dlms_common import Counters, derive, obis_text, quantity_of, to_quantity

_MAX_INFO = const(512)  # HDLC information field proposed both ways
_HDLC_PDU = const(509)  # _MAX_INFO - LLC: every response APDU fits one I frame
_TCP_PDU = const(1024)
_WAIT_MS = const(50)  # read slice: how often the link's timers are looked at
_IDLE_MS = const(45000)  # reconnect before a meter drops an idle link (60-120 s)
_UNDEFINED = const(4)  # data-access-result object-undefined
_INCONSISTENT = const(9)  # object-class-inconsistent

# Tried in turn until the meter accepts the class: Register, Extended
# register, Demand register (scaler_unit is its attribute 4), Data.
_CLASSES = const((3, 4, 5, 1))
_SCALER_ATTR = const((3, 3, 4, 0))

_DEFAULT_REGISTERS = const(("1-0:1.8.0", "1-0:2.8.0", "1-0:16.7.0", "1-0:1.7.0", "1-0:2.7.0",
                      "1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0", "1-0:31.7.0", "1-0:51.7.0",
                      "1-0:71.7.0", "1-0:14.7.0"))


class _Register:
    def __init__(self, ln):
        self.ln = ln
        self.quantity = quantity_of(ln)
        self.k = 0  # index into _CLASSES while the class is being found
        self.cls = None  # the class the meter accepted
        self.scaler = 0
        self.unit = None
        self.absent = None  # why it is not read (the meter lacks it)
        self.raw = None  # the last value read


def error(e):
    # a lib/dlms exception -> the MeterError the meter's health counts it as
    if isinstance(e, CipheringError):
        if e.reason == "authentication":
            return MeterError("auth", "the meter's answer fails its GCM tag")
        return MeterError("replay" if e.reason == "replay" else "security",
                          str(e) if e.cause is None else str(e.cause))
    if isinstance(e, TransportError):
        if e.reason == "no_response" or e.reason == "timeout" or \
                (e.reason == "disconnected" and e.detail == "timeout"):
            return MeterError("timeout", "no answer from the meter")
        return MeterError("link", str(e))
    if isinstance(e, AssociationError):
        return MeterError("assoc", str(e))
    if isinstance(e, AccessError):
        return MeterError("access", str(e))
    if isinstance(e, ServiceException):
        if getattr(e, "service_error", None) in (5, 6):  # deciphering, invocation counter
            return MeterError("security", str(e))
        return MeterError("service", str(e))
    return MeterError("frame", str(e))  # ApduError, BlockTransferError


def _own_title(cfg):
    t = cfg.get("system_title")
    if t:
        return t
    import machine

    uid = bytes(machine.unique_id())
    return b"PGW" + (b"\x00" * 5 + uid)[-5:]


class Driver:
    def __init__(self, cfg, service, health):
        self.cfg = cfg
        self.name = cfg["name"]
        self.health = health
        self.timeout = cfg["timeout_ms"]
        self.lock = asyncio.Lock()  # one conversation at a time: polls, profile reads
        regs = cfg["registers"] or _DEFAULT_REGISTERS
        self.regs = []
        for code in regs:
            ln = Obis.parse(code).to_bytes()
            if ln != cosem.CLOCK_LN:  # the clock is always read
                self.regs.append(_Register(ln))
        self.explicit = bool(cfg["registers"])
        sec = cfg["security"]
        self.counters = None
        self.sc = None
        if cfg.get("ek") is not None:
            from dlms.security import SecurityContext

            if cfg.get("ak") is None:
                raise MeterError("config", "a ciphered association needs ak as well as ek")
            self.counters = Counters(self.name)
            self.sc = SecurityContext(_own_title(cfg), cfg["ek"], cfg["ak"], self.counters.own_start())
            for title in self.counters.peers:
                self.sc.set_peer_counter(title, self.counters.peers[title])
        mech = {"none": acse.MECH_NONE, "lls": acse.MECH_LLS, "hls-gmac": acse.MECH_HLS_GMAC}[sec]
        self.tcp = None
        self.bus = None
        self.link = None
        if cfg["protocol"] == "dlms-hdlc":
            self.bus = service.serial_line(cfg)
            self.link = hdlc.Link(hdlc.server_address(cfg["server"], cfg["physical"]), cfg["client"],
                                  _MAX_INFO, _MAX_INFO, response_timeout_ms=self.timeout, retries=2,
                                  inactivity_timeout_ms=0, max_frame_len=_MAX_INFO + 24)
            self.t = HdlcTransport(self.link, _HDLC_PDU)
            pdu = _HDLC_PDU
            self.where = "HDLC %d/%d, client %d, on %s (%s)" % (
                cfg["server"], cfg["physical"], cfg["client"],
                cfg.get("bus") or "uart%d" % cfg.get("uart", 0), self.bus.describe())
        else:
            from dlms.wrapper_transport import WrapperTransport
            from gateway.meters.tcp import TcpLink

            self.tcp = TcpLink(cfg["host"], cfg["port"], self.timeout)
            self.t = WrapperTransport(cfg["client"], cfg["server"], _TCP_PDU + 64, self.timeout)
            self._buf = bytearray(512)
            self._mv = memoryview(self._buf)
            pdu = _TCP_PDU
            self.where = "wrapper %s, wPort %d, client %d" % (self.tcp.describe(), cfg["server"], cfg["client"])
        self.client = Client(mech, cfg.get("password"), self.sc, max_pdu=pdu)
        self.resolved = False  # classes and scaler_units found
        self.opened = False
        self.mode_e = None  # the meter's identification after a mode E opening
        self.clock = None  # (DateTime, its UTC seconds or None, board time.time() then)
        self.associations = 0
        self.profile_note = None
        self.profile_task = None
        self._last = None  # ticks_ms of the last exchange
        self._seen = (0, 0)  # line errors, retransmissions already counted

    # ---- the service's interface ----

    def info(self):
        c = self.client
        rows = [("device", self.where)]
        if self.link is not None:
            k = self.link
            rows.append(("hdlc", "max info tx %d rx %d, window %d/%d%s" % (
                k.max_info_tx, k.max_info_rx, k.window_tx, k.window_rx,
                "" if self.mode_e is None else ", mode E: " + self.mode_e)))
        mech = self.cfg["security"]
        if c.associated and self.opened:
            rows.append(("association", "%s%s, conformance 0x%06x, PDU %d (meter) %d (ours)" % (
                mech, ", ciphered" if c.ciphered else "", c.negotiated, c.server_max_pdu, c.max_pdu)))
        else:
            rows.append(("association", "%s, not associated (%d so far)" % (mech, self.associations)))
        if self.sc is not None:
            title = c.server_title
            peer = None if title is None else self.sc.peer_counter(title)
            rows.append(("security", "system title ours %s, meter %s" % (
                self.sc.system_title.hex(), "?" if title is None else bytes(title).hex())))
            rows.append(("counters", "ours %d (reserved to %d), meter %s; %d writes%s" % (
                self.sc.invocation_counter, self.counters.own, "-" if peer is None else peer,
                self.counters.writes, "" if self.counters.error is None else ", write failed: " + self.counters.error)))
        if self.clock is not None:
            dt, utc, board = self.clock
            rows.append(("clock", "%04d-%02d-%02d %02d:%02d:%02d dev %s status 0x%02x, utc %s, meter - board %s s" % (
                dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, dt.deviation, dt.status,
                utc, "?" if utc is None else utc - board)))
        absent = [obis_text(r.ln) for r in self.regs if r.absent]
        if absent:
            rows.append(("absent", " ".join(absent)))
        for r in self.regs:
            if r.raw is not None and (r.quantity is None or r.unit is None):
                rows.append((obis_text(r.ln), self._text(r)))
        if self.profile_note:
            rows.append(("profile", self.profile_note))
        if self.link is not None:
            f = self.link.framer
            rows.append(("line", "%d frames, %d errors, %d retransmissions" % (
                f.frames, f.errors, self.link.retransmissions)))
        return rows

    @staticmethod
    def _text(r):
        if type(r.raw) is int and r.unit is not None:
            return "%s %s" % (cosem.format_scaled(r.raw, r.scaler), cosem.unit_name(r.unit) or r.unit)
        return repr(r.raw)

    async def open(self):
        async with self.lock:
            await self._open()

    async def poll(self):
        async with self.lock:
            if self._last is not None and ticks_diff(ticks_ms(), self._last) > _IDLE_MS:
                await self._close(True)  # the meter may have dropped us: start afresh
                await self._open()
            ok = False
            try:
                if not self.resolved:
                    await self._resolve()
                values = await self._read()
                ok = True
                return values
            except DlmsError as e:
                raise error(e)
            finally:
                if not ok:
                    self.opened = False  # close() then skips the release

    async def close(self):
        async with self.lock:
            await self._close(self.opened)

    # ---- association ----

    async def _open(self):
        self.opened = False
        try:
            if self.tcp is not None:
                await self.tcp.open()
            elif self.cfg.get("mode_e"):
                await self._mode_e()
            await self._do(self.t.open())
            await self._run(self.client.associate())
        except DlmsError as e:
            raise error(e)
        self.associations += 1
        self.opened = True

    async def _close(self, release):
        # Bounded: a release only on a healthy association, one DISC try.
        c = self.client
        try:
            if release and c.associated:
                await self._run(c.release())
        except (DlmsError, MeterError, OSError):
            pass
        self.opened = False
        self._last = None
        if self.link is not None:
            if self.link.state != hdlc.DISCONNECTED:
                retries = self.link.retries
                self.link.retries = 0
                try:
                    await self._do(self.t.close())
                except (DlmsError, MeterError, OSError):
                    pass
                self.link.retries = retries
        else:
            await self.tcp.close()
        if self.counters is not None:
            self.counters.flush()

    async def _mode_e(self):
        # IEC 62056-21 sign-on at 300 baud 7E1, then HDLC at the meter's
        # speed (at most the configured baudrate), 8N1.
        from dlms import iec62056_21 as iec

        bus = self.bus
        cfg = self.cfg
        op = iec.Opening(max_baud=cfg["baudrate"], retries=1)
        async with bus.lock:
            bus.set_line(iec.SIGN_ON_BAUD, iec.SIGN_ON_BITS, iec.SIGN_ON_PARITY, iec.SIGN_ON_STOP)
            line = None  # back to the configured line if the opening fails
            try:
                out = op.start(ticks_ms())
                while True:
                    if out:
                        await bus.send(out)  # returns once the bytes are on the line
                    if op.state == iec.SWITCH:
                        line = (op.baud, 8, "N", 1)  # HDLC after mode E is always 8N1
                        self.mode_e = "%s %s at %d baud" % (op.identification.manufacturer,
                                                            op.identification.ident, op.baud)
                        break
                    if op.state == iec.FAILED:
                        e = op.error
                        raise MeterError("timeout" if e.reason == "no_answer" else "mode_e",
                                         "mode E opening: %s" % e.reason)
                    n = await bus.recv(_WAIT_MS)
                    out = op.receive_data(bus.mv[:n]) if n else b""
                    if not out:
                        out = op.tick(ticks_ms())
            finally:
                if line is None:
                    bus.restore_line()
                else:
                    bus.set_line(line[0], line[1], line[2], line[3])

    # ---- registers ----

    async def _resolve(self):
        # Find each register's class and scaler_unit (once per boot).
        pending = [r for r in self.regs if r.cls is None and r.absent is None]
        while pending:
            ask = []
            for r in pending:
                if _CLASSES[r.k] == 1:
                    r.cls = 1  # Data: no scaler_unit
                else:
                    ask.append(r)
            if not ask:
                break
            got = await self._run(self.client.get_with_list(
                [(r.ln, _CLASSES[r.k], _SCALER_ATTR[r.k]) for r in ask]))
            pending = []
            for r, v in zip(ask, got):
                if isinstance(v, AccessError):
                    if v.result in (_UNDEFINED, _INCONSISTENT) and r.k + 1 < len(_CLASSES):
                        r.k += 1
                        pending.append(r)
                    else:
                        self._absent(r, v.name)
                    continue
                try:
                    r.scaler, r.unit = cosem.scaler_unit(v)
                except cosem.CosemError as e:
                    self._absent(r, str(e))
                    continue
                r.cls = _CLASSES[r.k]
        self.resolved = True

    def _absent(self, r, why):
        r.absent = why
        if self.explicit:  # the default set is a guess: a meter may lack some
            self.health.count("absent", "%s: %s" % (obis_text(r.ln), why))

    async def _read(self):
        live = [r for r in self.regs if r.cls is not None and r.absent is None]
        items = [(r.ln, r.cls, 2) for r in live]
        items.append((cosem.CLOCK_LN, cosem.CLOCK, cosem.CLOCK_TIME))
        got = await self._run(self.client.get_with_list(items))
        values = {}
        read = 0
        for r, v in zip(live, got):
            if isinstance(v, AccessError):
                if v.result == _UNDEFINED or v.result == _INCONSISTENT:
                    self._absent(r, v.name)
                else:
                    self.health.count("access", "%s: %s" % (obis_text(r.ln), v.name))
                continue
            read += 1
            r.raw = v
            if r.quantity is not None and r.unit is not None:
                q = to_quantity(r.quantity, v, r.scaler, r.unit)
                if q is not None:
                    values[r.quantity] = q
        v = got[-1]
        if not isinstance(v, AccessError):
            try:
                dt = cosem.as_date_time(v)
                self.clock = (dt, dt.to_unix(), int(time.time()))
            except cosem.CosemError:
                self.health.count("frame", "clock: %r" % (v,))
        if live and not read:
            raise MeterError("access", "the meter answered none of %d registers" % len(live))
        derive(values)
        return values

    # ---- moving bytes ----

    async def _run(self, conversation):
        # Drive a lib/dlms conversation: each request out, its response in.
        reply = None
        while True:
            try:
                req = conversation.send(reply)
            except StopIteration as e:
                return e.value
            if self.sc is not None and not self.counters.reserve(self.sc.invocation_counter):
                raise MeterError("state", "invocation counter not persisted (%s): not sending"
                                 % self.counters.error)
            reply = await self._do(self.t.send(req))
            if self.sc is not None and self.client.server_title is not None:
                t = bytes(self.client.server_title)
                self.counters.peer(t, self.sc.peer_counter(t))

    async def _do(self, out):
        if self.bus is None:
            return await self._pump(out)
        async with self.bus.lock:
            return await self._pump(out)

    async def _pump(self, out):
        # Write, then feed what arrives (and the clock) to the transport until
        # it has the answer or gives up; the link retransmits and times out.
        t = self.t
        bus = self.bus
        answered = False
        try:
            while True:
                while out:
                    for b in out:
                        if bus is not None:
                            await bus.send(b)
                        else:
                            await self.tcp.send(b)
                    out = t.tick(ticks_ms())  # the response timer starts now
                if t.ready():
                    r = t.response()  # raises TransportError
                    answered = True
                    return r
                if bus is not None:
                    n = await bus.recv(_WAIT_MS)
                    mv = bus.mv
                else:
                    n = await self.tcp.recv(self._mv, _WAIT_MS)
                    mv = self._mv
                out = t.receive_data(mv[:n]) if n else []
                out += t.tick(ticks_ms())
        finally:
            self._last = ticks_ms()
            self._line_health(answered)

    def _line_health(self, answered):
        # Bad frames are counted; retransmissions only when they saved the
        # exchange (otherwise the timeout that follows is the error).
        k = self.link
        if k is None:
            return
        errs, rtx = k.framer.errors, k.retransmissions
        e0, r0 = self._seen
        if errs > e0:
            self.health.count("frame", "%d bad frames on the line" % (errs - e0))
        if rtx > r0 and answered:
            self.health.count("retry", "%d retransmissions" % (rtx - r0))
        self._seen = (errs, rtx)

    # ---- load profile (gateway/meters/dlms_profile.py, loaded when used) ----

    def now(self):
        # the meter's time if it has been read (the profile's time base), else the board's
        if self.clock is not None and self.clock[1] is not None:
            return self.clock[1] + int(time.time()) - self.clock[2]
        return int(time.time())

    def start_profile(self, hours, say):
        # For the console, `meters NAME profile [hours]`: -> the answer line;
        # the rows follow through say().
        from gateway.meters.dlms_profile import start

        return start(self, hours, say)
