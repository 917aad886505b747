# Modbus RTU and TCP meters: lib/modbus sessions over an RS-485 bus or a
# TCP link, registers turned into readings by a lib/meterprofile profile.
# SunSpec devices are discovered once (marker, model chain) and the models
# kept; optional profile blocks a device lacks are skipped quietly.
import asyncio

from compat import const, ticks_diff, ticks_ms
from gateway.meters import MeterError
from modbus import FrameError, ModbusError, ModbusException
from modbus.pdu import read_holding_registers

_RX = const(260)  # one MBAP ADU
# TCP requests in flight at once. The session handles more, but many
# devices (and pymodbus 3.16's server) answer only the first of a burst.
_MAX_PIPELINE = const(1)


def _error(exc):
    # A lib/modbus error as the MeterError its counter is keyed by.
    if isinstance(exc, ModbusException):
        return MeterError("exc%d" % exc.code, str(exc))
    if isinstance(exc, FrameError):
        return MeterError("crc" if exc.reason == "bad_crc" else "frame", str(exc))
    return MeterError("frame", str(exc))


class Driver:
    def __init__(self, cfg, service, health):
        self.unit = cfg["unit"]
        self.timeout = cfg["timeout_ms"]
        self.health = health
        self.profile = service.profile(cfg["profile"])
        if cfg["protocol"] == "modbus-rtu":
            from modbus.rtu import RtuClientSession

            self.bus = service.serial_line(cfg)
            self.link = None
            self.session = RtuClientSession(self.timeout)
            self.where = "unit %d on %s (%s)" % (self.unit, cfg.get("bus") or "uart%d" % cfg["uart"],
                                                 self.bus.describe())
        else:
            from gateway.meters.tcp import TcpLink
            from modbus.tcp import TcpClientSession

            self.bus = None
            self.link = TcpLink(cfg["host"], cfg["port"], self.timeout)
            self.session = TcpClientSession(_MAX_PIPELINE, self.timeout)
            self._buf = bytearray(_RX)
            self._mv = memoryview(self._buf)
            self.where = "unit %d at %s" % (self.unit, self.link.describe())
        self.reads = None  # planned once: profile blocks, or SunSpec models found
        self.requests = None  # per read, its pdu.Requests (built once)
        self.skip = None  # per read: an optional block this device lacks
        self.sunspec = None  # (base, [model ids]) after discovery
        self.models = ()  # SunSpec (id, address, length) after discovery
        self._storage = None  # model 124's registers, read at the first battery setpoint
        self.lock = asyncio.Lock()  # polls and setpoint writes take turns on one TCP session

    def info(self):
        rows = [("device", "%s, profile %s" % (self.where, self.profile.name))]
        if self.sunspec is not None:
            base, models = self.sunspec
            rows.append(("sunspec", "base %d, models %s" % (base, " ".join(str(m) for m in models))))
        if self.skip:
            absent = ["%d@%d" % (r.fc, r.start) for r, s in zip(self.reads, self.skip) if s]
            if absent:
                rows.append(("absent", "optional blocks " + " ".join(absent)))
        if self.bus is not None:
            b = self.bus
            rows.append(("bus", "%d frames, %d bytes out, %d in, %d stale"
                         % (b.frames, b.tx_bytes, b.rx_bytes, b.stale_bytes)))
        return rows

    async def open(self):
        if self.link is not None:
            await self.link.open()
        if self.reads is None:
            models = None
            if self.profile.type == "sunspec":
                models = await self._discover()
            reads = self.profile.reads(models)
            if not reads:
                raise MeterError("sunspec", "the device has none of the models profile %s reads" % self.profile.name)
            self.requests = [r.requests(self.profile.max_registers) for r in reads]
            self.skip = [False] * len(reads)
            self.reads = reads

    async def close(self):
        if self.link is not None:
            await self.link.close()
            self.session.clear()
        else:
            self.session.cancel()

    async def _discover(self):
        from modbus.sunspec import Discovery

        d = Discovery()
        while True:
            nxt = d.next_read()
            if nxt is None:
                break
            res = (await self._exchange([read_holding_registers(nxt[0], nxt[1])]))[0]
            if isinstance(res, ModbusException):
                d.failed(res)  # "not here": the next base, or the end of the chain
            else:
                d.answer(res)
        if d.error is not None:
            raise MeterError("sunspec", str(d.error))
        self.sunspec = (d.base, [m[0] for m in d.models])
        self.models = d.models
        return d.models

    async def poll(self):
        flat = []
        for i in range(len(self.reads)):
            if not self.skip[i]:
                flat.extend(self.requests[i])
        results = await self._exchange(flat)
        out = {}
        k = 0
        for i in range(len(self.reads)):
            if self.skip[i]:
                continue
            read = self.reads[i]
            regs = []
            bad = None
            for _req in self.requests[i]:
                res = results[k]
                k += 1
                if isinstance(res, ModbusException):
                    bad = res
                elif bad is None:
                    regs.extend(res)
            if bad is None:
                out.update(self.profile.decode(read, regs))
            elif not read.optional:
                raise _error(bad)
            elif bad.code in (1, 2):
                self.skip[i] = True  # this variant lacks the block: stop asking
            else:
                self.health.count("exc%d" % bad.code, str(bad))  # busy or failing: counted, not fatal
        return out

    async def _exchange(self, reqs):
        # -> one result per request: a list of registers or a ModbusException.
        # Anything else (timeout, CRC, framing, connection) raises MeterError.
        if self.link is None:
            out = []
            for req in reqs:
                out.append(await self._rtu(req))
            return out
        out = []
        async with self.lock:
            for i in range(0, len(reqs), _MAX_PIPELINE):
                out.extend(await self._tcp(reqs[i:i + _MAX_PIPELINE]))
        return out

    # ---- setpoints (gateway.control) ----

    async def _write(self, req):
        if self.reads is None:
            raise MeterError("init", "not connected yet")
        res = (await self._exchange([req]))[0]
        if isinstance(res, ModbusException):
            raise _error(res)

    def setpoint_max(self, quantity):
        sp = self.profile.setpoints.get(quantity)
        return None if sp is None else sp.max

    async def write(self, quantity, value):
        # A profile setpoint (meterprofile "setpoints"), in the quantity's
        # unit; raises MeterError, or ProfileError for a value it refuses.
        await self._write(self.profile.setpoint(quantity, value))

    async def set_battery(self, battery_w):
        # SunSpec model 124: + charge, - discharge, 0 idle.
        from modbus.sunspec_storage import MODEL, StorageError, setpoint_writes

        if self.reads is None:
            raise MeterError("init", "not connected yet")
        entry = None
        for m in self.models:
            if m[0] == MODEL:
                entry = m
        if entry is None:
            raise MeterError("sunspec", "no storage model 124 on this device")
        if self._storage is None:
            res = (await self._exchange([read_holding_registers(entry[1], entry[2] + 2)]))[0]
            if isinstance(res, ModbusException):
                raise _error(res)
            self._storage = res
        try:
            reqs = setpoint_writes(entry[1], self._storage, battery_w)
        except StorageError as e:
            self._storage = None  # read again next time
            raise MeterError("sunspec", str(e))
        for req in reqs:
            await self._write(req)

    async def _rtu(self, req):
        s = self.session
        bus = self.bus
        async with bus.lock:
            frame = s.request(self.unit, req, ticks_ms())
            crc0 = s.framer.crc_errors
            expect = req.response_length() + 3  # unit, PDU, CRC
            await bus.send(frame)
            start = ticks_ms()
            got = 0
            while True:
                left = self.timeout - ticks_diff(ticks_ms(), start)
                if left <= 0:
                    s.cancel()
                    if got:
                        raise MeterError("crc" if s.framer.crc_errors != crc0 else "timeout",
                                         "no complete answer from unit %d in %d ms (%d bytes)"
                                         % (self.unit, self.timeout, got))
                    raise MeterError("timeout", "no answer from unit %d in %d ms" % (self.unit, self.timeout))
                n = await bus.recv(min(left, bus.gap_ms) if got else left)
                if n:
                    got += n
                    for _unit, res in s.feed(bus.mv[:n]):
                        if isinstance(res, ModbusException):
                            return res
                        if isinstance(res, ModbusError):
                            raise _error(res)
                        return res
                    # Let the rest of the answer arrive rather than wake per byte.
                    rest = (expect - got) * bus.char_us // 1000
                    if rest > 1:
                        await asyncio.sleep_ms(min(rest, bus.gap_ms // 2, left))
                elif got:
                    # Silence after bytes that made no frame: that answer is over
                    # (Modbus over Serial Line 2.5.1.1); a CRC failure is retried.
                    crc = s.framer.crc_errors != crc0
                    s.silence()
                    s.cancel()
                    raise MeterError("crc" if crc else "frame", "%s answer from unit %d (%d bytes)"
                                     % ("bad CRC in the" if crc else "truncated", self.unit, got))

    async def _tcp(self, reqs):
        s = self.session
        link = self.link
        await link.open()
        tids = []
        data = b""
        for req in reqs:
            tid, adu = s.request(self.unit, req, ticks_ms())
            tids.append(tid)
            data += adu
        await link.send(data)  # several transactions in flight: MBAP matches them by id
        results = [None] * len(reqs)
        waiting = len(reqs)
        start = ticks_ms()
        while waiting:
            left = self.timeout - ticks_diff(ticks_ms(), start)
            n = await link.recv(self._mv, left)
            if not n:
                for tid in tids:
                    s.cancel(tid)
                raise MeterError("timeout", "%d of %d answers missing from %s after %d ms"
                                 % (waiting, len(reqs), link.describe(), self.timeout))
            for tid, res in s.feed(self._mv[:n]):
                if tid is None:
                    await link.close()  # the stream is out of step: start afresh
                    raise _error(res)
                if tid in tids:
                    i = tids.index(tid)
                    if isinstance(res, ModbusError) and not isinstance(res, ModbusException):
                        raise _error(res)
                    if results[i] is None:
                        waiting -= 1
                    results[i] = res
        return results
