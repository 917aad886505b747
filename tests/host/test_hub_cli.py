"""`pgw hub` as a user starts it: without --broker it starts its own broker
(Mosquitto when installed, else the embedded amqtt), connects, serves the
status API, and stops both on SIGTERM (a service manager's stop) as on
Ctrl-C."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pgw_hub_starts_its_own_broker_and_serves_its_status(tmp_path):
    mqtt_port, api_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "hub", "--state", str(tmp_path / "hub"),
                             "--broker-port", str(mqtt_port), "--api", str(api_port), "--community", "cli"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 30
        while not any("status API on" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stdout.readline())
        assert any("started" in line and f"127.0.0.1:{mqtt_port}" in line for line in lines), lines
        status = None
        while time.monotonic() < deadline:
            status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/status", timeout=5).read())
            if status["connected"]:
                break
            time.sleep(0.1)  # between polls of the hub's own connection flag
        assert status and status["connected"] and status["community"] == "cli", status
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    with socket.socket() as s:  # the broker it started is gone with it
        assert s.connect_ex(("127.0.0.1", mqtt_port)) != 0
