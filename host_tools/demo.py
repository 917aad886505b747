"""`make demo`: a neighbourhood trading energy for one simulated day.

Eight households of four kinds (PV with battery, PV only, EV, plain
consumer), each a virtual board running the real firmware with simulated
meters, trade through the hub's market on one broker at 288 times real
time. At the end: energy traded peer to peer, the street's
self-sufficiency, peak loads against the feeder limit, balances, whether
the ledger verified, and a PNG chart of the day (docs/demo.md).

    python -m host_tools.demo [--households 8] [--hours 24] [--rate 288] [--out build/demo]
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from host_tools.broker import Broker
from host_tools.sim.neighbourhood import KINDS, Neighbourhood, kinds_for


def say(text):
    print(text, flush=True)


def show(summary, chart):
    say("")
    say("== the day in numbers")
    say("  traded peer to peer   %.2f kWh in %d trades (%d settled)" % (
        summary["p2p_kwh"], summary["trades"], summary["settlements"]))
    say("  self-sufficiency      %s %% of %.1f kWh used (PV %.1f kWh)" % (
        summary["self_sufficiency_pct"], summary["consumption_kwh"], summary["pv_kwh"]))
    say("  peak feeder load      %.2f kW traded at once, limit %d kW; the street's net grid exchange peaked at "
        "%.2f kW import, %.2f kW export" % (summary["peak_p2p_kw"], summary["feeder_limit_kw"],
                                            summary["peak_net_import_kw"], summary["peak_net_export_kw"]))
    say("  ledger                %d blocks, %d final; verified: %s" % (
        summary["blocks"], summary["blocks_final"], "yes" if summary["ledger_verified"] else "NO"))
    for p in summary["ledger_problems"]:
        say("                        " + p)
    say("  balances (EUR, + earned, - paid)")
    for h in summary["households"]:
        say("    %-14s %s  %+8.4f" % (h["name"], h["kid"], h["balance_micro"] / 1e6))
    say("  chart                 %s" % chart)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=8, help="at least 4: one of each kind (default 8)")
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    ap.add_argument("--rate", type=int, default=288, help="simulated seconds per second (default 288)")
    ap.add_argument("--out", default="build/demo", help="where the summary and the chart go")
    args = ap.parse_args(argv)
    if args.households < len(KINDS):
        ap.error("--households must be at least %d" % len(KINDS))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pgw-demo-"))
    t0 = time.monotonic()
    try:
        with Broker() as broker:
            say("== a broker (%s) on 127.0.0.1:%d" % (broker.kind, broker.port))
            with Neighbourhood(work, broker, kinds_for(args.households), rate=args.rate,
                               log=lambda line: say("  " + line)) as n:
                say("== %g simulated hours at %g x: watch %s/api/status" % (args.hours, args.rate, n.api.url))
                n.run(args.hours, progress=lambda line: say("  " + line))
                summary = n.summary()
                chart = n.chart(out / "day.png")
        summary["wall_s"] = round(time.monotonic() - t0, 1)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        show(summary, chart)
        say("  summary               %s (%.0f s in all)" % (out / "summary.json", summary["wall_s"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if summary["ledger_verified"] and summary["trades"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
