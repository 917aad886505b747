"""A neighbourhood on one machine: households on virtual boards running the
real firmware, their simulated meters, one broker and the hub with its
market, settlement and ledger (issue 6, `make demo`; docs/demo.md).

Each household is a Household simulator served over Modbus TCP (pymodbus:
an SDM630 grid meter, a SunSpec hybrid inverter where there is PV, a
Heidelberg wallbox where there is an EV), a virtual board deployed with
`pgw deploy` and enrolled with the hub, and a board config with the
trading agent on. All clocks (the simulators', the boards' via NTP and
clock_rate, the hub's) run `rate` times faster than real time from START.

    with Neighbourhood(work, broker, kinds, rate=288) as n:
        n.run(hours=24, progress=print)
        summary = n.summary()
"""

import contextlib
import datetime
import json
import time
from pathlib import Path

from host_tools.sim.day import deploy_and_enrol
from host_tools.sim.household import UTC, Clock, Household

START = datetime.datetime(2025, 6, 21, 0, 0, 0, tzinfo=UTC)  # midsummer in Carros
COMMUNITY = "carros"
INTERVAL_S = 900
FEED_IN, RETAIL = 80000, 300000  # µ/kWh: the tariffs every household has
FUSE_A = 25  # each connection: 3 x 25 A
CONNECTION_W = 3 * 230 * FUSE_A
FEEDER_KW = 30  # the street's feeder: what peer-to-peer trade may move at once

# What a household has; cycled over the households (at least 8: all four twice).
KINDS = {
    "pv_battery": {"pv_kwp": 6.0, "battery_kwh": 10.0, "battery_kw": 5.0, "ev": False},
    "pv": {"pv_kwp": 4.0, "battery_kwh": 0.0, "battery_kw": 0.0, "ev": False},
    "ev": {"pv_kwp": 0.0, "battery_kwh": 0.0, "battery_kw": 0.0, "ev": True},
    "consumer": {"pv_kwp": 0.0, "battery_kwh": 0.0, "battery_kw": 0.0, "ev": False},
}
ORDER_OF_KINDS = ("pv_battery", "pv", "ev", "consumer")


def kinds_for(n):
    return [ORDER_OF_KINDS[i % len(ORDER_OF_KINDS)] for i in range(n)]


class Home:
    """One household: its simulator, Modbus server, board and enrolment."""

    def __init__(self, index, kind, house):
        self.index, self.kind, self.house = index, kind, house
        self.name = "%s-%d" % (kind, index + 1)
        self.sim = self.vb = None
        self.kid = self.cose_key = None

    @property
    def has_pv(self):
        return self.house.pv_kwp > 0

    @property
    def has_battery(self):
        return self.house.battery_kwh > 0

    @property
    def has_ev(self):
        return self.house.ev_enabled

    def devices(self):
        spec = ["sdm630:1"]
        if self.has_pv:
            spec.append("sunspec:2")
        if self.has_ev:
            spec.append("wallbox:3")
        return ",".join(spec)

    def config(self, hub_key, broker_port, ntp_port, rate):
        mb = {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": self.sim.port, "period_s": 1,
              "timeout_ms": 1000}
        meters = [dict(mb, name="grid", unit=1, profile="sdm630")]
        control = {"grid_meter": "grid", "period_ms": 1000}
        household = {"trading": True, "reserve_pct": 20,
                     "battery_capacity_wh": int(self.house.battery_kwh * 1000)}
        if self.has_pv:
            # the agent learns PV from the inverter as the battery meter, with or without a battery
            meters.append(dict(mb, name="inverter", unit=2, profile="sunspec_inverter"))
            control["battery_meter"] = "inverter"
        if self.has_ev:
            meters.append(dict(mb, name="wallbox", unit=3, profile="heidelberg_ec"))
            control["ev_meter"] = "wallbox"
            household.update(ev_departure="07:30", ev_target_wh=20000)
        return {
            "community": COMMUNITY, "interval_min": INTERVAL_S // 60, "clock_rate": int(rate),
            "safe_mode_after": 100, "utc_offset_min": 120,
            "mqtt": {"host": "127.0.0.1", "port": broker_port, "hub_offline_s": 3600},
            "ntp": {"host": "127.0.0.1", "port": ntp_port, "period_s": 3600},
            "hub": {"key": hub_key.hex()},
            "tariff": {"feed_in_price": FEED_IN, "retail_price": RETAIL},
            "meters": meters, "control": control, "household": household,
            "limits": {"relay_min_on_ms": 2000, "relay_min_off_ms": 2000, "relay_max_switches": 100,
                       "relay_window_ms": 60000, "stale_ms": 10000, "fuse_a": FUSE_A, "fuse_margin_ma": 3000,
                       "battery_max_w": 5000, "soc_min_pct": 10, "soc_max_pct": 95},
        }


class Neighbourhood:
    """The rig; `work` a directory of its own, `broker` a started Broker."""

    def __init__(self, work, broker, kinds, rate=288, seed=1, log=None):
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.broker, self.kinds, self.rate, self.seed = broker, list(kinds), rate, seed
        self.log = log or (lambda text: None)
        self.clock = None
        self.hub = self.api = None
        self.homes = []
        self._stack = contextlib.ExitStack()
        self.hours = 0
        self._intervals = None

    def __enter__(self):
        try:
            self._set_up()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc):
        self._stack.close()

    def _sim_now(self):
        return self.clock.timestamp() if self.clock is not None else START.timestamp()

    def _set_up(self):
        from host_tools.hub.api import StatusAPI
        from host_tools.hub.service import HubService
        from host_tools.sim.modbus_devices import ModbusSimulator
        from host_tools.sim.ntp import SimNtpServer
        from host_tools.vboard import VirtualBoardProcess

        stack = self._stack
        t0 = time.monotonic()
        for i, kind in enumerate(self.kinds):
            house = Household(seed=self.seed * 100 + i, start=START - datetime.timedelta(days=2), **KINDS[kind])
            for day in range(3):  # the days the run touches, computed before any clock runs
                house.sample(START.timestamp() + day * 86400 + 3600)
            self.homes.append(Home(i, kind, house))
        self.log("neighbourhood: %d households simulated (%.0f s)" % (len(self.homes), time.monotonic() - t0))

        # 5 wall seconds on the wire are 5 x rate simulated ones: the hub's
        # freshness window widens by that much, or every ORDER would be stale
        self.hub = HubService(self.work / "hub", "127.0.0.1", self.broker.port, COMMUNITY, clock=self._sim_now,
                              max_skew_s=300 + int(5 * self.rate)).start()
        stack.callback(self.hub.stop)
        if not self.hub.connected.wait(10):
            raise RuntimeError("the hub did not connect to the broker")
        for home in self.homes:
            (self.work / home.name).mkdir(parents=True, exist_ok=True)
            vb = stack.enter_context(VirtualBoardProcess(self.work / home.name / "flash",
                                                         self.work / home.name / "vb.tty"))
            vb.channel.wait_kind("ready", timeout=20)
            con, home.cose_key, home.kid = deploy_and_enrol(vb, self.hub)
            con.close()  # nobody reads the boards' consoles during the day: their output is dropped
            home.vb = vb
            self.log("neighbourhood: %s on a virtual board, kid %s" % (home.name, home.kid.hex()))

        # the clocks start (simulators, NTP, hub) 20 simulated minutes before
        # the day, then every household trades on the hub's market
        self.clock = Clock(start=START - datetime.timedelta(minutes=20), speed=self.rate)
        households, kw = self.market()
        self.hub.run_rounds(households, **kw)
        self.api = StatusAPI(self.hub).start()
        stack.callback(self.api.close)
        ntp = SimNtpServer(self.clock.timestamp).start()
        stack.callback(ntp.close)
        for home in self.homes:
            home.sim = ModbusSimulator(home.devices(), household=home.house, clock=self.clock).start_tcp(0)
            stack.callback(home.sim.stop)
            cfg = home.config(self.hub.key.cose_key(), self.broker.port, ntp.port, self.rate)
            (home.vb.root / "config.json").write_text(json.dumps(cfg))
            home.vb.channel.power_cycle()
        self.setup_s = time.monotonic() - t0
        self.log("neighbourhood: %d boards booting; set up in %.0f s; status API %s/api/status" % (
            len(self.homes), self.setup_s, self.api.url))

    def market(self):
        """(households, Rounds keywords): the hub's market, as `pgw hub --market` reads it."""
        households = {h.kid: {"grid_meter": b"grid", "max_import_w": CONNECTION_W, "max_export_w": CONNECTION_W,
                              "retail_price": RETAIL, "feed_in_price": FEED_IN} for h in self.homes}
        return households, {"feeder_wh": FEEDER_KW * 1000 * INTERVAL_S // 3600, "interval_min": INTERVAL_S // 60,
                            "settle_after_s": 120, "committee_size": 5}

    def run(self, hours, progress=None, every_h=3):
        """Let `hours` simulated hours pass from START, then the last
        interval's settlement; progress(line) every `every_h` hours."""
        self.hours = hours
        end = START.timestamp() + hours * 3600
        settle_after = 120 + INTERVAL_S  # the last interval's settlement and block
        next_report = START.timestamp() + every_h * 3600
        while True:
            now = self.clock.timestamp()
            if now >= end + settle_after:
                break
            if progress and now >= next_report:
                progress(self.progress_line(now))
                next_report += every_h * 3600
            time.sleep(min(1.0, max(0.05, (min(next_report, end + settle_after) - now) / self.rate)))

    def progress_line(self, now):
        s = self.api.status()["rounds"]
        final = sum(1 for b in s["blocks"] if b.get("state") == "final")
        delivered = self.hub.store.query("SELECT COALESCE(SUM(delivered_wh), 0) FROM settlements")[0][0]
        return "%s  trades %d, settled %d (%.1f kWh delivered), blocks %d (%d of the last %d final), accepted %d" % (
            datetime.datetime.fromtimestamp(now, UTC).strftime("%H:%M"), s["trades"], s["settlements"],
            delivered / 1000, s["rounds"]["settled"], final, len(s["blocks"]),
            self.hub.ingest.counts.get("accepted", 0))

    # ---- what the day did ----

    def intervals(self):
        """Per interval of the day: the neighbourhood's energy flows from the
        household simulators (Wh) and the peer-to-peer energy the hub settled.
        Computed once, after the run (the summary and the chart share it)."""
        if self._intervals is None:
            self._intervals = self._compute_intervals()
        return self._intervals

    def _compute_intervals(self):
        p2p = dict(self.hub.store.query(
            "SELECT t.interval_start, SUM(s.delivered_wh) FROM trades t JOIN settlements s "
            "ON s.trade_id = t.trade_id GROUP BY t.interval_start"))
        rows = []
        t0 = int(START.timestamp())
        for k in range(int(self.hours * 3600 // INTERVAL_S)):
            a, b = t0 + k * INTERVAL_S, t0 + (k + 1) * INTERVAL_S
            row = {"start": a, "import": 0.0, "export": 0.0, "pv": 0.0, "consumption": 0.0, "p2p": p2p.get(a, 0)}
            for home in self.homes:
                sa, sb = home.house.sample(a), home.house.sample(b)
                imp, exp = sb.import_wh - sa.import_wh, sb.export_wh - sa.export_wh
                pv = sb.pv_wh - sa.pv_wh
                bat = (sb.bat_out_wh - sa.bat_out_wh) - (sb.bat_in_wh - sa.bat_in_wh)
                row["import"] += imp
                row["export"] += exp
                row["pv"] += pv
                row["consumption"] += imp - exp + pv + bat  # what the house used, EV included
            rows.append(row)
        return rows

    def summary(self):
        from host_tools.hub import audit

        rows = self.intervals()
        consumption = sum(r["consumption"] for r in rows)
        from_grid = sum(max(0.0, r["import"] - r["export"]) for r in rows)  # what the street drew upstream
        net_w = [(r["import"] - r["export"]) * 3600 / INTERVAL_S for r in rows]
        p2p_wh = [r["p2p"] for r in rows]
        report = audit.verify_db(self.hub.state_dir / "hub.sqlite", self.hub.key.cose_key(), market=self.market())
        balances = self.hub.rounds.balances()
        status = self.api.status()["rounds"]
        return {
            "households": [{"name": h.name, "kind": h.kind, "kid": h.kid.hex(),
                            "balance_micro": balances.get(h.kid, 0)} for h in self.homes],
            "hours": self.hours, "rate": self.rate, "setup_s": round(self.setup_s, 1),
            "p2p_kwh": round(sum(p2p_wh) / 1000, 2),
            "trades": status["trades"], "settlements": status["settlements"],
            "consumption_kwh": round(consumption / 1000, 1),
            "pv_kwh": round(sum(r["pv"] for r in rows) / 1000, 1),
            "self_sufficiency_pct": round(100 * (1 - from_grid / consumption), 1) if consumption else None,
            "peak_p2p_kw": round(max(p2p_wh, default=0) * 3600 / INTERVAL_S / 1000, 2),
            "feeder_limit_kw": FEEDER_KW,
            "peak_net_import_kw": round(max(net_w, default=0) / 1000, 2),
            "peak_net_export_kw": round(-min(net_w, default=0) / 1000, 2),
            "blocks": len(report.blocks), "blocks_final": sum(1 for b in report.blocks if b.state == "final"),
            "ledger_verified": report.ok,
            "ledger_problems": [str(p) for p in report.problems[:5]],
            "ingest": dict(sorted(self.hub.ingest.counts.items())),
        }

    def chart(self, path):
        """A PNG of the day: the street's PV, consumption, net grid exchange
        and the peer-to-peer energy the hub settled, per interval."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.intervals()
        hours = [(r["start"] - START.timestamp()) / 3600 for r in rows]
        kw = lambda wh: wh * 3600 / INTERVAL_S / 1000  # noqa: E731  interval energy -> mean kW
        fig, ax = plt.subplots(figsize=(10, 4.8), dpi=100)
        ax.plot(hours, [kw(r["pv"]) for r in rows], color="#e8a317", label="PV")
        ax.plot(hours, [kw(r["consumption"]) for r in rows], color="#5b5b5b", label="consumption (incl. EV)")
        ax.plot(hours, [kw(r["import"] - r["export"]) for r in rows], color="#1f77b4", label="from the grid (net)")
        ax.bar(hours, [kw(r["p2p"]) for r in rows], width=INTERVAL_S / 3600 * 0.9, align="edge", color="#2ca02c",
               alpha=0.6, label="traded peer to peer (settled)")
        ax.axhline(FEEDER_KW, color="#d62728", linestyle=":", linewidth=1, label="feeder limit for trade")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xlim(0, self.hours)
        ax.set_xlabel("hour of %s (UTC)" % START.strftime("%Y-%m-%d"))
        ax.set_ylabel("kW (15-minute mean)")
        ax.set_title("%d households in %s: one simulated day" % (len(self.homes), COMMUNITY))
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path
