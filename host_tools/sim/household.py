"""Household profiles that feed the meter simulators.

A `Household` is one house at a site: PV production (pvlib clear sky for
the site, times a seeded cloud model), household load (the BDEW H0 standard
load profile from demandlib, with seeded per-house noise and appliance
switching), a home battery run for self-consumption and an EV that leaves in
the morning and charges when it is back. Everything is computed one UTC day
at a time at 1-minute resolution into `array('d')` columns, so a server asks
for a value in microseconds; pandas and pvlib are imported only when the
first day is computed.

Time runs from `start` on. Days depend on the day before (battery and EV
state of charge, cloud persistence, the energy registers), so the values at
a given time depend on the seed and `start` only: the same seed and start
always give the same readings, whatever order they are asked for in.

Controls (`set_control`) change the battery setpoint or the EV charging
limit from the next whole minute on; minutes already past never change, so
the energy registers only ever grow.
"""

import datetime
import math
import random
import threading
import time
import warnings
from array import array
from collections import OrderedDict
from zoneinfo import ZoneInfo

UTC = datetime.timezone.utc
MINUTES_PER_DAY = 1440
DAY_S = 86400
CARROS = (43.79, 7.18)  # Carros, Alpes-Maritimes: the default site

# Appliance switch-on events: (name, watts, min minutes, max minutes).
_APPLIANCES = (
    ("kettle", 2000.0, 2, 4),
    ("microwave", 900.0, 2, 6),
    ("oven", 2200.0, 20, 45),
    ("washing_machine", 1900.0, 12, 20),
    ("dishwasher", 1800.0, 15, 25),
    ("hob", 1500.0, 10, 30),
)
_MEAN_EVENT_WH = sum(w * (lo + hi) / 2 / 60 for _n, w, lo, hi in _APPLIANCES) / len(_APPLIANCES)
_EVENT_SHARE = 0.3  # share of the H0 energy that comes as appliance events
_PHASE_SPLIT = (0.45, 0.33, 0.22)  # how the house wiring loads L1/L2/L3
_COLUMNS = ("pv_w", "load_w", "ev_w", "battery_w", "grid_w", "soc", "ev_soc",
            "v1", "v2", "v3", "freq", "ev_plugged")
_REGISTERS = ("import_wh", "export_wh", "pv_wh", "ev_wh", "bat_in_wh", "bat_out_wh")


class Clock:
    """Simulated wall time that runs `speed` times faster than real time."""

    def __init__(self, start=None, speed=1.0, monotonic=time.monotonic):
        if not speed > 0:
            raise ValueError("speed must be positive")
        if start is None:
            start = datetime.datetime.now(UTC)
        if start.tzinfo is None:
            raise ValueError("start must be an aware datetime")
        self.speed = float(speed)
        self._monotonic = monotonic
        self._t0 = monotonic()
        self._start = start.timestamp()

    def timestamp(self):
        """Simulated time as POSIX seconds."""
        return self._start + (self._monotonic() - self._t0) * self.speed

    def now(self):
        return datetime.datetime.fromtimestamp(self.timestamp(), UTC)

    def wall_seconds(self, sim_seconds):
        """Real seconds that `sim_seconds` of simulated time take."""
        return sim_seconds / self.speed


class Sample:
    """What the house does at one instant: powers in W, energies in Wh."""

    __slots__ = ("t", "pv_w", "load_w", "ev_w", "battery_w", "grid_w", "soc", "ev_soc",
                 "ev_plugged", "import_wh", "export_wh", "pv_wh", "ev_wh", "bat_in_wh",
                 "bat_out_wh", "voltage", "current", "phase_w", "frequency")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw[k])

    def __repr__(self):
        return "Sample(%s)" % ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__)


class _Day:
    __slots__ = ("index", "t0", "cols", "regs", "end_state")


class _Weather:
    """Per-year demandlib load and per-day pvlib production, imported lazily."""

    def __init__(self, lat, lon, altitude, tz, tilt, azimuth):
        self.lat, self.lon, self.altitude = lat, lon, altitude
        self.tz = tz
        self.tilt, self.azimuth = tilt, azimuth
        self._h0 = {}  # year -> array of W per 15 min for 1 kWh/a
        self._location = None

    def h0_per_kwh(self, year):
        """H0 dynamic profile, in W per 15 minutes, for an annual demand of 1 kWh."""
        prof = self._h0.get(year)
        if prof is None:
            import demandlib.bdew as bdew

            # demandlib 0.2.2 calls warnings.simplefilter("error") process-wide:
            # keep that inside this block.
            with warnings.catch_warnings():
                slp = bdew.ElecSlp(year, holidays=french_holidays(year))
                series = slp.get_scaled_power_profiles({"h0_dyn": 1000.0})["h0_dyn"]
            prof = array("d", (float(x) for x in series.to_numpy()))
            self._h0[year] = prof
        return prof

    def load_kw_at(self, local_naive, annual_kwh):
        """Standard-profile load (W) at a local wall time, linear between 15-min centres."""
        jan1 = datetime.datetime(local_naive.year, 1, 1)
        q = (local_naive - jan1).total_seconds() / 900.0 - 0.5
        prof = self.h0_per_kwh(local_naive.year)
        i = int(math.floor(q))
        f = q - i
        a = prof[min(max(i, 0), len(prof) - 1)]
        b = prof[min(max(i + 1, 0), len(prof) - 1)]
        return (a + (b - a) * f) * annual_kwh

    def clear_sky_day(self, t0):
        """Clear-sky POA irradiance (W/m2), cosine of zenith and air temperature per minute."""
        import pandas as pd
        import pvlib

        if self._location is None:
            self._location = pvlib.location.Location(self.lat, self.lon, tz="UTC",
                                                     altitude=self.altitude)
        times = pd.date_range(pd.Timestamp(t0 + 30, unit="s", tz="UTC"),
                              periods=MINUTES_PER_DAY, freq="1min")
        solpos = self._location.get_solarposition(times)
        cs = self._location.get_clearsky(times, model="ineichen", solar_position=solpos)
        zenith = solpos["apparent_zenith"].to_numpy()
        return (cs["ghi"].to_numpy(), cs["dni"].to_numpy(), cs["dhi"].to_numpy(),
                zenith, solpos["azimuth"].to_numpy())

    def pv_ac(self, ghi, dni, dhi, zenith, azimuth, temp_air, pdc0, inverter_w):
        import numpy as np
        import pvlib

        poa = pvlib.irradiance.get_total_irradiance(self.tilt, self.azimuth, zenith, azimuth,
                                                    dni, ghi, dhi)["poa_global"]
        poa = np.nan_to_num(np.asarray(poa, dtype=float), nan=0.0)
        # SAPM open-rack glass/polymer module parameters.
        tcell = pvlib.temperature.sapm_cell(poa, temp_air, 2.0, -3.56, -0.075, 3.0)
        pdc = pvlib.pvsystem.pvwatts_dc(poa, tcell, pdc0, -0.0037) * 0.9  # wiring, soiling
        pac = pvlib.inverter.pvwatts(pdc, inverter_w / 0.96, eta_inv_nom=0.96)
        return np.clip(np.nan_to_num(pac, nan=0.0), 0.0, inverter_w)


def easter(year):
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return datetime.date(year, month, day + 1)


def french_holidays(year):
    """Public holidays in France; the H0 profile treats them as Sundays."""
    e = easter(year)
    fixed = [(1, 1), (5, 1), (5, 8), (7, 14), (8, 15), (11, 1), (11, 11), (12, 25)]
    days = [datetime.date(year, m, d) for m, d in fixed]
    days += [e + datetime.timedelta(days=n) for n in (1, 39, 50)]
    return sorted(days)


class Household:
    """One simulated house; see the module docstring.

    `start` is an aware datetime (default: 11 days before now, at UTC midnight,
    so that a 15-minute load profile has more than 1,000 rows). Powers: grid
    positive when importing, battery positive when discharging into the house.
    """

    def __init__(self, seed=1, start=None, site=CARROS, altitude=100.0, tz="Europe/Paris",
                 pv_kwp=6.0, inverter_kw=5.0, tilt=30.0, azimuth=180.0, annual_kwh=3500.0,
                 battery_kwh=10.0, battery_kw=5.0, ev=True, ev_kw=11.0, ev_kwh=60.0,
                 ev_phases=3, battery_feeds_ev=False, cache_days=48):
        self.seed = seed
        if start is None:
            start = datetime.datetime.now(UTC) - datetime.timedelta(days=11)
        if start.tzinfo is None:
            raise ValueError("start must be an aware datetime")
        t = int(start.timestamp())
        self.t_start = t - t % DAY_S  # UTC midnight of the start day
        self.tz = ZoneInfo(tz)
        self.pv_kwp, self.inverter_kw = pv_kwp, inverter_kw
        self.annual_kwh = annual_kwh
        self.battery_kwh, self.battery_kw = battery_kwh, battery_kw
        self.ev_enabled, self.ev_kw, self.ev_kwh, self.ev_phases = ev, ev_kw, ev_kwh, ev_phases
        self.battery_feeds_ev = battery_feeds_ev
        self._weather = _Weather(site[0], site[1], altitude, self.tz, tilt, azimuth)
        self._lock = threading.RLock()
        self._states = [self._initial_state()]  # state at the start of day i
        self._cache = OrderedDict()
        self._cache_days = cache_days
        self._controls = {"battery_w": [], "ev_limit_w": []}  # name -> sorted [(t, value)]

    # ---- public API ----

    def sample(self, t):
        """The house at time `t` (POSIX seconds or aware datetime)."""
        t = _ts(t)
        with self._lock:
            day = self._day(self._day_index(t))
        x = t - day.t0
        i = min(int(x // 60), MINUTES_PER_DAY - 1)
        frac = (x - i * 60) / 60.0
        c = day.cols
        r = day.regs
        regs = {k: r[k][i] + (r[k][i + 1] - r[k][i]) * frac for k in _REGISTERS}
        volts = (c["v1"][i], c["v2"][i], c["v3"][i])
        grid = c["grid_w"][i]
        load = c["load_w"][i]
        shared = c["ev_w"][i] * (1.0 if self.ev_phases == 3 else 0.0) - c["pv_w"][i] - c["battery_w"][i]
        phase_w = [load * _PHASE_SPLIT[k] + shared / 3.0 for k in range(3)]
        if self.ev_phases != 3:
            phase_w[0] += c["ev_w"][i]
        current = tuple(abs(p) / (v * 0.97) for p, v in zip(phase_w, volts))
        return Sample(t=t, pv_w=c["pv_w"][i], load_w=load, ev_w=c["ev_w"][i],
                      battery_w=c["battery_w"][i], grid_w=grid, soc=c["soc"][i],
                      ev_soc=c["ev_soc"][i], ev_plugged=bool(c["ev_plugged"][i]),
                      voltage=volts, current=current, phase_w=tuple(phase_w),
                      frequency=c["freq"][i], **regs)

    def energy(self, t):
        """(import_wh, export_wh) at time t, as the meter's registers count them."""
        s = self.sample(t)
        return s.import_wh, s.export_wh

    def profile(self, start, end, period=900):
        """[(t, import_wh, export_wh)] at each multiple of `period` s in [start, end]."""
        t = _ts(start)
        first = int(math.ceil(max(t, self.t_start) / period) * period)
        last = _ts(end)
        rows = []
        k = first
        while k <= last:
            imp, exp = self.energy(k)
            rows.append((k, imp, exp))
            k += period
        return rows

    def series(self, start, end, step=60):
        """Samples from start to end (inclusive) every `step` seconds."""
        t, last = _ts(start), _ts(end)
        out = []
        while t <= last:
            out.append(self.sample(t))
            t += step
        return out

    def day_series(self, day_index, column):
        """One computed column of a day (1440 minute values)."""
        with self._lock:
            return array("d", self._day(day_index).cols[column])

    def set_control(self, name, value, t):
        """Battery setpoint (`battery_w`, None = self-consumption) or EV limit
        (`ev_limit_w`, None = no limit) from the first whole minute after t."""
        if name not in self._controls:
            raise ValueError("unknown control %r" % name)
        t = _ts(t)
        t_eff = int(math.ceil(t / 60.0) * 60)
        with self._lock:
            events = [e for e in self._controls[name] if e[0] < t_eff]
            events.append((t_eff, value))
            self._controls[name] = events
            d = self._day_index(t_eff)
            del self._states[d + 1:]
            for k in [k for k in self._cache if k >= d]:
                del self._cache[k]

    def control(self, name, t):
        t = _ts(t)
        value = None
        for te, v in self._controls[name]:
            if te <= t:
                value = v
        return value

    # ---- the day engine ----

    def _day_index(self, t):
        if t < self.t_start:
            raise ValueError("time before the household's start")
        return int((t - self.t_start) // DAY_S)

    def _rng(self, day, what):
        return random.Random("%s/%d/%s" % (self.seed, day, what))

    def _initial_state(self):
        rng = self._rng(-1, "init")
        return {
            "import_wh": float(rng.randint(4_000_000, 16_000_000)),
            "export_wh": float(rng.randint(1_000_000, 6_000_000)),
            "pv_wh": float(rng.randint(8_000_000, 20_000_000)),
            "ev_wh": float(rng.randint(500_000, 3_000_000)),
            "bat_in_wh": float(rng.randint(500_000, 2_000_000)),
            "bat_out_wh": 0.0,
            "soc": rng.uniform(0.2, 0.6),
            "ev_soc": rng.uniform(0.4, 0.8),
            "ev_home": True,
            "cloud": rng.uniform(0.0, 0.8),
            "regime": rng.choice((0, 0, 1, 2)),
            "noise": 0.0,
            "vdrift": [rng.uniform(-2.0, 2.0) for _ in range(3)],
            "fdrift": 0.0,
        }

    def _day(self, index):
        day = self._cache.get(index)
        if day is not None:
            self._cache.move_to_end(index)
            return day
        while len(self._states) <= index:
            done = self._put(self._compute(len(self._states) - 1))
            self._states.append(done.end_state)
        day = self._cache.get(index)
        return day if day is not None else self._put(self._compute(index))

    def _put(self, day):
        self._cache[day.index] = day
        while len(self._cache) > self._cache_days:
            self._cache.popitem(last=False)
        return day

    def _compute(self, index):
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        st = dict(self._states[index])
        st["vdrift"] = list(st["vdrift"])
        t0 = self.t_start + index * DAY_S
        n = MINUTES_PER_DAY
        pv = self._pv_day(index, t0, st)
        load = self._load_day(index, t0, st)
        ev_plan = self._ev_plan(index, t0, st)
        rng = self._rng(index, "grid")
        cols = {k: array("d", bytes(8 * n)) for k in _COLUMNS}
        regs = {k: array("d", bytes(8 * (n + 1))) for k in _REGISTERS}
        cap = self.battery_kwh * 1000.0
        bat_max = self.battery_kw * 1000.0
        eff = 0.95
        soc, ev_soc = st["soc"], st["ev_soc"]
        ev_cap = self.ev_kwh * 1000.0
        r = {k: st[k] for k in _REGISTERS}
        ctl_bat = self._control_minutes("battery_w", t0)
        ctl_ev = self._control_minutes("ev_limit_w", t0)
        vdrift, fdrift = st["vdrift"], st["fdrift"]
        for i in range(n):
            for k in _REGISTERS:
                regs[k][i] = r[k]
            home, need_soc, consumed = ev_plan[i]
            ev_soc = max(0.0, ev_soc - consumed / ev_cap)
            ev_w = 0.0
            if self.ev_enabled and home and ev_soc < need_soc:
                ev_w = self.ev_kw * 1000.0
                limit = ctl_ev[i]
                if limit is not None:
                    ev_w = max(0.0, min(ev_w, float(limit)))
                ev_w = min(ev_w, (need_soc - ev_soc) * ev_cap * 60.0)
                ev_soc += ev_w / 60.0 / ev_cap
            # Battery: positive = discharging into the house.
            house = load[i] + (ev_w if self.battery_feeds_ev else 0.0)
            want = ctl_bat[i]
            if want is None:
                want = house - pv[i]  # self-consumption: cover the deficit, store the surplus
                if not self.battery_feeds_ev and ev_w > 0.0 and want < 0.0:
                    want = min(0.0, want + ev_w)  # PV surplus goes to the EV first
            bat = max(-bat_max, min(bat_max, float(want)))
            if bat > 0.0:
                bat = min(bat, max(0.0, (soc - 0.05) * cap * 60.0 * eff))
                soc -= bat / 60.0 / eff / cap
            elif bat < 0.0:
                bat = -min(-bat, max(0.0, (1.0 - soc) * cap * 60.0 / eff))
                soc -= bat / 60.0 * eff / cap
            grid = load[i] + ev_w - pv[i] - bat
            # Grid side: voltage rises with export, sags with import.
            for k in range(3):
                vdrift[k] = 0.995 * vdrift[k] + rng.gauss(0.0, 0.08)
            fdrift = 0.97 * fdrift + rng.gauss(0.0, 0.004)
            hour = ((t0 + 60 * i) // 3600) % 24
            dip = -2.5 if 17 <= hour <= 21 else 0.0
            for k in range(3):
                cols["v%d" % (k + 1)][i] = 230.0 + vdrift[k] + dip - grid * 0.0005 + rng.gauss(0.0, 0.2)
            cols["freq"][i] = 50.0 + fdrift
            cols["pv_w"][i] = pv[i]
            cols["load_w"][i] = load[i]
            cols["ev_w"][i] = ev_w
            cols["battery_w"][i] = bat
            cols["grid_w"][i] = grid
            cols["soc"][i] = soc
            cols["ev_soc"][i] = ev_soc
            cols["ev_plugged"][i] = 1.0 if (self.ev_enabled and home) else 0.0
            r["import_wh"] += max(grid, 0.0) / 60.0
            r["export_wh"] += max(-grid, 0.0) / 60.0
            r["pv_wh"] += pv[i] / 60.0
            r["ev_wh"] += ev_w / 60.0
            r["bat_in_wh"] += max(-bat, 0.0) / 60.0
            r["bat_out_wh"] += max(bat, 0.0) / 60.0
        for k in _REGISTERS:
            regs[k][n] = r[k]
        end = dict(st)
        end.update(r)
        end.update(soc=soc, ev_soc=ev_soc, ev_home=ev_plan[-1][0], vdrift=vdrift, fdrift=fdrift)
        day = _Day()
        day.index, day.t0, day.cols, day.regs, day.end_state = index, t0, cols, regs, end
        return day

    def _control_minutes(self, name, t0):
        events = self._controls[name]
        out = [None] * MINUTES_PER_DAY
        if not events:
            return out
        for i in range(MINUTES_PER_DAY):
            out[i] = self.control(name, t0 + 60 * i) if events else None
        return out

    def _pv_day(self, index, t0, st):
        """PV AC power per minute: clear sky times a seeded cloud model."""
        import numpy as np

        rng = self._rng(index, "clouds")
        # Weather regime (0 sunny, 1 mixed, 2 overcast) is a Markov chain over days.
        stay = (0.75, 0.5, 0.6)
        regime = st["regime"]
        if rng.random() > stay[regime]:
            regime = rng.choice([x for x in (0, 1, 2) if x != regime])
        mean_cover = (0.1, 0.5, 0.85)[regime]
        cover = []
        c = st["cloud"]
        for _h in range(25):  # hourly cover with persistence, one extra hour to interpolate
            c = 0.7 * c + 0.3 * mean_cover + rng.gauss(0.0, 0.12)
            c = min(1.0, max(0.0, c))
            cover.append(c)
        st["cloud"], st["regime"] = cover[23], regime
        ghi, dni, dhi, zenith, azimuth = self._weather.clear_sky_day(t0)
        kt = np.empty(MINUTES_PER_DAY)
        flick = 0.0
        for i in range(MINUTES_PER_DAY):
            h, f = divmod(i, 60)
            cc = cover[h] + (cover[h + 1] - cover[h]) * f / 60.0
            # Passing clouds: fast flicker, strongest at half cover.
            flick = 0.8 * flick + rng.gauss(0.0, 1.0) * 0.6 * cc * (1.0 - cc)
            k = 1.0 - 0.75 * cc ** 3.4 + flick  # Kasten-Czeplak clear-sky index
            kt[i] = min(1.1, max(0.05, k))
        ghi_c = ghi * kt
        beam = np.clip((kt - 0.3) / 0.7, 0.0, 1.0)  # cloudy skies lose the beam first
        dni_c = dni * beam
        cosz = np.cos(np.radians(np.clip(zenith, 0.0, 90.0)))
        dhi_c = np.clip(ghi_c - dni_c * cosz, 0.0, None)
        doy = datetime.datetime.fromtimestamp(t0, UTC).timetuple().tm_yday
        hours = (np.arange(MINUTES_PER_DAY) / 60.0 + self._weather.lon / 15.0) % 24
        temp_air = (15.0 + 8.0 * math.cos(2 * math.pi * (doy - 200) / 365.0)
                    + 5.0 * np.sin(np.pi * (hours - 9.0) / 12.0))
        pac = self._weather.pv_ac(ghi_c, dni_c, dhi_c, zenith, azimuth, temp_air,
                                  self.pv_kwp * 1000.0, self.inverter_kw * 1000.0)
        return array("d", (float(x) for x in pac))

    def _load_day(self, index, t0, st):
        """House load per minute: H0 times AR(1) noise, plus appliance events."""
        rng = self._rng(index, "load")
        out = array("d", bytes(8 * MINUTES_PER_DAY))
        noise = st["noise"]
        base_share = 1.0 - _EVENT_SHARE
        for i in range(MINUTES_PER_DAY):
            local = datetime.datetime.fromtimestamp(t0 + 60 * i + 30, self.tz).replace(tzinfo=None)
            h0 = self._weather.load_kw_at(local, self.annual_kwh)
            noise = 0.9 * noise + rng.gauss(0.0, 0.08)
            out[i] += max(45.0, h0 * base_share * math.exp(noise - 0.017))
            # Events arrive at a rate that gives _EVENT_SHARE of the H0 energy.
            if rng.random() < h0 * _EVENT_SHARE / 60.0 / _MEAN_EVENT_WH:
                _name, w, lo, hi = rng.choice(_APPLIANCES)
                for j in range(i, min(MINUTES_PER_DAY, i + rng.randint(lo, hi))):
                    out[j] += w
        st["noise"] = noise
        return out

    def _ev_plan(self, index, t0, st):
        """Per minute: (home, target soc, kWh driven away this minute in Wh)."""
        rng = self._rng(index, "ev")
        plan = [(True, 0.8, 0.0)] * MINUTES_PER_DAY
        if not self.ev_enabled:
            return plan
        local_midnight = datetime.datetime.fromtimestamp(t0, self.tz)
        weekday = local_midnight.weekday()
        target = rng.choice((0.8, 0.8, 0.9, 1.0))
        trips = []
        if weekday < 5 and rng.random() < 0.85:  # a commute
            leave = rng.uniform(7.0, 8.5)
            back = rng.uniform(17.0, 19.5)
            trips.append((leave, back, rng.uniform(20.0, 80.0) * 170.0))
        elif rng.random() < 0.4:  # a weekend trip
            leave = rng.uniform(10.0, 14.0)
            trips.append((leave, leave + rng.uniform(1.0, 5.0), rng.uniform(10.0, 120.0) * 170.0))
        offset_h = (local_midnight.utcoffset().total_seconds() / 3600.0) if local_midnight.utcoffset() else 0.0
        out = []
        for i in range(MINUTES_PER_DAY):
            local_h = (i / 60.0 + offset_h) % 24.0
            home, used = True, 0.0
            for leave, back, wh in trips:
                if leave <= local_h < back:
                    home = False
                    used = wh / ((back - leave) * 60.0)
            out.append((home, target, used))
        return out


def _ts(t):
    if isinstance(t, datetime.datetime):
        if t.tzinfo is None:
            raise ValueError("aware datetime required")
        return t.timestamp()
    return float(t)
