"""The gateway's day (issue 5, acceptance 1 and 2), on host_tools/sim/day.py:
24 simulated hours of a virtual board running the real firmware with a DLMS
meter (gurux, HDLC, HLS-GMAC) at the grid, a SunSpec hybrid inverter with
its battery and a wallbox (pymodbus), control on, the real broker reached
through a proxy that the rig blackholes in random flaps, the hub, and a
test subscriber on the device's reading topic. On the way: SIGKILLs at
seeded random moments (some right after a `reading ... seq` line, when the
journal has just been written) and the broker stopped for 2 simulated
hours.

The rig runs the day once (module fixture); each test checks one promise
on its report. PGW_SOAK=1 (`make soak`) runs the same with 200 SIGKILLs at
a slower rate.

The board runs with 1024 KB of heap (PGW_DAY_HEAP_KB overrides it): these
tests are about delivery, tiling and faults. Whether the full app fits the
board's 160 KB is acceptance 4, measured by bench/gateway_heap.py in `make
bench`; it does not yet (issue 5): the short day needs 176 KB."""

import datetime
import os
from types import SimpleNamespace

import pytest

from conftest import verify_with_pycose
from host_tools.sim.day import METERS, START, Day, Plan

SOAK = os.environ.get("PGW_SOAK") == "1"
HOURS = 24
# 720: a 15-minute interval every 1.25 s against polls every second, the
# whole day in 2 minutes. The soak's 120 leaves 7.5 s per interval, so the
# board, killed every 3.6 s on average, still gets readings out between kills.
PLAN = Plan(hours=HOURS, rate=120 if SOAK else 720, kills=200 if SOAK else 20, after_reading=0.3,
            outage_at_h=9.0, outage_h=2.0, flaps=40 if SOAK else 6, flap_s=(0.3, 3.0),
            heap_kb=int(os.environ.get("PGW_DAY_HEAP_KB", 0)) or 1024, seed=5)


@pytest.fixture(scope="module")
def day(tmp_path_factory, broker):
    with Day(tmp_path_factory.mktemp("day"), broker, PLAN, log=print) as rig:
        report = rig.run()
        print(report.summary())
        yield SimpleNamespace(report=report, cose_key=rig.cose_key, kid=rig.kid)


def test_every_reading_the_subscriber_saw_has_a_valid_signature(day):
    rep = day.report
    assert rep.publishes, "the subscriber saw nothing"
    bad = []
    for _, data in rep.publishes:
        try:
            verify_with_pycose(data, day.cose_key)
        except AssertionError:
            bad.append(data.hex())
    assert not bad, bad[:3]


def test_a_seq_sent_again_is_the_same_bytes(day):
    assert not day.report.conflicts, day.report.conflicts
    assert not day.report.undecodable


def test_each_meter_tiles_the_whole_day(day):
    rep = day.report
    assert set(rep.readings) == set(METERS), rep.readings.keys()
    start, end = START.timestamp(), START.timestamp() + HOURS * 3600
    for name in METERS:
        rows = rep.readings[name]
        assert not rep.tiling_problems(name), rep.tiling_problems(name)
        # from the first interval after boot to the last one of the day
        assert rows[0].ts - rows[0].interval_min * 60 <= start + 3600, (name, rows[0])
        assert rows[-1].ts >= end - 900, (name, rows[-1])
        gaps = [r for r in rows if r.interval_min != 15]
        print("%s: %d readings, %d spanning more than one interval: %s" % (
            name, len(rows), len(gaps), [(r.seq, datetime.datetime.fromtimestamp(r.ts, datetime.timezone.utc)
                                          .strftime("%H:%M"), r.interval_min) for r in gaps]))


def test_the_hub_stored_each_reading_exactly_once(day):
    rep = day.report
    assert not rep.delivery_problems(), rep.delivery_problems()
    seen = sorted(r.seq for rows in rep.readings.values() for r in rows)
    assert sorted(rep.hub_seqs) == seen  # (kid, seq) is the hub's key: once each


def test_nothing_is_left_unacknowledged(day):
    rep = day.report
    assert rep.depth_zero, rep.journal
    assert rep.journal.get("losses") == "none", rep.journal


def test_the_faults_happened(day):
    rep = day.report
    assert len(rep.kills) == PLAN.kills, rep.kills
    assert any(k["line"] for k in rep.kills), "no kill right after a reading line"
    assert rep.boots.get("HARD_RESET", 0) >= len(rep.kills), rep.boots
    assert len(rep.flaps) == PLAN.flaps, rep.flaps


def test_the_outage_is_detected_and_publishing_resumes_in_time(day):
    rep = day.report
    print("outage: link lost %.2f s after the broker stopped; connected %.2f s and the next READING %.2f s "
          "after its return (the proxy held the board %.2f s of that)" % (
              rep.outage_detected_s, rep.outage_connected_s, rep.outage_resumed_s, rep.outage_hold_s))
    assert rep.outage_detected_s <= 5.0
    assert rep.outage_resumed_s <= 1.0


def test_the_clock_came_from_ntp(day):
    assert day.report.status.get("clock", "").startswith("ntp"), day.report.status


def test_the_firmware_never_crashed(day):
    rep = day.report
    assert not rep.crashed, "\n---\n".join(rep.crash_lines[:3])
    assert not rep.boots.get("WDT_RESET"), rep.boots
    print("free heap after gc: %.1f KB at the start, %.1f KB at the end" % (
        rep.heap_free_start_kb, rep.heap_free_end_kb))
