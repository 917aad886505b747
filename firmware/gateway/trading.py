# The household's trading on the board (docs/trading.md "On the board"):
# lib/trade/agent.py's forecast, orders and delivery targets, fed from the
# dispatcher's live data; TRADEs and SETTLEMENTs from the hub; witness
# requests checked by lib/trade/witness.py and answered with a WITNESS.
#
# Every step (the dispatcher's period):
# - the household's load and PV power are integrated per interval, and each
#   closed interval teaches the forecaster its slot of the day;
# - from the middle of an interval on, the ORDER for the next one is
#   planned and journaled, once (the hub's gate for an interval closes at its
#   start);
# - the agent's targets for now go to control.agent, below the hub's
#   commands and the technician's setpoints, and always through the envelope.
from compat import const
from gateway.boot import write_atomic
from journal import JournalError
from trade import messages
from trade.agent import Agent, AgentError, Forecaster

# in gateway.boot.STATE_DIR, spelt out: const() folds no concatenation
_BALANCE = const("/state/balance")  # settled amount, micro-units, + earned
_TOP = const("/state/witness.top")  # height and hash of the last block witnessed
_SETTLED = const(4)  # settlements shown by `trades`
_ROLES = const(32)  # trade ids remembered with our side, for settlements
_WITNESS_KEEP = const(32)  # our entries remembered for Merkle proofs (41 bytes each): 2 h of 3 meters and orders
_PLUGGED = const(("B", "C", "D"))  # pilot states with a vehicle


def agent_config(config, limits, ev_drive):
    # The agent's flat config from the device config; limits: envelope.Limits.
    t, h = config["tariff"], config["household"]
    return {"feed_in_price": t["feed_in_price"], "retail_price": t["retail_price"],
            "interval_min": config["interval_min"], "utc_offset_min": config["utc_offset_min"],
            "battery_capacity_wh": h["battery_capacity_wh"], "reserve_pct": h["reserve_pct"],
            "ev_departure": h["ev_departure"],
            "battery_max_w": limits.battery_max_w if h["battery_capacity_wh"] else 0,
            "soc_min_pct": limits.soc_min_pct, "soc_max_pct": limits.soc_max_pct,
            "ev_max_a": limits.ev_max_a if ev_drive else 0, "ev_phases": limits.ev_phases,
            "voltage_v": limits.voltage_v, "allow_battery_to_ev": limits.allow_battery_to_ev}


def _read_words(path):
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return None


class Trading:
    def __init__(self, config, hub, control, mono, log):
        self.hub = hub
        self.uplink = hub.uplink
        self.control = control
        self.mono = mono
        self.log = log
        self.kid = hub.key.kid
        self.rate = config["clock_rate"]
        self.ev_target_wh = config["household"]["ev_target_wh"]
        self.utc_offset_min = config["utc_offset_min"]
        lim = control.limits
        ev_drive = control.pwm is not None or control.ev is not None
        self.agent = Agent(agent_config(config, lim, ev_drive))  # AgentError: the app reports it
        self.forecaster = Forecaster(config["interval_min"], 7, config["utc_offset_min"])
        self.interval_s = config["interval_min"] * 60
        # steps further apart than this (simulated s) are a gap, not counted:
        # 2 min, or three control periods on a clock running `rate` times fast
        self._gap_s = max(120, 3 * config["control"]["period_ms"] * self.rate // 1000)
        self.ev_w_per_ma = lim.voltage_v * lim.ev_phases  # W per A: mA x this // 1000
        self._slot = -1  # the interval being integrated
        self._load_ws = self._pv_ws = self._seen_s = 0
        self.last_seen = (0, 0)  # (load, pv) Wh of the last interval observed
        self._last_s = None
        self._ordered = -1  # the interval whose ORDER is journaled
        self.paused = None  # why no ORDERs are posted (an update waits for an interval without trades)
        self._plugged = False
        self._roles = []  # (trade_id, True if we sold)
        self.settlements = []  # the last few: (trade_id, delivered_wh, amount, status)
        words = _read_words(_BALANCE)
        self.balance = int(words[0]) if words and words[0].lstrip("-").isdigit() else 0
        self.orders = self.trades = self.refused = 0
        self.witnessed = self.witness_refused = 0
        self.witness_error = ""
        from trade.witness import Witness

        self.witness = Witness(self.kid, self.uplink.hub_lookup, _WITNESS_KEEP)
        top = _read_words(_TOP)
        if top and len(top) == 2:
            try:
                self.witness.restore_block(int(top[0]), bytes.fromhex(top[1]))
            except ValueError as e:  # a torn file: the chain check starts over
                self.log("trading: witness top ignored: %s" % e)
        self.uplink.on_signed = self._signed

    # ---- from the uplink and the hub ----

    def _signed(self, seq, kind, signed):
        # Our READINGs and ORDERs as first signed: the entries a block proves.
        if kind == messages.READING or kind == messages.ORDER:
            try:
                self.witness.remember(seq, signed)
            except ValueError:
                pass  # a seq below the last remembered (a resend): already there

    def on_message(self, msg, raw):
        # A verified TRADE or SETTLEMENT, or a witness request (msg None).
        if msg is None:
            self._witness(raw)
        elif msg.type == messages.TRADE:
            try:
                fresh = self.agent.on_trade(msg, self.kid)
            except AgentError as e:
                self.refused += 1
                self.log("trading: TRADE refused: %s" % e)
                return
            if fresh:
                self.trades += 1
                sold = msg["seller"] == self.kid
                self._roles.append((msg["trade_id"], sold))
                if len(self._roles) > _ROLES:
                    self._roles.pop(0)
                self.log("trade %d: %s %d Wh at %d for the interval at %d" % (
                    msg["trade_id"], "sold" if sold else "bought", msg["energy_wh"], msg["price"],
                    msg["interval_start"]))
        elif msg.type == messages.SETTLEMENT:
            self._settle(msg)

    def _settle(self, msg):
        tid = msg["trade_id"]
        for t, sold in self._roles:
            if t == tid:
                break
        else:
            self.refused += 1
            self.log("trading: SETTLEMENT for trade %d, not one of ours" % tid)
            return
        for s in self.settlements:
            if s[0] == tid:
                return  # a repeat
        amount = msg["amount"] if sold else -msg["amount"]
        self.balance += amount
        try:
            write_atomic(_BALANCE, "%d\n" % self.balance)
        except OSError as e:
            self.log("trading: balance not saved: %s" % e)
        self.settlements.append((tid, msg["delivered_wh"], amount, msg["status"]))
        if len(self.settlements) > _SETTLED:
            self.settlements.pop(0)
        self.log("settlement %d: %d Wh delivered, %+d" % (tid, msg["delivered_wh"], amount))

    def _witness(self, raw):
        now_s = self.hub.now_s()
        if now_s is None:
            return
        from trade.witness import WitnessError

        try:
            got = self.witness.check(raw, now_s)
        except WitnessError as e:
            # no reply: a hub with a bad request learns nothing
            self.witness_refused += 1
            self.witness_error = e.reason
            self.log("trading: witness request refused: %s" % e)
            return
        try:
            self.uplink.submit(messages.WITNESS, now_s, got.fields)
        except (JournalError, messages.ProtocolError) as e:
            self.log("trading: WITNESS for block %d not journaled: %s" % (got.height, e))
            return
        self.witnessed += 1
        height, block = self.witness.last_block()
        try:
            write_atomic(_TOP, "%d %s\n" % (height, block.hex()))
        except OSError:
            pass  # the chain check restarts from the next block after a reboot
        self.log("witnessed block %d: %d of ours proven, %d unchecked" % (
            got.height, len(got.proven), len(got.unchecked)))

    def delivering(self, now_s, ahead_s=0):
        # True while an interval with a trade of ours runs, or when one
        # starts within ahead_s: gateway/ota.py switches versions outside them.
        start = now_s - now_s % self.interval_s
        while start <= now_s + ahead_s:
            if self.agent.committed(start) != (0, 0):
                return True
            start += self.interval_s
        return False

    # ---- every dispatcher period ----

    def step(self):
        now_s = self.hub.now_s()
        live = self.control.live
        if now_s is None or live is None:
            return
        if self._last_s is not None and now_s < self._last_s:
            self._last_s = now_s  # the clock stepped back: integrate from here
            return
        ev_w = live.ev_ma * self.ev_w_per_ma // 1000
        self._learn(now_s, live, ev_w)
        self._ev_session(live)
        start = now_s - now_s % self.interval_s
        if now_s - start >= self.interval_s // 2 and self._ordered < start + self.interval_s:
            if self.paused:
                self._ordered = start + self.interval_s
                self.log("trading: no order for the interval at %d: %s" % (self._ordered, self.paused))
            else:
                self._order(start + self.interval_s, live)
        try:
            self.control.agent = self.agent.targets(now_s, live.net_w, live.soc_pct, live.battery_w, ev_w)
        except AgentError as e:
            self.log("trading: no targets: %s" % e)

    def _learn(self, now_s, live, ev_w):
        # load and PV power over the interval, for the forecaster
        start = now_s - now_s % self.interval_s
        if start != self._slot:
            if self._slot >= 0 and self._seen_s * 5 >= self.interval_s * 4:  # 80 % of it seen
                self.last_seen = (self._load_ws // 3600, self._pv_ws // 3600)
                try:
                    self.forecaster.observe(self._slot, self.last_seen[0], self.last_seen[1])
                except AgentError as e:
                    self.log("trading: forecast: %s" % e)
            self._slot = start
            self._load_ws = self._pv_ws = self._seen_s = 0
            self._last_s = now_s
            return
        dt = now_s - self._last_s
        self._last_s = now_s
        if dt <= 0 or dt > self._gap_s:
            return  # a gap: not counted rather than guessed
        pv = 0
        bat = self.control.battery
        if bat is not None and bat.values is not None:
            pv = max(0, bat.values.get("pv_power_w", 0))
        # the house: what the grid and the PV give, less the battery's and the EV's share
        self._load_ws += max(0, live.net_w + pv - live.battery_w - ev_w) * dt
        self._pv_ws += pv * dt
        self._seen_s += dt

    def _order(self, start, live):
        self._ordered = start
        need = 0
        if self._plugged and self.ev_target_wh:
            need = max(0, self.ev_target_wh - live.ev_session_wh)
        try:
            # a slot of the day not seen yet: the last interval seen, as it was
            fc = self.forecaster.forecast(start) if self.forecaster.days_seen(start) else self.last_seen
            orders = self.agent.orders(start, fc, live.soc_pct, need)
        except AgentError as e:
            self.log("trading: no order: %s" % e)
            return
        for fields in orders:
            try:
                seq = self.uplink.submit(messages.ORDER, self.hub.now_s(), fields)
            except (JournalError, messages.ProtocolError) as e:
                self.log("trading: ORDER not journaled: %s" % e)
                continue
            self.orders += 1
            self.log("order seq %d: %s %d Wh at %d for the interval at %d" % (
                seq, "sell" if fields["side"] else "buy", fields["energy_wh"], fields["limit_price"], start))

    def _ev_session(self, live):
        # A vehicle plugged in: the envelope is told its departure and target.
        plugged = live.pilot in _PLUGGED
        if plugged == self._plugged:
            return
        self._plugged = plugged
        d = self.control.dispatcher
        departure = self.agent.departure_min  # parsed once by the agent; None: no plan
        if not plugged or departure is None or not self.ev_target_wh:
            d.set_departure(0, 0)
            return
        now_s = self.hub.now_s()
        local_min = (now_s // 60 + self.utc_offset_min) % 1440
        until_s = ((departure - local_min) % 1440 or 1440) * 60
        # monotonic ms are device time: simulated seconds pass `rate` times faster
        d.set_departure(self.mono.ms() + until_s * 1000 // self.rate, self.ev_target_wh)
        self.log("trading: EV plugged in; departure in %d min, %d Wh wanted" % (until_s // 60,
                                                                                self.ev_target_wh))
