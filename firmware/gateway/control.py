# The dispatcher loop (docs/safety.md, docs/control.md): every period the
# latest meter data and the targets go through lib/envelope, and its
# Actions come out on the relays, the EV charging current (the board's
# control pilot, or a wallbox's Modbus setpoint) and the battery setpoint
# (a SunSpec inverter's storage model). Targets come from the trading agent,
# overridden by the hub's signed COMMANDs, overridden by a logged-in
# technician; none of them can pass the envelope.
import asyncio
from machine import ADC, PWM, Pin

import envelope
import evse
from compat import const, ticks_ms

_REWRITE_MS = const(60000)  # a device setpoint is written again this often, changed or not
_PILOT_HZ = const(1000)
_STATES = (evse.STATE_A, evse.STATE_B, evse.STATE_C, evse.STATE_D, evse.STATE_E, evse.STATE_F)  # ev_state 1..6
_EV_SETPOINT = const("ev_current_setpoint_ma")
_RELAY_KINDS = const(("battery_relay", "ev_relay"))


class Device:
    # What was last written to one device's setpoint, so a step writes only
    # on a change, after a failure, or every _REWRITE_MS.
    def __init__(self):
        self.value = None
        self.at = 0
        self.writes = 0
        self.errors = 0
        self.last_error = ""

    def due(self, value, now):
        return value != self.value or now - self.at >= _REWRITE_MS


class Control:
    def __init__(self, config, board, meters, mono, log):
        self.board = board
        self.meters = meters
        self.mono = mono
        self.log = log
        c = config["control"]
        self.period_ms = c["period_ms"]
        self.manual_ms = c["manual_s"] * 1000
        self.problem = None
        lim = config.get("limits", {})
        try:
            if lim is None:
                raise envelope.EnvelopeError("config", "the limits section is invalid (see status)")
            self.limits = envelope.Limits(lim)
        except envelope.EnvelopeError as e:
            # No trustworthy limits: the dispatcher never runs, everything
            # stays in the fail-safe boot put it in.
            self.limits = None
            self.problem = str(e)
        self.fuse_limit_ma = self.limits.fuse_limit_ma if self.limits else 0
        self.dispatcher = envelope.Dispatcher(self.limits, mono.ms()) if self.limits else None
        self.grid = self._meter(c["grid_meter"])
        self.battery = self._meter(c["battery_meter"])
        self.ev = self._meter(c["ev_meter"])
        if self.limits is not None and self.grid is None:
            self.problem = "control.grid_meter not set: no live data, the fail-safe holds"
        self.pwm = None
        if self.ev is None and board.has("ev_pilot_pwm"):
            self.pwm = PWM(Pin(board.gpio("ev_pilot_pwm")), freq=_PILOT_HZ, duty_u16=evse.PAUSE_DUTY)
        self.adc = None
        if board.has("ev_pilot_feedback") and board.pins["ev_pilot_feedback"].get("adc"):
            self.adc = ADC(Pin(board.gpio("ev_pilot_feedback")))
        self.agent = envelope.Targets()  # the trading agent's, replaced as it plans
        self.commands = {}  # kind -> Command from the hub, while active
        self.manual = {}  # kind -> (value, until mono ms) from the technician
        self.on_step = None  # called after each step: the trading agent's turn
        self.hub_lost = None  # callable -> True once the hub is unreachable past its timeout
        self.clock_s = None  # callable -> unix s or None (commands' windows)
        self.act = None  # the last Actions
        self.live = None  # the last Live (None: no data)
        self.steps = 0
        self.failsafe_entries = 0
        self.bat_dev = Device()
        self.ev_dev = Device()
        self._plug_wh = None  # the wallbox's energy register when the EV plugged in
        self._duty = evse.PAUSE_DUTY
        self._pilot = None

    def _meter(self, name):
        if not name or self.meters is None:
            return None
        return self.meters.find(name)

    # ---- live data ----

    def _values(self, h):
        # -> (values, age ms) or (None, None)
        if h is None or h.good_ticks is None:
            return None, None
        return h.values, h.age_ms(ticks_ms())

    def read_pilot(self):
        # The pilot's state from the feedback input: a divider maps -12..+12 V
        # (board.json mv_lo, mv_hi) onto the ADC's range.
        spec = self.board.pins["ev_pilot_feedback"]
        lo, hi = spec.get("mv_lo", -12000), spec.get("mv_hi", 12000)
        return evse.state_for_mv(lo + self.adc.read_u16() * (hi - lo) // 65535)

    def read_live(self):
        # -> envelope.Live, or None (no data, or data the envelope refuses)
        lim = self.limits
        g, age = self._values(self.grid)
        if g is None:
            return None
        net = g.get("power_w")
        if net is None and "power_import_w" in g:
            net = g["power_import_w"] - g.get("power_export_w", 0)
        if net is None:
            return None
        phase_ma = []
        for k in range(1, lim.grid_phases + 1):
            ma = g.get("current_l%d_ma" % k)
            if ma is None:
                return None
            # meters give current magnitudes: the sign is the phase's power's, else the net's
            w = g.get("power_l%d_w" % k, net)
            phase_ma.append(-abs(ma) if w < 0 else abs(ma))
        soc = battery_w = 0
        if self.battery is not None:
            b, b_age = self._values(self.battery)
            if b is None:
                return None
            age = max(age, b_age)
            soc = b.get("battery_soc_permille", 0) // 10
            battery_w = b.get("battery_power_w")
            if battery_w is None:
                # a hybrid inverter: what the PV gives and the AC side does not carry
                battery_w = b.get("pv_power_w", 0) - b.get("inverter_power_w", 0)
        ev_ma = session_wh = 0
        pilot = None
        if self.ev is not None:
            e, e_age = self._values(self.ev)
            if e is None:
                return None
            age = max(age, e_age)
            for k in (1, 2, 3):
                ev_ma = max(ev_ma, e.get("current_l%d_ma" % k, 0))
            st = e.get("ev_state")
            pilot = _STATES[st - 1] if st is not None and 1 <= st <= 6 else evse.UNKNOWN
            wh = e.get("energy_import_wh")
            if pilot == evse.STATE_A or wh is None:
                self._plug_wh = None
            elif self._plug_wh is None:
                self._plug_wh = wh
            session_wh = 0 if self._plug_wh is None else max(0, wh - self._plug_wh)
        elif self.adc is not None:
            pilot = self.read_pilot()
        self._pilot = pilot
        try:
            return envelope.Live(phase_ma, net, min(max(soc, 0), 100), battery_w, ev_ma, max(age, 0),
                                 session_wh, pilot)
        except envelope.EnvelopeError as e:
            self.log("control: meter data refused: %s" % e)
            return None

    # ---- targets ----

    def targets(self, now_ms):
        b, e = self.agent.battery_w, self.agent.ev_ma
        now_s = self.clock_s() if self.clock_s is not None else None
        import_w = None
        for kind in list(self.commands):
            cmd = self.commands[kind]
            if now_s is None or not cmd.active(now_s):
                del self.commands[kind]
                continue
            b, e, import_w = self._apply(kind, cmd.value, b, e, import_w)
        for kind in list(self.manual):
            value, until = self.manual[kind]
            if now_ms >= until:
                del self.manual[kind]
                continue
            b, e, import_w = self._apply(kind, value, b, e, import_w)
        lim = self.limits
        lim.fuse_limit_ma = self.fuse_limit_ma
        if import_w is not None:
            # a demand-response cap on import, per phase, below the fuse's
            per_phase = import_w * 1000 // (lim.voltage_v * lim.grid_phases)
            lim.fuse_limit_ma = min(self.fuse_limit_ma, per_phase)
        return envelope.Targets(b, e)

    def _apply(self, kind, value, b, e, import_w):
        if kind == "battery_w" or (kind == "battery_relay" and not value):
            b = value if kind == "battery_w" else 0
        elif kind == "ev_ma" or (kind == "ev_relay" and not value):
            e = value if kind == "ev_ma" else 0
        elif kind == "import_limit_w":
            import_w = value
        return b, e, import_w

    def command(self, cmd):
        # A COMMAND the gate admitted. A relay "1" lifts that relay's hold.
        if cmd.kind in _RELAY_KINDS and cmd.value:
            self.commands.pop(cmd.kind, None)
        else:
            self.commands[cmd.kind] = cmd

    def set_manual(self, kind, value):
        # The technician's setpoint (value None: back to automatic).
        if value is None:
            self.manual.pop(kind, None)
        else:
            self.manual[kind] = (value, self.mono.ms() + self.manual_ms)

    # ---- the loop ----

    async def step(self):
        now = self.mono.ms()
        if self.dispatcher is None:
            return None
        live = self.live = self.read_live()
        lost = bool(self.hub_lost()) if self.hub_lost is not None else False
        was_safe = self.act is not None and self.act.failsafe
        act = self.dispatcher.step(now, live, self.targets(now), lost)
        if act.failsafe and not was_safe:
            self.failsafe_entries += 1
            self.log("control: fail-safe: %s" % act.failsafe)
        elif was_safe and not act.failsafe:
            self.log("control: fail-safe over")
        self.act = act
        self.steps += 1
        # A relay that opens does so after its device is told to stop; one
        # that closes before its device is told to run.
        if act.battery_relay:
            self._relay("relay_battery", True)
        await self._battery(act, now)
        if not act.battery_relay:
            self._relay("relay_battery", False)
        if act.ev_relay:
            self._relay("relay_ev_enable", True)
        await self._ev(act, now)
        if not act.ev_relay:
            self._relay("relay_ev_enable", False)
        return act

    def _relay(self, role, closed):
        if self.board.has(role):
            self.board.set_active(role, closed)

    async def _write(self, dev, value, now, fn, *args):
        if not dev.due(value, now):
            return
        try:
            await fn(*args)
        except Exception as e:  # a device that does not answer: counted, tried again next step
            dev.errors += 1
            dev.last_error = str(e)
            dev.value = None
            return
        dev.value = value
        dev.at = now
        dev.writes += 1

    async def _battery(self, act, now):
        if self.battery is not None and self.battery.driver is not None:
            await self._write(self.bat_dev, act.battery_w, now, self.battery.driver.set_battery, act.battery_w)

    async def _ev(self, act, now):
        if self.pwm is not None:
            if act.ev_duty_u16 != self._duty:
                self.pwm.duty_u16(act.ev_duty_u16)
                self._duty = act.ev_duty_u16
        elif self.ev is not None and self.ev.driver is not None:
            top = self.ev.driver.setpoint_max(_EV_SETPOINT)
            ma = act.ev_ma if top is None else min(act.ev_ma, top)
            await self._write(self.ev_dev, ma, now, self.ev.driver.write, _EV_SETPOINT, ma)

    def request_safe(self):
        if self.dispatcher is not None:
            self.dispatcher.request_safe()

    def clear_safe(self):
        if self.dispatcher is not None:
            self.dispatcher.clear_safe()

    async def run(self):
        if self.dispatcher is None:
            self.log("control: not running: %s" % self.problem)
            return
        while True:
            await self.step()
            if self.on_step is not None:
                self.on_step()
            await asyncio.sleep_ms(self.period_ms)
