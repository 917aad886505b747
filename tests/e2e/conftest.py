"""Fixtures for end-to-end tests: virtual boards running the real firmware on MicroPython."""

import contextlib
import json
from types import SimpleNamespace

import cbor2
import paho.mqtt.client as paho
import pytest
from pycose.keys import CoseKey
from pycose.messages import Sign1Message

from host_tools.sim.day import (  # noqa: F401  (the e2e tests import these from here)
    BIN,
    Console,
    SerialExpect,
    deploy,
    deploy_and_enrol,
    run_tool,
    wait_until,
)
from host_tools.vboard import VirtualBoardProcess


def verify_with_pycose(data, cose_key):
    """A COSE_Sign1 checked by pycose (independent of lib/) -> its payload, decoded."""
    tag = cbor2.loads(data)
    p, u, payload, sig = tag.value
    msg = Sign1Message.from_cose_obj([p, dict(u), payload, sig], True)
    msg.key = CoseKey.decode(cose_key)
    assert msg.verify_signature(), "pycose refused a signature"
    return cbor2.loads(payload)


class Publisher:
    """Publishes to the broker as the hub or an attacker would: raw bytes, QoS 0."""

    def __init__(self, port, client_id):
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic, data):
        self.client.publish(topic, data, qos=0).wait_for_publish(5)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


@contextlib.contextmanager
def household_rig(tmp, broker, community, start, rate, house, config, ready=r"mqtt: connected",
                  board="virtual"):
    """A household on a virtual board: a grid meter (pymodbus SDM630, unit 1)
    and a hybrid inverter (pymodbus SunSpec, unit 2) simulating `house` on
    a clock from `start` at `rate`, NTP from that clock, a hub and a
    Publisher on `broker`. The board is deployed and enrolled, then booted
    with `config` (its own sections: household, control, limits ...) plus
    the community, clock, MQTT, NTP, hub key and the two meters, until it
    has connected and set its clock and the console shows `ready`.
    Yields a SimpleNamespace: vb, con, hub, kid, cose_key, clock, house,
    sim, pub, config and topic (the board's `in` topic). `board`: the
    virtual board's board file."""
    from host_tools.hub.service import HubService
    from host_tools.sim.household import Clock
    from host_tools.sim.modbus_devices import ModbusSimulator
    from host_tools.sim.ntp import SimNtpServer

    clock = Clock(start=start, speed=rate)
    with contextlib.ExitStack() as stack:
        sim = ModbusSimulator("sdm630:1,sunspec:2", household=house, clock=clock).start_tcp(0)
        stack.callback(sim.stop)
        ntp = SimNtpServer(clock.timestamp).start()
        stack.callback(ntp.close)
        hub = HubService(tmp / "hub", "127.0.0.1", broker.port, community, clock=clock.timestamp).start()
        stack.callback(hub.stop)
        assert hub.connected.wait(10)
        pub = Publisher(broker.port, community + "-test")
        stack.callback(pub.close)
        vb = stack.enter_context(VirtualBoardProcess(tmp / "flash", tmp / "vb.tty", board=board))
        vb.channel.wait_kind("ready", timeout=20)
        con, cose_key, kid = deploy_and_enrol(vb, hub)
        stack.callback(con.close)
        meter = {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": sim.port, "period_s": 1,
                 "timeout_ms": 1000}
        base = {
            "community": community, "safe_mode_after": 100, "clock_rate": rate,
            "mqtt": {"host": "127.0.0.1", "port": broker.port},
            "ntp": {"host": "127.0.0.1", "port": ntp.port},
            "hub": {"key": hub.key.cose_key().hex()},
            "meters": [dict(meter, name="grid", unit=1, profile="sdm630"),
                       dict(meter, name="inverter", unit=2, profile="sunspec_inverter")],
        }
        for key, value in config.items():  # a section given adds to the base's, field by field
            base[key] = dict(base[key], **value) if isinstance(base.get(key), dict) else value
        config = base
        (vb.root / "config.json").write_text(json.dumps(config))
        mark = con.mark()
        vb.channel.power_cycle()
        for line in (r"mqtt: connected", r"clock: set from", ready):
            con.wait_log(line, since=mark, timeout=30)
        yield SimpleNamespace(vb=vb, con=con, hub=hub, kid=kid, cose_key=cose_key, clock=clock, house=house,
                              sim=sim, pub=pub, config=config,
                              topic="pgw/1/%s/dev/%s/in" % (community, kid.hex()))


def details(con, name):
    """`meters NAME` as {key: text}."""
    answer = con.command("meters " + name, "protocol")
    rows = {}
    for line in answer.splitlines():
        key, _, text = line.strip().partition("  ")
        if key:
            rows[key] = text.strip()
    assert rows.get("name") == name, answer
    return rows


def errors(rows):
    """The `errors` row of `meters NAME` as {kind: count}."""
    text = rows["errors"]
    return {} if text == "none" else {k: int(v) for k, v in (e.split("=") for e in text.split())}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A release key for OTA bundles (host_tools.ota.ReleaseKey), one per test module."""
    from host_tools import ota

    return ota.keygen(tmp_path_factory.mktemp("release") / "release.pem")


@pytest.fixture
def vboard(tmp_path):
    """A virtual board with an empty flash."""
    vb = VirtualBoardProcess(tmp_path / "flash", tmp_path / "vb.tty")
    with vb:
        vb.channel.wait_kind("ready", timeout=20)
        yield vb


@pytest.fixture
def deployed(vboard):
    """A virtual board with the firmware deployed as by `pgw deploy` (see
    host_tools.sim.day.deploy), app running."""
    deploy(vboard)
    return vboard


@pytest.fixture
def console(vboard):
    con = SerialExpect(vboard.link)
    yield con
    con.close()
