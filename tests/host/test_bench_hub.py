"""bench/hub_ingest.py and bench/ledger_verify.py on small inputs. A small
flood: every signed READING reaches the subscriber and is accepted by the
hub (run() raises otherwise). A small ledger: it verifies, as a database
and as an export. The rates themselves belong to `make bench`."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import hub_ingest  # noqa: E402


def test_a_small_flood_is_all_delivered_and_accepted():
    r = hub_ingest.run(n=200, devices=10)
    assert r["broker_raw_msgs_per_s"] > 0 and r["hub_ingest_readings_per_s"] > 0
    assert "200 signed READINGs from 10 devices" in r["how"]


def test_the_readings_are_ones_the_hub_takes(tmp_path):
    from host_tools.hub.cose_es256 import HubKey
    from host_tools.hub.ingest import Ingest
    from host_tools.hub.store import Store

    keys, messages = hub_ingest.signed_readings(6, 3)
    store = Store(tmp_path / "hub.sqlite")
    try:
        ingest = Ingest(store, HubKey.load_or_create(tmp_path / "hub.pem"), hub_ingest.COMMUNITY)
        for key in keys:
            ingest.register(key)
        assert all(len(ingest.handle(t, data)) == 1 for t, data in messages)  # one ACK each
        assert ingest.counts == {"accepted": 6}
        assert sorted(row[1] for row in store.messages()) == [1, 1, 1, 2, 2, 2]
    finally:
        store.close()


def test_the_ledger_bench_builds_a_ledger_that_verifies():
    from bench import ledger_verify

    r = ledger_verify.run(households=6, intervals=2)  # raises unless verify_db and verify_export pass
    assert r["ledger_verify_blocks_per_s"] > 0 and r["ledger_verify_export_blocks_per_s"] > 0
    assert r["how"].startswith("3 blocks of 6 households")
