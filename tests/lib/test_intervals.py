# The interval engine (lib/intervals.py, docs/intervals.md).
import sys

from fuzzing import Xorshift32, iterations
from mpcompat import raises

import intervals
from intervals import IntervalEngine, IntervalError, IntervalReading

T0 = 1767225600  # 2026-01-01T00:00:00Z (calendar.timegm)
EPOCH_2020 = 1577836800  # 2020-01-01T00:00:00Z, the earliest valid time
MAX_REGISTER = 1 << 48  # Wh, the largest register value


def as_tuple(r):
    if r is None:
        return None
    return (r.meter_index, r.ts, r.interval_min, r.import_wh, r.export_wh,
            r.import_register_wh, r.export_register_wh, r.power_w)


# The worked example of docs/intervals.md, 15-minute intervals, meter 0:
# (seconds after T0, ms, import register, export register, power) -> reading
# as (meter, ts, interval_min, import_wh, export_wh, import_reg, export_reg, power).
# Interpolations worked by hand: at 00:15 between 870 s (1010) and 930 s
# (1030): 1020. At 00:45 between 2690 s and 2710.5 s: import 1400 + 2 *
# 10000 / 20500 = 1400.98 -> 1401, export 540 + 20 * 10000 / 20500 = 549.76
# -> 550. At 01:30 between 2710.5 s and 5520 s: import 1402 + 398 *
# 2689500 / 2809500 = 1402 + 381.0 -> 1783 (381.00 rounds to 381).
EXAMPLE = (
    (780, 0, 1000, 500, 400, None),
    (870, 0, 1010, 500, 420, None),
    (930, 0, 1030, 500, 380, None),  # crosses 00:15: the baseline
    (1740, 0, 1300, 500, 1200, None),
    (1800, 0, 1320, 502, -100, (0, T0 + 1800, 15, 300, 2, 1320, 502, -100)),
    (2690, 0, 1400, 540, -300, None),
    (2710, 500, 1402, 560, -250, (0, T0 + 2700, 15, 81, 48, 1401, 550, -300)),
    (5520, 0, 1800, 560, 50, (0, T0 + 5400, 45, 382, 10, 1783, 560, -250)),  # offline 3 boundaries
)


def test_worked_example():
    e = IntervalEngine(15)
    for i, (dt, ms, imp, exp, p, want) in enumerate(EXAMPLE):
        got = as_tuple(e.sample(0, T0 + dt, imp, exp, p, ms))
        assert got == want, (i, got)
        if i == 2:
            assert e.baseline(0) == (T0 + 900, 1020, 500), e.baseline(0)
    assert e.stats["readings"] == 3 and e.stats["baselines"] == 1, e.stats


def test_first_boundary_is_only_a_baseline():
    e = IntervalEngine(15)
    assert e.sample(0, T0 + 10, 100, 0, 0) is None
    assert e.baseline(0) is None
    assert e.sample(0, T0 + 890, 200, 0, 0) is None
    assert e.sample(0, T0 + 910, 220, 0, 0) is None
    assert e.baseline(0) == (T0 + 900, 210, 0), e.baseline(0)
    r = e.sample(0, T0 + 1810, 500, 0, 0)
    # 220 + 280 * 890 / 900 = 496.9
    assert as_tuple(r) == (0, T0 + 1800, 15, 287, 0, 497, 0, 0), as_tuple(r)


def test_first_sample_exactly_on_a_boundary_is_not_yet_a_baseline():
    # A boundary needs a sample before it and one at or after it.
    e = IntervalEngine(15)
    assert e.sample(0, T0, 100, 0, 0) is None
    assert e.sample(0, T0 + 600, 150, 0, 0) is None
    assert e.baseline(0) is None
    assert e.sample(0, T0 + 900, 170, 0, 0) is None
    assert e.baseline(0) == (T0 + 900, 170, 0), e.baseline(0)


def test_sample_exactly_on_a_boundary_closes_it_with_its_own_values():
    e = IntervalEngine(5)
    e.sample(0, T0 + 290, 10, 0, 1)
    e.sample(0, T0 + 300, 20, 0, 2)  # baseline at 300: 20 exactly
    assert e.baseline(0) == (T0 + 300, 20, 0), e.baseline(0)
    e.sample(0, T0 + 599, 50, 0, 3)
    r = e.sample(0, T0 + 600, 55, 7, 4)
    assert as_tuple(r) == (0, T0 + 600, 5, 35, 7, 55, 7, 4), as_tuple(r)
    # 1 ms after the boundary: the power is the sample's before it
    e.sample(0, T0 + 899, 60, 7, 5)
    r = e.sample(0, T0 + 900, 60, 7, 6, 1)
    assert r.power_w == 5 and r.import_register_wh == 60, as_tuple(r)


def test_power_is_the_last_sample_at_or_before_the_boundary():
    e = IntervalEngine(1)
    e.sample(0, T0 + 50, 0, 0, 111)
    e.sample(0, T0 + 70, 0, 0, 222)
    e.sample(0, T0 + 119, 0, 0, 333)
    r = e.sample(0, T0 + 121, 0, 0, 444)
    assert r.power_w == 333 and r.interval_min == 1, as_tuple(r)


def test_millisecond_interpolation():
    # 999 ms before and 1 ms after the boundary: the boundary is at 999/1000
    # of the way from the first sample to the second.
    e = IntervalEngine(1)
    e.sample(0, T0 + 59, 0, 0, 0, 1)
    e.sample(0, T0 + 60, 1000, 0, 0, 1)
    assert e.baseline(0) == (T0 + 60, 999, 0), e.baseline(0)
    # half way exactly rounds up
    e = IntervalEngine(1)
    e.sample(0, T0 + 59, 0, 0, 0, 500)
    e.sample(0, T0 + 60, 1, 0, 0, 500)
    assert e.baseline(0) == (T0 + 60, 1, 0), e.baseline(0)


def test_gap_of_several_intervals_is_one_reading():
    e = IntervalEngine(15)
    e.sample(0, T0 + 800, 0, 0, 7)
    e.sample(0, T0 + 1000, 200, 0, 8)  # baseline at 900: 100
    r = e.sample(0, T0 + 4 * 900 + 100, 3800, 50, 9)  # crosses 1800, 2700, 3600
    # between 1000 s (200) and 3700 s (3800): at 3600, 200 + 3600 * 2600 / 2700 = 3666.67
    assert as_tuple(r) == (0, T0 + 3600, 45, 3567, 48, 3667, 48, 8), as_tuple(r)
    r = e.sample(0, T0 + 4600, 3900, 50, 10)
    assert r.ts == T0 + 4500 and r.interval_min == 15, as_tuple(r)
    assert r.import_register_wh - r.import_wh == 3667, as_tuple(r)


def test_gap_of_a_whole_day_is_the_longest_reading():
    # A READING's interval_min is at most 1440.
    e = IntervalEngine(60)
    e.sample(0, T0 - 10, 0, 0, 0)
    e.sample(0, T0 + 10, 0, 0, 0)
    r = e.sample(0, T0 + 86400, 5000, 0, 0)
    assert r is not None and r.interval_min == 1440 and r.ts == T0 + 86400, as_tuple(r)
    e.sample(0, T0 + 86400 + 3599, 5000, 0, 0)
    assert e.sample(0, T0 + 2 * 86400 + 3600, 6000, 0, 0) is None
    assert e.stats["gap"] == 1 and e.baseline(0) is None, e.stats
    # it starts over: a baseline, then readings
    assert e.sample(0, T0 + 2 * 86400 + 7200, 6100, 0, 0) is None
    assert e.baseline(0) == (T0 + 2 * 86400 + 7200, 6100, 0), e.baseline(0)
    r = e.sample(0, T0 + 2 * 86400 + 10800, 6200, 0, 0)
    assert r.import_wh == 100 and r.interval_min == 60, as_tuple(r)


def stream_with_baseline(e, meter=0, wh=1000):
    # samples every 100 s from T0 + 50; a baseline at T0 + 900
    for k in range(10):
        e.sample(meter, T0 + 50 + 100 * k, wh + k, 0, 0)
    assert e.baseline(meter) is not None


def test_register_going_backwards_resets_the_baseline():
    e = IntervalEngine(15)
    stream_with_baseline(e)
    assert e.sample(0, T0 + 1000, 5, 0, 0) is None  # meter replaced
    assert e.baseline(0) is None and e.stats["register"] == 1, e.stats
    assert e.sample(0, T0 + 1850, 20, 0, 0) is None  # baseline again
    assert e.baseline(0) == (T0 + 1800, 19, 0), e.baseline(0)
    r = e.sample(0, T0 + 2750, 30, 0, 0)
    assert r.import_wh == 10 and r.ts == T0 + 2700, as_tuple(r)
    # the export register counts too
    e.sample(0, T0 + 2800, 30, 5, 0)
    assert e.sample(0, T0 + 2810, 30, 4, 0) is None
    assert e.stats["register"] == 2 and e.baseline(0) is None, e.stats


def test_time_going_backwards_resets_the_baseline():
    e = IntervalEngine(15)
    stream_with_baseline(e)
    assert e.sample(0, T0 + 940, 1010, 0, 0) is None  # after 950 s
    assert e.baseline(0) is None and e.stats["time"] == 1, e.stats
    e = IntervalEngine(15)
    stream_with_baseline(e)
    e.sample(0, T0 + 960, 1010, 0, 0, 500)
    assert e.sample(0, T0 + 960, 1010, 0, 0, 499) is None  # one millisecond back
    assert e.stats["time"] == 1, e.stats
    # the same instant again is no step back
    e.sample(0, T0 + 960, 1011, 0, 0, 499)
    assert e.stats["time"] == 1, e.stats


def test_energy_beyond_a_reading_is_a_jump():
    e = IntervalEngine(15)
    stream_with_baseline(e)
    assert e.sample(0, T0 + 1850, 1009 + (1 << 33), 0, 0) is None
    assert e.stats["jump"] == 1 and e.baseline(0) is None, e.stats
    # exactly the most a reading holds is fine
    e = IntervalEngine(15)
    e.sample(0, T0 + 850, 0, 0, 0)
    e.sample(0, T0 + 900, 0, 0, 0)
    r = e.sample(0, T0 + 1800, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    assert r.import_wh == 0xFFFFFFFF and r.export_wh == 0xFFFFFFFF, as_tuple(r)


def test_garbage_raises_and_changes_nothing():
    bad = (
        ("meter", (-1, T0, 0, 0, 0)), ("meter", (8, T0, 0, 0, 0)),
        ("meter", (None, T0, 0, 0, 0)), ("meter", (True, T0, 0, 0, 0)),
        ("meter", ("0", T0, 0, 0, 0)), ("meter", (0.0, T0, 0, 0, 0)),
        ("time", (0, EPOCH_2020 - 1, 0, 0, 0)), ("time", (0, -5, 0, 0, 0)),
        ("time", (0, 1 << 32, 0, 0, 0)), ("time", (0, T0 + 0.5, 0, 0, 0)),
        ("time", (0, None, 0, 0, 0)), ("time", (0, True, 0, 0, 0)),
        ("time", (0, T0, 0, 0, 0, -1)), ("time", (0, T0, 0, 0, 0, 1000)),
        ("time", (0, T0, 0, 0, 0, 0.5)),
        ("register", (0, T0, -1, 0, 0)), ("register", (0, T0, 0, -1, 0)),
        ("register", (0, T0, (1 << 48) + 1, 0, 0)), ("register", (0, T0, 0, 1 << 64, 0)),
        ("register", (0, T0, 1.0, 0, 0)), ("register", (0, T0, 0, "1", 0)),
        ("register", (0, T0, False, 0, 0)), ("register", (0, T0, None, 0, 0)),
        ("power", (0, T0, 0, 0, 1 << 31)), ("power", (0, T0, 0, 0, -(1 << 31) - 1)),
        ("power", (0, T0, 0, 0, 1.5)), ("power", (0, T0, 0, 0, None)),
    )
    e = IntervalEngine(15)
    twin = IntervalEngine(15)
    stream_with_baseline(e)
    stream_with_baseline(twin)
    for k, (reason, args) in enumerate(bad):
        exc = raises(IntervalError, e.sample, *args)
        assert exc.reason == reason, (k, exc.reason, str(exc))
        assert isinstance(exc, ValueError) and str(exc).startswith(reason + ":"), str(exc)
    assert e.stats["invalid"] == len(bad), e.stats
    assert e.baseline(0) == twin.baseline(0), e.baseline(0)
    # the same samples give the same readings as on an engine that saw no garbage
    for dt in (1000, 1790, 1810, 2700, 3700):
        a = e.sample(0, T0 + dt, 1100 + dt, 3, -4)
        b = twin.sample(0, T0 + dt, 1100 + dt, 3, -4)
        assert as_tuple(a) == as_tuple(b), (dt, as_tuple(a), as_tuple(b))
    # limits themselves are accepted
    e.sample(1, EPOCH_2020, 1 << 48, 0, (1 << 31) - 1)
    e.sample(2, (1 << 32) - 1, 0, 1 << 48, -(1 << 31), 999)


def test_config_is_checked():
    for value in (0, 7, 9, 45, 61, 90, 1440, -15, "15", 15.0, True, None):
        exc = raises(IntervalError, IntervalEngine, value)
        assert exc.reason == "config", (value, exc.reason)
    for value in (0, 9, -1, "8", 8.0, None):
        exc = raises(IntervalError, IntervalEngine, 15, value)
        assert exc.reason == "config", (value, exc.reason)
    assert intervals.LENGTHS_MIN == tuple(n for n in range(1, 61) if 60 % n == 0)
    for n in intervals.LENGTHS_MIN:
        assert IntervalEngine(n, 1).interval_min == n


def test_every_length_aligns_to_the_wall_clock():
    # boundaries at multiples of 60 * interval_min unix seconds, whatever the start
    for n in intervals.LENGTHS_MIN:
        e = IntervalEngine(n, 1)
        start = T0 + 17  # not on any boundary
        readings = []
        for k in range(2 * 3600 // 37 + 2):  # every 37 s, just over two hours
            r = e.sample(0, start + 37 * k, 10 * k, k, k)
            if r is not None:
                readings.append(r)
        assert len(readings) == 120 // n - 1, (n, len(readings))
        for r in readings:
            assert r.ts % (60 * n) == 0 and r.interval_min == n, (n, as_tuple(r))
        # the register at each boundary is the line through the samples
        # around it: 10 Wh per 37 s
        for r in readings:
            exact2 = 2 * 10 * (r.ts - start)  # twice the value, to round half up
            assert r.import_register_wh == (exact2 + 37) // 74, (n, as_tuple(r))


def test_meters_are_independent():
    rng = Xorshift32(0xBEEF)
    e = IntervalEngine(5, 8)
    alone = [IntervalEngine(5, 1) for _ in range(8)]
    t = [T0 + rng.below(600) for _ in range(8)]
    reg = [rng.below(1 << 20) for _ in range(8)]
    count = 0
    for _ in range(iterations(2000)):
        i = rng.below(8)
        t[i] += rng.below(200)
        reg[i] += rng.below(50)
        a = e.sample(i, t[i], reg[i], 2 * reg[i], i - 4)
        b = alone[i].sample(0, t[i], reg[i], 2 * reg[i], i - 4)
        if b is not None:
            count += 1
            assert a.meter_index == i, as_tuple(a)
            assert as_tuple(a)[1:] == as_tuple(b)[1:], (as_tuple(a), as_tuple(b))
        else:
            assert a is None
    assert count > 100, count
    e.reset(3)
    assert e.baseline(3) is None and e.baseline(2) is not None
    e.reset()
    assert all(e.baseline(i) is None for i in range(8))
    assert raises(IntervalError, e.reset, 8).reason == "meter"


def reference(samples, length_s):
    # An independent statement of the rules over the whole sample list, in
    # unix milliseconds: a boundary B gets a value when a sample lies before
    # it and the next one at or after it; the first such boundary is the
    # baseline, every later one closes a reading from the one before.
    out = []
    prev_b = prev_imp = prev_exp = None
    for k in range(1, len(samples)):
        t0, i0, e0, p0 = samples[k - 1]
        t1, i1, e1, p1 = samples[k]
        b = (t1 // (1000 * length_s)) * 1000 * length_s
        if b <= t0:
            continue
        num, den = b - t0, t1 - t0
        imp = i0 + (2 * (i1 - i0) * num + den) // (2 * den)
        exp = e0 + (2 * (e1 - e0) * num + den) // (2 * den)
        if prev_b is not None:
            out.append((0, b // 1000, (b - prev_b) // 60000, imp - prev_imp, exp - prev_exp,
                        imp, exp, p1 if t1 == b else p0))
        prev_b, prev_imp, prev_exp = b, imp, exp
    return out


def random_stream(rng, n, length_s):
    # increasing times with steps from 0 ms to a few intervals, registers that never fall
    t = (T0 + rng.below(86400)) * 1000 + rng.below(1000)
    imp = rng.below(1 << 30)
    exp = rng.below(1 << 20)
    out = []
    for _ in range(n):
        kind = rng.below(10)
        if kind == 0:
            t += 0
        elif kind < 7:
            t += rng.below(length_s * 300)  # within a third of an interval
        elif kind < 9:
            t += rng.below(length_s * 1000 * 2)
        else:
            t += rng.below(length_s * 1000 * 5)  # offline for a while
        imp += rng.below(3000) if rng.below(3) else 0
        exp += rng.below(800) if rng.below(2) else 0
        out.append((t, imp, exp, rng.below(20001) - 10000))
    return out


def test_random_streams_telescope_and_match_the_reference():
    rng = Xorshift32(0x1D7E5A1)
    total = 0
    for round_ in range(iterations(60) // 3 + 1):
        n = intervals.LENGTHS_MIN[rng.below(len(intervals.LENGTHS_MIN))]
        samples = random_stream(rng, 20 + rng.below(200), 60 * n)
        e = IntervalEngine(n, 1)
        got = []
        base = None
        for t, imp, exp, p in samples:
            r = e.sample(0, t // 1000, imp, exp, p, t % 1000)
            if base is None and e.baseline(0) is not None:
                base = e.baseline(0)
            if r is not None:
                got.append(as_tuple(r))
        assert got == reference(samples, 60 * n), (round_, n)
        total += len(got)
        if not got:
            continue
        # consecutive readings share their boundaries...
        prev_ts, prev_imp, prev_exp = base
        for _, ts, minutes, di, de, ri, re, _p in got:
            assert ts - 60 * minutes == prev_ts and minutes % n == 0 and minutes <= 1440
            assert ri == prev_imp + di and re == prev_exp + de, (round_, ts)
            prev_ts, prev_imp, prev_exp = ts, ri, re
        # ...so their energies add up to the register difference exactly
        assert sum(r[3] for r in got) == got[-1][5] - base[1]
        assert sum(r[4] for r in got) == got[-1][6] - base[2]
        # and the interpolated registers lie between the samples around them
        for r in got:
            b = r[1] * 1000
            before = [s for s in samples if s[0] < b][-1]
            after = [s for s in samples if s[0] >= b][0]
            assert before[1] <= r[5] <= after[1] and before[2] <= r[6] <= after[2], r
    assert total > 200, total


def test_random_resets_keep_every_reading_consistent():
    # Streams with register drops, time steps back, jumps and long gaps:
    # every reading stays well formed, and between resets they telescope.
    rng = Xorshift32(0x5EED0005)
    e = IntervalEngine(15, 2)
    t = T0
    imp = 1000
    readings = 0
    prev = None
    for _ in range(iterations(3000)):
        kind = rng.below(100)
        if kind == 0:
            imp = rng.below(imp + 1)
        elif kind == 1:
            t -= rng.below(5000) + 1
        elif kind == 2:
            imp += 1 << 32
        elif kind == 3:
            t += 86400 + rng.below(86400)
        else:
            t += rng.below(400)
            imp += rng.below(500)
        before = (e.stats["time"], e.stats["register"], e.stats["jump"], e.stats["gap"])
        r = e.sample(1, t, imp, 0, 0)
        after = (e.stats["time"], e.stats["register"], e.stats["jump"], e.stats["gap"])
        if before != after:
            assert r is None and e.baseline(1) is None
            prev = None
        if r is None:
            continue
        readings += 1
        assert r.ts % 900 == 0 and r.interval_min % 15 == 0 and r.interval_min <= 1440
        assert 0 <= r.import_wh <= 0xFFFFFFFF and r.export_wh == 0
        if prev is not None:
            assert r.ts - 60 * r.interval_min == prev.ts
            assert r.import_register_wh == prev.import_register_wh + r.import_wh
        prev = r
    assert readings > 100, readings
    assert min(e.stats[k] for k in ("time", "register", "gap", "jump")) > 0, e.stats
    assert e.stats["readings"] == readings, e.stats


def test_reading_fields_encode_as_a_reading_message():
    from trade import messages

    r = IntervalReading(0, T0 + 900, 15, 120, 3, 1000120, 5003, -42)
    fields = r.fields(b"\x01\x02\x03")
    payload = messages.encode(messages.READING, 7, r.ts, fields)
    back = messages.decode(payload)
    assert back.ts == T0 + 900 and back.fields == fields, back
    assert "meter 0 ts %d 15 min" % (T0 + 900) in repr(r), repr(r)


def test_samples_within_an_interval_allocate_nothing():
    # On MicroPython the path of a sample that closes nothing runs under
    # heap_lock (a 64-bit unix port: every int here is a small int).
    e = IntervalEngine(15, 8)
    for i in range(8):
        e.sample(i, T0 + 850, 100, 0, 0)
        e.sample(i, T0 + 950, 110, 0, 0)
    lock = unlock = None
    if sys.implementation.name == "micropython":
        import micropython

        lock, unlock = micropython.heap_lock, micropython.heap_unlock
    got = [1] * 50
    if lock:
        lock()
    try:
        for k in range(50):
            got[k] = e.sample(k & 7, T0 + 960 + k, 120 + k, k, k, 10 * k)
    except MemoryError:
        got = None
    finally:
        if unlock:
            unlock()
    assert got is not None, "sample() allocated"
    assert all(x is None for x in got)


def test_a_restored_baseline_tiles_time_across_a_reboot():
    # Before the reboot: a reading closes 00:30; its boundary is kept.
    e = IntervalEngine(15, 1)
    e.sample(0, T0 + 600, 1000, 500, 7)
    e.sample(0, T0 + 1200, 1060, 500, 7)  # baseline at 900: 1030
    r1 = e.sample(0, T0 + 2000, 1140, 500, 7)  # at 1800: 1060 + 80 * 600 / 800
    assert as_tuple(r1) == (0, T0 + 1800, 15, 90, 0, 1120, 500, 7), as_tuple(r1)
    kept = e.baseline(0)
    assert kept == (T0 + 1800, 1120, 500)
    # After it, a new engine with the baseline back:
    e2 = IntervalEngine(15, 1)
    e2.restore(0, *kept)
    assert e2.baseline(0) == kept
    assert e2.sample(0, T0 + 2000, 1140, 500, 7) is None  # still the interval it opens
    # Down until 01:35: one sample crossing four boundaries closes one
    # 60-minute reading from the kept boundary, interpolated over the
    # downtime: at 5400, 1120 + 390 * 3600 / 3900 and 500 + 39 * 3600 / 3900.
    e3 = IntervalEngine(15, 1)
    e3.restore(0, *kept)
    r = e3.sample(0, T0 + 5700, 1510, 539, 9)
    assert as_tuple(r) == (0, T0 + 5400, 60, 360, 36, 1480, 536, 0), as_tuple(r)
    assert r.ts - r.interval_min * 60 == kept[0]


def test_restore_refuses_garbage_and_changes_nothing():
    e = IntervalEngine(15, 2)
    for args, reason in (((0, T0 + 7, 1, 1), "time"), ((0, "x", 1, 1), "time"),
                         ((0, T0, -1, 1), "register"), ((0, T0, 1, MAX_REGISTER + 1), "register"),
                         ((2, T0, 1, 1), "meter"), ((0, T0, True, 1), "register")):
        ex = raises(IntervalError, e.restore, *args)
        assert ex.reason == reason, (args, ex)
        assert e.baseline(0) is None
