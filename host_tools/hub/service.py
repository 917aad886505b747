"""`pgw hub`: the ingest loop on an MQTT broker, with paho-mqtt.

    pgw hub --state DIR [--broker mqtt://127.0.0.1:1883] [--community demo]
            [--register FILE.cose ...]

The hub's key is DIR/hub.pem (made on first start); its COSE_Key is
published retained on pgw/1/<community>/hub/key and written to
DIR/hub.cose for provisioning devices."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from host_tools.hub.cose_es256 import HubKey
from host_tools.hub.ingest import Ingest
from host_tools.hub.ratelimit import DeviceBudgets
from host_tools.hub.store import Store


class HubService:
    def __init__(self, state_dir, host="127.0.0.1", port=1883, community="demo", clock=time.time,
                 device_rate=50.0, device_burst=400):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.key = HubKey.load_or_create(self.state_dir / "hub.pem")
        (self.state_dir / "hub.cose").write_bytes(self.key.cose_key())
        self.store = Store(self.state_dir / "hub.sqlite")
        self.ingest = Ingest(self.store, self.key, community, clock)
        self.community = community
        self.budgets = DeviceBudgets(device_rate, device_burst)
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
        self._pending_subs = {client.subscribe(topic, qos=1)[1] for topic in self.ingest.subscriptions()}
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
        parts = msg.topic.split("/", 5)
        if len(parts) > 4 and parts[3] == "dev" and not self.budgets.allow(parts[4]):
            self.ingest.counts["rate_limited"] += 1
            return
        for topic, payload in self.ingest.handle(msg.topic, msg.payload):
            client.publish(topic, payload, qos=0)

    def start(self):
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        return self

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()
        self.store.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def add_arguments(p):
    p.add_argument("--state", required=True, help="the hub's directory: key, database")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="MQTT broker URL (mqtt://host:port)")
    p.add_argument("--community", default="demo")
    p.add_argument("--device-rate", type=float, default=50.0, metavar="N",
                   help="messages a second each device may send once its burst is spent (default 50)")
    p.add_argument("--device-burst", type=int, default=400, metavar="N",
                   help="messages a device may send at once, e.g. a journal's backlog (default 400)")
    p.add_argument("--register", action="append", default=[], metavar="FILE",
                   help="a device's COSE_Key (binary, or hex text) to accept messages from")


def run(args):
    url = urlparse(args.broker)
    if url.scheme != "mqtt":
        raise ValueError("--broker must be mqtt://host:port")
    hub = HubService(args.state, url.hostname or "127.0.0.1", url.port or 1883, args.community,
                     device_rate=args.device_rate, device_burst=args.device_burst)
    for f in args.register:
        raw = Path(f).read_bytes()
        try:
            raw = bytes.fromhex(raw.decode().strip())
        except (UnicodeDecodeError, ValueError):
            pass
        print("registered", hub.ingest.register(raw).hex())
    hub.start()
    print(f"pgw hub: {args.community} on {args.broker}, kid {hub.key.kid.hex()}, state {args.state}", flush=True)
    try:
        while True:
            time.sleep(10)
            print("pgw hub:", dict(hub.ingest.counts), flush=True)
    finally:
        hub.stop()
