"""firmware/gateway/net/mqtt.py (umqtt.simple on an asyncio transport) on the
MicroPython unix port, against the real broker of the run, through the
fault proxy: round trip both ways, a blackholed link detected by the missing
PINGRESP, a restart of the broker, and publishing resumed afterwards.
Every wait is on an event (a line from the board, a message at the broker)
with a timeout."""

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from host_tools import devicedeps
from host_tools.netproxy import NetProxy

sys.path.insert(0, str(Path(__file__).parent))
from test_broker import MqttTestClient  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
sys.path[:0] = [%(paths)s]
import asyncio, json
from compat import ticks_ms, ticks_diff
from gateway.net.mqtt import MqttLink
cfg = json.loads(%(cfg)r)
def say(*a):
    print(" ".join(str(x) for x in a))
link = MqttLink(cfg, lambda t, m: say("msg", t.decode(), m.decode()), lambda m: say("log", m), ["pgw-link/in"])
async def main():
    asyncio.create_task(link.run())
    n = 0
    state = None
    while True:
        if link.state != state:
            state = link.state
            say("state", state, link.last_error.replace(" ", "_") or "-")
        if state == "up":
            n += 1
            if await link.publish("pgw-link/out", b"%%d" %% n):
                say("pub", n)
        await asyncio.sleep_ms(100)
asyncio.run(main())
"""


class Board:
    """The link running under MicroPython; its stdout lines in a queue."""

    def __init__(self, port):
        deps = devicedeps.fetch_all()  # umqtt/simple.py, as a deploy would copy it
        umqtt_lib = str(deps["umqtt/simple.py"].parents[1])
        paths = ", ".join(repr(p) for p in (str(ROOT / "lib"), str(ROOT / "firmware"), umqtt_lib))
        cfg = {"host": "127.0.0.1", "port": port, "client_id": "pgw-link-test", "keepalive_s": 30,
               "ping_ms": 1000, "dead_ms": 3000, "backoff_ms": 100, "backoff_max_ms": 1000,
               "will_topic": "pgw-link/status"}
        mp = Path(sys.executable).parent / "micropython"
        self.proc = subprocess.Popen([str(mp), "-X", "heapsize=160wK", "-c",
                                      SCRIPT % {"paths": paths, "cfg": json.dumps(cfg)}],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.strip()))

    def wait(self, prefix, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %r line; seen: %s" % (prefix, self.seen[-15:]))
            try:
                t, line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if line.startswith(prefix):
                return t, line

    def close(self):
        self.proc.kill()
        self.proc.wait(timeout=5)


@pytest.fixture
def rig(broker):
    proxy = NetProxy("127.0.0.1", broker.port)
    board = Board(proxy.port)
    watcher = MqttTestClient(broker.port, "pgw-link-watcher")
    watcher.subscribe("pgw-link/out")
    try:
        yield board, proxy, watcher
    finally:
        board.close()
        watcher.close()
        proxy.close()


def next_count(watcher, timeout=10.0):
    m = watcher.next_message(timeout)
    return time.monotonic(), int(m.payload)


def test_round_trip_both_ways(rig, broker):
    board, proxy, watcher = rig
    board.wait("state up")
    _, first = next_count(watcher)
    _, second = next_count(watcher)
    assert second > first  # in order
    sender = MqttTestClient(broker.port, "pgw-link-sender")
    sender.publish("pgw-link/in", b"hello board")
    sender.close()
    _, line = board.wait("msg pgw-link/in")
    assert line == "msg pgw-link/in hello board"


def test_blackholed_link_is_detected_and_publishing_resumes(rig):
    board, proxy, watcher = rig
    board.wait("state up")
    next_count(watcher)
    t_cut = time.monotonic()
    proxy.blackhole()
    # the link's own log line: the state lines are sampled every 100 ms and
    # may show only the next reconnect attempt's failure
    t_lost, line = board.wait("log mqtt: link lost", timeout=15)
    assert "PINGRESP" in line, line
    detected = t_lost - t_cut
    assert detected <= 5.0, detected  # dead_ms 3000 after a ping sent at most 1 s earlier
    t_back = time.monotonic()
    proxy.restore()
    board.wait("state up", timeout=15)
    while True:  # drain what was sent before the cut
        t, n = next_count(watcher)
        if t > t_back:
            break
    print("link: outage detected after %.2f s, publishing again %.2f s after the network came back"
          % (detected, t - t_back))
    assert t - t_back <= 3.0


def test_broker_restart_reconnects(broker):
    from host_tools.broker import Broker

    with Broker() as own:
        board = Board(own.port)
        try:
            board.wait("state up")
            own.stop()
            board.wait("state down")
            t_back = time.monotonic()
            own.start()
            t_up, _ = board.wait("state up", timeout=15)
            board.wait("pub")
            print("link: reconnected %.2f s after the broker came back" % (t_up - t_back))
            assert t_up - t_back <= 3.0
        finally:
            board.close()
