"""A flood from one device is rate-limited for that device; the others are
unaffected (issue 6, acceptance 4). DeviceBudgets on a fake clock, then the
hub on a real Mosquitto with one flooding and one ordinary device."""

import time

import cbor2
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from host_tools.hub.cose_es256 import HubKey
from host_tools.hub.ratelimit import DeviceBudgets
from host_tools.hub.service import HubService


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_a_burst_then_the_rate():
    clock = Clock()
    b = DeviceBudgets(rate=10, burst=5, clock=clock)
    assert [b.allow("a") for _ in range(7)] == [True] * 5 + [False] * 2
    assert b.allow("b")  # another device has its own budget
    clock.t += 0.25  # 2.5 messages' worth
    assert [b.allow("a") for _ in range(3)] == [True, True, False]
    clock.t += 100
    assert sum(b.allow("a") for _ in range(10)) == 5  # refills to the burst, never past it


def test_unknown_kids_cannot_grow_the_table_without_bound():
    clock = Clock()
    b = DeviceBudgets(rate=1, burst=2, clock=clock, max_devices=100)
    for i in range(1000):
        b.allow("%016x" % i)
    assert len(b._buckets) <= 100


@pytest.mark.parametrize("rate, burst", [(0, 5), (1, 0), (-1, 5)])
def test_bad_budgets_are_refused(rate, burst):
    with pytest.raises(ValueError):
        DeviceBudgets(rate, burst)


def readings(key, n, community="bench"):
    """n signed READINGs of one device -> [(topic, bytes)]."""
    ts = int(time.time()) // 60 * 60 - 2 * 86400  # a backlog of 1-minute intervals: accepted by seq
    topic = "pgw/1/%s/dev/%s/reading" % (community, key.kid.hex())
    return [(topic, key.sign1(cbor2.dumps([1, 1, seq, ts + 60 * seq, 1, 1, 0, 100 + seq, 0, 4, b"m"])))
            for seq in range(1, n + 1)]


def wait_for(what, predicate, timeout=20.0, detail=str):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for %s: %s" % (what, detail())
        time.sleep(0.05)  # between checks of a counter


def test_a_flooding_device_is_limited_and_the_others_are_not(broker, tmp_path):
    flooder, quiet = (HubKey(ec.generate_private_key(ec.SECP256R1())) for _ in range(2))
    hub = HubService(tmp_path / "hub", "127.0.0.1", broker.port, "bench", device_rate=20, device_burst=100)
    for key in (flooder, quiet):
        hub.ingest.register(key.cose_key())
    hub.start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flood")
    try:
        assert hub.subscribed.wait(10)
        # 900 + 20 stay under Mosquitto's default queue of 1,000 for the hub: none is lost on the way
        flood, ordinary = readings(flooder, 900), readings(quiet, 20)
        pub.max_inflight_messages_set(0)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        t0 = time.monotonic()
        infos = [pub.publish(t, p, qos=1) for t, p in flood[:450]]
        infos += [pub.publish(t, p, qos=1) for t, p in ordinary]  # in the middle of the flood
        infos += [pub.publish(t, p, qos=1) for t, p in flood[450:]]
        for info in infos:
            info.wait_for_publish(30)
        counts = hub.ingest.counts
        wait_for("every message handled or limited", lambda: counts["accepted"] + counts["rate_limited"] == 920,
                 detail=lambda: dict(counts))
        assert len(hub.store.messages(kid=quiet.kid)) == 20, counts  # the ordinary device is unaffected
        elapsed = time.monotonic() - t0
        flooded = len(hub.store.messages(kid=flooder.kid))
        assert hub.ingest.counts["rate_limited"] > 0, hub.ingest.counts
        assert flooded <= 100 + 20 * elapsed + 1, (flooded, elapsed)  # the burst, then the rate
    finally:
        pub.disconnect()
        pub.loop_stop()
        hub.stop()
