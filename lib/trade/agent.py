# The household's trading agent (docs/trading.md, "The trading agent").
#
# Simple rules, every number explainable, all integers:
#
# 1. Forecaster: per slot of the day, an average of the household's load and
#    PV energy, updated from each measured interval (a running mean for the
#    first `days` days, then exponentially weighted with weight 1/days).
# 2. Agent.orders(): for an interval ahead, the EV takes PV surplus (and
#    what it must take to be charged by departure), the battery absorbs the
#    rest of the surplus or covers the deficit down to its reserve (never
#    into the EV unless allowed), and what remains is one ORDER: buy a
#    deficit, sell a surplus, nothing when it is about 0. Prices lie strictly
#    between the feed-in tariff and the retail price, the ones that the grid
#    offers anyway.
# 3. Agent.targets(): during the interval, battery and EV targets that make
#    the meter's net energy over the interval match what was traded
#    (nothing traded: net 0, self-consumption). The safety envelope
#    (lib/envelope.py) caps whatever is asked here.
#
# Signs: net + is import; battery + charges; an ORDER's side 0 buys, 1 sells.
# Times are unix seconds; slots of the day and the EV departure are in local
# time (utc_offset_min).
from array import array

from compat import const
from envelope import Targets

_BUY = const(0)
_SELL = const(1)

_SCALE = const(16)  # forecast profiles hold Wh x 16, so small updates count
_MAX_WH = const(1000000)  # per interval: far above any household
_MIN_HORIZON_S = const(10)  # the last seconds are not chased (meter and inverter lag)
_EV_MIN_A = const(6)  # IEC 61851: no charging below 6 A
_PLANS = const(4)
_COMMITS = const(8)
_TRADE_IDS = const(32)
_U32 = const(0xFFFFFFFF)


class AgentError(ValueError):
    # reason: "config" (.field names it), "arg" (a value out of range or of
    # the wrong type), "time" (not an interval start, or time going back),
    # "trade" (a TRADE that is not ours or not for our intervals)
    def __init__(self, reason, message, field=None):
        super().__init__("%s: %s" % (reason, message))
        self.reason = reason
        self.field = field


def _int(v, name, lo, hi, reason="arg", field=None):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        raise AgentError(reason, "%s must be an int in %d..%s, got %r" % (
            name, lo, "" if hi is None else hi, v), field)
    return v


def _div_round(a, b):
    # a / b rounded half away from zero, b > 0
    if a >= 0:
        return (a + b // 2) // b
    return -((-a + b // 2) // b)


def _check_interval_min(v, reason, field=None):
    _int(v, "interval_min", 1, 60, reason, field)
    if 1440 % v:
        raise AgentError(reason, "interval_min must divide a day (1440 min), got %d" % v, field)
    return v


def _hhmm(minutes):
    return "%02d:%02d" % (minutes // 60 % 24, minutes % 60)


class Forecaster:
    def __init__(self, interval_min=15, days=7, utc_offset_min=0):
        self.interval_min = _check_interval_min(interval_min, "arg")
        self.days = _int(days, "days", 1, 255)
        self.utc_offset_min = _int(utc_offset_min, "utc_offset_min", -720, 840)
        n = 1440 // interval_min
        self._load = array("i", bytes(4 * n))
        self._pv = array("i", bytes(4 * n))
        self._count = bytearray(n)  # days seen per slot, up to `days`
        self._last = -1  # the last interval observed

    def slot(self, interval_start_s):
        return ((interval_start_s // 60 + self.utc_offset_min) % 1440) // self.interval_min

    def _start(self, t):
        _int(t, "interval_start_s", 0, None, "time")
        if t % (60 * self.interval_min):
            raise AgentError("time", "%d is not the start of a %d-minute interval" % (t, self.interval_min))
        return t

    def observe(self, interval_start_s, load_wh, pv_wh):
        # The household's measured load and PV production over one interval.
        # -> False (ignored) for an interval not after the last observed.
        t = self._start(interval_start_s)
        _int(load_wh, "load_wh", 0, _MAX_WH)
        _int(pv_wh, "pv_wh", 0, _MAX_WH)
        if t <= self._last:
            return False
        self._last = t
        s = self.slot(t)
        n = min(self._count[s] + 1, self.days)
        self._load[s] += _div_round(load_wh * _SCALE - self._load[s], n)
        self._pv[s] += _div_round(pv_wh * _SCALE - self._pv[s], n)
        if self._count[s] < self.days:
            self._count[s] += 1
        return True

    def forecast(self, interval_start_s):
        # -> (load_wh, pv_wh); (0, 0) for a slot never observed
        s = self.slot(self._start(interval_start_s))
        return _div_round(self._load[s], _SCALE), _div_round(self._pv[s], _SCALE)

    def days_seen(self, interval_start_s):
        # -> how many days the slot of interval_start_s has been observed (0..days)
        return self._count[self.slot(self._start(interval_start_s))]

    def explain(self, interval_start_s):
        s = self.slot(self._start(interval_start_s))
        days = self._count[s]
        if not days:
            return "%s: no data yet, forecast 0" % _hhmm(s * self.interval_min)
        load, pv = self.forecast(interval_start_s)
        return "%s: load %d Wh, pv %d Wh, %s of %d day%s" % (
            _hhmm(s * self.interval_min), load, pv,
            "average" if days < self.days else "weighted average", days, "" if days == 1 else "s")


# (name, default, lo, hi); lo None: a bool; default None: required
_SCHEMA = (
    ("feed_in_price", None, 0, _U32),  # µ/kWh the grid pays for export
    ("retail_price", None, 0, _U32),  # µ/kWh the grid charges for import
    ("interval_min", 15, 1, 60),
    ("battery_capacity_wh", 0, 0, _MAX_WH),  # 0: no battery
    ("battery_max_w", 3000, 0, 50000),
    ("soc_min_pct", 10, 0, 100),
    ("soc_max_pct", 95, 0, 100),
    ("reserve_pct", 0, 0, 100),  # kept for outages: never traded or used
    ("ev_max_a", 0, 0, 32),  # 0: no EV charger
    ("ev_phases", 3, 1, 3),
    ("voltage_v", 230, 100, 260),
    ("ev_departure", "", None, None),  # "HH:MM" local, "": charge at once
    ("utc_offset_min", 0, -720, 840),
    ("allow_battery_to_ev", False, None, None),
    ("steps", 4, 1, 8),  # price steps per order
    ("min_order_wh", 10, 1, 100000),  # smaller nets are not traded
)


class _Plan:
    # What orders() decided for one interval, for targets() and explain().
    def __init__(self, start, load, pv, ev, ev_must, ev_need, battery, net, order):
        self.start = start
        self.load = load
        self.pv = pv
        self.ev = ev
        self.ev_must = ev_must
        self.ev_need = ev_need
        self.battery = battery
        self.net = net
        self.order = order  # the ORDER fields, or None


class Agent:
    def __init__(self, config):
        if not isinstance(config, dict):
            raise AgentError("config", "the agent's config must be a dict")
        names = [row[0] for row in _SCHEMA]
        for key in sorted(config):
            if key not in names:
                raise AgentError("config", "unknown field %r" % (key,), key)
        for name, default, lo, hi in _SCHEMA:
            v = config.get(name, default)
            if v is None:
                raise AgentError("config", "%s is required" % name, name)
            if name == "ev_departure":
                self.departure_min = self._parse_departure(v)
            elif lo is None:
                if v is not True and v is not False:
                    raise AgentError("config", "%s must be true or false" % name, name)
            else:
                _int(v, name, lo, hi, "config", name)
            setattr(self, name, v)
        _check_interval_min(self.interval_min, "config", "interval_min")
        if self.retail_price - self.feed_in_price < 2:
            raise AgentError("config", "retail_price must exceed feed_in_price by 2 or more",
                             "retail_price")
        if self.soc_min_pct >= self.soc_max_pct:
            raise AgentError("config", "soc_min_pct must be below soc_max_pct", "soc_min_pct")
        if self.ev_phases == 2:
            raise AgentError("config", "ev_phases must be 1 or 3", "ev_phases")
        if self.ev_max_a and self.ev_max_a < _EV_MIN_A:
            raise AgentError("config", "ev_max_a must be 0 (no charger) or 6..32", "ev_max_a")
        self.interval_s = self.interval_min * 60
        self.ev_max_w = self.ev_max_a * self.voltage_v * self.ev_phases
        self.ev_min_w = _EV_MIN_A * self.voltage_v * self.ev_phases if self.ev_max_a else 0
        self._plans = []
        self._commits = []  # [interval_start, sold_wh, bought_wh]
        self._trade_ids = []
        # tracking of the current interval
        self._cur = -1
        self._last_s = -1
        self._net_ws = 0  # W s imported so far in the interval
        self._target = None  # the last Targets
        self._battery_w = 0  # ... and its powers, for those not measured
        self._ev_w = 0
        self._want_net_w = 0

    @staticmethod
    def _parse_departure(v):
        if v == "":
            return None
        if not isinstance(v, str) or len(v) != 5 or v[2] != ":" or not (v[:2] + v[3:]).isdigit():
            raise AgentError("config", "ev_departure must be \"HH:MM\" or \"\"", "ev_departure")
        h, m = int(v[:2]), int(v[3:])
        if h > 23 or m > 59:
            raise AgentError("config", "ev_departure must be a time of day", "ev_departure")
        return h * 60 + m

    def _wh(self, w):
        # energy of a constant power over one interval
        return w * self.interval_min // 60

    def _start(self, t):
        _int(t, "interval_start_s", 0, None, "time")
        if t % self.interval_s:
            raise AgentError("time", "%d is not the start of a %d-minute interval" % (t, self.interval_min))
        return t

    def _local(self, t):
        return (t // 60 + self.utc_offset_min) % 1440

    # -- planning ---------------------------------------------------------------

    def _plan_ev(self, start, house_wh, need_wh):
        # -> (energy for the EV this interval, the part it must have)
        if not self.ev_max_a or not need_wh:
            return 0, 0
        max_wh = self._wh(self.ev_max_w)
        min_wh = min(self._wh(self.ev_min_w), need_wh)
        if self.departure_min is None:
            e = min(need_wh, max_wh)
            return e, e
        until = (self.departure_min - self._local(start)) % 1440 or 1440
        left = max(1, until // self.interval_min)  # intervals before departure, this one included
        must = need_wh - max_wh * (left - 1)
        must = min(need_wh, max_wh, max(must, min_wh)) if must > 0 else 0
        surplus = min(max(0, -house_wh), max_wh, need_wh)
        if surplus < min_wh:
            surplus = 0
        return max(surplus, must), must

    def orders(self, interval_start_s, forecast, battery_soc_pct, ev_need_wh):
        """ORDER field dicts for the interval starting at interval_start_s
        (at most one; none when the planned net is about 0). forecast:
        (load_wh, pv_wh) for that interval; battery_soc_pct: now; ev_need_wh:
        what the EV still needs by its departure (0: none or not plugged)."""
        t = self._start(interval_start_s)
        if not isinstance(forecast, (tuple, list)) or len(forecast) != 2:
            raise AgentError("arg", "forecast must be (load_wh, pv_wh)")
        load = _int(forecast[0], "load_wh", 0, _MAX_WH)
        pv = _int(forecast[1], "pv_wh", 0, _MAX_WH)
        soc = _int(battery_soc_pct, "battery_soc_pct", 0, 100)
        need = _int(ev_need_wh, "ev_need_wh", 0, _MAX_WH)
        house = load - pv
        ev, must = self._plan_ev(t, house, need)
        net = house + ev
        bat = 0
        cap = self.battery_capacity_wh
        if cap and self.battery_max_w:
            max_wh = self._wh(self.battery_max_w)
            if net < 0:
                room = max(0, (self.soc_max_pct - soc) * cap // 100)
                bat = min(-net, max_wh, room)
            elif net > 0:
                floor = max(self.soc_min_pct, self.reserve_pct)
                avail = min(max_wh, max(0, (soc - floor) * cap // 100))
                if ev and not self.allow_battery_to_ev:
                    avail = min(avail, max(0, house))
                bat = -min(net, avail)
            net += bat
        order = None
        if abs(net) >= self.min_order_wh:
            order = self._order(t, _BUY if net > 0 else _SELL, abs(net))
        self._keep_plan(_Plan(t, load, pv, ev, must, need, bat, net, order))
        return [order] if order else []

    def _order(self, start, side, energy):
        feed_in, retail = self.feed_in_price, self.retail_price
        spread = retail - feed_in
        mid = feed_in + spread // 2
        # The first quarter of the band above feed-in, the last below
        # retail: a seller's cheapest step and a buyer's dearest still meet.
        if side == _SELL:
            lo, hi = feed_in + spread // 4, mid
        else:
            lo, hi = mid, retail - spread // 4
        lo = min(max(lo, feed_in + 1), retail - 1)
        hi = min(max(hi, lo), retail - 1)
        n = min(self.steps, energy)
        steps = []
        for i in range(n):
            price = lo + (hi - lo) * i // (n - 1) if n > 1 else hi if side == _SELL else lo
            wh = energy // n + (1 if i < energy % n else 0)
            if steps and steps[-1][0] == price:
                steps[-1][1] += wh
            else:
                steps.append([price, wh])
        # limit_price: the price at which the whole energy is offered
        fields = {"interval_start": start, "interval_min": self.interval_min, "side": side,
                  "energy_wh": energy, "limit_price": steps[-1][0] if side == _SELL else steps[0][0]}
        if len(steps) > 1:
            fields["steps"] = steps
        return fields

    def _keep_plan(self, plan):
        plans = self._plans
        for i in range(len(plans)):
            if plans[i].start == plan.start:
                plans[i] = plan
                return
        if len(plans) >= _PLANS:
            plans.pop(0)
        plans.append(plan)

    def plan(self, interval_start_s):
        for p in self._plans:
            if p.start == interval_start_s:
                return p
        return None

    # -- trades -------------------------------------------------------------------

    def on_trade(self, trade_fields, my_kid):
        """Record a TRADE's fields (from messages.open_signed) that names us
        as seller or buyer. -> False if this trade_id was already recorded."""
        f = trade_fields
        try:
            tid, start, imin = f["trade_id"], f["interval_start"], f["interval_min"]
            seller, buyer, energy = f["seller"], f["buyer"], f["energy_wh"]
        except (KeyError, TypeError):
            raise AgentError("trade", "not the fields of a TRADE")
        _int(energy, "energy_wh", 1, _U32, "trade")
        if imin != self.interval_min:
            raise AgentError("trade", "a %r-minute interval, ours are %d" % (imin, self.interval_min))
        try:
            self._start(start)
        except AgentError as e:
            raise AgentError("trade", str(e))
        if (seller == my_kid) == (buyer == my_kid):
            raise AgentError("trade", "we are not exactly one party of trade %r" % (tid,))
        if tid in self._trade_ids:
            return False
        self._trade_ids.append(tid)
        if len(self._trade_ids) > _TRADE_IDS:
            self._trade_ids.pop(0)
        c = self._commit(start, True)
        if seller == my_kid:
            c[1] += energy
        else:
            c[2] += energy
        return True

    def _commit(self, start, create=False):
        for c in self._commits:
            if c[0] == start:
                return c
        if not create:
            return None
        c = [start, 0, 0]
        self._commits.append(c)
        self._commits.sort()
        if len(self._commits) > _COMMITS:
            self._commits.pop(0)  # the oldest interval: long over
        return c

    def committed(self, interval_start_s):
        """(sold_wh, bought_wh) for an interval."""
        c = self._commit(interval_start_s)
        return (c[1], c[2]) if c else (0, 0)

    # -- delivery -------------------------------------------------------------------

    def targets(self, now_s, live_net_w, soc, battery_w=None, ev_w=None, net_wh_so_far=None):
        """Targets for now so that the meter's net energy over the current
        interval ends at what was traded (bought - sold; 0 without trades).
        live_net_w: net power at the meter (+ import); soc: battery %;
        battery_w, ev_w: what the battery and the EV draw now (+ charging),
        measured; None: assumed to be the last targets. net_wh_so_far: the
        meter's net import since the interval began, from its registers;
        None: the agent integrates live_net_w between calls."""
        _int(now_s, "now_s", 0, None, "time")
        _int(live_net_w, "live_net_w", -1000000, 1000000)
        _int(soc, "soc", 0, 100)
        if now_s < self._last_s:
            raise AgentError("time", "now_s %d is before %d" % (now_s, self._last_s))
        if battery_w is None:
            battery_w = self._battery_w
        if ev_w is None:
            ev_w = self._ev_w
        _int(battery_w, "battery_w", -1000000, 1000000)
        _int(ev_w, "ev_w", 0, 1000000)
        if net_wh_so_far is not None:
            _int(net_wh_so_far, "net_wh_so_far", -_MAX_WH, _MAX_WH)
        start = now_s - now_s % self.interval_s
        # The net now is taken to have held since the last call: it shows
        # the targets set then, which is what ran since.
        if start != self._cur:
            self._cur = start
            self._net_ws = live_net_w * (now_s - start)
        else:
            self._net_ws += live_net_w * (now_s - self._last_s)
        if net_wh_so_far is not None:
            self._net_ws = net_wh_so_far * 3600
        self._last_s = now_s

        sold, bought = self.committed(start)
        goal_ws = (bought - sold) * 3600
        left_s = max(start + self.interval_s - now_s, _MIN_HORIZON_S)
        want_net = (goal_ws - self._net_ws) // left_s
        house = live_net_w - battery_w - ev_w  # load - PV, without our two

        plan = self.plan(start)
        ev_plan = ev_must = 0
        ev_wants = False
        if plan and self.ev_max_a:
            # Wh in the interval -> W
            ev_plan = plan.ev * 3600 // self.interval_s
            ev_must = plan.ev_must * 3600 // self.interval_s
            ev_wants = plan.ev_need > 0

        has_battery = self.battery_capacity_wh and self.battery_max_w
        floor = max(self.soc_min_pct, self.reserve_pct)
        bat_hi = self.battery_max_w if has_battery and soc < self.soc_max_pct else 0
        bat_lo = -self.battery_max_w if has_battery and soc > floor else 0

        # The EV first: deferred when more export is due than the battery
        # can give, run when more import is due than the battery can take.
        ev = ev_plan
        bat = want_net - house - ev
        low = self._bat_low(bat_lo, house, ev)
        if bat < low:
            ev = max(ev_must, ev - (low - bat))
        elif bat > bat_hi and ev_wants:
            ev = min(self.ev_max_w, ev + bat - bat_hi)
        ev = self._ev_power(ev, ev_must)
        bat = want_net - house - ev
        bat = min(max(bat, self._bat_low(bat_lo, house, ev)), bat_hi)

        ev_ma = ev * 1000 // (self.voltage_v * self.ev_phases) if self.ev_max_a else None
        self._battery_w = bat if has_battery else 0
        self._ev_w = ev
        self._want_net_w = want_net
        self._target = Targets(bat if has_battery else None, ev_ma)
        return self._target

    def _bat_low(self, bat_lo, house, ev):
        # no discharge into the EV unless allowed: at most the house's own deficit
        if ev > 0 and not self.allow_battery_to_ev:
            return max(bat_lo, -max(0, house))
        return bat_lo

    def _ev_power(self, ev, must):
        # 0, or between the EV's 6 A and its maximum
        if ev <= 0 or not self.ev_max_a:
            return 0
        if ev < self.ev_min_w:
            return self.ev_min_w if must or ev * 2 >= self.ev_min_w else 0
        return min(ev, self.ev_max_w)

    # -- the console ----------------------------------------------------------------

    def explain(self, now_s=None):
        """A few lines for the console's `trades` command."""
        lines = []
        if now_s is not None and self._cur >= 0 and self._cur <= now_s < self._cur + self.interval_s:
            sold, bought = self.committed(self._cur)
            lines.append("now %s: sold %d Wh, bought %d Wh; net %d Wh so far, aiming at %d Wh" % (
                _hhmm(self._local(self._cur)), sold, bought, _div_round(self._net_ws, 3600),
                bought - sold))
            t = self._target
            if t is not None:
                lines.append("  net %+d W wanted: battery %s W, ev %s mA" % (
                    self._want_net_w, "-" if t.battery_w is None else "%+d" % t.battery_w,
                    "-" if t.ev_ma is None else t.ev_ma))
        for p in self._plans:
            if now_s is not None and p.start + self.interval_s <= now_s:
                continue
            o = p.order
            if o is None:
                what = "no order (net %d Wh)" % p.net
            else:
                what = "%s %d Wh, limit %d%s" % (
                    "buy" if o["side"] == _BUY else "sell", o["energy_wh"], o["limit_price"],
                    ", %d steps" % len(o["steps"]) if "steps" in o else "")
            lines.append("%s: load %d, pv %d, ev %d, battery %+d Wh -> %s" % (
                _hhmm(self._local(p.start)), p.load, p.pv, p.ev, p.battery, what))
        if not lines:
            lines.append("no plan yet")
        return "\n".join(lines)
