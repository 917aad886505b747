"""The gateway's heap through its day (issue 5, acceptance 4), on the rig of
host_tools/sim/day.py: the real firmware with a DLMS meter, a SunSpec
inverter with battery and a wallbox, control, MQTT through a proxy, the hub.

    python bench/gateway_heap.py [--json] [--trial KB ...]

- gateway_min_heap_kb: the smallest heap (32-bit-equivalent KB, the
  virtual board's --heap-kb) with which the day completes: no MemoryError
  or other crash on the console, every READING tiled and delivered to the
  hub and the subscriber, the journal empty at the end. Found by bisection
  on short days with kills and an outage (TRIAL), then confirmed by one
  full day (DRIFT: the e2e test's day without its kills, which would reset
  the heap); if that fails, the next step up is confirmed instead.
- gateway_heap_drift_kb: free heap after gc (the console's `status`) at the
  start minus at the end of a DRIFT day at the board's 160 KB (the
  confirming day itself when 160 KB is not enough).

Bisection assumes that more heap never hurts. When 160 KB fails the search
climbs in 16 KB steps and then halves the last one (8 KB resolution).
`--trial KB` runs the short day at each heap given and prints what
happened, for looking at one.
"""

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from host_tools.broker import Broker  # noqa: E402
from host_tools.sim.day import Day, DayError, Plan  # noqa: E402

BOARD_KB = 160  # the `virtual` board's heap: what a Pico W has with WiFi up
FLOOR_KB = 64  # below this the firmware's imports alone do not fit
STEP_KB = 8
TRIAL = Plan(hours=6, rate=720, kills=3, after_reading=0.5, outage_at_h=2.0, outage_h=1.0, flaps=0,
             drain_s=45, seed=5)
FULL = Plan(hours=24, rate=720, kills=20, after_reading=0.3, outage_at_h=9.0, outage_h=2.0, flaps=6, seed=5)
DRIFT = replace(FULL, kills=0)


def describe(plan):
    outage = ("the broker stopped %g h from %g h" % (plan.outage_h, plan.outage_at_h)
              if plan.outage_at_h is not None else "no outage")
    return "%g simulated h at rate %d, %d SIGKILLs, %s, %d network flaps" % (
        plan.hours, plan.rate, plan.kills, outage, plan.flaps)


def run_day(broker, plan, log):
    """-> (completed, report or None, what went wrong)."""
    with tempfile.TemporaryDirectory(prefix="pgw-day-") as tmp:
        try:
            with Day(tmp, broker, plan) as day:
                report = day.run()
        except (DayError, AssertionError) as e:  # the board never came up, or a wait timed out
            why = str(e).strip().splitlines()
            log("  heap %s KB: failed: %s" % (plan.heap_kb, why[0] if why else type(e).__name__))
            return False, None, str(e)
    problems = report.problems()
    log("  heap %s KB: %s (%.0f s)" % (plan.heap_kb, "completes" if not problems else
                                      "failed: " + "; ".join(problems)[:300], report.setup_s + report.wall_s))
    return not problems, report, "; ".join(problems)


def min_heap(broker, log):
    """Bisect TRIAL days over heap_kb -> (smallest completing KB, step, [(kb, completed)])."""
    tried = []

    def ok(kb):
        done, _, _ = run_day(broker, replace(TRIAL, heap_kb=kb), log)
        tried.append((kb, done))
        return done

    if ok(BOARD_KB):
        lo, hi, step = FLOOR_KB, BOARD_KB, STEP_KB  # FLOOR_KB is taken to fail, not tried
    else:
        # Climb in steps of 2 x STEP_KB, then halve the last one: a few
        # trials when the answer is just above the board's heap.
        lo, hi, step = BOARD_KB, BOARD_KB + 2 * STEP_KB, STEP_KB
        while not ok(hi):
            lo, hi = hi, hi + 2 * STEP_KB
            if hi > 4 * BOARD_KB:
                raise RuntimeError("the day does not complete even with %d KB of heap" % lo)
    while hi - lo > step:
        mid = lo + (hi - lo) // 2 // step * step
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi, step, tried


def measure(log=print):
    """Both metrics: {name: (value, how)}."""
    # pymodbus logs every answer it could not send to a board just killed
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    t0 = time.monotonic()
    with Broker(tls=False) as broker:
        found, step, tried = min_heap(broker, log)
        log("bisection: %s -> %d KB (%.0f s)" % (tried, found, time.monotonic() - t0))
        # a full day confirms it; without kills, so that it also tells the drift
        confirmed, report, why = run_day(broker, replace(DRIFT, heap_kb=found), log)
        if not confirmed:
            found += step
            confirmed, report, why = run_day(broker, replace(DRIFT, heap_kb=found), log)
        drift_kb = found
        if found < BOARD_KB:
            drift_kb = BOARD_KB
            _, report, why = run_day(broker, replace(DRIFT, heap_kb=BOARD_KB), log)
    log("gateway heap bench: %.0f s" % (time.monotonic() - t0))
    how_min = ("bisection over the virtual board's heap (32-bit KB; step %d KB%s) on short "
               "days: %s; completes = no MemoryError or traceback on the console, every READING of the grid "
               "meter and the wallbox tiling the day and delivered to the hub and a subscriber, journal empty. "
               "Tried %s; confirmed by one full day (%s) at that heap: %s. Goal <= 160, next 112" % (
                   step, ", %d KB assumed to fail" % FLOOR_KB if found <= BOARD_KB else "", describe(TRIAL),
                   ", ".join("%d %s" % (kb, "ok" if d else "failed") for kb, d in tried),
                   describe(DRIFT), "completed" if confirmed else "FAILED: " + why[:300]))
    if report is not None and report.heap_free_start_kb is not None and report.heap_free_end_kb is not None:
        drift = round(report.heap_free_start_kb - report.heap_free_end_kb, 1)
        how_drift = ("free heap after gc from the console's `status` (the most of 3 readings, journal empty) at "
                     "the start (%.1f KB) minus at the end (%.1f KB) of one day (%s) at %d KB%s. Goal <= 1" % (
                         report.heap_free_start_kb, report.heap_free_end_kb, describe(DRIFT), drift_kb,
                         "" if drift_kb == BOARD_KB else ", the smallest heap found: the day does not complete "
                         "at 160 KB"))
    else:
        drift = None
        how_drift = "the day (%s) at %d KB did not complete: %s" % (describe(DRIFT), drift_kb, why[:300])
    return {"gateway_min_heap_kb": (found, how_min),
            "gateway_heap_drift_kb": (drift, how_drift)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ap.add_argument("--trial", type=int, nargs="+", metavar="KB", help="run the short day at these heaps only")
    args = ap.parse_args(argv)
    if args.trial:
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        with Broker(tls=False) as broker:
            for kb in args.trial:
                _, report, why = run_day(broker, replace(TRIAL, heap_kb=kb), print)
                if report is not None:
                    print(report.summary())
        return 0
    results = measure()
    if args.json:
        print(json.dumps({k: {"value": v, "how": how} for k, (v, how) in results.items()}, indent=2))
    else:
        for name, (value, how) in results.items():
            print("%-24s %s KB  (%s)" % (name, value, how))
    return 0


if __name__ == "__main__":
    sys.exit(main())
