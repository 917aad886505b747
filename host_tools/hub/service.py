"""`pgw hub`: the ingest loop on an MQTT broker, with paho-mqtt, and the
rounds (market, settlement, ledger) on a timer thread when given a market.

    pgw hub --state DIR [--broker mqtt://HOST:PORT | --broker-port 1883] [--community demo]
            [--register FILE.cose ...] [--installer-key FILE.cose ...] [--market FILE.json]

The hub's key is DIR/hub.pem (made on first start); its COSE_Key is
published retained on pgw/1/<community>/hub/key and written to
DIR/hub.cose for provisioning devices. Installers' registrations arrive on
pgw/1/<community>/installer/register (host_tools/hub/registry.py)."""

from __future__ import annotations

import collections
import json
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from host_tools.hub.cose_es256 import HubKey
from host_tools.hub.ingest import MAX_SKEW_S, Ingest
from host_tools.hub.ratelimit import DeviceBudgets
from host_tools.hub.registry import Registry, load_public_key
from host_tools.hub.rounds import Rounds
from host_tools.hub.store import Store

MAX_BATCH = 500  # messages in one commit: bounds the time the rounds wait for the store's lock
INBOX = 5000  # received messages waiting to be checked
CHECKED = 8  # checked batches waiting for the writer
PARALLEL_FROM = 8  # a batch this long is checked in two halves at once (OpenSSL verifies without the GIL)


class HubService:
    def __init__(self, state_dir, host="127.0.0.1", port=1883, community="demo", clock=time.time,
                 device_rate=50.0, device_burst=400, max_skew_s=MAX_SKEW_S, installer_keys=()):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.key = HubKey.load_or_create(self.state_dir / "hub.pem")
        (self.state_dir / "hub.cose").write_bytes(self.key.cose_key())
        self.store = Store(self.state_dir / "hub.sqlite")
        self.ingest = Ingest(self.store, self.key, community, clock, max_skew_s)
        self.registry = Registry(self.store, self.key, self.ingest, community, installer_keys)
        self.community = community
        self.clock = clock
        self.budgets = DeviceBudgets(device_rate, device_burst)
        self.rounds = None  # the market, settlement and ledger: run_rounds()
        self.ota = None  # OTA bundles checked, announced and served: serve_ota()
        self._ota_lock = threading.Lock()
        self._stop = threading.Event()
        self._round_thread = None
        self._inbox = queue.Queue(INBOX)  # (topic, payload) as received; None: stop
        self._checked = queue.Queue(CHECKED)  # lists of DeviceMessages, in arrival order; None: stop
        self._helper = ThreadPoolExecutor(1, thread_name_prefix="pgw-hub-check-half")
        self._checker = self._writer = None
        self.host, self.port = host, port
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker has granted every subscription
        self._pending_subs = set()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pgw-hub-" + community,
                                  clean_session=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            return
        topics = (self.ingest.subscriptions() + self.registry.subscriptions()
                  + (self.ota.subscriptions() if self.ota is not None else []))
        self._pending_subs = {client.subscribe(topic, qos=1)[1] for topic in topics}
        client.publish(f"pgw/1/{self.community}/hub/key", self.key.cose_key(), qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(self, *args):
        self.connected.clear()
        self.subscribed.clear()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self._pending_subs.discard(mid)
        if not self._pending_subs:
            self.subscribed.set()

    def _on_message(self, client, userdata, msg):
        if self.registry.owns(msg.topic):  # rare, and answered at once: handled on paho's thread
            try:
                for topic, payload in self.registry.handle(msg.topic, msg.payload):
                    client.publish(topic, payload, qos=1)
            except Exception as e:  # a bug or a failing disk, not a bad request (those are counted)
                self.registry.counts["failed"] += 1
                print(f"pgw hub: a registration failed: {type(e).__name__}: {e}", flush=True)
            return
        parts = msg.topic.split("/", 5)
        if len(parts) > 4 and parts[3] == "dev" and not self.budgets.allow(parts[4]):
            self.ingest.counts["rate_limited"] += 1
            return
        if self.ota is not None and (parts[3:4] == ["ota"] or msg.topic.endswith("/otaget")):
            with self._ota_lock:
                out = self.ota.on_message(msg.topic, msg.payload, self.clock())
            for topic, payload, retain in out:
                client.publish(topic, payload, qos=1 if retain else 0, retain=retain)
            return
        if not self._put(self._inbox, (msg.topic, msg.payload)):
            self.ingest.counts["shutdown_unacked"] += 1  # stopping: no ACK, so the device resends

    def _put(self, q, item):
        """A full queue holds up this thread, and so paho's, and so the
        broker's delivery: memory stays bounded and nothing is dropped,
        unless the hub is stopping -> False."""
        while True:
            try:
                q.put(item, timeout=0.5)
                return True
            except queue.Full:
                if self._stop.is_set():
                    return False

    @staticmethod
    def _take(q):
        """-> (up to MAX_BATCH items: what has queued up, at least one;
        whether None, the end, was taken)."""
        batch = [q.get()]
        while batch[-1] is not None and len(batch) < MAX_BATCH:
            try:
                batch.append(q.get_nowait())
            except queue.Empty:
                break
        if batch[-1] is None:
            return batch[:-1], True
        return batch, False

    def _check_messages(self):
        """The checker thread: the signatures and fields of what has arrived,
        half of a long batch in the helper thread, order kept."""
        def check(part):
            return [m for m in (self.ingest.check(t, p) for t, p in part) if m is not None]
        done = False
        while not done:
            batch, done = self._take(self._inbox)
            try:
                if len(batch) >= PARALLEL_FROM:
                    half = len(batch) // 2
                    first = self._helper.submit(check, batch[:half])
                    later = check(batch[half:])
                    checked = first.result() + later
                else:
                    checked = check(batch)
            except Exception as e:  # a bug, not a bad message (those are counted): say it, keep going
                self.ingest.counts["check_failed"] += len(batch)
                print(f"pgw hub: checking {len(batch)} messages failed: {type(e).__name__}: {e}", flush=True)
                checked = []
            if checked and not self._put(self._checked, checked):
                self.ingest.counts["shutdown_unacked"] += len(checked)
        self._checked.put(None)

    def _write_messages(self):
        """The writer thread: group commit. Takes what has been checked (at
        most MAX_BATCH batches), stores it with one commit, then publishes
        the ACKs. While it waits for the disk, the next messages are checked."""
        done = False
        while not done:
            batches, done = self._take(self._checked)
            checked = [m for b in batches for m in b]
            try:
                acks = self.ingest.commit(checked)
            except Exception as e:  # e.g. a full disk: nothing stored, nothing ACKed, the devices resend
                self.ingest.counts["store_failed"] += len(checked)
                print(f"pgw hub: storing {len(checked)} messages failed: {type(e).__name__}: {e}", flush=True)
                acks = []
            for topic, payload in acks:
                self.client.publish(topic, payload, qos=0)  # not connected: queued or dropped; the device resends

    def run_rounds(self, households, *, period_s=0.25, **kw):
        """Run the market, settlement and ledger (host_tools/hub/rounds.py)
        for these households: kid -> {grid_meter, max_import_w, max_export_w,
        retail_price, feed_in_price}; kw as Rounds takes them. A thread ticks
        every `period_s` of wall time, so TRADEs leave well within 1 s of
        gate closure even on an accelerated clock."""
        self.rounds = Rounds(self.store, self.key, self.community, households, **kw)
        # mids the broker acknowledged, read by the round thread (a PUBACK may
        # come before publish() has returned its mid, so no set here)
        self._pubacks = collections.deque()
        self.client.on_publish = lambda client, userdata, mid, *rest: self._pubacks.append(mid)
        self._round_thread = threading.Thread(target=self._tick_rounds, args=(period_s,), name="pgw-hub-rounds",
                                              daemon=True)
        self._round_thread.start()
        return self.rounds

    def serve_ota(self, release_keys, every_s=60.0):
        """Check, announce and serve OTA bundles signed by these release keys
        ((x, y) each; host_tools/hub/ota.py)."""
        from host_tools.hub.ota import OtaRelease

        self.ota = OtaRelease(self.community, self.key, release_keys, self.store.take_seqs, every_s)
        if self.connected.is_set():  # started already: subscribe now, as a (re)connect does
            for topic in self.ota.subscriptions():
                self.client.subscribe(topic, qos=1)
        threading.Thread(target=self._tick_ota, name="pgw-hub-ota", daemon=True).start()
        return self.ota

    def _tick_ota(self):
        while not self._stop.wait(1.0):
            with self._ota_lock:
                out = self.ota.tick(self.clock())
            for topic, payload, retain in out:
                self.client.publish(topic, payload, qos=1, retain=retain)

    def _tick_rounds(self, period_s):
        # A step counts as sent once the broker has acknowledged all of it
        # (QoS 1 PUBACK), not once paho has queued it: a hub killed before
        # that (e.g. still connecting) must send it again after its restart.
        unacked = set()  # mids of round messages the broker has not acknowledged
        while not self._stop.is_set():
            while self._pubacks:
                unacked.discard(self._pubacks.popleft())
            try:
                out = self.rounds.tick(self.clock(), published=not unacked)
            except Exception as e:  # a bad round must not stop the next ones; counted, and said
                self.rounds.counts["tick_failed"] += 1
                print(f"pgw hub: round failed: {type(e).__name__}: {e}", flush=True)
                out = []
            for topic, payload in out:
                unacked.add(self.client.publish(topic, payload, qos=1).mid)
            self._stop.wait(period_s)

    def start(self):
        self._checker = threading.Thread(target=self._check_messages, name="pgw-hub-check", daemon=True)
        self._writer = threading.Thread(target=self._write_messages, name="pgw-hub-writer", daemon=True)
        self._checker.start()
        self._writer.start()
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        return self

    def stop(self):
        self._stop.set()
        if self._round_thread is not None:
            self._round_thread.join(10)
        self.client.disconnect()
        self.client.loop_stop()
        if self._writer is not None:
            # what is queued is still stored (its ACKs may not go out); then both threads end
            self._inbox.put(None)
            self._checker.join(30)
            self._writer.join(30)
        self._helper.shutdown()
        self.registry.close()
        self.store.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def load_market(path):
    """A market file (docs/hub.md, "Running the market") -> (households, Rounds keywords)."""
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("households"), dict):
        raise ValueError(f"{path}: a JSON object with a 'households' object")
    defaults = doc.get("defaults", {})
    households = {}
    for kid_hex, h in doc["households"].items():
        try:
            kid = bytes.fromhex(kid_hex)
        except ValueError:
            raise ValueError(f"{path}: household {kid_hex!r} is not a kid in hex") from None
        row = dict(defaults, **(h or {}))
        meter = row.get("grid_meter")
        row["grid_meter"] = meter.encode() if isinstance(meter, str) else meter
        households[kid] = row
    kw = {k: doc[k] for k in ("feeder_wh", "interval_min", "settle_after_s", "committee_size") if k in doc}
    return households, kw


def add_arguments(p):
    p.add_argument("--state", required=True, help="the hub's directory: key, database")
    p.add_argument("--broker", metavar="URL",
                   help="the MQTT broker (mqtt://host:port); without it the hub starts one on "
                        "127.0.0.1:--broker-port: Mosquitto when installed, else the embedded amqtt")
    p.add_argument("--broker-port", type=int, default=1883, metavar="PORT",
                   help="the port of the broker the hub starts (default 1883)")
    p.add_argument("--community", default="demo")
    p.add_argument("--device-rate", type=float, default=50.0, metavar="N",
                   help="messages a second each device may send once its burst is spent (default 50)")
    p.add_argument("--device-burst", type=int, default=400, metavar="N",
                   help="messages a device may send at once, e.g. a journal's backlog (default 400)")
    p.add_argument("--market", metavar="FILE",
                   help="run the market, settlement and ledger for the households in this JSON file")
    p.add_argument("--clock-start", type=int, metavar="UNIX",
                   help="simulation: the hub's clock starts at this unix time (with --clock-rate)")
    p.add_argument("--clock-rate", type=float, default=1.0, metavar="N",
                   help="simulation: the hub's clock runs N times faster than real time (default 1)")
    p.add_argument("--api", type=int, metavar="PORT",
                   help="serve the read-only status API on 127.0.0.1:PORT (docs/hub.md, \"Status API\")")
    p.add_argument("--release-key", action="append", default=[], metavar="KEY",
                   help="announce and serve OTA bundles signed by this release key (COSE_Key hex, or a file: "
                        "hex, COSE_Key, PEM); repeatable (docs/ota.md, \"Publishing\")")
    p.add_argument("--register", action="append", default=[], metavar="FILE",
                   help="a device's COSE_Key (binary, or hex text) to accept messages from")
    p.add_argument("--installer-key", action="append", default=[], metavar="FILE",
                   help="an installer's public key (COSE_Key, binary or hex, or PEM) whose signed "
                        "registrations `pgw provision` sends (docs/hub.md, \"The registry\")")


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(args):
    # Ctrl-C and a service manager's SIGTERM both stop the hub cleanly. Set
    # here, not inherited: a shell starts background jobs with SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    if args.broker is not None:
        return _run(args)
    from host_tools.broker import Broker

    with Broker(port=args.broker_port) as broker:
        args.broker = f"mqtt://127.0.0.1:{broker.port}"
        print(f"pgw hub: started {broker.kind} on {args.broker}", flush=True)
        return _run(args)


def _run(args):
    url = urlparse(args.broker)
    if url.scheme != "mqtt":
        raise ValueError("--broker must be mqtt://host:port")
    clock = time.time
    if args.clock_start is not None or args.clock_rate != 1.0:
        import datetime

        from host_tools.sim.household import Clock

        start = args.clock_start if args.clock_start is not None else time.time()
        clock = Clock(datetime.datetime.fromtimestamp(start, datetime.timezone.utc), args.clock_rate).timestamp
    installers = [load_public_key(f) for f in args.installer_key]
    hub = HubService(args.state, url.hostname or "127.0.0.1", url.port or 1883, args.community, clock=clock,
                     device_rate=args.device_rate, device_burst=args.device_burst,
                     max_skew_s=MAX_SKEW_S + int(5 * max(0.0, args.clock_rate - 1)),
                     installer_keys=[cose_key for _, _, cose_key in installers])
    for kid, _, _ in installers:
        print("installer", kid.hex())
    for f in args.register:
        raw = Path(f).read_bytes()
        try:
            raw = bytes.fromhex(raw.decode().strip())
        except (UnicodeDecodeError, ValueError):
            pass
        print("registered", hub.ingest.register(raw).hex())
    if args.release_key:
        from host_tools.ota import load_public

        hub.serve_ota([load_public(k) for k in args.release_key])
        print(f"pgw hub: OTA bundles from {len(args.release_key)} release key(s)", flush=True)
    if args.market:
        households, kw = load_market(args.market)
        hub.run_rounds(households, **kw)
        print(f"pgw hub: market for {len(households)} households", flush=True)
    hub.start()
    api = None
    if args.api is not None:
        from host_tools.hub.api import StatusAPI

        api = StatusAPI(hub, port=args.api).start()
        print(f"pgw hub: status API on {api.url}/api/status", flush=True)
    print(f"pgw hub: {args.community} on {args.broker}, kid {hub.key.kid.hex()}, state {args.state}", flush=True)
    try:
        while True:
            time.sleep(10)
            print("pgw hub:", dict(hub.ingest.counts), dict(hub.rounds.counts) if hub.rounds else "",
                  dict(hub.registry.counts) if hub.registry.counts else "",
                  dict(hub.ota.counts) if hub.ota is not None else "", flush=True)
    finally:
        if api is not None:
            api.close()
        hub.stop()
