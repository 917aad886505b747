# lib/relay.py: dwell, switching rate, the forced (never delayed) opening,
# and a request storm that must not make the relay chatter.
from fuzzing import Xorshift32
from mpcompat import raises

import relay
from relay import RelayGuard


def test_first_closing_waits_min_off_after_boot():
    g = RelayGuard(min_on_ms=1000, min_off_ms=2000, start_ms=500)
    assert g.closed is False and g.changed_ms == 500
    assert g.request(True, 500) is False and g.reason == "min_off"
    assert g.request(True, 2499) is False and g.reason == "min_off"
    assert g.request(True, 2500) is True and g.reason is None
    assert g.switches == 1 and g.deferred == 2 and g.refused == 0


def test_min_on_defers_a_requested_opening():
    g = RelayGuard(min_on_ms=1000, min_off_ms=0, start_ms=0)
    assert g.request(True, 0) is True
    assert g.request(False, 999) is True and g.reason == "min_on"
    assert g.request(True, 999) is True and g.reason is None  # as asked: not deferred
    assert g.request(False, 1000) is False and g.reason is None
    assert g.deferred == 1 and g.changed_ms == 1000


def test_rate_limit_counts_every_switching_in_the_window():
    g = RelayGuard(min_on_ms=0, min_off_ms=0, max_switches=3, window_ms=10000)
    assert g.request(True, 0) is True
    assert g.request(False, 1) is False
    assert g.request(True, 2) is True
    assert g.request(False, 3) is True and g.reason == relay.RATE
    assert g.request(False, 9999) is True and g.reason == relay.RATE
    assert g.request(False, 10000) is False  # the switching at 0 left the window
    assert g.request(True, 10000) is False and g.reason == relay.RATE  # 1, 2, 10000
    assert g.request(True, 10001) is True  # the switching at 1 left the window
    assert g.switches == 5 and g.deferred == 3, (g.switches, g.deferred)


def test_force_safe_opens_at_once_and_latches():
    g = RelayGuard(min_on_ms=60000, min_off_ms=30000, max_switches=2, window_ms=3600000)
    assert g.request(True, 30000) is True
    # Closed for 1 ms, rate used up: a request would wait, the safety opening does not.
    assert g.request(False, 30001) is True and g.reason == "min_on"
    assert g.force_safe(30001) is False
    assert g.closed is False and g.reason == "forced" and g.latched
    assert g.forced == 1 and g.switches == 2
    # Latched: closing is refused, even after min_off.
    assert g.request(True, 100000) is False and g.reason == "latched"
    assert g.refused == 1
    g.release()
    # Released: closing still waits for the rate (2 switchings in the last hour).
    assert g.request(True, 100001) is False and g.reason == relay.RATE
    assert g.request(True, 30000 + 3600000) is True
    # force_safe on an open relay is not a switching.
    g2 = RelayGuard()
    assert g2.force_safe(5) is False and g2.switches == 0 and g2.forced == 0


def test_forced_opening_restarts_min_off():
    g = RelayGuard(min_on_ms=0, min_off_ms=5000, start_ms=0, max_switches=100, window_ms=1)
    assert g.request(True, 5000) is True
    g.force_safe(6000)
    g.release()
    assert g.request(True, 10999) is False and g.reason == "min_off"
    assert g.request(True, 11000) is True


def test_force_safe_never_raises_on_a_bad_time():
    g = RelayGuard(min_on_ms=0, min_off_ms=0, start_ms=100)
    assert g.request(True, 200) is True
    for bad in (150, -1, None, 1.5, "now", True):
        g.release()
        g.request(True, 200)
        assert g.force_safe(bad) is False and g.closed is False, bad
    assert g.clock_faults == 6, g.clock_faults
    assert g.changed_ms == 200  # dated at the latest valid time seen


def test_bad_config_time_and_state_are_refused():
    cases = (
        ({"min_on_ms": -1}, "config"),
        ({"min_off_ms": 3600001}, "config"),
        ({"max_switches": 0}, "config"),
        ({"max_switches": 101}, "config"),
        ({"window_ms": 0}, "config"),
        ({"min_on_ms": 1.0}, "not_int"),
        ({"window_ms": True}, "not_int"),
        ({"start_ms": -5}, "time"),
        ({"start_ms": None}, "not_int"),
    )
    for kwargs, reason in cases:
        exc = raises(relay.RelayError, RelayGuard, **kwargs)
        assert exc.reason == reason, (kwargs, exc)
        assert isinstance(exc, ValueError)
    g = RelayGuard(start_ms=1000)
    for args, reason in (((True, 999), "time"), ((True, -1), "time"), ((1, 2000), "state"),
                         ((None, 2000), "state"), ((False, 2000.0), "not_int")):
        exc = raises(relay.RelayError, g.request, *args)
        assert exc.reason == reason, (args, exc)
    assert g.closed is False and g.switches == 0


def _check_switchings(times, states, guard):
    # times[i]: when the relay switched to states[i]. Dwell between each pair,
    # and at most max_switches in any window_ms.
    for i in range(1, len(times)):
        dwell = guard.min_on_ms if states[i - 1] else guard.min_off_ms
        assert times[i] - times[i - 1] >= dwell, (i, times[i - 1], times[i])
    n = guard.max_switches
    for i in range(n, len(times)):
        assert times[i] - times[i - n] >= guard.window_ms, (i, times[i - n], times[i])


def test_request_storm_never_chatters():
    # 1,000 conflicting requests per second for 60 simulated seconds.
    g = RelayGuard(min_on_ms=2000, min_off_ms=3000, max_switches=6, window_ms=20000)
    rng = Xorshift32(0x5704)
    times, states = [], []
    was = g.closed
    differing = 0  # requests for the state the relay was not in
    for now in range(60000):
        want = (now & 1) == 0 if rng.below(2) else rng.below(2) == 1
        differing += want != g.closed
        got = g.request(want, now)
        assert got == g.closed
        if got != was:
            times.append(now)
            states.append(got)
            was = got
    _check_switchings(times, states, g)
    assert g.switches == len(times) and len(times) >= 12, len(times)
    assert g.deferred + g.switches == differing and g.deferred > 25000, g.deferred
    assert g.refused == 0


def test_storm_with_forced_openings_keeps_closings_in_check():
    g = RelayGuard(min_on_ms=1500, min_off_ms=2500, max_switches=4, window_ms=15000)
    rng = Xorshift32(0xF0C3)
    times, states = [], []
    was = g.closed
    for now in range(60000):
        roll = rng.below(5000)
        if roll == 0:
            g.force_safe(now)
        elif roll == 1:
            g.release()
        else:
            g.request(rng.below(2) == 1, now)
        if g.closed != was:
            was = g.closed
            times.append(now)
            states.append(was)
    # Every closing waited min_off after the previous opening (forced or not)
    # and had fewer than max_switches switchings in the window before it.
    n = g.max_switches
    for i in range(len(times)):
        if not states[i]:
            continue
        if i:
            assert times[i] - times[i - 1] >= g.min_off_ms, (i, times)
        if i >= n:
            assert times[i] - times[i - n] >= g.window_ms, (i, times)
    assert g.forced >= 1 and g.switches == len(times), (g.forced, g.switches)
