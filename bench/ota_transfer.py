"""ota_transfer_kb_per_s: an update's download, end to end over Mosquitto on
loopback (docs/ota.md, "Download").

A virtual board running the gateway (deployed, its key made on the board,
MQTT and hub configured, ota.key set, no meters) and a `pgw hub` service
with the release key on a Mosquitto broker. The virtual board's own bundle
is published with `pgw ota publish`'s code; the time runs from the board's
"announced" line to its "checked and staged" line: the chunk requests, the
hub's answers, the streaming check (signature, SHA-256 of every byte) and
the writes into the other ROM slot. The switch and the trial are not timed.

    .venv/bin/python bench/ota_transfer.py [--json]
"""

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host_tools import ota  # noqa: E402
from host_tools.boards import load_board  # noqa: E402
from host_tools.broker import Broker  # noqa: E402
from host_tools.hub.service import HubService  # noqa: E402
from host_tools.sim.day import Console, deploy_and_enrol  # noqa: E402
from host_tools.vboard import VirtualBoardProcess  # noqa: E402

COMMUNITY = "bench-ota"


def measure(work: Path) -> dict:
    key = ota.keygen(work / "release.pem")
    bundle = ota.build_bundle(load_board("virtual"), key, 1, "0.0.1-bench").data
    with Broker() as broker:
        hub = HubService(work / "hub", "127.0.0.1", broker.port, COMMUNITY).start()
        try:
            hub.serve_ota([key.pub])
            if not (hub.connected.wait(10) and hub.subscribed.wait(10)):
                raise RuntimeError("the hub did not reach the broker")
            with VirtualBoardProcess(work / "flash", work / "vb.tty") as vb:
                vb.channel.wait_kind("ready", timeout=20)
                con, _, _ = deploy_and_enrol(vb, hub, Console)
                (vb.root / "config.json").write_text(json.dumps({
                    "community": COMMUNITY, "safe_mode_after": 100,
                    "mqtt": {"host": "127.0.0.1", "port": broker.port},
                    "hub": {"key": hub.key.cose_key().hex()}, "ota": {"key": key.cose_key().hex()}}))
                mark = con.mark()
                vb.channel.power_cycle()
                con.wait_log(r"mqtt: connected", since=mark, timeout=60)
                mark = con.mark()
                t = threading.Thread(target=ota.publish, args=(bundle, "127.0.0.1", broker.port, COMMUNITY),
                                     kwargs={"out": lambda *a: None}, daemon=True)
                t.start()
                con.wait_log(r"ota: version 0\.0\.1-bench announced", since=mark, timeout=60)
                began = time.monotonic()
                con.wait_log(r"ota: version 0\.0\.1-bench \(seq 1\) checked and staged", since=mark, timeout=300)
                took = time.monotonic() - began
                con.close()
                t.join(30)
        finally:
            hub.stop()
    return {"ota_transfer_kb_per_s": round(len(bundle) / 1024 / took, 1), "bundle_bytes": len(bundle),
            "seconds": round(took, 2), "chunk_requests": hub.ota.counts["ota_requests_served"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pgw-bench-ota-") as tmp:
        r = measure(Path(tmp))
    print(json.dumps(r) if args.json else "\n".join(f"{k}: {v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
