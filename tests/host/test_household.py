"""host_tools.sim.household: the profiles that feed the meter simulators.

PV comes from pvlib (clear sky at Carros, 43.79N 7.18E, times a seeded cloud
model), load from demandlib's BDEW H0 profile with per-house noise, plus a
battery for self-consumption and an EV. Checked here: determinism for a
seed, physical sanity, energy registers that integrate the grid power and
never go backwards, controls that act from the next minute, the Clock.
"""

import datetime
import subprocess
import sys
import warnings

import pytest

from host_tools.sim.household import UTC, Clock, Household, easter, french_holidays

START = datetime.datetime(2025, 6, 20, tzinfo=UTC)  # a week around the summer solstice
NOON = datetime.datetime(2025, 6, 21, 11, 30, tzinfo=UTC).timestamp()  # 13:30 local, near solar noon


@pytest.fixture(scope="module")
def house():
    return Household(seed=7, start=START)


def test_same_seed_same_readings_whatever_the_order():
    a = Household(seed=3, start=START)
    b = Household(seed=3, start=START)
    t_late = NOON + 86400 + 3600
    late_first = b.sample(t_late)  # b computes day 2 first, a computes day 1 first
    early = a.sample(NOON)
    assert b.sample(NOON).import_wh == early.import_wh
    assert a.sample(t_late).export_wh == late_first.export_wh
    assert a.sample(t_late).pv_w == late_first.pv_w


def test_another_seed_is_another_house():
    a = Household(seed=3, start=START).sample(NOON)
    b = Household(seed=4, start=START).sample(NOON)
    assert (a.import_wh, a.load_w) != (b.import_wh, b.load_w)


def test_pv_follows_the_sun(house):
    pv = house.day_series(1, "pv_w")  # 2025-06-21, UTC minutes
    assert max(pv[:3 * 60]) == 0.0 and max(pv[20 * 60:]) == 0.0, "no PV at night"
    assert max(pv) <= house.inverter_kw * 1000 + 1e-6, "clipped at the inverter rating"
    kwh = sum(pv) / 60000
    assert 5 < kwh < 45, "June day for 6 kWp in the south of France: %.1f kWh" % kwh
    peak = max(range(len(pv)), key=pv.__getitem__)
    assert 9 * 60 < peak < 15 * 60, "peak near solar noon (UTC), at minute %d" % peak


def test_load_is_an_h0_household(house):
    for day in range(3):
        load = house.day_series(day, "load_w")
        kwh = sum(load) / 60000
        assert 3 < kwh < 25, "3,500 kWh a year is about 9.6 kWh a day, got %.1f" % kwh
        assert min(load) >= 45, "standby floor"
        assert max(load) > 1500, "appliances switch on during the day"


def test_registers_integrate_grid_power_and_never_go_back(house):
    t0 = datetime.datetime(2025, 6, 21, tzinfo=UTC).timestamp()
    prev = house.sample(t0)
    imp = exp = 0.0
    for minute in range(1, 24 * 60 + 1):
        s = house.sample(t0 + 60 * minute)
        assert s.import_wh >= prev.import_wh and s.export_wh >= prev.export_wh
        imp += max(prev.grid_w, 0.0) / 60
        exp += max(-prev.grid_w, 0.0) / 60
        prev = s
    got_imp = prev.import_wh - house.sample(t0).import_wh
    got_exp = prev.export_wh - house.sample(t0).export_wh
    assert abs(got_imp - imp) < 1e-6 * max(imp, 1) and abs(got_exp - exp) < 1e-6 * max(exp, 1)
    mid = house.sample(t0 + 30)  # half a minute in: registers interpolate inside the minute
    first = house.sample(t0)
    assert mid.import_wh == pytest.approx(first.import_wh + max(first.grid_w, 0) / 120)


def test_power_balance_battery_and_ev_limits(house):
    for minute in range(0, 3 * 24 * 60, 7):
        s = house.sample(START.timestamp() + 60 * minute)
        assert s.grid_w == pytest.approx(s.load_w + s.ev_w - s.pv_w - s.battery_w)
        assert 0.049 <= s.soc <= 1.0
        assert abs(s.battery_w) <= house.battery_kw * 1000 + 1e-6
        assert 0 <= s.ev_w <= house.ev_kw * 1000
        assert s.ev_w == 0 or s.ev_plugged
        assert all(215 < v < 245 for v in s.voltage)
        assert 49.8 < s.frequency < 50.2


def test_profile_rows_every_15_minutes(house):
    rows = house.profile(START, START + datetime.timedelta(days=1))
    assert len(rows) == 97
    assert all(b[0] - a[0] == 900 for a, b in zip(rows, rows[1:]))
    assert all(b[1] >= a[1] and b[2] >= a[2] for a, b in zip(rows, rows[1:]))
    assert rows[5][1:] == house.energy(rows[5][0])


def test_controls_act_from_the_next_minute_and_keep_the_past():
    h = Household(seed=11, start=START)
    fresh = Household(seed=11, start=START)
    day1 = START.timestamp() + 86400
    # a minute where the battery covers the house at night
    m = next(m for m in range(1440) if h.sample(day1 + 60 * m).battery_w > 50
             and h.sample(day1 + 60 * m).soc < 0.9)
    t0 = day1 + 60 * m
    h.set_control("battery_w", -3000.0, t0 + 30)  # charge at 3 kW from the next minute
    assert h.sample(t0 + 10).import_wh == fresh.sample(t0 + 10).import_wh, "the past stays"
    assert h.sample(t0 + 10).battery_w == fresh.sample(t0 + 10).battery_w
    s = h.sample(t0 + 600)
    assert s.battery_w == -3000.0, s
    assert s.grid_w > fresh.sample(t0 + 600).grid_w + 3000, "charging from the grid"
    h.set_control("battery_w", None, t0 + 1200)  # back to self-consumption
    assert h.control("battery_w", t0 + 1300) is None
    assert h.control("battery_w", t0 + 700) == -3000.0
    assert h.sample(t0 + 7200).import_wh >= h.sample(t0 + 600).import_wh
    with pytest.raises(ValueError):
        h.set_control("heat_pump_w", 1.0, t0)


def test_ev_limit():
    h = Household(seed=5, start=START)
    # find a minute where the EV charges at full power
    day0 = START.timestamp()
    charging = [m for m in range(3 * 1440) if h.sample(day0 + 60 * m).ev_w >= h.ev_kw * 1000 - 1]
    assert charging, "the EV charges at some point in three days"
    t = day0 + 60 * charging[0]
    h.set_control("ev_limit_w", 4140.0, t)  # 6 A on three phases, from the next minute
    assert h.sample(t + 90).ev_w == pytest.approx(4140.0) or not h.sample(t + 90).ev_plugged
    h.set_control("ev_limit_w", 0.0, t + 300)
    assert h.sample(t + 400).ev_w == 0.0


def test_clock_speed():
    now = [100.0]
    clock = Clock(start=START, speed=60, monotonic=lambda: now[0])
    assert clock.now() == START
    now[0] += 2.0
    assert clock.timestamp() == START.timestamp() + 120
    assert clock.wall_seconds(900) == 15
    with pytest.raises(ValueError):
        Clock(speed=0)
    with pytest.raises(ValueError):
        Clock(start=datetime.datetime(2025, 1, 1))  # naive


def test_demandlib_warning_filter_does_not_leak():
    # demandlib 0.2.2 calls warnings.simplefilter("error") for the whole process.
    before = list(warnings.filters)
    Household(seed=1, start=datetime.datetime(2024, 3, 1, tzinfo=UTC)).sample(
        datetime.datetime(2024, 3, 1, 12, tzinfo=UTC))
    assert warnings.filters == before


def test_heavy_imports_are_lazy():
    code = ("import sys, host_tools.sim.household as h, host_tools.sim.runner;"
            "print(sorted(m for m in ('pandas', 'pvlib', 'demandlib', 'gurux_dlms', 'pymodbus')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_french_holidays():
    assert easter(2025) == datetime.date(2025, 4, 20)  # Easter Sunday 2025
    assert easter(2024) == datetime.date(2024, 3, 31)
    days = french_holidays(2025)
    assert datetime.date(2025, 4, 21) in days and datetime.date(2025, 5, 29) in days  # Easter Monday, Ascension
    assert datetime.date(2025, 7, 14) in days and len(days) == 11
