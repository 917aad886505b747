# lib/envelope.py: limits, the dispatcher's order of limits, fail-safe, and a
# simulated household (house load + PV + battery + EV) at 1-second steps.
from fuzzing import Xorshift32, iterations
from mpcompat import raises

import evse
from envelope import Dispatcher, EnvelopeError, Limits, Live, Targets

# Relays that switch at once, so a test sees the limits alone.
FAST_RELAYS = {"relay_min_on_ms": 0, "relay_min_off_ms": 0, "relay_max_switches": 100,
               "relay_window_ms": 1}


def _limits(**fields):
    config = dict(FAST_RELAYS)
    config.update(fields)
    return Limits(config)


def _live(phase_ma, net_w=None, soc=50, battery_w=0, ev_ma=0, age=0, **kw):
    if net_w is None:
        net_w = sum(phase_ma) * 230 // 1000
    return Live(tuple(phase_ma), net_w, soc, battery_w, ev_ma, age, **kw)


def _ceil_div(a, b):
    return -(-a // b)


def test_defaults_and_derived_values():
    lim = Limits()
    assert lim.fuse_a == 35 and lim.fuse_margin_ma == 3000 and lim.fuse_limit_ma == 32000
    assert lim.export_cap_w == 0 and lim.allow_battery_to_ev is False
    assert lim.ev_max_ma == 16000 and lim.ev_lines == (0, 1, 2)
    assert lim.soc_min_pct == 10 and lim.soc_max_pct == 95 and lim.stale_ms == 5000
    assert lim.failsafe_open_battery is True and lim.failsafe_open_ev is True
    lim = Limits({"grid_phases": 3, "ev_phases": 1, "ev_phase": 2, "battery_phases": 1,
                  "battery_phase": 3})
    assert lim.ev_lines == (1,) and lim.battery_lines == (2,)


def test_bad_config_is_refused_with_the_field():
    cases = (
        ({"fuse_a": 5}, "fuse_a"),
        ({"fuse_a": 35.0}, "fuse_a"),
        ({"fuse_a": True}, "fuse_a"),
        ({"ev_max_a": 33}, "ev_max_a"),
        ({"ev_max_a": 5}, "ev_max_a"),
        ({"export_cap_w": -1}, "export_cap_w"),
        ({"soc_min_pct": 101}, "soc_min_pct"),
        ({"soc_min_pct": 90, "soc_max_pct": 90}, "soc_min_pct"),
        ({"fuse_a": 6, "fuse_margin_ma": 6000}, "fuse_margin_ma"),
        ({"grid_phases": 2}, "grid_phases"),
        ({"grid_phases": 1}, "ev_phases"),  # a 3-phase EV on a 1-phase grid
        ({"grid_phases": 1, "ev_phases": 1, "battery_phases": 1, "ev_phase": 2}, "ev_phase"),
        ({"allow_battery_to_ev": 1}, "allow_battery_to_ev"),
        ({"stale_ms": 100}, "stale_ms"),
        ({"relay_max_switches": 0}, "relay_max_switches"),
        ({"ev_departure_ms": -1}, "ev_departure_ms"),
        ({"fuse": 35}, "fuse"),  # unknown: a misspelt limit must not be ignored
    )
    for config, field in cases:
        exc = raises(EnvelopeError, Limits, config)
        assert exc.reason == "config" and exc.field == field, (config, exc, exc.field)
        assert isinstance(exc, ValueError)
    for bad in ([("fuse_a", 35)], [], "fuse_a=35"):
        exc = raises(EnvelopeError, Limits, bad)
        assert exc.reason == "config", exc


def test_bad_live_targets_and_arguments_are_refused():
    assert Live([12000, 0, 0], 0, 50, 0, 0, 0).phase_ma == (12000, 0, 0)
    bad_lives = (
        ([], 0, 50, 0, 0, 0),
        ((1, 2, 3, 4), 0, 50, 0, 0, 0),
        ((1.5, 0, 0), 0, 50, 0, 0, 0),
        ((0, 0, 0), 0, 101, 0, 0, 0),
        ((0, 0, 0), 0, -1, 0, 0, 0),
        ((0, 0, 0), 0, 50, 0, -1, 0),
        ((0, 0, 0), 0, 50, 0, 0, -1),  # negative age
        ((0, 0, 0), 0, 50, 2000000, 0, 0),
        ((0, 0, 0), None, 50, 0, 0, 0),
    )
    for args in bad_lives:
        exc = raises(EnvelopeError, Live, *args)
        assert exc.reason == "live", (args, exc)
    exc = raises(EnvelopeError, Live, (0, 0, 0), 0, 50, 0, 0, 0, pilot="G")
    assert exc.reason == "live", exc
    for kwargs in ({"battery_w": 1.0}, {"ev_ma": -1}, {"ev_ma": 2000000}, {"battery_w": True}):
        exc = raises(EnvelopeError, Targets, **kwargs)
        assert exc.reason == "targets", (kwargs, exc)

    d = Dispatcher(_limits(), start_ms=1000)
    good = _live((0, 0, 0))
    for now in (999, -1, 1000.0, None):
        exc = raises(EnvelopeError, d.step, now, good)
        assert exc.reason == "time", (now, exc)
    exc = raises(EnvelopeError, d.step, 2000, _live((0,)))
    assert exc.reason == "live" and "phase" in str(exc), exc
    exc = raises(EnvelopeError, d.step, 2000, {"phase_ma": (0, 0, 0)})
    assert exc.reason == "live", exc
    exc = raises(EnvelopeError, d.step, 2000, good, (1000, 0))
    assert exc.reason == "targets", exc
    exc = raises(EnvelopeError, d.step, 2000, good, None, 1)
    assert exc.reason == "arg", exc
    exc = raises(EnvelopeError, Dispatcher, {"fuse_a": 35})
    assert exc.reason == "arg", exc
    exc = raises(EnvelopeError, Dispatcher, Limits(), -1)
    assert exc.reason == "time", exc
    exc = raises(EnvelopeError, d.request_safe, "")
    assert exc.reason == "arg", exc
    exc = raises(EnvelopeError, d.set_departure, -1, 1000)
    assert exc.reason == "config", exc


def test_worked_example_from_the_docs():
    # docs/safety.md: 35 A fuse, 3 A margin (32 A), house 16/6/5 A, 3-phase
    # EV on a 32 A circuit, 5 kW 3-phase battery at 60 %; the trade asks
    # 11 kW: EV 16 A (3 x 16 A x 230 V = 11,040 W) and the battery +3 kW.
    lim = _limits(ev_max_a=32, battery_max_w=5000, export_cap_w=3000)
    d = Dispatcher(lim)
    want = Targets(battery_w=3000, ev_ma=16000)
    act = d.step(1000, _live((16000, 6000, 5000), soc=60), want)
    # Battery 3000 W = 4348 mA per phase; the EV gets 32000 - 16000 - 4348.
    assert act.battery_w == 3000 and act.battery_reason is None, act
    assert act.ev_ma == 11652 and act.ev_reason == "fuse", act
    assert act.ev_duty_u16 == 11652 * 4369 // 4000 == 12726, act.ev_duty_u16
    assert act.headroom_ma == 16000 and act.ev_relay and act.battery_relay, act
    # A kettle on L1 (+9 A): 32000 - 25000 - 4348 = 2652 mA, under 6 A: paused.
    act = d.step(2000, _live((25000 + 11652, 6000 + 11652, 5000 + 11652), soc=60,
                             ev_ma=11652), want)
    assert act.ev_ma == 0 and act.ev_reason == "fuse", act
    assert act.ev_duty_u16 == evse.PAUSE_DUTY
    assert act.battery_w == 3000, act
    # House at 30 A on L1: the EV stays paused, the battery gets 2 A per
    # phase: 2000 mA x 690 V / 1000 = 1380 W.
    act = d.step(3000, _live((30000, 6000, 5000), soc=60), want)
    assert act.ev_ma == 0 and act.battery_w == 1380 and act.battery_reason == "fuse", act
    # Selling: discharge 5 kW asked, house net 800 W, cap 3 kW: 3800 W.
    sell = Targets(battery_w=-5000)
    act = d.step(4000, _live((1160, 1160, 1160), net_w=800, soc=60), sell)
    assert act.battery_w == -3800 and act.battery_reason == "export_cap", act
    # The same while the EV charges: only the house's 800 W, not into the EV.
    act = d.step(5000, _live((1160 + 10000,) * 3, net_w=800 + 6900, soc=60, ev_ma=10000),
                 Targets(battery_w=-5000, ev_ma=10000))
    assert act.ev_ma == 10000 and act.battery_w == -800, act
    assert act.battery_reason == "battery_to_ev", act


def test_inverter_and_soc_limits():
    d = Dispatcher(_limits(battery_max_w=4000, export_cap_w=10000, soc_min_pct=20,
                           soc_max_pct=90))
    house = (5000, 5000, 5000)
    act = d.step(0, _live(house, soc=50), Targets(battery_w=6000))
    assert act.battery_w == 4000 and act.battery_reason == "inverter", act
    act = d.step(1, _live(house, soc=50), Targets(battery_w=-6000))
    assert act.battery_w == -4000 and act.battery_reason == "inverter", act
    act = d.step(2, _live(house, soc=90), Targets(battery_w=1000))
    assert act.battery_w == 0 and act.battery_reason == "soc_max", act
    assert act.battery_relay is False
    act = d.step(3, _live(house, soc=90), Targets(battery_w=-1000))
    assert act.battery_w == -1000 and act.battery_reason is None, act
    act = d.step(4, _live(house, soc=20), Targets(battery_w=-1000))
    assert act.battery_w == 0 and act.battery_reason == "soc_min", act
    act = d.step(5, _live(house, soc=20), Targets(battery_w=1000))
    assert act.battery_w == 1000, act
    act = d.step(6, _live(house, soc=50), Targets())
    assert act.battery_w == 0 and act.battery_reason is None and act.ev_ma == 0, act
    act = d.step(7, _live(house, soc=50), None)
    assert act.battery_w == 0 and act.ev_reason is None, act


def test_ev_current_is_zero_or_6_a_to_the_circuit_max():
    d = Dispatcher(_limits(ev_max_a=20))
    house = (2000, 2000, 2000)
    for want, got, why in ((32000, 20000, "circuit"), (20000, 20000, None),
                           (6000, 6000, None), (5999, 0, "below_min"),
                           (1, 0, "below_min"), (0, 0, None)):
        act = d.step(0, _live(house), Targets(ev_ma=want))
        assert act.ev_ma == got and act.ev_reason == why, (want, act)
        want_duty = evse.duty_for_ma(got, 20000) if got else evse.PAUSE_DUTY
        assert act.ev_duty_u16 == want_duty and act.ev_relay == (got > 0), act


def test_pilot_state_gates_the_ev():
    d = Dispatcher(_limits())
    house = (2000, 2000, 2000)
    for pilot, got, why in (("A", 0, "no_vehicle"), ("B", 10000, None),
                            ("C", 10000, None), ("D", 0, "ventilation"),
                            ("E", 0, "pilot_fault"), ("F", 0, "pilot_fault"),
                            ("unknown", 0, "pilot_fault"), (None, 10000, None)):
        act = d.step(0, _live(house, pilot=pilot), Targets(ev_ma=10000))
        assert act.ev_ma == got and act.ev_reason == why, (pilot, act)


def test_single_phase_devices_use_their_own_line():
    # EV on L2, battery on L3; L1 is full, which must not stop either.
    lim = _limits(ev_phases=1, ev_phase=2, battery_phases=1, battery_phase=3,
                  battery_max_w=5000, ev_max_a=32)
    d = Dispatcher(lim)
    act = d.step(0, _live((31000, 10000, 30000)), Targets(battery_w=5000, ev_ma=32000))
    assert act.ev_ma == 22000 and act.ev_reason == "fuse", act
    # L3 has 2000 mA: 2000 x 230 / 1000 = 460 W.
    assert act.battery_w == 460 and act.battery_reason == "fuse", act
    assert act.overload is False and act.headroom_ma == 1000
    act = d.step(1, _live((33000, 10000, 10000)), Targets(ev_ma=16000))
    assert act.overload is True and act.headroom_ma == -1000 and act.ev_ma == 16000, act


def test_fuse_counts_what_ev_and_battery_draw_now():
    # The measured 16 A of the EV and 3 kW of the battery are part of the
    # phase currents, not extra load: the same targets are granted again.
    d = Dispatcher(_limits(ev_max_a=32, battery_max_w=5000))
    want = Targets(battery_w=3000, ev_ma=16000)
    act = d.step(0, _live((8000, 8000, 8000)), want)
    assert act.ev_ma == 16000 and act.battery_w == 3000, act
    measured = tuple(8000 + 16000 + 3000 * 1000 // 690 for _ in range(3))
    act = d.step(1, _live(measured, battery_w=3000, ev_ma=16000), want)
    assert act.ev_ma == 16000 and act.battery_w == 3000 and act.headroom_ma == 24000, act


def test_discharge_limited_by_fuse_in_the_export_direction():
    lim = _limits(battery_max_w=20000, battery_phases=1, battery_phase=1,
                  export_cap_w=100000, fuse_a=25, fuse_margin_ma=0)
    d = Dispatcher(lim)
    # L1 already exports 20 A (PV): 25 A more would be 45 A; 5 A = 1150 W.
    act = d.step(0, _live((-20000, 0, 0), net_w=-4600), Targets(battery_w=-20000))
    assert act.battery_w == -1150 and act.battery_reason == "fuse", act


def test_export_cap_and_battery_to_ev():
    d = Dispatcher(_limits(export_cap_w=0, battery_max_w=5000))
    # Zero export: discharge covers the household's 1500 W net, no more.
    act = d.step(0, _live((2174, 2174, 2174), net_w=1500), Targets(battery_w=-5000))
    assert act.battery_w == -1500 and act.battery_reason == "export_cap", act
    # PV already exports: no discharge at all.
    act = d.step(1, _live((-3000, -3000, -3000), net_w=-2070), Targets(battery_w=-5000))
    assert act.battery_w == 0 and act.battery_reason == "export_cap", act
    assert act.battery_relay is False
    # An EV still drawing (paused, not yet stopped) counts as charging.
    d2 = Dispatcher(_limits(export_cap_w=5000, battery_max_w=5000))
    act = d2.step(0, _live((9000, 9000, 9000), net_w=900 + 5520, ev_ma=8000),
                  Targets(battery_w=-5000))
    assert act.ev_ma == 0 and act.battery_w == -900, act
    assert act.battery_reason == "battery_to_ev", act
    # Allowed: the EV's draw counts against the export cap, up to what it
    # draws now and is allowed next (8 A = 5520 W).
    d3 = Dispatcher(_limits(export_cap_w=0, battery_max_w=10000, allow_battery_to_ev=True))
    act = d3.step(0, _live((9000, 9000, 9000), net_w=900 + 5520, ev_ma=8000),
                  Targets(battery_w=-10000, ev_ma=16000))
    assert act.ev_ma == 16000 and act.battery_w == -(900 + 5520), act
    assert act.battery_reason == "export_cap", act


def test_failsafe_on_stale_data_hub_loss_and_request():
    lim = Limits({"relay_min_on_ms": 60000, "relay_min_off_ms": 60000})
    d = Dispatcher(lim, start_ms=0)
    want = Targets(battery_w=1000, ev_ma=10000)
    house = (3000, 3000, 3000)
    act = d.step(1000, _live(house), want)
    assert act.ev_ma == 0 and act.ev_reason == "relay", act  # min_off after boot
    assert act.ev_relay_reason == "min_off" and act.battery_reason == "relay", act
    act = d.step(60000, _live(house), want)
    assert act.ev_ma == 10000 and act.battery_w == 1000 and act.ev_relay, act
    act = d.step(61000, _live(house, age=5001), want)
    assert act.failsafe == "stale" and act.ev_ma == 0 and act.battery_w == 0, act
    assert act.ev_duty_u16 == evse.PAUSE_DUTY and act.ev_reason == "failsafe"
    # Opened although closed for only 1 s (min_on 60 s): safety never waits.
    assert act.ev_relay is False and act.battery_relay is False, act
    assert d.ev_relay.forced == 1 and d.battery_relay.latched
    act = d.step(62000, _live(house, age=5000), want)  # fresh again
    assert act.failsafe is None and act.ev_ma == 0 and act.ev_relay_reason == "min_off", act
    act = d.step(121000, _live(house), want)
    assert act.ev_ma == 10000 and act.ev_relay, act
    act = d.step(122000, None, want)
    assert act.failsafe == "no_data" and not act.ev_relay, act
    act = d.step(123000, _live(house), want, hub_lost=True)
    assert act.failsafe == "hub_lost" and act.battery_w == 0, act
    d.request_safe("console stop")
    act = d.step(200000, _live(house), want)
    assert act.failsafe == "console stop", act
    d.clear_safe()
    act = d.step(200001, _live(house), want)
    assert act.failsafe is None and act.ev_ma == 10000, act


def test_failsafe_keeps_relays_the_config_keeps():
    lim = _limits(failsafe_open_battery=False)
    d = Dispatcher(lim)
    act = d.step(0, _live((0, 0, 0)), Targets(battery_w=1000, ev_ma=6000))
    assert act.battery_relay and act.ev_relay, act
    act = d.step(1, _live((0, 0, 0), age=6000), Targets(battery_w=1000, ev_ma=6000))
    assert act.battery_relay is True and act.battery_w == 0, act
    assert act.battery_relay_reason is None and act.ev_relay is False, act
    assert act.ev_relay_reason == "failsafe"


def test_relays_do_not_open_under_load_unless_for_safety():
    d = Dispatcher(_limits())
    act = d.step(0, _live((0, 0, 0)), Targets(battery_w=2000, ev_ma=10000))
    assert act.ev_relay and act.battery_relay, act
    drawing = _live((14348, 14348, 14348), battery_w=3000, ev_ma=10000)
    act = d.step(1, drawing, Targets())
    assert act.ev_ma == 0 and act.ev_duty_u16 == evse.PAUSE_DUTY and act.battery_w == 0, act
    assert act.ev_relay and act.ev_relay_reason == "under_load", act
    assert act.battery_relay and act.battery_relay_reason == "under_load", act
    act = d.step(2, _live((0, 0, 0), battery_w=99, ev_ma=999), Targets())
    assert not act.ev_relay and not act.battery_relay, act
    assert act.ev_relay_reason is None and act.battery_relay_reason is None, act
    # The fail-safe opens even while both still draw.
    d.step(3, _live((0, 0, 0)), Targets(battery_w=2000, ev_ma=10000))
    act = d.step(4, drawing, Targets(battery_w=2000, ev_ma=10000), hub_lost=True)
    assert not act.ev_relay and not act.battery_relay and act.failsafe == "hub_lost"


def test_departure_raises_the_ev_to_the_circuit_max():
    lim = _limits(ev_max_a=16)  # 3 x 16 A x 230 V = 11,040 W
    d = Dispatcher(lim)
    d.set_departure(10 * 3600000, 22080)  # 22,080 Wh: 2 h at full current
    house = (2000, 2000, 2000)
    # 2 h + 1 s + 15 min before departure, not yet due: the target stands.
    act = d.step(10 * 3600000 - 8101000 - 1, _live(house), Targets(ev_ma=0))
    assert act.ev_ma == 0, act
    act = d.step(10 * 3600000 - 8101000, _live(house), Targets(ev_ma=0))
    assert act.ev_ma == 16000 and act.ev_reason == "departure", act
    # Energy delivered: the target is the agent's again.
    act = d.step(10 * 3600000 - 1000, _live(house, ev_session_wh=22080), Targets(ev_ma=0))
    assert act.ev_ma == 0, act
    # The fuse still comes first.
    act = d.step(10 * 3600000 - 999, _live((25000, 2000, 2000)), Targets(ev_ma=0))
    assert act.ev_ma == 7000 and act.ev_reason == "fuse", act


def _base(lim, live):
    volts, n_bat = lim.voltage_v, len(lim.battery_lines)
    base = list(live.phase_ma)
    for p in lim.ev_lines:
        base[p] -= live.ev_ma
    for p in lim.battery_lines:
        base[p] -= live.battery_w * 1000 // (volts * n_bat)
    return base


def _check_invariants(lim, live, want, act):
    volts = lim.voltage_v
    e, b = act.ev_ma, act.battery_w
    assert e == 0 or evse.MIN_MA <= e <= lim.ev_max_ma, act
    assert act.ev_duty_u16 == (evse.duty_for_ma(e, lim.ev_max_ma) if e else evse.PAUSE_DUTY)
    assert abs(b) <= lim.battery_max_w, act
    want_b = want.battery_w or 0
    assert b == 0 or (b > 0) == (want_b > 0) and abs(b) <= abs(want_b), (want_b, act)
    if live.soc_pct >= lim.soc_max_pct:
        assert b <= 0, act
    if live.soc_pct <= lim.soc_min_pct:
        assert b >= 0, act
    base = _base(lim, live)
    charge = _ceil_div(b * 1000, volts * len(lim.battery_lines)) if b > 0 else 0
    for p in range(lim.grid_phases):
        after = base[p] + (e if p in lim.ev_lines else 0) + \
            (charge if p in lim.battery_lines else 0)
        if (e and p in lim.ev_lines) or (charge and p in lim.battery_lines):
            assert after <= lim.fuse_limit_ma, (p, after, act)
    if b < 0:
        discharge = -b * 1000 // (volts * len(lim.battery_lines))
        for p in lim.battery_lines:
            assert base[p] - discharge >= -lim.fuse_limit_ma, (p, act)
        ev_w_now = live.ev_ma * volts * len(lim.ev_lines) // 1000
        base_net = live.net_w - ev_w_now - live.battery_w
        counted = 0
        if lim.allow_battery_to_ev and e:
            counted = min(ev_w_now, e * volts * len(lim.ev_lines) // 1000)
        assert base_net + counted + b >= -lim.export_cap_w, act
        if not lim.allow_battery_to_ev and (e or live.ev_ma >= 1000):
            assert -b <= max(0, base_net), act
    if act.ev_ma and want.ev_ma is not None:
        assert act.ev_ma <= want.ev_ma, act


def test_random_inputs_never_break_a_limit():
    rng = Xorshift32(0xE17E)
    configs = (
        _limits(ev_max_a=32, battery_max_w=5000, export_cap_w=3000),
        _limits(ev_phases=1, ev_phase=3, battery_phases=1, battery_phase=1,
                battery_max_w=4600, export_cap_w=0, allow_battery_to_ev=True, ev_max_a=32),
        _limits(grid_phases=1, ev_phases=1, battery_phases=1, fuse_a=63,
                fuse_margin_ma=5000, battery_max_w=10000, export_cap_w=7000),
    )
    for lim in configs:
        d = Dispatcher(lim)
        for now in range(iterations(800)):
            phases = tuple(rng.below(80001) - 30000 for _ in range(lim.grid_phases))
            live = _live(phases, net_w=rng.below(40001) - 20000, soc=rng.below(101),
                         battery_w=rng.below(10001) - 5000, ev_ma=rng.below(3) * 8000,
                         pilot=(None, "B", "C", "A")[rng.below(4)])
            battery = None if rng.below(5) == 0 else rng.below(24001) - 12000
            ev = None if rng.below(5) == 0 else rng.below(40001)
            want = Targets(battery_w=battery, ev_ma=ev)
            act = d.step(now, live, want)
            _check_invariants(lim, live, want, act)


def test_simulated_household_never_exceeds_fuse_or_export_cap():
    # 450 s at 1-second steps, default relay dwell (60 s) and rate. House
    # load per phase (W), PV split over three phases, a 3-phase 22 kW EV
    # that draws what it is offered, a 5 kW battery of 10 kWh. The trade
    # first asks EV 32 A + battery +5 kW (27 kW: more than the fuse's
    # 3 x 32 A x 230 V = 22 kW), then sells 5 kW from the battery while the
    # EV charges, then sells 5 kW with PV covering the house and the EV done
    # (export cap 3 kW). A load that switches on can take a phase over the
    # limit for the one second before the next step: never by more than
    # that load.
    volts = 230
    lim = Limits({"ev_max_a": 32, "battery_max_w": 5000, "export_cap_w": 3000})
    d = Dispatcher(lim, start_ms=0)
    limit = lim.fuse_limit_ma
    energy_ws = 5000 * 3600  # 50 % of 10 kWh, in watt-seconds
    ev_ma, battery_w = 0, 0  # what the devices do now
    last_house = None
    seen = {}
    for t in range(450):
        house = [400, 400, 400]
        if 40 <= t < 130:
            house[0] += 2000  # kettle
        if 200 <= t < 260:
            for p in range(3):
                house[p] += 1200  # oven
        if 100 <= t < 400 and (t // 20) % 2:
            house[1] += 2000  # washing machine heating
        pv_w = 2000 if t < 300 else 3500
        if t < 150:
            want = Targets(battery_w=5000, ev_ma=32000)
        elif t < 300:
            want = Targets(battery_w=-5000, ev_ma=32000)
        else:
            want = Targets(battery_w=-5000)
        soc = energy_ws * 100 // (10000 * 3600)

        def phases(ev, bat):
            bat_ma = _ceil_div(bat * 1000, volts * 3)
            return tuple((house[p] - pv_w // 3) * 1000 // volts + ev + bat_ma for p in range(3))

        def net(ev, bat):
            return sum(house) - pv_w + ev * volts * 3 // 1000 + bat

        reading = phases(ev_ma, battery_w)
        for p in range(3):
            if reading[p] > limit:
                # Only in the second a load switched on, before the step
                # reacts, and by no more than that load: see docs/safety.md.
                step_ma = _ceil_div((house[p] - last_house[p]) * 1000, volts)
                assert reading[p] - limit <= step_ma, (t, p, reading)
        live = Live(reading, net(ev_ma, battery_w), soc, battery_w, ev_ma, 200, pilot="C")
        act = d.step(t * 1000, live, want)
        ev_ma, battery_w = act.ev_ma, act.battery_w
        after = phases(ev_ma, battery_w)
        assert max(after) <= limit, (t, after, act)
        assert min(after) >= -limit, (t, after, act)
        if battery_w < 0:
            assert net(ev_ma, battery_w) >= -lim.export_cap_w, (t, act)
            assert ev_ma == 0 or -battery_w <= max(0, net(0, 0)), (t, act)
        energy_ws += battery_w
        last_house = house
        for why in (act.ev_reason, act.battery_reason):
            seen[why] = seen.get(why, 0) + 1
    # The run did exercise the limits it claims to respect.
    for why in ("fuse", "relay", "battery_to_ev", "export_cap"):
        assert seen.get(why), (why, seen)
    assert d.ev_relay.switches >= 2 and d.battery_relay.switches >= 1
