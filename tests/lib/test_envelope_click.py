# lib/envelope.py: the technician's relay click test (Dispatcher.click)
# inside a requested fail-safe hold, and running().
from mpcompat import raises

import envelope
import relay
from envelope import Dispatcher, EnvelopeError, Limits, Live

ON_MS = 1000
OFF_MS = 2000


def _dispatcher(**fields):
    config = {"relay_min_on_ms": ON_MS, "relay_min_off_ms": OFF_MS, "relay_max_switches": 10,
              "relay_window_ms": 3600000}
    config.update(fields)
    return Dispatcher(Limits(config), 0)


def _live(ev_ma=0, battery_w=0):
    return Live((1000, 1000, 1000), 690, 50, battery_w, ev_ma, 0)


def test_click_needs_a_requested_hold_and_good_arguments():
    d = _dispatcher()
    exc = raises(EnvelopeError, d.click, "battery", True)
    assert exc.reason == "arg" and "request_safe" in str(exc), exc
    d.request_safe()
    assert d.held() == "requested"
    assert raises(EnvelopeError, d.click, "pump", True).reason == "arg"
    assert raises(EnvelopeError, d.click, "ev", 1).reason == "arg"
    d.click(None)  # ending a test that never ran is fine


def test_a_click_waits_for_the_dwell_both_ways_and_keeps_setpoints_at_zero():
    d = _dispatcher()
    d.request_safe()
    act = d.step(500, _live())
    assert act.failsafe == "requested" and not act.battery_relay
    d.click("battery", True)
    act = d.step(1000, _live())  # 1 s after the boot's opening: min_off not over
    assert not act.battery_relay and act.battery_relay_reason == "min_off", act
    act = d.step(OFF_MS, _live())
    assert act.battery_relay and act.battery_relay_reason == "click_test", act
    assert act.battery_w == 0 and act.ev_ma == 0 and act.failsafe == "requested", act
    assert not act.ev_relay and act.ev_relay_reason == "failsafe", act
    d.click("battery", False)
    act = d.step(OFF_MS + ON_MS - 1, _live())
    assert act.battery_relay and act.battery_relay_reason == "min_on", act
    act = d.step(OFF_MS + ON_MS, _live())
    assert not act.battery_relay and act.battery_relay_reason == "click_test", act
    assert d.battery_relay.switches == 2 and d.battery_relay.forced == 0
    d.click(None)
    act = d.step(OFF_MS + ON_MS + 1, _live())
    assert act.battery_relay_reason == "failsafe" and d.battery_relay.latched


def test_ending_the_test_or_the_hold_opens_a_clicked_relay():
    d = _dispatcher()
    d.request_safe()
    d.click("ev", True)
    assert d.step(OFF_MS, _live()).ev_relay
    d.click(None)
    act = d.step(OFF_MS + 10, _live())  # the hold opens it at once, as any fail-safe
    assert not act.ev_relay and d.ev_relay.forced == 1 and d.ev_relay.latched
    d.click("ev", True)
    d.clear_safe()  # also ends the click test
    d.request_safe()
    act = d.step(2 * OFF_MS + 10, _live())
    assert not act.ev_relay and act.ev_relay_reason == "failsafe", act


def test_a_click_counts_against_the_rate_limit():
    d = _dispatcher(relay_min_on_ms=0, relay_min_off_ms=0, relay_max_switches=2)
    d.request_safe()
    now = 1
    for closed in (True, False):
        d.click("battery", closed)
        assert d.step(now, _live()).battery_relay is closed
        now += 1
    d.click("battery", True)
    act = d.step(now, _live())
    assert not act.battery_relay and act.battery_relay_reason == relay.RATE, act


def test_a_relay_the_config_keeps_in_the_fail_safe_can_be_clicked():
    d = _dispatcher(failsafe_open_ev=False)
    d.request_safe()
    act = d.step(OFF_MS, _live())
    assert not act.ev_relay and act.ev_relay_reason is None, act
    d.click("ev", True)
    assert d.step(OFF_MS + 1, _live()).ev_relay
    d.click(None)
    act = d.step(OFF_MS + 2, _live())  # kept as it is: still closed, setpoint 0
    assert act.ev_relay and act.ev_ma == 0 and act.ev_relay_reason is None, act


def test_running_says_which_device_still_draws():
    assert envelope.running(None) is None
    assert envelope.running(_live()) is None
    assert envelope.running(_live(ev_ma=999, battery_w=-99)) is None
    assert envelope.running(_live(ev_ma=6000)) == "ev"
    assert envelope.running(_live(battery_w=-2500)) == "battery"
    assert envelope.running(_live(battery_w=100)) == "battery"
