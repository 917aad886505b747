# The device clock (lib/clocksync.py, docs/intervals.md).
from fuzzing import Xorshift32, iterations
from mpcompat import raises

from clocksync import Clock, ClockError
from intervals import IntervalEngine

T0 = 1767225600  # 2026-01-01T00:00:00Z (calendar.timegm)
HOUR_MS = 3600000
DAY_MS = 24 * HOUR_MS
EPOCH_2020 = 1577836800  # 2020-01-01T00:00:00Z, the earliest valid time
MAX_RATE = 100000  # Clock's top rate


def test_unsynchronised_until_the_first_sync():
    c = Clock()
    assert not c.synced(0) and c.now(0) is None and c.now_ms(0) is None
    assert c.estimate(5) is None and c.source is None
    assert c.describe(5) == "unsynchronised: no NTP or hub time yet", c.describe(5)


def test_ntp_sets_the_clock_and_it_runs_with_the_counter():
    c = Clock()
    assert c.ntp(T0, 10000, 250) is None  # no step on the first sync
    assert c.synced(10000) and c.source == "ntp" and c.synced_at_ms == 10000
    assert c.now_ms(10000) == T0 * 1000 + 250
    assert c.now(10749) == T0 and c.now(10750) == T0 + 1
    assert c.now_ms(10000 + 5 * HOUR_MS + 7) == (T0 + 5 * 3600) * 1000 + 257
    # a second answer 120 ms later than the clock thought: the step
    assert c.ntp(T0 + 60, 70000, 370) == 120, c.last_step_ms
    assert c.now_ms(70000) == (T0 + 60) * 1000 + 370
    assert c.ntp(T0 + 120, 130000) == -370, c.last_step_ms
    assert c.ntp_syncs == 3


def test_rate_runs_device_time_faster():
    # a day of device time in ten minutes of local time
    c = Clock(rate=144)
    c.ntp(T0, 0)
    assert c.now(600000) == T0 + 86400, c.now(600000)
    assert c.now_ms(1) == T0 * 1000 + 144
    assert c.describe(300000) == "ntp 12 h ago, rate 144", c.describe(300000)


def test_max_age_is_device_time():
    c = Clock(max_age_s=86400)
    c.ntp(T0, 1000)
    assert c.synced(1000 + DAY_MS) and c.now(1000 + DAY_MS) == T0 + 86400
    assert not c.synced(1001 + DAY_MS)
    assert c.now(1001 + DAY_MS) is None and c.now_ms(1001 + DAY_MS) is None
    assert c.estimate(1001 + DAY_MS) == T0 + 86400  # still free-running, for logs
    assert c.describe(1001 + DAY_MS) == "unsynchronised: ntp 24 h ago", c.describe(1001 + DAY_MS)
    c.ntp(T0 + 90000, 2 * DAY_MS)
    assert c.synced(2 * DAY_MS)
    # with rate 144 a day of device time is 600 s of local time
    c = Clock(rate=144)
    c.ntp(T0, 0)
    assert c.synced(600000) and not c.synced(600001)


def test_drift_from_ntp_syncs_an_hour_apart():
    # The local counter runs 50 ppm fast: it counts 3600.180 s per real hour.
    c = Clock()
    for k in range(4):  # every 15 minutes
        c.ntp(T0 + 900 * k, 1000 + 900045 * k)
        assert c.drift_ppm is None, (k, c.drift_ppm)  # less than an hour so far
    assert c.ntp(T0 + 3600, 1000 + 3600180) == -45  # an hour after the first
    assert c.drift_ppm == 50, c.drift_ppm
    # the next estimate needs another hour from there
    c.ntp(T0 + 5400, 1000 + 3600180 + 1799910)  # now 50 ppm slow
    assert c.drift_ppm == 50
    c.ntp(T0 + 7200, 1000 + 3600180 + 3599820)  # counted 3599.82 s: not yet an hour
    assert c.drift_ppm == 50
    at = 1000 + 3600180 + 3699815
    assert c.ntp(T0 + 7300, at) == 5 and c.drift_ppm == -50, c.drift_ppm
    assert c.describe(at + 42000) == "ntp 42 s ago, step +5 ms, drift -50 ppm", \
        c.describe(at + 42000)


def test_drift_estimate_random_property():
    # Exact NTP answers from a true clock, a counter off by d ppm: the estimate
    # is d within rounding, whatever the rate and the sync spacing.
    rng = Xorshift32(0xD21F7)
    for case in range(iterations(200)):
        rate = (1, 1, 10, 144)[rng.below(4)]
        d = rng.below(2001) - 1000
        c = Clock(rate=rate)
        first_real = (T0 + rng.below(10 ** 8)) * 1000
        first_local = rng.below(10 ** 9)
        spent = 0
        while True:
            local_spent = (spent * (1000000 + d) + 500000) // 1000000 // rate
            real_ms = first_real + spent
            c.ntp(real_ms // 1000, first_local + local_spent, real_ms % 1000)
            if spent >= 5 * HOUR_MS:
                break
            spent += 1 + rng.below(HOUR_MS)
        assert c.drift_ppm is not None, case
        # local ms are whole: over >= an hour of device time, that is at most
        # 1000 * rate / 3600 ppm of quantisation
        slack = 1 + rate * 1000 // 3600 + 1
        assert abs(c.drift_ppm - d) <= slack, (case, rate, d, c.drift_ppm)


def test_hub_time_is_a_cross_check_while_ntp_is_fresh():
    c = Clock(tolerance_s=30)
    c.ntp(T0, 0)
    before = c.now_ms(60000)
    assert c.ack_time(T0 + 60 - 30, 60000) == "agree"
    assert c.hub_diff_ms == -30000, c.hub_diff_ms
    assert c.ack_time(T0 + 60 + 30, 60000) == "agree"
    assert c.ack_time(T0 + 60 - 31, 60000) == "disagree"
    assert c.ack_time(T0 + 60 + 3600, 60000) == "disagree"
    assert c.disagreements == 2 and c.now_ms(60000) == before and c.source == "ntp"
    assert c.last_step_ms is None and c.ack_syncs == 0
    assert c.describe(60000) == "ntp 60 s ago, hub off 2x", c.describe(60000)
    # the tolerance is about latency (real time): with rate 10 it is 300 s of device time
    c = Clock(rate=10)
    c.ntp(T0, 0)
    assert c.ack_time(T0 + 300, 0) == "agree" and c.ack_time(T0 + 301, 0) == "disagree"


def test_hub_time_is_the_fallback_without_ntp():
    c = Clock(ack_step_s=2)
    assert c.ack_time(T0, 5000) == "synced"
    assert c.source == "ack" and c.now(5000) == T0 and c.last_step_ms is None
    # within 2 s: confirmed, the clock keeps its own time
    assert c.ack_time(T0 + 1, 7000) == "confirmed"
    assert c.ack_time(T0 + 4, 7000) == "confirmed"
    assert c.now_ms(7000) == T0 * 1000 + 2000 and c.synced_at_ms == 7000
    assert c.ack_time(T0 + 5, 7000) == "synced" and c.last_step_ms == 3000
    assert c.now_ms(7000) == (T0 + 5) * 1000
    assert c.ack_syncs == 4
    assert c.describe(7000) == "ack 0 s ago, step +3000 ms", c.describe(7000)
    # ACKs keep the clock synced well beyond max_age
    for day in range(1, 4):
        at = 7000 + day * DAY_MS
        assert c.ack_time(T0 + 5 + 86400 * day, at) == "confirmed"
        assert c.synced(at)
    # NTP takes over again as soon as it answers
    c.ntp(T0 + 5 + 86400 * 3, 7000 + 3 * DAY_MS)
    assert c.source == "ntp" and c.ack_time(T0 + 60 + 86400 * 3, 7000 + 3 * DAY_MS) == "disagree"


def test_hub_time_takes_over_when_ntp_has_failed_for_long():
    c = Clock(ack_after_s=3 * 3600)
    c.ntp(T0, 0)
    at = 3 * HOUR_MS
    assert c.ack_time(T0 + 3 * 3600 + 20, at) == "agree"  # NTP still fresh: no step
    assert c.now(at) == T0 + 3 * 3600
    at += 1
    assert c.ack_time(T0 + 3 * 3600 + 20, at) == "synced"
    assert c.source == "ack" and c.now(at) == T0 + 3 * 3600 + 20
    assert c.last_step_ms == 19999, c.last_step_ms
    # an unsynchronised clock (max_age passed) is set even within ack_step_s
    c = Clock(max_age_s=3600, ack_after_s=60)
    c.ntp(T0, 0)
    assert not c.synced(HOUR_MS + 1)
    assert c.ack_time(T0 + 3600, HOUR_MS + 1) == "synced" and c.synced(HOUR_MS + 1)
    # ack_after_s=0: ACKs are the fallback the moment NTP's answer is older
    c = Clock(ack_after_s=0)
    c.ntp(T0, 0)
    assert c.ack_time(T0 + 100, 0) == "disagree" and c.ack_time(T0 + 100, 1) == "synced"


def test_absurd_input_is_refused_and_changes_nothing():
    c = Clock()
    c.ntp(T0, 1000)
    c.ack_time(T0 + 40, 2000)
    state = (c.now_ms(5000), c.source, c.synced_at_ms, c.last_step_ms, c.disagreements,
             c.ntp_syncs, c.ack_syncs, c.hub_diff_ms)
    bad_time = (EPOCH_2020 - 1, 0, -T0, 1 << 32, T0 + 0.5, float(T0), True, None,
                str(T0), T0 * 1000)
    for v in bad_time:
        assert raises(ClockError, c.ntp, v, 3000).reason == "time", v
        assert raises(ClockError, c.ack_time, v, 3000).reason == "time", v
    for v in (-1, 1000, 0.5, None, True):
        assert raises(ClockError, c.ntp, T0, 3000, v).reason == "time", v
    bad_local = (-1, 999, 1.5, None, True, "5000", 1 << 48)  # 999: before the last sync
    for v in bad_local:
        for f in (c.ntp, c.ack_time):
            exc = raises(ClockError, f, T0 + 5, v)
            assert exc.reason == "local" and isinstance(exc, ValueError), (v, str(exc))
        for f in (c.now, c.now_ms, c.synced, c.estimate, c.describe):
            assert raises(ClockError, f, v).reason == "local", (f, v)
    assert str(raises(ClockError, c.now, -1)).startswith("local: "), "message"
    assert state == (c.now_ms(5000), c.source, c.synced_at_ms, c.last_step_ms, c.disagreements,
                     c.ntp_syncs, c.ack_syncs, c.hub_diff_ms), state
    # the limits themselves are accepted
    Clock().ntp(EPOCH_2020, 0, 999)
    Clock().ack_time((1 << 32) - 1, (1 << 48) - 1)


def test_config_is_checked():
    for kwargs in ({"rate": 0}, {"rate": -1}, {"rate": 1.5}, {"rate": True},
                   {"rate": MAX_RATE + 1}, {"max_age_s": 0}, {"max_age_s": None},
                   {"ack_after_s": -1}, {"tolerance_s": 0}, {"ack_step_s": "2"},
                   # NTP must stop counting as fresh before the clock expires
                   {"max_age_s": 3600}, {"max_age_s": 7200, "ack_after_s": 7201}):
        exc = raises(ClockError, Clock, **kwargs)
        assert exc.reason == "config", (kwargs, exc.reason)
    assert Clock(rate=MAX_RATE).rate == MAX_RATE
    assert Clock(max_age_s=3600, ack_after_s=3600).ack_after_ms == 3600000


def test_describe_units():
    c = Clock()
    c.ntp(T0, 0)
    want = ((0, "ntp 0 s ago"), (119999, "ntp 119 s ago"), (120000, "ntp 2 min ago"),
            (7199999, "ntp 119 min ago"), (7200000, "ntp 2 h ago"),
            (DAY_MS, "ntp 24 h ago"))
    for at, text in want:
        assert c.describe(at) == text, (at, c.describe(at))
    c = Clock(max_age_s=365 * 86400)
    c.ntp(T0, 0)
    assert c.describe(2 * DAY_MS) == "ntp 2 d ago", c.describe(2 * DAY_MS)
    c.ntp(T0 + 2 * 86400 - 15, 2 * DAY_MS)
    # 15 s lost over two days: the counter runs 15000 / 172785000 = 86.8 ppm fast
    assert c.describe(2 * DAY_MS) == "ntp 0 s ago, step -15 s, drift +87 ppm", \
        c.describe(2 * DAY_MS)
    c.ntp(T0 + 2 * 86400 + 3600, 2 * DAY_MS + 1000)
    assert c.describe(2 * DAY_MS + 1000).startswith("ntp 0 s ago, step +3614 s"), \
        c.describe(2 * DAY_MS + 1000)


def test_random_syncs_keep_the_clock_consistent():
    # Random NTP answers, ACKs and queries: now() follows the last sync
    # exactly, is None exactly when the last sync is older than max_age, and
    # an ACK while NTP is fresh never moves the clock.
    rng = Xorshift32(0xC10C4)
    for case in range(iterations(100) // 5 + 1):
        rate = (1, 1, 60, 144)[rng.below(4)]
        c = Clock(rate=rate, max_age_s=7200, ack_after_s=1800)
        local = rng.below(1 << 30)
        real = (T0 + rng.below(10 ** 7)) * 1000
        anchor = None  # (unix ms, local ms) of the last sync
        ntp_at = None
        synced_at = None
        for _ in range(200):
            dl = rng.below(600000 // rate + 1)
            local += dl
            real += dl * rate
            op = rng.below(10)
            if op < 2:
                off = rng.below(4001) - 2000
                c.ntp((real + off) // 1000, local, (real + off) % 1000)
                anchor = (real + off, local)
                ntp_at = synced_at = local
            elif op < 5:
                hub = real // 1000 - rng.below(3)
                if rng.below(5) == 0:
                    hub += rng.below(600) - 300
                before = c._estimate_ms(local)
                fresh = ntp_at is not None and (local - ntp_at) * rate <= 1800000
                got = c.ack_time(hub, local)
                if fresh:
                    assert got in ("agree", "disagree") and c._estimate_ms(local) == before
                elif got == "synced":
                    anchor = (hub * 1000, local)
                    synced_at = local
                else:
                    # confirmed: the clock keeps its time but counts as synced now
                    assert got == "confirmed" and abs(hub * 1000 - before) <= 2000 * rate
                    assert c._estimate_ms(local) == before
                    synced_at = local
            fresh_sync = synced_at is not None and (local - synced_at) * rate <= 7200000
            assert c.synced(local) == fresh_sync, case
            if fresh_sync:
                # the clock moves only when a sync steps it
                now = c.now_ms(local)
                assert now == anchor[0] + (local - anchor[1]) * rate, (case, now, anchor)
            else:
                assert c.now(local) is None
            assert len(c.describe(local)) <= 72, c.describe(local)


def test_a_simulated_day_gives_every_interval():
    # Rate 60: a day of device time in 24 minutes of local time. The meter
    # draws a steady 1 kW, polled once a local second (a device minute);
    # every 15-minute reading is 250 Wh, except none for the first boundary.
    c = Clock(rate=60)
    e = IntervalEngine(15, 1)
    readings = []
    for local in range(0, 1442000, 1000):
        if local % 60000 == 0:  # NTP every device hour
            t = (T0 - 30) * 1000 + 60 * local
            c.ntp(t // 1000, local, t % 1000)
        assert c.synced(local)
        t = c.now_ms(local)
        r = e.sample(0, t // 1000, 5000000 + (t - (T0 - 30) * 1000) // 3600, 0, 1000, t % 1000)
        if r is not None:
            readings.append(r)
        if local % 300000 == 0:  # the hub's ACKs every 5 local minutes
            assert c.ack_time(t // 1000, local) == "agree"
    assert len(readings) == 96, len(readings)
    assert [r.import_wh for r in readings] == [250] * 96
    assert readings[0].ts == T0 + 900 and readings[-1].ts == T0 + 86400
    assert all(r.power_w == 1000 and r.interval_min == 15 for r in readings)
