# lib/evse.py: IEC 61851-1 control pilot duty <-> current, pilot states and
# their debouncing. Expected duties are the standard's duty% (Annex A,
# Table A.8: I/0.6 A below 51 A, I/2.5 A + 64 above) times 65535/100,
# rounded down, worked out by hand beside each value.
from fuzzing import Xorshift32, iterations
from mpcompat import raises

import evse


def test_duty_table_6_to_32_a():
    # A: (duty %, duty_u16 = floor(A/0.6 * 655.35))
    table = (
        (6, 6553),  # 10 %: 6553.5
        (10, 10922),  # 16.667 %: 10922.5
        (16, 17476),  # 26.667 %: 17476.0
        (20, 21845),  # 33.333 %: 21845.0
        (25, 27306),  # 41.667 %: 27306.25
        (32, 34952),  # 53.333 %: 34952.0
    )
    for amps, want in table:
        got = evse.duty_for_ma(amps * 1000)
        assert got == want, (amps, got)
        back = evse.ma_for_duty(got)
        assert amps * 1000 - 1 <= back <= amps * 1000, (amps, back)
    # The same duties from the formula in percent, without the reduced fraction.
    for amps, want in table:
        assert amps * 1000 * 65535 // 60000 == want, amps


def test_duty_above_51_a_uses_the_second_segment():
    # 60 A: 60/2.5 + 64 = 88 % -> 57670.8; 80 A: 96 % -> 62913.6
    assert evse.duty_for_ma(60000, 80000) == 57670
    assert evse.duty_for_ma(80000, 80000) == 62913
    # 57670 / 655.35 = 87.9988 % -> (87.9988 - 64) * 2.5 A = 59.9969 A
    assert evse.ma_for_duty(57670) == 59996, evse.ma_for_duty(57670)
    # 51 A is 85 % exactly; 51..52.5 A has no duty of its own: 51 A is offered.
    assert evse.duty_for_ma(51000, 80000) == 55704  # 55704.75
    assert evse.duty_for_ma(52000, 80000) == 55704
    assert evse.ma_for_duty(55704) == 50999


def test_round_trip_never_offers_more_than_asked():
    for ma in range(6000, 80001, 37):
        back = evse.ma_for_duty(evse.duty_for_ma(ma, 80000))
        assert back <= ma, (ma, back)
        if ma <= 51000:
            assert back >= ma - 1, (ma, back)
        elif ma < 52510:
            assert back >= 50999, (ma, back)  # the 51..52.5 A gap
        else:
            assert back >= ma - 4, (ma, back)


def test_duty_is_monotonic_in_current():
    last = 0
    for ma in range(6000, 80001, 11):
        duty = evse.duty_for_ma(ma, 80000)
        assert duty >= last, (ma, duty, last)
        last = duty


def test_current_is_clamped_to_the_configured_max():
    assert evse.duty_for_ma(40000) == evse.duty_for_ma(32000)
    assert evse.duty_for_ma(32000, 16000) == evse.duty_for_ma(16000) == 17476
    assert evse.duty_for_ma(6000, 6000) == 6553


def test_below_6_a_is_refused_pause_instead():
    for ma in (0, 1, 5999):
        exc = raises(evse.PilotError, evse.duty_for_ma, ma)
        assert exc.reason == "below_min", exc
        assert isinstance(exc, ValueError)
        assert "PAUSE_DUTY" in str(exc), exc
    assert evse.ma_for_duty(evse.PAUSE_DUTY) == 0
    assert evse.PAUSE_DUTY == 65535  # what firmware/gateway/board.py drives at boot


def test_bad_arguments_have_reasons():
    cases = (
        ((-1,), "negative"),
        ((6000.0,), "not_int"),
        ((True,), "not_int"),
        (("6000",), "not_int"),
        ((None,), "not_int"),
        ((10000, 5999), "max_range"),
        ((10000, 80001), "max_range"),
        ((10000, 32000.0), "not_int"),
    )
    for args, reason in cases:
        exc = raises(evse.PilotError, evse.duty_for_ma, *args)
        assert exc.reason == reason, (args, exc)
    for duty, reason in ((-1, "duty_range"), (65536, "duty_range"), (1.5, "not_int"),
                         (False, "not_int")):
        exc = raises(evse.PilotError, evse.ma_for_duty, duty)
        assert exc.reason == reason, (duty, exc)


def test_ma_for_duty_bands_of_table_a8():
    def at(pct_x100):  # the duty_u16 just at or above pct_x100 / 100 %
        return (pct_x100 * 65535 + 9999) // 10000

    assert evse.ma_for_duty(0) == 0
    assert evse.ma_for_duty(at(299)) == 0  # below 3 %
    assert evse.ma_for_duty(evse.DIGITAL_DUTY) == 0  # 5 %: digital communication
    assert evse.is_digital(evse.DIGITAL_DUTY)
    assert evse.is_digital(at(300)) and evse.is_digital(at(700) - 1)
    assert not evse.is_digital(at(800)) and not evse.is_digital(evse.duty_for_ma(6000))
    assert evse.ma_for_duty(at(750)) == 0  # 7..8 %: no charging
    assert evse.ma_for_duty(at(800)) == 6000  # 8..10 %: 6 A
    assert evse.ma_for_duty(at(1000) - 1) == 6000
    assert evse.ma_for_duty(at(1000)) == 6000
    assert evse.ma_for_duty(at(5000)) == 30000  # 50 % -> 30 A
    assert evse.ma_for_duty(at(8600)) == 55003  # 56361: 86.0013 % -> 55.003 A
    assert evse.ma_for_duty(at(9650)) == 80000  # 96..97 %: 80 A
    assert evse.ma_for_duty(at(9700) + 1) == 0  # above 97 %
    assert evse.ma_for_duty(65535) == 0


def test_pilot_state_bands():
    cases = (
        (12000, "A"), (11000, "A"), (13000, "A"), (10999, "unknown"), (13001, "unknown"),
        (9000, "B"), (8000, "B"), (10000, "B"), (10500, "unknown"),
        (6000, "C"), (5000, "C"), (7000, "C"), (7500, "unknown"), (4500, "unknown"),
        (3000, "D"), (2000, "D"), (4000, "D"), (1500, "unknown"),
        (0, "E"), (-1000, "E"), (1000, "E"), (-1001, "unknown"),
        (-12000, "F"), (-11000, "F"), (-13000, "F"), (-6000, "unknown"),
        (25000, "unknown"), (-20000, "unknown"),
    )
    for mv, want in cases:
        got = evse.state_for_mv(mv)
        assert got == want, (mv, got)
    assert evse.UNKNOWN == "unknown" and evse.STATE_C == "C"
    for bad in (9.0, None, "9000", True):
        exc = raises(evse.PilotError, evse.state_for_mv, bad)
        assert exc.reason == "not_int", exc


def test_monitor_reports_a_state_held_long_enough():
    mon = evse.PilotMonitor(hold_samples=3, hold_ms=20)
    assert mon.state == evse.UNKNOWN
    assert mon.update(12000, 0) == evse.UNKNOWN
    assert mon.update(12100, 10) == evse.UNKNOWN
    assert mon.update(11900, 20) == evse.STATE_A  # 3 samples over 20 ms
    assert mon.update(6000, 30) == evse.STATE_A  # one glitch: not reported
    assert mon.update(12000, 40) == evse.STATE_A
    for t, mv in ((50, 9000), (60, 9100)):
        assert mon.update(mv, t) == evse.STATE_A
    assert mon.update(8900, 70) == evse.STATE_B
    # Three samples in 5 ms do not satisfy hold_ms.
    assert mon.update(6000, 71) == evse.STATE_B
    assert mon.update(6000, 72) == evse.STATE_B
    assert mon.update(6000, 76) == evse.STATE_B
    assert mon.update(6000, 91) == evse.STATE_C


def test_monitor_by_time_only_and_by_samples_only():
    mon = evse.PilotMonitor(hold_samples=1, hold_ms=50)
    assert mon.update(-12000, 100) == evse.UNKNOWN
    assert mon.update(-12000, 149) == evse.UNKNOWN
    assert mon.update(-12000, 150) == evse.STATE_F
    mon = evse.PilotMonitor(hold_samples=2, hold_ms=0)
    assert mon.update(0, 5) == evse.UNKNOWN
    assert mon.update(0, 5) == evse.STATE_E
    assert mon.update(5000, 5) == evse.STATE_E  # the same ms is allowed


def test_monitor_reports_only_states_seen_in_a_run():
    rng = Xorshift32(0x61851)
    levels = (12000, 9000, 6000, 3000, 0, -12000, 10500, 7500)
    for _ in range(iterations(20)):
        hold = 1 + rng.below(5)
        mon = evse.PilotMonitor(hold_samples=hold, hold_ms=0)
        run_state, run = None, 0
        reported = evse.UNKNOWN
        level = levels[0]
        for t in range(300):
            if rng.below(4) == 0:
                level = levels[rng.below(len(levels))]
            mv = level + rng.below(801) - 400  # noise within the +-1 V band
            state = evse.state_for_mv(mv)
            run = run + 1 if state == run_state else 1
            run_state = state
            got = mon.update(mv, t)
            if got != reported:
                assert got == state and run >= hold, (got, state, run, hold)
                reported = got


def test_monitor_bad_config_and_time():
    for kwargs in ({"hold_samples": 0}, {"hold_samples": 1001}, {"hold_ms": -1},
                   {"hold_ms": 60001}):
        exc = raises(evse.PilotError, evse.PilotMonitor, **kwargs)
        assert exc.reason == "config", (kwargs, exc)
    exc = raises(evse.PilotError, evse.PilotMonitor, hold_samples=2.0)
    assert exc.reason == "not_int", exc
    mon = evse.PilotMonitor()
    exc = raises(evse.PilotError, mon.update, 12000, -1)
    assert exc.reason == "time", exc
    mon.update(12000, 100)
    exc = raises(evse.PilotError, mon.update, 12000, 99)
    assert exc.reason == "time", exc
    exc = raises(evse.PilotError, mon.update, 12000, 100.5)
    assert exc.reason == "not_int", exc
    exc = raises(evse.PilotError, mon.update, "12 V", 101)
    assert exc.reason == "not_int", exc
