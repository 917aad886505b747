"""Issue 6's ingest metrics, measured in one run on one Mosquitto:

    python bench/hub_ingest.py [--messages N] [--devices D]

- broker_raw_msgs_per_s: P publisher processes send N pre-signed READINGs
  from D devices (QoS 1) and one paho subscriber (QoS 1) counts them: N
  over the time from the start signal to the last arrival.
- hub_ingest_readings_per_s: the same publishers with the same messages,
  against the hub (host_tools/hub/service.py: signature check, SQLite
  insert with synchronous=FULL, a signed ACK): N over the time from the
  start signal until the hub has accepted all N.

The readings are signed before the clock starts (with `cryptography`, as
many devices would have done), so only the broker and the hub are timed.
The broker's queue limit is lifted for both runs: a flood must reach the
slower subscriber, not be dropped at Mosquitto's default 1,000.
"""

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cbor2  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from host_tools.broker import Broker  # noqa: E402
from host_tools.hub.cose_es256 import HubKey  # noqa: E402
from host_tools.hub.service import HubService  # noqa: E402

COMMUNITY = "bench"
PUBLISHERS = 4


def signed_readings(n, devices):
    """-> ([device COSE_Keys], [(topic, signed READING)]), n readings spread over the devices."""
    keys = [HubKey(ec.generate_private_key(ec.SECP256R1())) for _ in range(devices)]
    per_device = -(-n // devices)
    ts = int(time.time()) // 900 * 900 - 900 * (per_device + 1)  # past intervals: a backlog, accepted by seq
    out = []
    for i in range(n):
        key, seq = keys[i % devices], i // devices + 1
        payload = cbor2.dumps([1, 1, seq, ts + 900 * seq, 15, 120, 0, 5000 + 120 * seq, 0, 480, b"grid"])
        out.append((f"pgw/1/{COMMUNITY}/dev/{key.kid.hex()}/reading", key.sign1(payload)))
    return [k.cose_key() for k in keys], out


def _publisher(port, messages, ready, go, done):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{mp.current_process().pid}")
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    ready.set()
    go.wait()
    infos = [client.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()
    done.put(len(infos))


def _flood(port, messages, arrived, timeout=300):
    """Publish `messages` from PUBLISHERS processes once they are connected;
    -> seconds from the start signal until arrived() returns True."""
    ctx = mp.get_context("spawn")
    go, done = ctx.Event(), ctx.Queue()
    procs, readies = [], []
    for k in range(PUBLISHERS):
        ready = ctx.Event()
        p = ctx.Process(target=_publisher, args=(port, messages[k::PUBLISHERS], ready, go, done), daemon=True)
        p.start()
        procs.append(p)
        readies.append(ready)
    for ready in readies:
        if not ready.wait(60):
            raise RuntimeError("a publisher did not connect")
    t0 = time.perf_counter()
    go.set()
    deadline = t0 + timeout
    while not arrived():
        if time.perf_counter() > deadline:
            raise RuntimeError("the messages did not all arrive in %d s" % timeout)
        time.sleep(0.01)  # polling a counter; the measurement's resolution
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join(60)
    return elapsed


def broker_raw(port, messages):
    count, lock, all_in = [0], threading.Lock(), threading.Event()

    def on_message(client, userdata, msg):
        with lock:
            count[0] += 1
            if count[0] >= len(messages):
                all_in.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub")
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", port)
    sub.subscribe(f"pgw/1/{COMMUNITY}/dev/+/reading", qos=1)
    sub.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError("the subscriber was not subscribed")
        return _flood(port, messages, all_in.is_set)
    finally:
        sub.disconnect()
        sub.loop_stop()


def hub_ingest(port, messages, device_keys):
    with tempfile.TemporaryDirectory(prefix="pgw-bench-hub-") as state:
        # no per-device budget: a bench device sends its share at once, far past any real device's rate
        hub = HubService(state, "127.0.0.1", port, COMMUNITY, device_rate=1e9, device_burst=10**9)
        for key in device_keys:
            hub.ingest.register(key)
        hub.start()
        try:
            if not hub.subscribed.wait(10):
                raise RuntimeError("the hub did not connect and subscribe")
            elapsed = _flood(port, messages, lambda: hub.ingest.counts["accepted"] >= len(messages))
            rejected = {k: v for k, v in hub.ingest.counts.items() if k.startswith("rejected")}
            if rejected:
                raise RuntimeError(f"the hub refused bench readings: {rejected}")
            return elapsed
        finally:
            hub.stop()


def run(n=6000, devices=60):
    """{"hub_ingest_readings_per_s": ..., "broker_raw_msgs_per_s": ...} and how."""
    device_keys, messages = signed_readings(n, devices)
    with Broker(queue_limit=0) as broker:
        raw_s = broker_raw(broker.port, messages)
        hub_s = hub_ingest(broker.port, messages, device_keys)
    return {
        "broker_raw_msgs_per_s": round(n / raw_s),
        "hub_ingest_readings_per_s": round(n / hub_s),
        "how": f"{n} signed READINGs from {devices} devices, {PUBLISHERS} publisher processes, QoS 1, "
               f"one Mosquitto ({broker.kind}); raw {raw_s:.2f} s, hub {hub_s:.2f} s",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=6000)
    ap.add_argument("--devices", type=int, default=60)
    args = ap.parse_args()
    print(json.dumps(run(args.messages, args.devices), indent=2))


if __name__ == "__main__":
    main()
