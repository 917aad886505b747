"""Issue 6's audit metric: how fast `pgw ledger verify` re-checks a hub
database and its export.

    python bench/ledger_verify.py [--households N] [--intervals N]

A real hub database is built first, untimed: N households (keys in
`cryptography`, as many devices), each sending one ORDER and one READING
per interval through Ingest; Rounds clears, settles and blocks every
interval, and the whole committee witnesses each block. Then verify_db
(with the market, so settlement is re-run) and verify_export are timed:
ledger_verify_blocks_per_s is blocks over verify_db's time.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cbor2  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from host_tools.hub import audit  # noqa: E402
from host_tools.hub.cose_es256 import HubKey  # noqa: E402
from host_tools.hub.ingest import Ingest  # noqa: E402
from host_tools.hub.rounds import Rounds  # noqa: E402
from host_tools.hub.store import Store  # noqa: E402

COMMUNITY = "bench"
START = 1750507200  # on the 15-minute grid
HOUSE = {"grid_meter": b"grid", "max_import_w": 11040, "max_export_w": 11040,
         "retail_price": 300000, "feed_in_price": 80000}


def build(path, households, intervals):
    """A hub database with `intervals` settled, witnessed blocks -> (hub COSE_Key, market)."""
    clock = [START - 600]
    store = Store(path / "hub.sqlite")
    hub = HubKey.load_or_create(path / "hub.pem")
    ingest = Ingest(store, hub, COMMUNITY, clock=lambda: clock[0])
    devices = [HubKey(ec.generate_private_key(ec.SECP256R1())) for _ in range(households)]
    for d in devices:
        ingest.register(d.cose_key())
    market = ({d.kid: HOUSE for d in devices}, {"settle_after_s": 60, "committee_size": 5})
    rounds = Rounds(store, hub, COMMUNITY, market[0], **market[1])
    seq = {d.kid: 0 for d in devices}
    register = {d.kid: 0 for d in devices}

    def send(d, leaf, mtype, ts, fields):
        seq[d.kid] += 1
        data = d.sign1(cbor2.dumps([1, mtype, seq[d.kid], ts] + fields))
        ingest.handle(f"pgw/1/{COMMUNITY}/dev/{d.kid.hex()}/{leaf}", data)
        return seq[d.kid]

    for k in range(intervals):
        start = START + 900 * k
        clock[0] = start - 300
        for i, d in enumerate(devices):  # half sell 500 Wh, half buy 400 Wh: the books cross
            side = i % 2
            send(d, "order", 2, clock[0], [start, 15, side, 500 if side else 400, 150000 if side else 200000])
        clock[0] = start
        rounds.tick(start)
        clock[0] = start + 900
        for i, d in enumerate(devices):
            exp, imp = (500, 0) if i % 2 else (0, 400)
            register[d.kid] += 500
            send(d, "reading", 1, start + 900, [15, imp, exp, register[d.kid], register[d.kid], 0, b"grid"])
        rounds.tick(start + 960)
        height = k
        block, committee = rounds.block(height)
        for kid in committee:
            d = next(x for x in devices if x.kid == kid)
            send(d, "witness", 6, start + 960, [height, block.hash])
    rounds.tick(START + 900 * intervals + 960)
    store.close()
    return hub.cose_key(), market


def run(households=40, intervals=24):
    with tempfile.TemporaryDirectory(prefix="pgw-bench-ledger-") as tmp:
        path = Path(tmp)
        hub_key, market = build(path, households, intervals)
        db = path / "hub.sqlite"
        t0 = time.perf_counter()
        report = audit.verify_db(db, hub_key, market=market)
        verify_s = time.perf_counter() - t0
        if not report.ok or len(report.blocks) < intervals:
            raise RuntimeError(f"the bench ledger does not verify: {report.problems[:3]}, "
                               f"{len(report.blocks)} blocks")
        export = audit.export_db(db, hub_key)
        t0 = time.perf_counter()
        exported = audit.verify_export(export, hub_key)
        export_s = time.perf_counter() - t0
        if not exported.ok:
            raise RuntimeError(f"the bench export does not verify: {exported.problems[:3]}")
        blocks = len(report.blocks)
        return {
            "ledger_verify_blocks_per_s": round(blocks / verify_s, 1),
            "ledger_verify_export_blocks_per_s": round(blocks / export_s, 1),
            "how": f"{blocks} blocks of {households} households (one ORDER and one READING each per interval, "
                   f"trades, settlements, 5-member committees all witnessing), {len(export)} bytes exported; "
                   f"verify_db with settlement re-run {verify_s:.2f} s, verify_export {export_s:.2f} s",
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=40)
    ap.add_argument("--intervals", type=int, default=24)
    args = ap.parse_args()
    print(json.dumps(run(args.households, args.intervals), indent=2))


if __name__ == "__main__":
    main()
