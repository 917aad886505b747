"""Modbus devices served by pymodbus 3.16: an SDM630-like meter, a SunSpec
hybrid inverter with battery, and a wallbox, fed by one `Household`.

Several devices share one server, as they share one RS-485 bus (RTU on a
serial or pty path) or one gateway (TCP). Values are recomputed from the
household each time a register block is read (pymodbus's SimDevice
`action` hook); writes to the wallbox's current limit and to the SunSpec
storage controls steer the household's EV and battery.

pymodbus configuration that matters:
- on RTU a unit id nobody has gets no answer (a real bus stays silent);
  pymodbus 3.16 answers it with device-failure, because its SimCore raises
  KeyError where the server expects NoSuchIdException: `_BusCore` raises the
  latter and the server ignores missing devices. Over TCP such a request
  gets exception 0x0B (gateway target failed to respond), as a gateway does.
- fault injection per unit (`ModbusSimulator.faults[unit]`): dropped or
  delayed responses, a corrupted CRC, exception responses.

Register maps (protocol addresses, 0-based):
SDM630 (Eastron, input registers, float32 big-endian, high word first):
  0x00/02/04 V L1-3, 0x06/08/0A A L1-3, 0x0C/0E/10 W L1-3, 0x12/14/16 VA,
  0x18/1A/1C var, 0x1E/20/22 PF, 0x34 total W (negative = export),
  0x38 total VA, 0x3C total var, 0x3E total PF, 0x46 Hz, 0x48 import kWh,
  0x4A export kWh, 0x4C/4E import/export kvarh, 0x156 total kWh;
  holding 0x14 unit id, 0x1C baud code (float32), 0xFC00 serial (u32).
SunSpec (holding, base 40000): 'SunS', model 1 common (66), 103 three-phase
  inverter (50), 120 nameplate (26), 124 storage (24), 160 MPPT with two
  modules (48), end 0xFFFF/0.
Wallbox (modelled on the Heidelberg/Amperfied Energy Control table):
  input 4 layout version, 5 charging state (2/3 A, 4/5 B, 6/7 C),
  6/7/8 A L1-3 (0.1 A), 9 temperature (0.1 degC), 10/11/12 V L1-3,
  13 lock state, 14 power W, 15-16 Wh since power-on, 17-18 Wh total,
  100/101 hardware max/min current (A); holding 257 watchdog ms,
  258 standby, 259 remote lock (1 = free), 261 current limit (0.1 A:
  0 or 60..160), 262 fail-safe current (0.1 A).
"""

import asyncio
import math
import struct
import threading

from host_tools.sim.faults import Faults
from host_tools.sim.household import Clock, Household

SUNSPEC_BASE = 40000
SUNSPEC_END = 0xFFFF


def f32(x):
    """float32 big-endian as two registers, high word first."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", float(x)))
    return [hi, lo]


def u32(x):
    x = int(x) & 0xFFFFFFFF
    return [x >> 16, x & 0xFFFF]


def s16(x):
    return int(round(x)) & 0xFFFF


def u16(x):
    return max(0, min(0xFFFF, int(round(x))))


def text(s, regs):
    """A SunSpec string: ASCII, NUL padded, two characters a register."""
    b = s.encode("ascii")[: 2 * regs].ljust(2 * regs, b"\x00")
    return list(struct.unpack(">%dH" % regs, b))


class Device:
    """One Modbus unit: register images refreshed from the household on read."""

    kind = "device"
    writable_holding = ()

    def __init__(self, unit, household, clock):
        self.unit = unit
        self.household = household
        self.clock = clock
        self.faults = Faults()
        self.holding = {}  # address -> word
        self.input = {}
        self.reads = 0
        self.writes = []  # (address, values) accepted
        self.refresh()

    def sample(self):
        return self.household.sample(self.clock.timestamp())

    def refresh(self):
        """Recompute both register images from the household now."""

    def write(self, address, values):
        """Holding-register write: return an exception code or None to accept."""
        return 2  # ILLEGAL_ADDRESS: nothing is writable unless a device says so

    def ranges(self):
        """{'h': (start, count), 'i': (start, count)}: the register blocks served."""
        out = {}
        for key, image in (("h", self.holding), ("i", self.input)):
            if image:
                lo, hi = min(image), max(image)
                out[key] = (lo, hi - lo + 1)
        return out


class Sdm630(Device):
    """Eastron SDM630-like three-phase meter at the grid connection point."""

    kind = "sdm630"

    def refresh(self):
        s = self.sample()
        ir = {}

        def put(addr, value):
            ir[addr], ir[addr + 1] = f32(value)

        pf = 0.97
        total_va = 0.0
        total_var = 0.0
        for k in range(3):
            p = s.phase_w[k]
            va = abs(p) / pf
            var = math.copysign(math.sqrt(max(va * va - p * p, 0.0)), p)
            total_va += va
            total_var += var
            put(0x00 + 2 * k, s.voltage[k])
            put(0x06 + 2 * k, s.current[k])
            put(0x0C + 2 * k, p)
            put(0x12 + 2 * k, va)
            put(0x18 + 2 * k, var)
            put(0x1E + 2 * k, math.copysign(pf, p) if p else 1.0)
        for addr in range(0x24, 0x34, 2):
            put(addr, 0.0)
        put(0x34, s.grid_w)
        put(0x36, 0.0)
        put(0x38, total_va)
        put(0x3A, 0.0)
        put(0x3C, total_var)
        put(0x3E, math.copysign(pf, s.grid_w) if s.grid_w else 1.0)
        for addr in range(0x40, 0x46, 2):
            put(addr, 0.0)
        put(0x46, s.frequency)
        put(0x48, s.import_wh / 1000.0)
        put(0x4A, s.export_wh / 1000.0)
        put(0x4C, s.import_wh / 1000.0 * 0.08)
        put(0x4E, s.export_wh / 1000.0 * 0.02)
        put(0x156, (s.import_wh + s.export_wh) / 1000.0)
        hr = {}
        hr[0x14], hr[0x15] = f32(self.unit)
        hr[0x1C], hr[0x1D] = f32(2.0)  # baud code 2: 9600
        hr[0xFC00], hr[0xFC01] = u32(19000000 + self.unit)
        # Fill the gaps so the blocks read as one span, like the real meter's zeros.
        for image, (lo, hi) in ((ir, (0x00, 0x157)), (hr, (0x00, 0x1D))):
            for a in range(lo, hi + 1):
                image.setdefault(a, 0)
        self.input, self.holding = ir, hr

    def ranges(self):
        return {"i": (0x00, 0x158), "h": (0x00, 0x1E), "h2": (0xFC00, 2)}


class SunSpecInverter(Device):
    """A hybrid inverter with a battery, described by SunSpec models 1, 103, 120, 124, 160."""

    kind = "sunspec"
    MODELS = ((1, 66), (103, 50), (120, 26), (124, 24), (160, 48))

    def __init__(self, unit, household, clock):
        self.offsets = {}
        addr = SUNSPEC_BASE + 2
        for model, length in self.MODELS:
            self.offsets[model] = addr + 2  # first register after ID and L
            addr += 2 + length
        self.end = addr
        self.storage = {"StorCtl_Mod": 0, "InWRte": 0, "OutWRte": 0, "MinRsvPct": 50,
                        "ChaGriSet": 1, "WChaMax": int(household.battery_kw * 1000)}
        super().__init__(unit, household, clock)
        o = self.offsets[124]
        self.writable_holding = tuple(o + k for k in (0, 3, 5, 10, 11, 12, 13, 14, 15))

    def refresh(self):
        s = self.sample()
        h = self.household
        hr = {SUNSPEC_BASE: 0x5375, SUNSPEC_BASE + 1: 0x6E53}  # "SunS"
        regs = []

        def model(mid, body, length):
            if len(body) != length:
                raise AssertionError("model %d is %d registers, not %d" % (mid, len(body), length))
            regs.extend([mid, length] + body)

        model(1, text("PGW Simulators", 16) + text("PGW-HYB-%dK" % h.inverter_kw, 16)
              + text("", 8) + text("1.0.0", 8) + text("PGWINV%08d" % (h.seed % 10**8), 16)
              + [self.unit, 0x8000], 66)
        ac_w = s.pv_w + s.battery_w  # hybrid: the battery sits on the DC side
        volts = s.voltage
        amps = abs(ac_w) / (sum(volts) or 690.0)
        temp = 300 + int(ac_w / 50)
        state = 4 if s.pv_w > 0 or abs(s.battery_w) > 0 else 2  # MPPT / SLEEPING
        ll = [v * math.sqrt(3) for v in volts]
        model(103, [u16(amps * 300), u16(amps * 100), u16(amps * 100), u16(amps * 100), s16(-2),
                    u16(ll[0] * 10), u16(ll[1] * 10), u16(ll[2] * 10),
                    u16(volts[0] * 10), u16(volts[1] * 10), u16(volts[2] * 10), s16(-1),
                    s16(ac_w), 0, u16(s.frequency * 100), s16(-2),
                    s16(abs(ac_w)), 0, 0, 0, s16(1000 if ac_w >= 0 else -1000), s16(-1)]
              + u32(s.pv_wh) + [0,
                                u16(s.pv_w / 0.96 / 300.0 * 100), s16(-2), u16(3000), s16(-1),
                                s16(s.pv_w / 0.96), 0,
                                s16(temp), s16(temp + 50), 0x8000, 0x8000, s16(-1),
                                state, 0] + [0] * 12, 50)
        model(120, [82, u16(h.inverter_kw * 1000), 0, u16(h.inverter_kw * 1000), 0,
                    u16(h.inverter_kw * 500), u16(h.inverter_kw * 500), s16(-h.inverter_kw * 500),
                    s16(-h.inverter_kw * 500), 0, u16(h.inverter_kw * 1000 / 230 / 3 * 10), s16(-1),
                    s16(-800), s16(-800), s16(800), s16(800), s16(-3),
                    u16(h.battery_kwh * 1000), 0, u16(h.battery_kwh * 1000 / 400 * 10), s16(-1),
                    u16(h.battery_kw * 1000), 0, u16(h.battery_kw * 1000), 0, 0x8000], 26)
        st = self.storage
        if s.soc >= 0.999:
            cha_st = 5  # FULL
        elif s.soc <= 0.051:
            cha_st = 2  # EMPTY
        elif s.battery_w < -1:
            cha_st = 4  # CHARGING
        elif s.battery_w > 1:
            cha_st = 3  # DISCHARGING
        else:
            cha_st = 6  # HOLDING
        model(124, [u16(st["WChaMax"]), 100, 100, st["StorCtl_Mod"], u16(st["WChaMax"]),
                    u16(st["MinRsvPct"] * 10), u16(s.soc * 1000),
                    u16(s.soc * h.battery_kwh * 1000 / 400 * 10), u16((380 + 40 * s.soc) * 10),
                    cha_st, s16(st["OutWRte"]), s16(st["InWRte"]), 0, 0, 0, st["ChaGriSet"],
                    0, 0, 0, s16(-1), s16(-1), s16(-1), s16(-1), s16(-1)], 24)
        pv_dc = s.pv_w / 0.96
        strings = (0.55 * pv_dc, 0.45 * pv_dc)
        body = [s16(-2), s16(-1), 0, 0, 0, 0, 2, 0]
        for k, p in enumerate(strings):
            v = 300.0 if p > 0 else 0.0
            body += ([k + 1] + text("String %d" % (k + 1), 8)
                     + [u16(p / 300.0 * 100) if v else 0, u16(v * 10), u16(p)]
                     + u32(s.pv_wh * (0.55 if k == 0 else 0.45)) + u32(int(s.t) & 0xFFFFFFFF)
                     + [s16(temp), 4 if p > 0 else 2, 0, 0])
        model(160, body, 48)
        regs.extend([SUNSPEC_END, 0])
        for k, word in enumerate(regs):
            hr[SUNSPEC_BASE + 2 + k] = word & 0xFFFF
        self.holding = hr
        self.input = {}

    def write(self, address, values):
        o = self.offsets[124]
        names = {o + 0: "WChaMax", o + 3: "StorCtl_Mod", o + 5: "MinRsvPct", o + 10: "OutWRte",
                 o + 11: "InWRte", o + 15: "ChaGriSet"}
        for k, value in enumerate(values):
            a = address + k
            if a not in self.writable_holding:
                return 2
            name = names.get(a)
            if name in ("OutWRte", "InWRte"):
                value = value - 0x10000 if value & 0x8000 else value
                if not -1000 <= value <= 1000:  # percent with InOutWRte_SF = -1
                    return 3
            if name == "StorCtl_Mod" and value & ~0x3:
                return 3
            if name == "MinRsvPct":
                value = value // 10
            if name:
                self.storage[name] = value
        self._apply_storage()
        return None

    def _apply_storage(self):
        """StorCtl_Mod bit 0 limits charging to InWRte, bit 1 discharging to OutWRte,
        in percent of WChaMax; 0 hands the battery back to self-consumption."""
        st = self.storage
        mode = st["StorCtl_Mod"]
        wmax = st["WChaMax"]
        if mode == 0:
            setpoint = None
        elif mode & 1 and st["InWRte"] > 0:
            setpoint = -st["InWRte"] / 1000.0 * wmax
        elif mode & 2 and st["OutWRte"] > 0:
            setpoint = st["OutWRte"] / 1000.0 * wmax
        elif mode & 1 and st["InWRte"] < 0:
            setpoint = -st["InWRte"] / 1000.0 * wmax
        else:
            setpoint = 0.0
        self.household.set_control("battery_w", setpoint, self.clock.timestamp())

    def ranges(self):
        return {"h": (SUNSPEC_BASE, self.end + 2 - SUNSPEC_BASE)}


class Wallbox(Device):
    """An EV charger with a current limit (Heidelberg Energy Control register layout)."""

    kind = "wallbox"
    writable_holding = (257, 258, 259, 261, 262)

    def __init__(self, unit, household, clock):
        self.settings = {257: 15000, 258: 0, 259: 1, 261: 160, 262: 0}
        self.energy_at_start = None
        super().__init__(unit, household, clock)

    def refresh(self):
        s = self.sample()
        if self.energy_at_start is None:
            self.energy_at_start = s.ev_wh
        phases = self.household.ev_phases
        volts = s.voltage
        amps = [0.0, 0.0, 0.0]
        for k in range(phases):
            amps[k] = s.ev_w / phases / volts[k]
        if not s.ev_plugged:
            state = 3  # A2: no vehicle, charging allowed
        elif s.ev_w > 0:
            state = 7  # C2: charging
        else:
            state = 5  # B2: vehicle connected, not charging
        ir = {4: 0x0108, 5: state}
        for k in range(3):
            ir[6 + k] = u16(amps[k] * 10)
            ir[10 + k] = u16(volts[k])
        ir[9] = u16(250 + s.ev_w / 100)
        ir[13] = 1
        ir[14] = u16(s.ev_w)
        ir[15], ir[16] = u32(s.ev_wh - self.energy_at_start)
        ir[17], ir[18] = u32(s.ev_wh)
        ir[100], ir[101] = 16, 6
        for a in range(19, 100):
            ir.setdefault(a, 0)
        hr = {a: 0 for a in range(257, 263)}
        hr.update(self.settings)
        hr[260] = 0
        self.input, self.holding = ir, hr

    def write(self, address, values):
        for k, value in enumerate(values):
            a = address + k
            if a not in self.writable_holding:
                return 2
            if a in (261, 262) and value and not 60 <= value <= 160:
                return 3  # ILLEGAL_VALUE: 0 or 6..16 A
        for k, value in enumerate(values):
            self.settings[address + k] = value
        if address <= 261 < address + len(values) or address <= 259 < address + len(values):
            self._apply_limit()
        return None

    def _apply_limit(self):
        amps = self.settings[261] / 10.0 if self.settings[259] else 0.0
        limit = amps * 230.0 * self.household.ev_phases
        self.household.set_control("ev_limit_w", limit, self.clock.timestamp())


DEVICE_KINDS = {"sdm630": Sdm630, "sunspec": SunSpecInverter, "wallbox": Wallbox}


def parse_devices(spec):
    """'sdm630:1,sunspec:2,wallbox:3' -> [('sdm630', 1), ...]."""
    out = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        kind, _, unit = item.partition(":")
        if kind not in DEVICE_KINDS:
            raise ValueError("unknown device %r (known: %s)" % (kind, ", ".join(sorted(DEVICE_KINDS))))
        try:
            unit = int(unit)
        except ValueError:
            raise ValueError("device %r needs a unit id, like %s:1" % (item, kind)) from None
        if not 1 <= unit <= 247:
            raise ValueError("unit id %d outside 1..247" % unit)
        out.append((kind, unit))
    units = [u for _k, u in out]
    if len(set(units)) != len(units):
        raise ValueError("two devices share a unit id")
    if not out:
        raise ValueError("no devices")
    return out


class ModbusSimulator:
    """The devices on one bus or gateway, served by pymodbus in a background thread."""

    def __init__(self, devices="sdm630:1,sunspec:2,wallbox:3", household=None, clock=None,
                 seed=1):
        self.clock = clock or Clock()
        self.household = household or Household(seed=seed, start=self.clock.now())
        if isinstance(devices, str):
            devices = parse_devices(devices)
        self.devices = {unit: DEVICE_KINDS[kind](unit, self.household, self.clock)
                        for kind, unit in devices}
        self.faults = {unit: dev.faults for unit, dev in self.devices.items()}
        self.requests = 0
        self.unknown_unit_requests = 0
        self.port = None
        self.transport = None
        self._loop = None
        self._server = None
        self._thread = None
        self._ready = threading.Event()
        self._error = None

    # ---- pymodbus glue ----

    def _simdevices(self):
        from pymodbus.constants import ExcCodes
        from pymodbus.simulator import DataType, SimData, SimDevice

        out = []
        for unit, dev in self.devices.items():
            blocks = {"c": [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                      "d": [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                      "h": [], "i": []}
            for key, (start, count) in dev.ranges().items():
                image = dev.holding if key.startswith("h") else dev.input
                words = [image.get(start + k, 0) for k in range(count)]
                writable = key.startswith("h") and any(start <= a < start + count
                                                       for a in dev.writable_holding)
                blocks[key[0]].append(SimData(start, values=words, datatype=DataType.REGISTERS,
                                              readonly=not writable))
            for key in ("h", "i"):
                if not blocks[key]:
                    blocks[key] = [SimData(0, count=1, datatype=DataType.INVALID)]
            out.append(SimDevice(unit, simdata=(blocks["c"], blocks["d"], blocks["h"], blocks["i"]),
                                 action=self._action_for(dev, ExcCodes)))
        return out

    def _action_for(self, dev, exc_codes):
        async def action(function_code, start_address, address, count, registers, set_values):
            self.requests += 1
            delay = dev.faults.take_delay()
            if delay:
                await asyncio.sleep(delay)
            code = dev.faults.take_exception()
            if code is not None:
                return exc_codes(code)
            holding = function_code in (3, 6, 16, 22, 23)
            if set_values is not None and holding:
                code = dev.write(address, [int(v) & 0xFFFF for v in set_values])
                if code is not None:
                    return exc_codes(code)
                dev.writes.append((address, list(set_values)))
            dev.refresh()
            dev.reads += 1
            image = dev.holding if holding else dev.input
            if function_code in (1, 2, 5, 15):
                return None
            first = max(0, address - start_address)
            for k in range(first, min(len(registers), first + count)):
                word = image.get(start_address + k)
                if word is not None:
                    registers[k] = word
            return None

        return action

    def _trace_packet(self, rtu):
        def trace(sending, packet):
            if not sending or not packet:
                return packet
            unit = packet[0] if rtu else (packet[6] if len(packet) > 6 else None)
            faults = self.faults.get(unit)
            if faults is None:
                return packet
            out = faults.apply(packet)
            return b"" if out is None else out

        return trace

    def _install_bus_core(self, server, simdevices):
        from pymodbus.exceptions import NoSuchIdException
        from pymodbus.simulator.simcore import SimCore

        sim = self

        class _BusCore(SimCore):
            """SimCore that says NoSuchIdException for units nobody has."""

            def _check(self, device_id):
                if device_id not in self.devices:
                    sim.unknown_unit_requests += 1
                    raise NoSuchIdException("no unit %d on this bus" % device_id)

            async def async_getValues(self, device_id, func_code, address, count=1):
                self._check(device_id)
                return await super().async_getValues(device_id, func_code, address, count)

            async def async_setValues(self, device_id, func_code, address, values):
                self._check(device_id)
                return await super().async_setValues(device_id, func_code, address, values)

        server.context = _BusCore(simdevices)

    # ---- running ----

    def start_serial(self, path, baudrate=9600):
        """Serve RTU on a serial device or pty path (e.g. a virtual board's `<link>.rs485`)."""
        from pymodbus.server import ModbusSerialServer

        def make():
            devs = self._simdevices()
            server = ModbusSerialServer(devs, port=path, baudrate=baudrate,
                                        ignore_missing_devices=True,
                                        trace_packet=self._trace_packet(True),
                                        reconnect_delay=0.5)
            self._install_bus_core(server, devs)
            return server

        self.transport = "rtu:%s" % path
        return self._start(make)

    def start_tcp(self, port=502, host="127.0.0.1"):
        """Serve Modbus TCP; port 0 picks a free port (see `.port`)."""
        from pymodbus.server import ModbusTcpServer

        def make():
            devs = self._simdevices()
            server = ModbusTcpServer(devs, address=(host, port), ignore_missing_devices=False,
                                     trace_packet=self._trace_packet(False))
            self._install_bus_core(server, devs)
            return server

        self.transport = "tcp:%s:%d" % (host, port)
        self.port = port
        return self._start(make)

    def _start(self, make):
        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def main():
                self._server = make()
                await self._server.serve_forever(background=True)
                sockets = getattr(self._server.transport, "sockets", None)
                if sockets:
                    self.port = sockets[0].getsockname()[1]
                    self.transport = "tcp:%s:%d" % sockets[0].getsockname()[:2]
                self._ready.set()
                await self._server.serving

            try:
                loop.run_until_complete(main())
            except Exception as e:  # reported to the starting thread
                self._error = e
                self._ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="modbus-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("modbus simulator did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self):
        if self._loop is not None and self._server is not None and not self._loop.is_closed():
            fut = asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop)
            try:
                fut.result(5)
            except (TimeoutError, RuntimeError):
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def describe(self):
        return ", ".join("%s at unit %d" % (d.kind, u) for u, d in sorted(self.devices.items()))
