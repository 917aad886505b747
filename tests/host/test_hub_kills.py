"""Issue 6, acceptance 2: the hub is killed with SIGKILL at 100 or more
random points, with nothing lost or duplicated (docs/hub.md, "Killed at
random moments").

A real `pgw hub` (service.run with --market and a simulated clock) runs on
the real broker, and six households with `cryptography` keys behave like
gateways: a journal of signed ORDERs, READINGs and WITNESSes, each resent
in seq order until its ACK arrives, and an inbox for TRADEs, SETTLEMENTs
and witness requests. The hub is SIGKILLed at seeded random moments: soon
after it starts, at random in its uptime, right after the households
publish, right after the first TRADE of a gate reaches a party, right
after the first SETTLEMENT or witness request of an interval close, and
between a step's commit and its publish (a hub held there by a hook in its
own process, the fork below); every mode at least once. It is restarted
each time. Then the households stop ordering and the last hub runs until
every journal is acknowledged, every stored TRADE and SETTLEMENT has
reached both parties and every block is final, read from the database,
not guessed from the clock; it is stopped, and if the stop raced a close,
started again. Then the database and what the households received are
checked against each other and with audit.verify_db.

Why a fork server: a fresh interpreter for `pgw hub` costs about 0.5 s of
imports, so 100 kills would cost a minute of startups alone. A small
single-threaded process imports host_tools.hub once and forks one hub
after another; each fork is a whole new process (own sockets, own SQLite
connection) that dies by SIGKILL like any other. The server is started
before the test makes any thread, and forks nothing but the hub.

The clock continues across restarts: simulated time is T0 + (monotonic -
M0) x RATE with T0 and M0 fixed before the first fork, for the hub and the
households alike; each hub waits until that is a whole second and passes
it as --clock-start, so its clock never runs backwards, nor ahead of the
households'.

`make test` runs 16 kills (about 20 s); PGW_HUB_SOAK=1 (`make hub-soak`)
200; PGW_HUB_KILLS=N any count, PGW_HUB_SEED another seed.
"""

import argparse
import hashlib
import json
import math
import os
import queue
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import cbor2

SOAK = os.environ.get("PGW_HUB_SOAK") == "1"
KILLS = int(os.environ.get("PGW_HUB_KILLS") or (200 if SOAK else 16))
SEED = int(os.environ.get("PGW_HUB_SEED") or 6)
COMMUNITY = "kills"
START = 1750507200  # on the minute grid
RATE = 40.0  # simulated seconds per wall second: a 1-minute interval every 1.5 s
INTERVAL_S = 60  # --market interval_min 1
SETTLE_AFTER_S = 6
LEAD = 3  # a household orders 3 intervals ahead: 4.5 s of wall time for its ORDER to get in
RESEND_S = 0.4  # wall seconds without an ACK before a household sends a message again
HOUSEHOLDS = 6
COMMITTEE = 4
HOUSE = {"grid_meter": "grid", "max_import_w": 60000, "max_export_w": 60000,
         "retail_price": 300000, "feed_in_price": 80000}
READING, ORDER, TRADE, SETTLEMENT, BLOCK, WITNESS, ACK = 1, 2, 3, 4, 5, 6, 8
NAMES = {READING: "READING", ORDER: "ORDER", WITNESS: "WITNESS"}
# mode -> weight once each has been hit; gate_commit / close_commit: the hub
# is held right after the step's commit, before its publish, and killed there
KILL_MODES = (("startup", 15), ("uptime", 30), ("publish", 15), ("gate", 15), ("close", 15),
              ("gate_commit", 5), ("close_commit", 5))
HELD_STEP = {"gate_commit": "gate", "close_commit": "close"}
NO_EVENT_S = 4.0  # wall s on the broker without the mode's event: kill anyway, counted no_event
DB_CHECK_S = 0.1  # while draining, the database is read at most this often


def sim_time(t0, m0):
    return t0 + (time.monotonic() - m0) * RATE


# ---- the fork server (its own process; see the module docstring) ----

def fork_server(config):
    """Read commands on stdin: `up [gate|close]` forks a hub (held after its
    first such step's commit), `kill` SIGKILLs it, `stop` SIGINTs it (a
    clean stop) and waits; each answers one line on stdout."""
    from host_tools.hub import service  # the imports every hub shares

    parser = argparse.ArgumentParser()
    service.add_arguments(parser)
    hub = None
    for line in sys.stdin:
        cmd = line.split()
        if cmd[:1] == ["up"]:
            sys.stdout.flush()
            hub = os.fork()
            if hub == 0:
                _hub_child(service, parser, config, cmd[1] if len(cmd) > 1 else None)
            print("up", hub, flush=True)
        elif cmd in (["kill"], ["stop"]):
            print(cmd[0], _end_hub(hub, signal.SIGKILL if cmd == ["kill"] else signal.SIGINT), flush=True)
            hub = None
    if hub is not None:  # the test went away: leave no hub behind
        _end_hub(hub, signal.SIGKILL)


def _end_hub(pid, sig):
    os.kill(pid, sig)
    deadline = time.monotonic() + 15
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:  # a clean stop that hangs is ended
            os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.005)


def _hold_after_commit(step_name, held_fd):
    """In the hub's own process: the first `step_name` step (Rounds._clear or
    _close) with messages to send commits, tells the test on held_fd which
    interval, and blocks its thread until the SIGKILL, so nothing of it is
    published. Ingest goes on meanwhile."""
    from host_tools.hub.rounds import Rounds

    attr = {"gate": "_clear", "close": "_close"}[step_name]
    step = getattr(Rounds, attr)

    def held(self, start, now):
        out = step(self, start, now)
        if out:
            os.write(held_fd, b"%s %d %d\n" % (step_name.encode(), start, os.getpid()))
            threading.Event().wait()
        return out
    setattr(Rounds, attr, held)


def _hub_child(service, parser, config, hold):
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(config["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        if hold:
            _hold_after_commit(hold, config["held_fd"])
        now = sim_time(config["t0"], config["m0"])
        start = math.ceil(now)
        args = parser.parse_args(config["argv"] + ["--clock-start", str(start), "--clock-rate", repr(RATE)])
        time.sleep((start - now) / RATE)  # --clock-start is whole seconds: start when it is that time
        service.run(args)
    except KeyboardInterrupt:  # `stop`: run() stopped the hub in its finally
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


class ForkServer:
    def __init__(self, config, held_fd):
        self.proc = subprocess.Popen([sys.executable, __file__, "--fork-server", json.dumps(config)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     pass_fds=(held_fd,))

    def _ask(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().split()
        assert answer and answer[0] == cmd.split()[0], f"fork server: {cmd} -> {answer}"
        return int(answer[1])

    def up(self, hold=None):
        return self._ask("up" if hold is None else f"up {hold}")

    def kill(self):
        return self._ask("kill")

    def stop(self):
        return self._ask("stop")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(20)


# ---- the households ----

class Household:
    """A gateway as the hub sees it: signs with its key, keeps a journal,
    resends what has no ACK in seq order, witnesses the blocks it is asked to."""

    def __init__(self, index, port, hub_lookup, inbox):
        import paho.mqtt.client as mqtt
        from cryptography.hazmat.primitives.asymmetric import ec

        from host_tools.hub.cose_es256 import HubKey

        self.key = HubKey(ec.derive_private_key(0x6B1115 + index, ec.SECP256R1()))
        self.kid = self.key.kid
        self.side = index % 2  # 1: a seller (PV), 0: a buyer
        self.hub_lookup = hub_lookup
        self.seq = 0
        self.journal = {}  # seq -> (mtype, signed)
        self.unacked = {}  # seq -> wall time it was last sent
        self.ack_ts = {}  # seq -> the hub's time in its first ACK of it
        self.order_for = {}  # seq of an ORDER -> the interval it bids for
        self.resent = Counter()  # mtype -> copies sent again
        self.registers = [10_000, 20_000]  # import, export Wh
        self.trades = {}  # trade_id -> {TRADE bytes received}
        self.pairs = {}  # (interval, seller, buyer) -> {trade_id}
        self.settlements = {}  # trade_id -> {SETTLEMENT bytes received}
        self.copies = Counter()  # "trade", "settlement", "request": copies received beyond the first
        self.witnessed = {}  # height -> (block hash it signed, seq of its WITNESS)
        self.forks = []  # (height, hash, other hash): a request for a height with another block
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"kills-house-{index}")
        self.client.on_message = lambda c, u, msg: inbox.put((self, msg.topic, msg.payload))
        subscribed = queue.Queue()
        self.client.on_subscribe = lambda *a: subscribed.put(1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(self.topic("in"), qos=1)
        subscribed.get(timeout=10)

    def topic(self, leaf):
        return f"pgw/1/{COMMUNITY}/dev/{self.kid.hex()}/{leaf}"

    def sign(self, mtype, ts, fields, wall):
        self.seq += 1
        self.journal[self.seq] = (mtype, self.key.sign1(cbor2.dumps([1, mtype, self.seq, int(ts), *fields])))
        self._publish(self.seq, wall)
        return self.seq

    def _publish(self, seq, wall):
        leaf = {READING: "reading", ORDER: "order", WITNESS: "witness"}[self.journal[seq][0]]
        self.client.publish(self.topic(leaf), self.journal[seq][1], qos=1)
        self.unacked[seq] = wall

    def resend_due(self, wall):
        for seq in sorted(self.unacked):  # oldest first, as the firmware's uplink does
            if wall - self.unacked[seq] >= RESEND_S:
                self.resent[self.journal[seq][0]] += 1
                self._publish(seq, wall)

    def interval(self, start, order_for, wall, rng):
        """At the start of an interval: the READING of the one that ended,
        and an ORDER for a later one (None: no more orders)."""
        wh = 500
        self.registers[self.side] += wh
        imp, exp = (0, wh) if self.side else (wh, 0)
        self.sign(READING, start, [1, imp, exp, *self.registers, 0, b"grid"], wall)
        if order_for is not None:
            energy = rng.randrange(300, 700)
            price = rng.randrange(100_000, 150_000) if self.side else rng.randrange(180_000, 250_000)
            self.order_for[self.sign(ORDER, start, [order_for, 1, self.side, energy, price], wall)] = order_for

    def receive(self, payload, now, wall):
        """One message on the `in` topic -> its kind."""
        from host_tools.hub.cose_es256 import verify1

        if payload[:1] != b"\xd2":  # not a COSE_Sign1: a witness request [signed BLOCK, proofs]
            block = cbor2.loads(payload)[0]
            p = cbor2.loads(verify1(block, self.hub_lookup)[1])
            assert p[1] == BLOCK
            height, block_hash = p[4], hashlib.sha256(block).digest()
            if height in self.witnessed:
                self.copies["request"] += 1
                if self.witnessed[height][0] != block_hash:
                    self.forks.append((height, block_hash, self.witnessed[height][0]))
            else:
                self.witnessed[height] = (block_hash, self.sign(WITNESS, now, [height, block_hash], wall))
            return "request"
        p = cbor2.loads(verify1(payload, self.hub_lookup)[1])
        if p[1] == ACK:
            assert p[4] == self.kid
            self.unacked.pop(p[5], None)
            self.ack_ts.setdefault(p[5], p[3])
            return "ack"
        if p[1] == TRADE:
            trade_id, interval, seller, buyer = p[4], p[5], p[7], p[8]
            self.copies["trade"] += trade_id in self.trades
            self.trades.setdefault(trade_id, set()).add(payload)
            self.pairs.setdefault((interval, seller, buyer), set()).add(trade_id)
            return "trade"
        if p[1] == SETTLEMENT:
            self.copies["settlement"] += p[4] in self.settlements
            self.settlements.setdefault(p[4], set()).add(payload)
            return "settlement"
        return "other"

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


# ---- what the hub's database says, read while it runs ----

def read_progress(db_path, hub_kid):
    """One read-only snapshot of the hub's database -> {"settled": {interval},
    "blocks": [(height, interval, hash, [member kid], {kid: hash it signed})],
    "deliveries": [(what, trade_id, party kid, signed bytes)]}; None while it
    cannot be read (not made yet, or busy)."""
    from host_tools.hub.store import payload_of

    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.OperationalError:
        return None
    try:
        db.execute("BEGIN")
        q = lambda sql, args=(): db.execute(sql, args).fetchall()  # noqa: E731
        signed_by = {}
        for kid, data in q("SELECT kid, data FROM messages WHERE type = ?", (WITNESS,)):
            p = payload_of(bytes(data))
            if p is not None and len(p) > 5:
                signed_by.setdefault(p[4], {})[bytes(kid)] = p[5]
        blocks = [(h, start, bytes(bhash), [bytes(c[i:i + 8]) for i in range(0, len(c), 8)], signed_by.get(h, {}))
                  for h, start, bhash, c in q("SELECT height, interval_start, hash, committee FROM blocks"
                                              " ORDER BY height")]
        deliveries = []
        for what, sql in (("trade", "SELECT t.trade_id, t.seller, t.buyer, m.data FROM trades t"
                                    " JOIN messages m ON m.kid = ? AND m.seq = t.msg_seq"),
                          ("settlement", "SELECT t.trade_id, t.seller, t.buyer, m.data FROM trades t"
                                         " JOIN settlements s ON s.trade_id = t.trade_id"
                                         " JOIN messages m ON m.kid = ? AND m.seq = s.msg_seq")):
            for tid, seller, buyer, data in q(sql, (hub_kid,)):
                deliveries += [(what, tid, bytes(seller), bytes(data)), (what, tid, bytes(buyer), bytes(data))]
        return {"settled": {s for (s,) in q("SELECT interval_start FROM rounds WHERE settled")},
                "blocks": blocks, "deliveries": deliveries}
    except sqlite3.OperationalError:
        return None
    finally:
        db.close()


def block_is_final(block):
    from host_tools.hub import ledger

    height, _, block_hash, members, signed = block
    fin = ledger.Finality(height, block_hash, members)
    for kid, h in signed.items():
        fin.add(kid, height, h)
    return fin.final


# ---- the run ----

class Rig:
    """The households, the fork server and the kill schedule."""

    def __init__(self, tmp, port, kills, seed):
        import paho.mqtt.client as mqtt
        from cryptography.hazmat.primitives.asymmetric import ec

        from host_tools.hub.cose_es256 import HubKey, decode_cose_key

        self.tmp, self.port, self.kills_wanted = Path(tmp), port, kills
        self.rng = random.Random(seed)
        self.state = self.tmp / "hub"
        self.state.mkdir()
        self.db = self.state / "hub.sqlite"
        # the hub's key made here, so the households know it before the first hub starts
        hub_key = HubKey.load_or_create(self.state / "hub.pem")
        self.hub_cose = hub_key.cose_key()
        hub_kid, hub_pub = decode_cose_key(self.hub_cose)
        self.hub_kid = hub_kid
        lookup = lambda kid: hub_pub if kid == hub_kid else None  # noqa: E731
        self.t0, self.m0 = START + 50, time.monotonic()
        self.inbox = queue.Queue()
        self.market = self.tmp / "market.json"
        argv = ["--state", str(self.state), "--broker", f"mqtt://127.0.0.1:{port}", "--community", COMMUNITY,
                "--market", str(self.market)]
        keys = []
        for i in range(HOUSEHOLDS):
            k = HubKey(ec.derive_private_key(0x6B1115 + i, ec.SECP256R1()))
            f = self.tmp / f"house{i}.cose"
            f.write_bytes(k.cose_key())
            argv += ["--register", str(f)]
            keys.append(k.kid)
        self.market.write_text(json.dumps({
            "interval_min": INTERVAL_S // 60, "settle_after_s": SETTLE_AFTER_S, "committee_size": COMMITTEE,
            "defaults": HOUSE, "households": {kid.hex(): {} for kid in keys}}))
        self.log = self.tmp / "hub.log"
        # a held hub says which step it holds on this pipe (see _hold_after_commit)
        held_r, held_w = os.pipe()
        # the fork server first: it must not inherit the threads made below
        self.server = ForkServer({"argv": argv, "t0": self.t0, "m0": self.m0, "log": str(self.log),
                                  "held_fd": held_w}, held_w)
        os.close(held_w)
        threading.Thread(target=self._read_held, args=(held_r,), daemon=True).start()
        self.houses = [Household(i, port, lookup, self.inbox) for i in range(HOUSEHOLDS)]
        self.by_kid = {h.kid: h for h in self.houses}
        self.watch = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="kills-watch")
        self.watch.on_message = lambda c, u, msg: self.inbox.put((None, "key", msg.payload))
        subscribed = queue.Queue()
        self.watch.on_subscribe = lambda *a: subscribed.put(1)
        self.watch.connect("127.0.0.1", port)
        self.watch.loop_start()
        self.watch.subscribe(f"pgw/1/{COMMUNITY}/hub/key", qos=1)  # each hub publishes it as it connects
        subscribed.get(timeout=10)
        modes = [m for m, _ in KILL_MODES]
        self.rng.shuffle(modes)
        self.to_cover = modes  # modes not yet hit with their event: they come first
        self.kills = Counter()  # mode -> kills
        self.held = []  # (step, interval): steps committed and never published by the hub that did them
        self.restart_s = []  # wall s from `up` until the hub was on the broker
        self.drain_restarts = 0  # clean stops that raced a close: the hub was started again
        self.progress = None  # the last read_progress()

    def _read_held(self, fd):
        with os.fdopen(fd, "rb") as f:
            for line in f:
                step, start, pid = line.split()
                self.inbox.put((None, "held", (step.decode(), int(start), int(pid))))

    def close(self):
        for h in self.houses:
            h.close()
        self.watch.disconnect()
        self.watch.loop_stop()
        self.server.close()

    def _next_trigger(self):
        if self.to_cover:
            mode = self.to_cover[0]
        else:
            modes, weights = zip(*KILL_MODES)
            mode = self.rng.choices(modes, weights)[0]
        delay = {"startup": (0, 0.1), "uptime": (0, 0.6)}.get(mode, (0, 0.02))
        return mode, self.rng.uniform(*delay)

    # ---- what is missing, for the drain and the failure messages ----

    def missing(self, progress, last_order):
        """What stops the run being complete -> [str], empty when complete."""
        out = []
        for h in self.houses:
            if h.unacked:
                out.append(f"house {h.kid.hex()} has no ACK for "
                           + ", ".join(f"{NAMES[h.journal[s][0]]} {s}" for s in sorted(h.unacked)))
        if progress is None:
            return out + ["the hub's database could not be read"]
        if last_order not in progress["settled"]:
            out.append(f"the last ordered interval {last_order} is not settled "
                       f"(settled up to {max(progress['settled'], default=None)})")
        for what, tid, party, data in progress["deliveries"]:
            got = (self.by_kid[party].trades if what == "trade" else self.by_kid[party].settlements).get(tid)
            if got != {data}:
                out.append(f"{what} {tid} {'never reached' if not got else 'differs at'} {party.hex()}")
        for block in progress["blocks"]:
            if not block_is_final(block):
                out.append(self.describe_block(block))
        return out

    def describe_block(self, block):
        height, start, block_hash, members, signed = block
        who = []
        for kid in members:
            h = self.by_kid.get(kid)
            seen = h.witnessed.get(height) if h else None
            if seen is None:
                state = "never got its request"
            else:
                w_hash, w_seq = seen
                state = (f"{'signed this hash' if w_hash == block_hash else 'signed ANOTHER hash'} in WITNESS "
                         f"{w_seq} ({'ACKed' if w_seq in h.ack_ts else 'no ACK'}, "
                         f"{'stored' if kid in signed else 'not stored'})")
            who.append(f"{kid.hex()}: {state}")
        return (f"block {height} (interval {start}) not final, {len(signed)} WITNESSes stored; committee: "
                + "; ".join(who))

    def report(self, last_order):
        """A failure message's tail: what is missing, the kills, the hub's log."""
        progress = read_progress(self.db, self.hub_kid)
        missing = self.missing(progress, last_order) if last_order is not None else []
        return (f"\nmissing: {missing[:20]}\nkills {dict(self.kills)}, held steps {self.held}, "
                f"restarts while draining {self.drain_restarts}, to cover {self.to_cover}, "
                f"blocks {len(progress['blocks']) if progress else '?'}\nhub log: {self.log.read_text()[-3000:]}")

    # ---- the run ----

    def run(self):
        wall0 = time.monotonic()
        deadline = wall0 + 90 + 2.0 * self.kills_wanted
        mode, delay = self._next_trigger()
        up_at, on_broker, event_at = time.monotonic(), None, None
        hub_pid = self.server.up(HELD_STEP.get(mode))
        interval = None  # the interval the households are in
        last_order = None  # the last interval anyone ordered for
        draining = False
        checked_at = 0.0
        while True:
            wall = time.monotonic()
            now = sim_time(self.t0, self.m0)
            start = int(now) - int(now) % INTERVAL_S
            # until the drain, each interval a READING and an ORDER; then READINGs
            # until the last ordered interval has its own
            if (interval is None or start > interval) and (not draining or start <= last_order + INTERVAL_S):
                interval = start
                order_for = None if draining else start + LEAD * INTERVAL_S
                for h in self.houses:
                    h.interval(start, order_for, wall, self.rng)
                last_order = order_for or last_order
                if mode == "publish" and on_broker is not None and event_at is None:
                    event_at = wall
            try:
                while True:
                    house, topic, payload = self.inbox.get(timeout=0.005)
                    if house is None:
                        if topic == "key":  # a hub's key: it is on the broker
                            if on_broker is None and up_at is not None:
                                on_broker = time.monotonic()
                                self.restart_s.append(on_broker - up_at)
                        elif topic == "held" and payload[2] == hub_pid:  # the held hub committed its step
                            self.held.append(payload[:2])
                            event_at = time.monotonic()
                        continue
                    kind = house.receive(payload, sim_time(self.t0, self.m0), time.monotonic())
                    if on_broker is not None and event_at is None and (
                            (mode == "gate" and kind == "trade")
                            or (mode == "close" and kind in ("settlement", "request"))):
                        event_at = time.monotonic()
            except queue.Empty:
                pass
            wall = time.monotonic()
            for h in self.houses:
                h.resend_due(wall)
            assert wall < deadline, (
                f"the run did not finish in {deadline - wall0:.0f} s (draining: {draining})" + self.report(last_order))
            if not draining:
                due = None
                if mode == "startup":
                    due = up_at + delay
                elif mode in HELD_STEP and event_at is not None:
                    due = event_at + delay  # the hub is held until then: it cannot publish the step
                elif on_broker is not None:
                    if mode == "uptime":
                        due = on_broker + delay
                    elif event_at is not None:
                        due = event_at + delay
                    else:
                        due = on_broker + NO_EVENT_S  # the event did not come: kill anyway
                if due is not None and wall >= due:
                    hit = mode in ("startup", "uptime") or event_at is not None
                    self.kills[mode if hit else "no_event"] += 1
                    if hit and mode in self.to_cover:
                        self.to_cover.remove(mode)
                    self.server.kill()
                    if sum(self.kills.values()) >= self.kills_wanted and not self.to_cover:
                        draining = True
                        mode = None
                    else:
                        mode, delay = self._next_trigger()
                    up_at, on_broker, event_at = time.monotonic(), None, None
                    hub_pid = self.server.up(HELD_STEP.get(mode))
                continue
            # draining: the last hub runs until what the households hold and the
            # database agree that nothing is missing; then it is stopped and
            # checked once more, since a close may have slipped in meanwhile
            if wall - checked_at < DB_CHECK_S or any(h.unacked for h in self.houses) or (
                    now < last_order + INTERVAL_S + SETTLE_AFTER_S):
                continue
            checked_at = wall
            if self.missing(read_progress(self.db, self.hub_kid), last_order):
                continue
            self.server.stop()
            self.progress = read_progress(self.db, self.hub_kid)
            if not self.missing(self.progress, last_order):
                return time.monotonic() - wall0, last_order
            self.drain_restarts += 1  # e.g. a block made after the check: its requests never went out
            up_at, on_broker = time.monotonic(), None
            hub_pid = self.server.up()


def test_the_hub_killed_at_random_moments_loses_and_duplicates_nothing(broker, tmp_path):
    from host_tools.hub import audit
    from host_tools.hub.service import load_market
    from host_tools.hub.store import Store

    rig = Rig(tmp_path, broker.port, KILLS, SEED)
    try:
        wall_s, last_order = rig.run()
    finally:
        rig.close()
    houses = rig.houses
    db = rig.db
    store = Store(db)  # opened and closed once: a clean checkpoint before the read-only audit
    try:
        q = store.query
        hub = rig.hub_kid
        # every message each household signed is stored exactly once, with the bytes
        # it signed; but an ORDER the hub ACKed after its gate had closed (its ACK's
        # time, the hub's clock, at or after the interval's start) is refused as late
        stored = {(bytes(k), s): bytes(d) for k, s, d in q("SELECT kid, seq, data FROM messages WHERE kid != ?",
                                                          (hub,))}
        journals = {(h.kid, s): d for h in houses for s, (_, d) in h.journal.items()}
        assert q("SELECT COUNT(*) FROM messages WHERE kid != ?", (hub,))[0][0] == len(stored)
        late = {(h.kid, s) for h in houses for s, start in h.order_for.items()
                if (h.kid, s) not in stored and h.ack_ts.get(s, -1) >= start}
        missing = sorted(set(journals) - set(stored) - late)
        assert not missing, f"{len(missing)} signed messages not stored: " + ", ".join(
            f"{k.hex()} {NAMES[rig.by_kid[k].journal[s][0]]} {s} (ACK at {rig.by_kid[k].ack_ts.get(s)})"
            for k, s in missing[:10])
        assert stored == {k: d for k, d in journals.items() if k not in late}
        # each interval cleared and settled once, one block per interval, heights contiguous
        rounds = q("SELECT interval_start, cleared, settled, height FROM rounds ORDER BY interval_start")
        blocks = q("SELECT height, interval_start FROM blocks ORDER BY height")
        assert [b[0] for b in blocks] == list(range(len(blocks)))
        assert len({b[1] for b in blocks}) == len(blocks)
        assert [r[0] for r in rounds if r[2]] == [b[1] for b in blocks]
        assert all(r[3] == h for r, (h, _) in zip([r for r in rounds if r[2]], blocks))
        order_intervals = {s for (s,) in q("SELECT DISTINCT interval_start FROM messages WHERE type = ?", (ORDER,))}
        assert order_intervals <= {r[0] for r in rounds if r[1]}, "an interval with ORDERs was not cleared"
        assert rounds[-1][0] >= last_order and all(r[2] for r in rounds if r[0] <= last_order)
        # each trade_id once, each trade settled once, its TRADE and SETTLEMENT signed once
        trades = q("SELECT t.trade_id, t.seller, t.buyer, t.interval_start, m.data FROM trades t"
                   " JOIN messages m ON m.kid = ? AND m.seq = t.msg_seq ORDER BY t.trade_id", (hub,))
        assert trades and [t[0] for t in trades] == list(range(1, len(trades) + 1))
        settled = q("SELECT s.trade_id, m.data FROM settlements s JOIN messages m ON m.kid = ? AND m.seq = s.msg_seq"
                    " ORDER BY s.trade_id", (hub,))
        assert [s[0] for s in settled] == [t[0] for t in trades]
        assert q("SELECT COUNT(*) FROM messages WHERE kid = ? AND type = ?", (hub, TRADE))[0][0] == len(trades)
        assert q("SELECT COUNT(*) FROM messages WHERE kid = ? AND type = ?", (hub, SETTLEMENT))[0][0] == len(trades)
        assert q("SELECT COUNT(*) FROM messages WHERE kid = ? AND type = ?", (hub, BLOCK))[0][0] == len(blocks)
        # what the households received: one TRADE per trade_id and per (interval, pair), the stored bytes,
        # to both parties, and each SETTLEMENT likewise
        by_kid = rig.by_kid
        settlement_of = dict((tid, bytes(d)) for tid, d in settled)
        for tid, seller, buyer, start, data in trades:
            for party in (by_kid[bytes(seller)], by_kid[bytes(buyer)]):
                assert party.trades.get(tid) == {bytes(data)}, f"trade {tid} at {party.kid.hex()}"
                assert party.settlements.get(tid) == {settlement_of[tid]}, f"settlement {tid} at {party.kid.hex()}"
        for h in houses:
            assert set(h.trades) <= {t[0] for t in trades}
            assert all(len(v) == 1 for v in h.trades.values())
            assert all(len(ids) == 1 for ids in h.pairs.values()), h.pairs
            assert not h.forks, h.forks
        # a step whose hub was killed between its commit and its publish was
        # published by a later hub: its TRADEs, or its SETTLEMENTs and block
        for step, start in rig.held:
            if step == "gate":
                held_trades = [t for t in trades if t[3] == start]
                assert held_trades, f"the held gate of {start} committed no TRADE"
                assert all(bytes(t[4]) in by_kid[bytes(party)].trades.get(t[0], ())
                           for t in held_trades for party in t[1:3]), f"the held gate of {start}: a TRADE never sent"
            else:
                (height,) = [r[3] for r in rounds if r[0] == start]
                assert all(by_kid[m].witnessed.get(height) for m in
                           [b[3] for b in rig.progress["blocks"] if b[0] == height][0]), (
                    f"the held close of {start}: block {height} was not sent to its committee")
        # the postings balance: every trade's and all together
        assert q("SELECT COUNT(*) FROM (SELECT trade_id FROM postings GROUP BY trade_id HAVING SUM(tokens) != 0)"
                 )[0][0] == 0
        balances = dict((bytes(k), v) for k, v in q("SELECT account, SUM(tokens) FROM postings GROUP BY account"))
        assert sum(balances.values()) == 0
    finally:
        store.close()
    report = audit.verify_db(db, rig.hub_cose, market=load_market(rig.market))
    assert report.ok, report.problems[:5]
    assert [b.state for b in report.blocks] == ["final"] * len(blocks), [
        (b.height, b.state, b.signed, b.needed) for b in report.blocks if b.state != "final"]

    kills = sum(rig.kills.values())
    assert kills >= KILLS
    assert all(rig.kills[m] for m, _ in KILL_MODES), f"a kill mode never hit its moment: {dict(rig.kills)}"
    assert {s for s, _ in rig.held} == {"gate", "close"}
    resent = Counter()
    copies = Counter()
    for h in houses:
        resent.update(h.resent)
        copies.update(h.copies)
    restart = sorted(rig.restart_s)
    print(f"\nhub kills: {kills} SIGKILLs ({dict(sorted(rig.kills.items()))}) in {wall_s:.1f} s wall; "
          f"{len(journals)} device messages, {len(late)} of them ORDERs ACKed as late, the rest stored once "
          f"({len(trades)} trades settled, {len(blocks)} blocks all final); resent by the households: "
          f"{({NAMES[k]: v for k, v in sorted(resent.items())})}; received again from restarted hubs: "
          f"{dict(sorted(copies.items()))}; restart to broker: median {restart[len(restart) // 2] * 1000:.0f} ms, "
          f"max {restart[-1] * 1000:.0f} ms; clean stops that raced a close: {rig.drain_restarts}")


def test_a_step_the_broker_never_acknowledged_is_sent_again_after_a_restart(tmp_path):
    """A hub that cannot reach its broker (still connecting, or the broker is
    down) keeps ticking: paho queues the TRADEs in memory. Those steps must
    stay unmarked however many ticks pass, so a hub killed before the broker
    acknowledged them sends them again after its restart."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from host_tools.hub.cose_es256 import HubKey
    from host_tools.hub.rounds import Rounds
    from host_tools.hub.service import HubService
    from host_tools.hub.store import Store

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gate = START + 10 * INTERVAL_S
    clock = [gate - 30]
    state = tmp_path / "hub"
    hub = HubService(state, port=port, community=COMMUNITY, clock=lambda: clock[0])
    keys = [HubKey(ec.derive_private_key(0x6B1115 + i, ec.SECP256R1())) for i in range(2)]
    households = {k.kid: dict(HOUSE, grid_meter=b"grid") for k in keys}
    kw = {"interval_min": INTERVAL_S // 60, "settle_after_s": SETTLE_AFTER_S, "committee_size": 2}
    for i, k in enumerate(keys):  # a buyer and a seller
        hub.ingest.register(k.cose_key())
        order = k.sign1(cbor2.dumps([1, ORDER, 1, clock[0], gate, 1, i, 500, [200_000, 100_000][i]]))
        assert len(hub.ingest.handle(f"pgw/1/{COMMUNITY}/dev/{k.kid.hex()}/order", order)) == 1
    rounds = hub.run_rounds(households, period_s=0.01, **kw)
    ticked = threading.Event()
    after_gate = []
    tick = rounds.tick

    def counted(now, *args, **kwargs):
        out = tick(now, *args, **kwargs)
        if now >= gate:
            after_gate.append(out)
            if len(after_gate) >= 4:
                ticked.set()
        return out
    rounds.tick = counted
    hub.start()
    try:
        clock[0] = gate  # the gate closes; the round thread clears it and publishes to no broker
        assert ticked.wait(10), f"the round thread ticked {len(after_gate)} times after the gate"
    finally:
        hub.stop()  # (as a kill would: what paho held is gone)
    sent = [p for out in after_gate for _, p in out]
    assert len(sent) == 2, f"one TRADE to each party, once: {len(sent)} messages"

    store = Store(state / "hub.sqlite")  # the restart
    try:
        again = Rounds(store, HubKey.load_or_create(state / "hub.pem"), COMMUNITY, households, **kw).tick(gate)
    finally:
        store.close()
    assert sorted(p for _, p in again) == sorted(sent), "the TRADEs no broker acknowledged were not sent again"


if __name__ == "__main__" and sys.argv[1:2] == ["--fork-server"]:
    fork_server(json.loads(sys.argv[2]))
