"""host_tools.netproxy: forwarding, and the faults a test switches on.

The plain TCP tests own both ends: the client, and the target's accepted
socket, so every byte is accounted for. The MQTT tests go through the session
broker with the small client of test_broker.py. Waits are on the proxy's
counters (``wait_until``); the few reads that expect nothing have a short
timeout only after the counters prove the bytes were thrown away.
"""

import socket
import time

import pytest

from host_tools.netproxy import (
    Counters,
    NetProxy,
    NetProxyError,
    parse_schedule,
    random_schedule,
)
from test_broker import PINGRESP, TIMEOUT, MqttTestClient

NOTHING = 0.3  # seconds a read waits for bytes that were provably dropped


@pytest.fixture
def target():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        yield listener


@pytest.fixture
def proxy(target):
    with NetProxy("127.0.0.1", target.getsockname()[1]) as running:
        yield running


def connect(proxy, target=None):
    """A client through the proxy and, given the target, the target's end of it."""
    client = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT)
    if target is None:
        return client
    server, _ = target.accept()
    server.settimeout(TIMEOUT)
    return client, server


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"end of stream after {data!r}")
        data += chunk
    return data


def assert_silent(sock):
    """Nothing to read, and neither an end of stream nor a reset."""
    sock.setblocking(False)
    try:
        with pytest.raises(BlockingIOError):
            sock.recv(1)
    finally:
        sock.settimeout(TIMEOUT)


# --- plain TCP ---------------------------------------------------------------


def test_forwards_both_ways_and_counts(proxy, target):
    client, server = connect(proxy, target)
    client.sendall(b"hello")
    assert recv_exactly(server, 5) == b"hello"
    server.sendall(b"world!")
    assert recv_exactly(client, 6) == b"world!"
    counters = proxy.wait_until(lambda c: c.to_client == 6)
    assert counters == Counters(mode="up", accepted=1, connected=1, open=1,
                                to_target=5, to_client=6)


def test_end_of_stream_is_passed_on_and_the_connection_closes(proxy, target):
    client, server = connect(proxy, target)
    client.sendall(b"last words")
    client.shutdown(socket.SHUT_WR)
    assert recv_exactly(server, 10) == b"last words"
    assert server.recv(1) == b""  # the client's FIN
    server.sendall(b"reply after half-close")
    assert recv_exactly(client, 22) == b"reply after half-close"
    server.close()
    assert client.recv(1) == b""
    proxy.wait_until(lambda c: c.open == 0)


def test_blackhole_drops_bytes_both_ways_without_a_reset(proxy, target):
    client, server = connect(proxy, target)
    proxy.blackhole()
    assert proxy.mode == "drop"
    client.sendall(b"lost")
    server.sendall(b"lost too")
    proxy.wait_until(lambda c: c.dropped_to_target == 4 and c.dropped_to_client == 8)
    assert_silent(client)
    assert_silent(server)
    proxy.restore()
    assert proxy.mode == "up"
    client.sendall(b"again")
    assert recv_exactly(server, 5) == b"again"  # the lost bytes never show up
    server.sendall(b"back")
    assert recv_exactly(client, 4) == b"back"


def test_a_close_during_blackhole_is_lost_and_later_answered_with_a_reset(proxy, target):
    client, server = connect(proxy, target)
    proxy.blackhole()
    client.close()
    proxy.wait_until(lambda c: c.dropped_closes == 1)
    assert_silent(server)  # the target never hears of the close
    proxy.restore()
    server.sendall(b"anyone there?")
    proxy.wait_until(lambda c: c.resets == 1 and c.open == 0)
    with pytest.raises(ConnectionResetError):
        server.recv(1)


def test_a_connection_made_during_blackhole_is_never_forwarded(proxy, target):
    proxy.blackhole()
    client = connect(proxy)
    client.sendall(b"CONNECT")
    proxy.wait_until(lambda c: c.accepted == 1 and c.dropped_to_target == 7)
    target.setblocking(False)
    with pytest.raises(BlockingIOError):
        target.accept()
    assert proxy.counters().connected == 0


def test_hold_delivers_everything_in_order_after_restore(proxy, target):
    client, server = connect(proxy, target)
    proxy.wait_until(lambda c: c.connected == 1)
    proxy.blackhole(hold=True)
    assert proxy.mode == "hold"
    client.sendall(b"one ")
    late = connect(proxy)  # waits, as a SYN would, for the link
    late.sendall(b"early bytes")
    proxy.wait_until(lambda c: c.accepted == 2)
    target.setblocking(False)
    with pytest.raises(BlockingIOError):
        target.accept()
    target.settimeout(TIMEOUT)
    client.sendall(b"two")
    assert proxy.counters().to_target == 0
    proxy.restore()
    assert recv_exactly(server, 7) == b"one two"
    late_server, _ = target.accept()
    late_server.settimeout(TIMEOUT)
    assert recv_exactly(late_server, 11) == b"early bytes"


def test_reset_all_resets_both_peers(proxy, target):
    client, server = connect(proxy, target)
    proxy.wait_until(lambda c: c.connected == 1)
    assert proxy.reset_all() == 1
    with pytest.raises(ConnectionResetError):
        client.recv(1)
    with pytest.raises(ConnectionResetError):
        server.recv(1)
    assert proxy.counters().resets == 1 and proxy.counters().open == 0
    client2, server2 = connect(proxy, target)  # the proxy itself goes on
    client2.sendall(b"x")
    assert recv_exactly(server2, 1) == b"x"


def test_a_target_that_is_down_resets_the_client():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens here
    with NetProxy("127.0.0.1", closed_port) as proxy:
        try:
            client = connect(proxy)
        except ConnectionResetError:  # the reset came before connect() checked
            client = None
        proxy.wait_until(lambda c: c.refused == 1 and c.open == 0)
        if client is not None:
            with pytest.raises(ConnectionResetError):
                client.recv(1)


def test_latency_delays_each_way(proxy, target):
    client, server = connect(proxy, target)
    proxy.set_latency(40)
    assert proxy.latency_ms == 40
    start = time.monotonic()
    client.sendall(b"ping")
    assert recv_exactly(server, 4) == b"ping"
    server.sendall(b"pong")
    assert recv_exactly(client, 4) == b"pong"
    assert time.monotonic() - start >= 0.080  # the proxy holds each chunk until due
    proxy.set_latency(0)
    assert proxy.latency_ms == 0


@pytest.mark.parametrize("ms", [-1, "fast", float("nan"), 10**9, None])
def test_bad_latency_is_refused(proxy, ms):
    with pytest.raises(NetProxyError) as info:
        proxy.set_latency(ms)
    assert info.value.reason == "bad-latency"


def test_flap_runs_the_schedule_then_stays_up(proxy):
    periods = proxy.flap("down:0.05 up:0.05, down:0.05")
    assert periods == [("down", 0.05), ("up", 0.05), ("down", 0.05)]
    assert proxy.mode == "drop"  # the first period is on when flap() returns
    assert proxy.counters().flapping
    proxy.wait_flap(TIMEOUT)
    assert proxy.mode == "up" and not proxy.counters().flapping
    modes = [mode for mode, _ in proxy.flap_log]
    assert modes == ["drop", "up", "drop"]
    starts = [t for _, t in proxy.flap_log]
    assert all(later - earlier >= 0.05 for earlier, later in zip(starts, starts[1:]))


def test_flap_can_hold_and_restore_cancels_it(proxy):
    proxy.flap([("down", 3600)], hold=True)
    assert proxy.mode == "hold"
    proxy.restore()
    proxy.wait_flap(0)
    assert proxy.mode == "up" and not proxy.counters().flapping


def test_random_schedule_is_the_same_for_the_same_seed():
    schedule = random_schedule(7, periods=6, up=(0.1, 0.2), down=(1.0, 2.0))
    assert schedule == random_schedule(7, periods=6, up=(0.1, 0.2), down=(1.0, 2.0))
    assert schedule != random_schedule(8, periods=6, up=(0.1, 0.2), down=(1.0, 2.0))
    assert [state for state, _ in schedule] == ["down", "up"] * 3
    for state, seconds in schedule:
        low, high = (0.1, 0.2) if state == "up" else (1.0, 2.0)
        assert low <= seconds <= high
    assert parse_schedule(schedule) == schedule
    assert random_schedule(1, periods=1, start="up")[0][0] == "up"


@pytest.mark.parametrize("schedule", [
    "", "down", "sideways:1", "up:-1", "up:nan", "up:inf", "up:soon",
    [("up",)], [("down", 1, 2)], 5, [("up", None)], "up:1 " * 10_001,
])
def test_bad_schedules_are_refused(schedule):
    with pytest.raises(NetProxyError) as info:
        parse_schedule(schedule)
    assert info.value.reason == "bad-schedule"


def test_bad_random_schedule_arguments_are_refused():
    for kwargs in ({"periods": 0}, {"start": "maybe"}, {"up": (2, 1)}, {"down": (-1, 1)}):
        with pytest.raises(NetProxyError) as info:
            random_schedule(1, **kwargs)
        assert info.value.reason == "bad-schedule"


@pytest.mark.parametrize("host, port", [("127.0.0.1", 70000), ("127.0.0.1", "mqtt?")])
def test_bad_target_is_refused(host, port):
    with pytest.raises(NetProxyError) as info:
        NetProxy(host, port)
    assert info.value.reason == "bad-target"


def test_a_closed_proxy_refuses_calls_and_connections(target):
    proxy = NetProxy("127.0.0.1", target.getsockname()[1])
    client, server = connect(proxy, target)
    proxy.close()
    proxy.close()  # twice is fine
    assert not proxy._thread.is_alive()
    assert server.recv(1) == b""  # its connections were closed
    for call in (proxy.blackhole, proxy.restore, proxy.reset_all):
        with pytest.raises(NetProxyError) as info:
            call()
        assert info.value.reason == "closed"
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)


# --- MQTT through the proxy ------------------------------------------------------


@pytest.fixture
def mqtt_proxy(broker):
    with NetProxy("127.0.0.1", broker.port) as running:
        yield running


@pytest.fixture
def topic(request):
    return "pgw-test/" + request.node.name


def test_mqtt_passes_through(broker, mqtt_proxy, topic):
    device = MqttTestClient(mqtt_proxy.port, "device-pass")
    device.subscribe(topic + "/cmd", qos=1)
    server = MqttTestClient(broker.port, "server-pass")
    server.publish(topic + "/cmd", b"on", qos=1)
    assert device.next_message().payload == b"on"
    server.subscribe(topic + "/state")
    device.publish(topic + "/state", b"done", qos=1)
    assert server.next_message().payload == b"done"
    assert mqtt_proxy.counters().to_target > 0
    device.disconnect()
    server.disconnect()


def test_blackhole_leaves_a_ping_unanswered_and_restore_brings_traffic_back(
        broker, mqtt_proxy, topic):
    device = MqttTestClient(mqtt_proxy.port, "device-ping", keepalive=60)
    device.subscribe(topic)
    device.ping()
    device.expect(PINGRESP)
    mqtt_proxy.blackhole()
    before = mqtt_proxy.counters().dropped_to_target
    device.ping()
    mqtt_proxy.wait_until(lambda c: c.dropped_to_target == before + 2)  # the PINGREQ
    with pytest.raises(socket.timeout):
        device.read_packet(timeout=NOTHING)  # what a keepalive timer would see
    mqtt_proxy.restore()
    device.ping()
    device.expect(PINGRESP)
    server = MqttTestClient(broker.port, "server-ping")
    server.publish(topic, b"after the outage", qos=1)
    assert device.next_message().payload == b"after the outage"
    device.disconnect()
    server.disconnect()


def test_a_dead_link_ends_in_the_last_will_by_keepalive(broker, mqtt_proxy, topic):
    watcher = MqttTestClient(broker.port, "watcher-dead")
    watcher.subscribe(topic + "/status", qos=1)
    device = MqttTestClient(mqtt_proxy.port, "device-dead", keepalive=1,
                            will=(topic + "/status", b"offline", 1, False))
    mqtt_proxy.blackhole()
    # The broker hears nothing for 1.5 keepalives and gives the device up
    # (Mosquitto 2.0.11 checks keepalives about every 5 s).
    message = watcher.next_message(timeout=3 * TIMEOUT)
    assert (message.topic, message.payload) == (topic + "/status", b"offline")
    assert_silent(device.sock)  # the device was told nothing
    watcher.disconnect()


def test_reset_all_shows_the_client_a_reset_and_the_broker_a_dead_client(
        broker, mqtt_proxy, topic):
    watcher = MqttTestClient(broker.port, "watcher-reset")
    watcher.subscribe(topic + "/status", qos=1)
    device = MqttTestClient(mqtt_proxy.port, "device-reset", keepalive=60,
                            will=(topic + "/status", b"offline", 1, False))
    assert mqtt_proxy.reset_all() == 1
    with pytest.raises(ConnectionResetError):
        device.read_packet()
    assert watcher.next_message().payload == b"offline"
    again = MqttTestClient(mqtt_proxy.port, "device-reset")  # reconnects through it
    again.disconnect()
    watcher.disconnect()
