"""Home Assistant MQTT discovery on a virtual board (docs/home-assistant.md):
a grid meter (pymodbus SDM630) and a hybrid inverter with a battery
(pymodbus SunSpec) under control, the hub and the real broker. A paho
client subscribed to the discovery prefix reads what HA would read.

The simulated clock is frozen, so the household holds still and the
published values can be compared with the simulator's exactly."""

import datetime
import json
import re
import threading
from types import SimpleNamespace

import paho.mqtt.client as paho
import pytest

import hadiscovery
from conftest import deploy_and_enrol
from host_tools.hub.service import HubService
from host_tools.sim.household import UTC, Clock, Household
from host_tools.sim.modbus_devices import ModbusSimulator
from host_tools.vboard import VirtualBoardProcess

# Mid-minute: the dispatcher's storage setpoints act from the next whole
# minute, which the frozen clock never reaches.
NOW = datetime.datetime(2025, 6, 21, 19, 0, 30, tzinfo=UTC)
COMMUNITY = "hatest"
PREFIX = "ha-test"  # not HA's default: ha_prefix is honoured
RATE = 10  # the state period is 10 s / clock_rate: one a second here
# The abbreviations HA expands (MQTT integration docs, "Supported abbreviations
# in MQTT discovery messages"), for the keys a sensor's config may use here.
HA_ABBREVIATIONS = {
    "uniq_id": "unique_id", "stat_t": "state_topic", "val_tpl": "value_template",
    "unit_of_meas": "unit_of_measurement", "dev_cla": "device_class", "stat_cla": "state_class",
    "avty_t": "availability_topic", "pl_avail": "payload_available", "pl_not_avail": "payload_not_available",
    "dev": "device", "o": "origin",
}
HA_DEVICE_ABBREVIATIONS = {"ids": "identifiers", "mf": "manufacturer", "mdl": "model", "sw": "sw_version"}
REQUIRED = ("name", "unique_id", "state_topic", "value_template", "unit_of_measurement", "device_class",
            "state_class", "availability_topic", "device")


class Watcher:
    """A paho client on `topics`: every message with its retain flag, kept in
    order; it subscribes again after each reconnect (a broker restart)."""

    def __init__(self, port, topics, name):
        self.messages = []
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=name)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 0) for t in topics])
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.messages)

    def wait(self, what, predicate, since=0, timeout=20.0):
        """Wait until predicate(messages since `since`) is true; return its value."""
        with self.cond:
            got = self.cond.wait_for(lambda: predicate(self.messages[since:]), timeout)
            if not got:
                raise AssertionError("timed out waiting for %s; got %r" % (
                    what, [(t, p[:60], r) for t, p, r in self.messages[since:]][-20:]))
            return got

    def publish(self, topic, payload, retain=False):
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def expand(payload):
    """A config as HA reads it: abbreviated keys expanded, availability payloads defaulted."""
    c = {HA_ABBREVIATIONS.get(k, k): v for k, v in json.loads(payload).items()}
    for block in ("device", "origin"):
        if block in c:
            c[block] = {HA_DEVICE_ABBREVIATIONS.get(k, k): v for k, v in c[block].items()}
    c.setdefault("payload_available", "online")
    c.setdefault("payload_not_available", "offline")
    return c


def config_topics(kid_hex, prefix=PREFIX):
    return {t for t, _ in hadiscovery.removals(kid_hex, prefix)}


def all_configs(topics):
    # -> {topic: payload} once a non-empty config arrived on every topic
    def check(msgs):
        got = {t: p for t, p, _ in msgs if t in topics and p}
        return got if set(got) == topics else None
    return check


def retained_configs(port, topics, name):
    """A new subscriber's view: every config must come as the broker's retained copy."""
    w = Watcher(port, [PREFIX + "/#"], name)
    try:
        configs = w.wait("the retained configs", all_configs(topics), timeout=5)
        assert all(r for t, _, r in w.messages if t in topics), [(t, r) for t, _, r in w.messages]
        return configs
    finally:
        w.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory, broker):
    tmp = tmp_path_factory.mktemp("ha")
    clock = Clock(start=NOW, monotonic=lambda: 0.0)  # frozen: the readings hold still
    house = Household(seed=5, start=NOW - datetime.timedelta(days=1), battery_kw=5.0, battery_kwh=10.0, ev=False)
    sim = ModbusSimulator("sdm630:1,sunspec:2", household=house, clock=clock).start_tcp(0)
    hub = HubService(tmp / "hub", "127.0.0.1", broker.port, COMMUNITY, clock=clock.timestamp).start()
    assert hub.connected.wait(10)
    with VirtualBoardProcess(tmp / "flash", tmp / "vb.tty") as vb:
        vb.channel.wait_kind("ready", timeout=20)
        con, _, kid = deploy_and_enrol(vb, hub)
        # healthy_after_s: the first announcement waits for it (10 s by default)
        config = {
            "community": COMMUNITY, "safe_mode_after": 100, "clock_rate": RATE, "healthy_after_s": 1,
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "hub_offline_s": 600},
            "ntp": {"host": ""},
            "hub": {"key": hub.key.cose_key().hex()},
            "meters": [
                {"name": "grid", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": sim.port,
                 "unit": 1, "profile": "sdm630", "period_s": 1, "timeout_ms": 1000},
                {"name": "inverter", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": sim.port,
                 "unit": 2, "profile": "sunspec_inverter", "period_s": 1, "timeout_ms": 1000},
            ],
            "control": {"grid_meter": "grid", "battery_meter": "inverter", "period_ms": 500},
            "limits": {"relay_min_on_ms": 2000, "relay_min_off_ms": 2000,
                       "relay_max_switches": 100, "relay_window_ms": 60000, "stale_ms": 3000,
                       "fuse_a": 16, "fuse_margin_ma": 3000, "battery_max_w": 20000,
                       "soc_min_pct": 0, "soc_max_pct": 100},
        }

        def boot_with(**changes):
            # a new config.json and a power cycle -> the console mark before it
            (vb.root / "config.json").write_text(json.dumps(dict(config, **changes)))
            mark = con.mark()
            vb.channel.power_cycle()
            con.wait_log(r"mqtt: connected", since=mark, timeout=30)
            return mark

        try:
            yield SimpleNamespace(vb=vb, con=con, hub=hub, kid_hex=kid.hex(), house=house, clock=clock,
                                  broker=broker, boot_with=boot_with,
                                  status=f"pgw/1/{COMMUNITY}/dev/{kid.hex()}/status")
        finally:
            con.close()
            sim.stop()
            hub.stop()


def net_row(con, key):
    m = re.search(r"(?m)^%s +(.*)$" % key, con.command("net", "duplicate acks"))
    return m and m.group(1).strip()


def test_discovery_state_and_republish_after_a_broker_restart(rig):
    con, kid_hex = rig.con, rig.kid_hex
    mark = rig.boot_with(ha_discovery=True, ha_prefix=PREFIX)
    con.wait_log(r"ha: discovery published under %s" % PREFIX, since=mark, timeout=20)
    topics = config_topics(kid_hex)
    state_topic = hadiscovery.state_topic(kid_hex, PREFIX)
    w = Watcher(rig.broker.port, [PREFIX + "/#"], "ha-watch")
    try:
        w.wait("the configs", all_configs(topics))
        configs = retained_configs(rig.broker.port, topics, "ha-first")
        entities = {e[0]: e for e in hadiscovery.ENTITIES}
        for topic, payload in configs.items():
            assert len(payload) < 600, payload  # the heap has few larger free blocks
            c = expand(payload)
            assert all(k in c for k in REQUIRED), c
            object_id = topic.split("/")[3]
            assert c["unique_id"] == "pgw_%s_%s" % (kid_hex, object_id), c
            assert c["state_topic"] == state_topic, c
            assert c["availability_topic"] == rig.status, c
            assert (c["payload_available"], c["payload_not_available"]) == ("online", "offline"), c
            assert c["device"] == {"identifiers": ["pgw_" + kid_hex], "name": "Prosumer Gateway",
                                   "manufacturer": "Prosumer Gateway", "model": "pgw",
                                   "sw_version": "0.1.0"}, c
            assert c["device_class"] == entities[object_id][4], c
            assert c["origin"] == {"name": "pgw", "sw_version": "0.1.0"}, c
        assert expand(configs[f"{PREFIX}/sensor/pgw_{kid_hex}/trade_balance/config"])[
            "unit_of_measurement"] == "EUR"

        # The state: the grid meter's registers and the SunSpec storage model's charge.
        def full_state(msgs):
            for t, p, retain in msgs:
                s = json.loads(p) if t == state_topic else None
                if s and s["power_w"] is not None and s["soc_pct"] is not None:
                    assert not retain
                    return s
            return None
        st = w.wait("a state with power and charge", full_state, timeout=15)
        s = rig.house.sample(rig.clock.timestamp())
        assert set(st) == {"power_w", "import_wh", "export_wh", "soc_pct", "ev_ma", "balance"}, st
        assert abs(st["power_w"] - s.grid_w) <= 1, (st, s.grid_w)
        # float32 kWh registers: about 1 Wh in the last place
        assert abs(st["import_wh"] - s.import_wh) <= 2 and abs(st["export_wh"] - s.export_wh) <= 2, (st, s)
        assert st["soc_pct"] == int(round(s.soc * 1000)) // 10, (st, s.soc)
        assert isinstance(st["ev_ma"], int) and st["ev_ma"] >= 0, st  # the board's pilot: an EV point
        assert st["balance"] == 0, st  # the agent runs (household.trading), nothing settled yet
        assert re.match(r"prefix %s, configs sent 1 times \(\d+ failed\), \d+ states, 0 values refused" % PREFIX,
                        net_row(con, "ha")), net_row(con, "ha")

        # A broker restart loses the retained configs (no persistence): the gateway sends them again.
        wmark, cmark = w.mark(), con.mark()
        rig.broker.stop()
        try:
            con.wait_log(r"mqtt: link lost", since=cmark, timeout=10)
        finally:
            rig.broker.start()
        con.wait_log(r"mqtt: connected", since=cmark, timeout=15)
        w.wait("the configs again", all_configs(topics), since=wmark, timeout=15)
        w.wait("a state again", lambda msgs: any(t == state_topic for t, _, _ in msgs), since=wmark)
        assert retained_configs(rig.broker.port, topics, "ha-again") == configs
        assert "configs sent 2 times" in net_row(con, "ha")
        assert "MemoryError" not in con.transcript[mark:]
    finally:
        w.close()


def test_discovery_off_by_default_publishes_nothing(rig):
    kid_hex = rig.kid_hex
    w = Watcher(rig.broker.port, ["homeassistant/#", PREFIX + "/#", rig.status], "ha-quiet")
    try:
        # What an earlier run left retained is removed the way a user would (docs/home-assistant.md).
        for prefix in (PREFIX, "homeassistant"):
            for topic, empty in hadiscovery.removals(kid_hex, prefix):
                w.publish(topic, empty, retain=True)
        mark = w.mark()
        rig.boot_with()  # no ha_discovery: the default, false
        # The device's first publish on its new connection: "online" (the retained copy of an
        # earlier one came before the mark, ahead of the acknowledgements of the removals).
        w.wait("the device online", lambda msgs: any(t == rig.status and p == b"online" for t, p, _ in msgs),
               since=mark)
        assert net_row(rig.con, "ha") is None  # no HomeAssistant was made: the row shows as soon as one is
        # A marker through the broker behind whatever the device sent before it.
        w.publish(PREFIX + "/marker", b"end")
        got = w.wait("the marker", lambda msgs: [m for m in msgs if m[0] != rig.status] if any(
            t == PREFIX + "/marker" for t, _, _ in msgs) else None, since=mark)
        assert [t for t, _, _ in got] == [PREFIX + "/marker"], got
    finally:
        w.close()
    fresh = Watcher(rig.broker.port, ["homeassistant/#", PREFIX + "/#"], "ha-quiet-fresh")
    try:
        fresh.publish(PREFIX + "/marker", b"end")
        got = fresh.wait("the marker", lambda msgs: msgs if any(t == PREFIX + "/marker" for t, _, _ in msgs)
                         else None)
        assert [t for t, _, _ in got] == [PREFIX + "/marker"], got  # nothing retained under either prefix
    finally:
        fresh.close()
