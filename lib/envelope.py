# The local safety envelope: what the battery and the EV charger may do now.
#
# Remote COMMANDs and the trading agent only propose targets (Targets);
# Dispatcher.step() decides, from the latest meter data (Live) and the
# site's limits (Limits), the battery setpoint, the EV current and the two
# relays. Nothing here can be overridden remotely: a remote may ask for the
# fail-safe (request_safe), never out of a limit. No I/O: the firmware
# adapters apply the Actions (setpoints before a relay opens, after one
# closes). All values are ints: W, mA, %, ms, Wh. docs/safety.md has the
# guarantees, the order of the limits and a worked example.
#
# Signs: + is import from the grid, battery + is charging, - discharging.
from compat import const

import evse
from relay import RelayGuard

_EV_DRAWING_MA = const(1000)  # above a wallbox's standby, below any charging current
_BATTERY_RUNNING_W = const(100)  # above an idle inverter's reading
_DEPARTURE_SLACK_MS = const(900000)  # start the must-charge 15 min early
_LIVE_MAX = const(1000000)  # |W|, |mA| accepted in Live and Targets

# Why a value was limited (Actions.*_reason), or why the fail-safe holds.
_INVERTER = const("inverter")  # battery_max_w
_SOC_MIN = const("soc_min")
_SOC_MAX = const("soc_max")
_FUSE = const("fuse")  # main fuse headroom on the worst phase
_EXPORT_CAP = const("export_cap")
_BATTERY_TO_EV = const("battery_to_ev")  # discharge limited to the household's net load
_CIRCUIT = const("circuit")  # ev_max_a
_BELOW_MIN = const("below_min")  # under 6 A: paused
_DEPARTURE = const("departure")  # raised to the circuit max to be charged by departure
_NO_VEHICLE = const("no_vehicle")  # pilot state A
_NOT_VENTILATED = const("ventilation")  # pilot state D: this site has no ventilation
_PILOT_FAULT = const("pilot_fault")  # pilot state E, F or unknown
_RELAY = const("relay")  # its relay is not closed (see the relay's reason)
_UNDER_LOAD = const("under_load")  # relay kept closed until the device stops drawing
_FAILSAFE = const("failsafe")
_NO_DATA = const("no_data")  # fail-safe: no meter data
_STALE = const("stale")  # fail-safe: meter data older than stale_ms
_HUB_LOST = const("hub_lost")  # fail-safe: hub unreachable past its timeout
_REQUESTED = const("requested")  # fail-safe: request_safe()
_CLICK = const("click_test")  # a relay switched by click() in a requested hold

# (name, default, lo, hi); bool fields take True/False, hi None: no top.
_SCHEMA = (
    ("voltage_v", 230, 100, 260),  # nominal phase voltage, to turn W into A
    ("grid_phases", 3, 1, 3),  # 1 or 3
    ("fuse_a", 35, 6, 200),  # main fuse per phase
    ("fuse_margin_ma", 3000, 0, 100000),  # kept free below the fuse
    ("export_cap_w", 0, 0, 100000),  # 0: zero export by the battery
    ("ev_max_a", 16, 6, 32),  # EV circuit (the contactor is rated 32 A)
    ("ev_phases", 3, 1, 3),
    ("ev_phase", 1, 1, 3),  # the line of a single-phase EV
    ("battery_max_w", 3000, 0, 50000),  # inverter, each direction; 0: no battery
    ("battery_phases", 3, 1, 3),
    ("battery_phase", 1, 1, 3),  # the line of a single-phase inverter
    ("soc_min_pct", 10, 0, 100),
    ("soc_max_pct", 95, 0, 100),
    ("ev_departure_ms", 0, 0, None),  # monotonic ms; 0: none
    ("ev_target_wh", 0, 0, 200000),  # energy wanted by departure; 0: none
    ("allow_battery_to_ev", False, None, None),
    ("stale_ms", 5000, 500, 600000),
    ("failsafe_open_battery", True, None, None),
    ("failsafe_open_ev", True, None, None),
    ("relay_min_on_ms", 60000, 0, 3600000),
    ("relay_min_off_ms", 60000, 0, 3600000),
    ("relay_max_switches", 10, 1, 100),
    ("relay_window_ms", 3600000, 1, 86400000),
)


class EnvelopeError(ValueError):
    # reason: "config" (.field names the field), "live", "targets", "time",
    # "arg"
    def __init__(self, reason, message, field=None):
        super().__init__("%s: %s" % (reason, message))
        self.reason = reason
        self.field = field


def _check_int(value, name, lo, hi, reason, field=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise EnvelopeError(reason, "%s must be an int, got %r" % (name, value), field)
    if value < lo or (hi is not None and value > hi):
        raise EnvelopeError(reason, "%s must be %d..%s, got %d" % (
            name, lo, "" if hi is None else hi, value), field)


def running(live):
    # Which device still draws by the live data: "ev", "battery", or None
    # (both idle, or no data). The relay click test waits for None.
    if live is None:
        return None
    if live.ev_ma >= _EV_DRAWING_MA:
        return "ev"
    if abs(live.battery_w) >= _BATTERY_RUNNING_W:
        return "battery"
    return None


def _ceil_div(a, b):
    return -(-a // b)


class Limits:
    # The site's limits, from the "envelope" part of the device config (a
    # dict; absent fields take their defaults). Raises EnvelopeError
    # "config" for an unknown field or a value out of range: a safety limit
    # is never half-applied.
    def __init__(self, config=None):
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise EnvelopeError("config", "limits must be a dict")
        names = [f[0] for f in _SCHEMA]
        for key in sorted(config):
            if key not in names:
                raise EnvelopeError("config", "unknown field %r" % (key,), key)
        for name, default, lo, hi in _SCHEMA:
            value = config.get(name, default)
            if lo is None:
                if value is not True and value is not False:
                    raise EnvelopeError("config", "%s must be true or false" % name, name)
            else:
                _check_int(value, name, lo, hi, "config", name)
            setattr(self, name, value)
        for name in ("grid_phases", "ev_phases", "battery_phases"):
            value = getattr(self, name)
            if value not in (1, 3) or value > self.grid_phases:
                raise EnvelopeError("config", "%s must be 1 or 3 and at most grid_phases"
                                    % name, name)
        for name in ("ev_phase", "battery_phase"):
            if getattr(self, name) > self.grid_phases:
                raise EnvelopeError("config", "%s must be a line of the grid" % name, name)
        if self.fuse_margin_ma >= self.fuse_a * 1000:
            raise EnvelopeError("config", "fuse_margin_ma leaves no current", "fuse_margin_ma")
        if self.soc_min_pct >= self.soc_max_pct:
            raise EnvelopeError("config", "soc_min_pct must be below soc_max_pct", "soc_min_pct")
        self.fuse_limit_ma = self.fuse_a * 1000 - self.fuse_margin_ma
        self.ev_max_ma = self.ev_max_a * 1000
        self.ev_lines = _lines(self.ev_phases, self.ev_phase)
        self.battery_lines = _lines(self.battery_phases, self.battery_phase)


def _lines(phases, line):
    # Phase indexes (0-based) a device draws on.
    return (0, 1, 2) if phases == 3 else (line - 1,)


class Live:
    # The latest meter data. phase_ma: current per phase at the grid
    # connection, signed (+ import), one per grid phase. net_w: net power
    # (+ import). battery_w: measured (+ charging). ev_ma: measured EV
    # current per phase. age_ms: how old the reading is. ev_session_wh:
    # energy the EV took this session. pilot: evse state or None (no sense).
    # Raises EnvelopeError "live" for impossible values: the adapter then
    # passes None, which is the fail-safe "no_data".
    def __init__(self, phase_ma, net_w, soc_pct, battery_w, ev_ma, age_ms,
                 ev_session_wh=0, pilot=None):
        if not isinstance(phase_ma, (tuple, list)) or not 1 <= len(phase_ma) <= 3:
            raise EnvelopeError("live", "phase_ma must be a tuple of 1 to 3 currents")
        for ma in phase_ma:
            _check_int(ma, "phase_ma", -_LIVE_MAX, _LIVE_MAX, "live")
        _check_int(net_w, "net_w", -_LIVE_MAX, _LIVE_MAX, "live")
        _check_int(soc_pct, "soc_pct", 0, 100, "live")
        _check_int(battery_w, "battery_w", -_LIVE_MAX, _LIVE_MAX, "live")
        _check_int(ev_ma, "ev_ma", 0, _LIVE_MAX, "live")
        _check_int(age_ms, "age_ms", 0, None, "live")
        _check_int(ev_session_wh, "ev_session_wh", 0, 10000000, "live")
        if pilot is not None and pilot not in (evse.STATE_A, evse.STATE_B, evse.STATE_C,
                                               evse.STATE_D, evse.STATE_E, evse.STATE_F,
                                               evse.UNKNOWN):
            raise EnvelopeError("live", "pilot must be an evse state or None, got %r" % (pilot,))
        self.phase_ma = tuple(phase_ma)
        self.net_w = net_w
        self.soc_pct = soc_pct
        self.battery_w = battery_w
        self.ev_ma = ev_ma
        self.age_ms = age_ms
        self.ev_session_wh = ev_session_wh
        self.pilot = pilot


class Targets:
    # What the trading agent or the hub asks for; None: nothing (idle, paused).
    def __init__(self, battery_w=None, ev_ma=None):
        if battery_w is not None:
            _check_int(battery_w, "battery_w", -_LIVE_MAX, _LIVE_MAX, "targets")
        if ev_ma is not None:
            _check_int(ev_ma, "ev_ma", 0, _LIVE_MAX, "targets")
        self.battery_w = battery_w
        self.ev_ma = ev_ma


class Actions:
    # What step() decided. A *_reason is None when the target was granted
    # as asked, else why it was limited (the last limit that cut it, in the
    # order of docs/safety.md). failsafe: None, or why everything is idle.
    def __init__(self):
        self.battery_w = 0
        self.battery_reason = None
        self.ev_ma = 0
        self.ev_duty_u16 = evse.PAUSE_DUTY
        self.ev_reason = None
        self.battery_relay = False
        self.battery_relay_reason = None  # the RelayGuard's reason
        self.ev_relay = False
        self.ev_relay_reason = None
        self.failsafe = None
        self.headroom_ma = 0  # import headroom of the worst phase, without EV and battery
        self.overload = False  # the household alone is above the fuse limit

    def __repr__(self):
        return "Actions(battery %d W %s, ev %d mA %s, relays %s/%s %s/%s, failsafe %s)" % (
            self.battery_w, self.battery_reason, self.ev_ma, self.ev_reason,
            self.battery_relay, self.ev_relay, self.battery_relay_reason,
            self.ev_relay_reason, self.failsafe)


class Dispatcher:
    def __init__(self, limits, start_ms=0):
        if not isinstance(limits, Limits):
            raise EnvelopeError("arg", "limits must be a Limits")
        _check_int(start_ms, "start_ms", 0, None, "time")
        self.limits = limits
        self.battery_relay = self._guard(start_ms)
        self.ev_relay = self._guard(start_ms)
        self._last_ms = start_ms
        self._safe_request = None
        self._click = None  # (relay name, closed) while a click test runs

    def _guard(self, start_ms):
        lim = self.limits
        return RelayGuard(lim.relay_min_on_ms, lim.relay_min_off_ms, lim.relay_max_switches,
                          lim.relay_window_ms, start_ms)

    def request_safe(self, reason=_REQUESTED):
        # Hold the fail-safe from the next step until clear_safe().
        if not isinstance(reason, str) or not reason:
            raise EnvelopeError("arg", "reason must be a non-empty str")
        self._safe_request = reason

    def clear_safe(self):
        self._safe_request = None
        self._click = None

    def held(self):
        # Why request_safe() holds the fail-safe, or None.
        return self._safe_request

    def click(self, relay=None, closed=False):
        # The technician's relay click test, only inside a requested hold
        # (setpoints stay 0): relay "battery" or "ev" is asked closed or
        # open through its guard, so its dwell and rate still apply. None
        # ends the test; the hold's next step opens and latches it again.
        if relay is None:
            self._click = None
            return
        if relay != "battery" and relay != "ev":
            raise EnvelopeError("arg", "relay must be battery or ev, got %r" % (relay,))
        if closed is not True and closed is not False:
            raise EnvelopeError("arg", "closed must be True or False")
        if self._safe_request is None:
            raise EnvelopeError("arg", "a click test needs request_safe() first")
        self._click = (relay, closed)

    def set_departure(self, departure_ms, target_wh):
        # A new EV session's departure (monotonic ms, 0: none) and energy (Wh).
        _check_int(departure_ms, "ev_departure_ms", 0, None, "config", "ev_departure_ms")
        _check_int(target_wh, "ev_target_wh", 0, 200000, "config", "ev_target_wh")
        self.limits.ev_departure_ms = departure_ms
        self.limits.ev_target_wh = target_wh

    def step(self, now_ms, live, targets=None, hub_lost=False):
        # -> Actions. live: Live or None; targets: Targets or None; hub_lost:
        # the caller's flag, True once the hub has been unreachable past its
        # timeout.
        _check_int(now_ms, "now_ms", self._last_ms, None, "time")
        self._last_ms = now_ms
        if live is not None and not isinstance(live, Live):
            raise EnvelopeError("live", "live must be a Live or None")
        if targets is None:
            targets = Targets()
        elif not isinstance(targets, Targets):
            raise EnvelopeError("targets", "targets must be a Targets or None")
        if hub_lost is not True and hub_lost is not False:
            raise EnvelopeError("arg", "hub_lost must be True or False")
        lim = self.limits
        if live is not None and len(live.phase_ma) != lim.grid_phases:
            raise EnvelopeError("live", "%d phase currents for a %d-phase grid" % (
                len(live.phase_ma), lim.grid_phases))
        why = self._safe_request
        if why is None:
            if live is None:
                why = _NO_DATA
            elif live.age_ms > lim.stale_ms:
                why = _STALE
            elif hub_lost:
                why = _HUB_LOST
        if why is not None:
            return self._failsafe(now_ms, why)
        self.battery_relay.release()
        self.ev_relay.release()
        return self._dispatch(now_ms, live, targets)

    def _failsafe(self, now_ms, why):
        lim = self.limits
        act = Actions()
        act.failsafe = why
        act.battery_reason = act.ev_reason = _FAILSAFE
        act.battery_relay_reason = self._hold(self.battery_relay, "battery", lim.failsafe_open_battery,
                                              now_ms)
        act.ev_relay_reason = self._hold(self.ev_relay, "ev", lim.failsafe_open_ev, now_ms)
        act.battery_relay = self.battery_relay.closed
        act.ev_relay = self.ev_relay.closed
        return act

    def _hold(self, guard, name, opens, now_ms):
        # One relay in the fail-safe -> its reason. A click test asks
        # through the guard; otherwise it opens at once, unless the config
        # keeps it as it is (its setpoint is 0 either way).
        click = self._click
        if click is not None and click[0] == name:
            guard.release()
            guard.request(click[1], now_ms)
            return guard.reason or _CLICK
        if opens:
            guard.force_safe(now_ms)
            return _FAILSAFE
        return None

    def _dispatch(self, now_ms, live, targets):
        lim = self.limits
        act = Actions()
        volts = lim.voltage_v
        limit = lim.fuse_limit_ma
        n_bat = len(lim.battery_lines)
        n_ev = len(lim.ev_lines)

        # What each phase carries without our two devices, from what they
        # draw now.
        bat_ma_now = live.battery_w * 1000 // (volts * n_bat)
        base = list(live.phase_ma)
        for p in lim.ev_lines:
            base[p] -= live.ev_ma
        for p in lim.battery_lines:
            base[p] -= bat_ma_now
        worst = max(base)
        act.headroom_ma = limit - worst
        act.overload = worst > limit
        ev_w_now = live.ev_ma * volts * n_ev // 1000
        base_net_w = live.net_w - ev_w_now - live.battery_w  # household net of PV

        # 1. Battery charging: inverter, SoC max, then the fuse with the EV at
        # 0 (the EV gives way first, so it is limited against what is left).
        want_b = targets.battery_w or 0
        b, b_why = 0, None
        charge_ma = 0
        if want_b > 0:
            b, b_why = _cap(want_b, None, lim.battery_max_w, _INVERTER)
            if live.soc_pct >= lim.soc_max_pct:
                b, b_why = 0, _SOC_MAX
            room = min([limit - base[p] for p in lim.battery_lines])
            b, b_why = _cap(b, b_why, max(0, room) * volts * n_bat // 1000, _FUSE)
            charge_ma = _ceil_div(b * 1000, volts * n_bat)

        # 2. EV: pilot state, circuit, fuse headroom left by the battery,
        # 6 A minimum, then its relay.
        e = targets.ev_ma or 0
        e_why = None
        if self._departure_due(now_ms, live) and e < lim.ev_max_ma:
            e, e_why = lim.ev_max_ma, _DEPARTURE
        if e and live.pilot is not None and live.pilot != evse.STATE_B and \
                live.pilot != evse.STATE_C:
            e_why = _NO_VEHICLE if live.pilot == evse.STATE_A else \
                _NOT_VENTILATED if live.pilot == evse.STATE_D else _PILOT_FAULT
            e = 0
        e, e_why = _cap(e, e_why, lim.ev_max_ma, _CIRCUIT)
        room = None
        for p in lim.ev_lines:
            r = limit - base[p] - (charge_ma if p in lim.battery_lines else 0)
            room = r if room is None or r < room else room
        e, e_why = _cap(e, e_why, max(0, room), _FUSE)
        if 0 < e < evse.MIN_MA:
            e = 0
            e_why = e_why or _BELOW_MIN
        # A contactor is not opened under load on request: the pilot pauses
        # the EV first, the relay opens once it has stopped drawing.
        under_load = e == 0 and self.ev_relay.closed and live.ev_ma >= _EV_DRAWING_MA
        act.ev_relay = self.ev_relay.request(e > 0 or under_load, now_ms)
        act.ev_relay_reason = _UNDER_LOAD if under_load else self.ev_relay.reason
        if e and not act.ev_relay:
            e, e_why = 0, _RELAY
        act.ev_ma = e
        act.ev_reason = e_why
        act.ev_duty_u16 = evse.duty_for_ma(e, lim.ev_max_ma) if e else evse.PAUSE_DUTY

        # 3. Battery discharging: inverter, SoC min, fuse in the export
        # direction, export cap, and not into the EV unless allowed.
        if want_b < 0:
            d, b_why = _cap(-want_b, None, lim.battery_max_w, _INVERTER)
            if live.soc_pct <= lim.soc_min_pct:
                d, b_why = 0, _SOC_MIN
            room = min([limit + base[p] for p in lim.battery_lines])
            d, b_why = _cap(d, b_why, max(0, room) * volts * n_bat // 1000, _FUSE)
            ev_charging = e > 0 or live.ev_ma >= _EV_DRAWING_MA
            cap_w = lim.export_cap_w + base_net_w
            if lim.allow_battery_to_ev and e > 0:
                # Count only what the EV both draws now and is allowed next.
                cap_w += min(ev_w_now, e * volts * n_ev // 1000)
            d, b_why = _cap(d, b_why, max(0, cap_w), _EXPORT_CAP)
            if ev_charging and not lim.allow_battery_to_ev:
                d, b_why = _cap(d, b_why, max(0, base_net_w), _BATTERY_TO_EV)
            b = -d

        # 4. The battery relay: closed while the battery is to run, and
        # until the inverter has stopped.
        under_load = b == 0 and self.battery_relay.closed and \
            abs(live.battery_w) >= _BATTERY_RUNNING_W
        act.battery_relay = self.battery_relay.request(b != 0 or under_load, now_ms)
        act.battery_relay_reason = _UNDER_LOAD if under_load else self.battery_relay.reason
        if b and not act.battery_relay:
            b, b_why = 0, _RELAY
        act.battery_w = b
        act.battery_reason = b_why
        return act

    def _departure_due(self, now_ms, live):
        # True once charging at the circuit's full current (plus a slack)
        # would only just deliver ev_target_wh by ev_departure_ms.
        lim = self.limits
        if not lim.ev_target_wh or not lim.ev_departure_ms or now_ms >= lim.ev_departure_ms:
            return False
        remaining_wh = lim.ev_target_wh - live.ev_session_wh
        if remaining_wh <= 0:
            return False
        full_w = lim.ev_max_ma * lim.voltage_v * len(lim.ev_lines) // 1000
        need_s = remaining_wh * 3600 // full_w + 1
        return now_ms + need_s * 1000 + _DEPARTURE_SLACK_MS >= lim.ev_departure_ms


def _cap(value, why, cap, cap_why):
    # value (>= 0) limited to cap, with the reason of whichever bound it.
    if value > cap:
        return cap, cap_why
    return value, why
