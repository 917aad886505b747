"""host_tools/hub/audit.py: `pgw ledger verify|export` on a real hub database
made as test_hub_rounds.py makes it (real HubKey, devices signing with lib/),
tampering with the database and the export byte by byte, and a third-party
check of the export with pycose and cbor2 + cryptography."""

import hashlib
import io
import random
import shutil
import sqlite3
import sys
from pathlib import Path

import cbor2
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "tests" / "lib"), str(ROOT / "tests" / "host")]

from test_hub_rounds import END, HOUSE, SETTLE, START, Clock, Hub  # noqa: E402
from protocol_vectors import Signer  # noqa: E402
from trade import messages as m  # noqa: E402
from trade.witness import Witness, is_request  # noqa: E402
import cose  # noqa: E402

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402

from host_tools import cli  # noqa: E402
from host_tools.hub import audit, cose_es256, ledger  # noqa: E402

A, B, C = Signer(0xA11CE), Signer(0xB0B), Signer(0xCA201)
MARKET = ({s.kid: HOUSE for s in (A, B, C)}, {})


def make_hub(path, witness=True):
    """Two blocks: 0 holds the ORDERs and the readings at START, 1 the readings at
    END, the TRADE and its SETTLEMENT. A and B witness both blocks: final."""
    hub = Hub(path, [A, B, C], Clock(START - 300))
    hub.tick(START - 300)
    hub.order(A, 10, 1, 500, 150000)
    hub.order(B, 20, 0, 400, 200000)
    hub.reading(A, 1, START, 0, 10, 100, 5000)
    hub.reading(B, 2, START, 50, 0, 7000, 0)
    hub.tick(START)
    first = hub.tick(START + 300)
    hub.clock.t = END + 60
    hub.reading(A, 11, END, 0, 350, 100, 5350)
    hub.reading(B, 22, END, 420, 0, 7420, 0)
    second = hub.tick(SETTLE)
    if witness:
        hub_kid, pub = cose.decode_key(hub.key.cose_key())
        for s in (A, B):
            w = Witness(s.kid, {hub_kid: pub}.get)
            for seq, data in sorted((r[1], bytes(r[4])) for r in hub.store.messages(kid=s.kid)):
                w.remember(seq, data)
            for height, out in ((0, first), (1, second)):
                req = next(d for t, d in out if is_request(d) and t.endswith(s.kid.hex() + "/in"))
                got = w.check(req, SETTLE)
                hub.send(s, "witness", m.WITNESS, 100 + height, SETTLE, got.fields)
    hub_key = hub.key.cose_key()
    hub.store.close()  # the last connection checkpoints the WAL into the file
    return path / "hub.sqlite", hub_key


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return make_hub(tmp_path_factory.mktemp("hub"))


def test_a_clean_database_verifies_with_both_blocks_final(made):
    db, key = made
    report = audit.verify_db(db, key, MARKET)
    assert report.problems == [] and report.ok
    assert [(b.height, b.state, b.signed, b.needed, b.committee) for b in report.blocks] == [
        (0, "final", 2, 2, 3), (1, "final", 2, 2, 3)]
    assert report.counts["devices"] == 3 and report.counts["messages"] == 14  # 4 READINGs, 2 ORDERs, 4 hub, 4 WITNESSes


def test_a_block_without_witnesses_is_pending_and_not_a_problem(tmp_path):
    db, key = make_hub(tmp_path, witness=False)
    report = audit.verify_db(db, key, MARKET)
    assert report.ok and [b.state for b in report.blocks] == ["pending", "pending"]


def tampered(db, tmp_path, sql, args=()):
    out = tmp_path / "t.sqlite"
    shutil.copy(db, out)
    con = sqlite3.connect(out)
    con.execute(sql, args)
    con.commit()
    con.close()
    return out


@pytest.mark.parametrize("sql, table, reason", [
    ("UPDATE settlements SET amount = amount + 1", "settlements", "fields"),
    ("UPDATE postings SET tokens = tokens + 1 WHERE n = 0", "postings", "unbalanced"),
    ("UPDATE trades SET price = price - 1", "trades", "fields"),
    ("UPDATE messages SET height = 0 WHERE type = 1 AND seq = 11", "blocks", "chain_count"),
    ("UPDATE messages SET meter = x'00' WHERE type = 1 AND seq = 1", "messages", "columns"),
    ("UPDATE blocks SET committee = substr(committee, 1, 16) WHERE height = 1", "blocks", "committee"),
    ("DELETE FROM messages WHERE type = 6 AND seq = 100", None, None),  # fewer witnesses: still final? no: pending
    ("UPDATE trades SET trade_id = 2", "trades", "trade_id"),
    ("UPDATE rounds SET cleared = 0 WHERE cleared = 1", "rounds", "cleared"),
    (f"INSERT INTO rounds (interval_start) VALUES ({START + 1800})", "rounds", "cleared"),
    ("UPDATE messages SET ts = ts + 0.5 WHERE type = 3", "messages", "type"),  # a REAL where an INTEGER was
    ("UPDATE postings SET n = n + 10 WHERE n = 3", "postings", "n"),
    ("PRAGMA user_version = 1", "database", "layout"),
])
def test_a_change_to_a_row_is_reported_with_its_table_key_and_reason(made, tmp_path, sql, table, reason):
    db, key = made
    report = audit.verify_db(tampered(db, tmp_path, sql), key, MARKET)
    if table is None:
        assert report.ok and [b.state for b in report.blocks] == ["pending", "final"]
        return
    assert (table, reason) in {(p.table, p.reason) for p in report.problems}, report.problems


def test_a_settlement_the_readings_do_not_give_is_found_by_the_rerun(made, tmp_path):
    db, key = made
    # a consistent row and postings, but not what settle() gives for the stored READINGs
    sql = "UPDATE settlements SET reason = 'buyer_short'"
    report = audit.verify_db(tampered(db, tmp_path, sql), key, MARKET)
    assert [(p.table, p.key, p.reason) for p in report.problems] == [("settlements", "trade_id=1", "rerun")]
    # without the market file settlement is not re-run, and the report says so
    assert audit.verify_db(tampered(db, tmp_path, sql), key).counts["settlement_not_rerun"] == 1


def test_bad_arguments_and_unreadable_files(made, tmp_path):
    db, key = made
    with pytest.raises(audit.AuditError) as e:
        audit.verify_db(db, b"\xa0")
    assert e.value.reason == "hub_key"
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database" * 100)
    assert [p.reason for p in audit.verify_db(junk, key).problems] == ["unreadable"]


def content(path):
    """What SQLite reads back from the file, or None if it cannot: user_version
    and application_id, sqlite_master with the root pages, and every table's
    rows with their rowids (the order blocks take entries in), as repr()s, so
    1 and 1.0 or b"1" and "1" differ."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            out = [con.execute("PRAGMA user_version").fetchall(), con.execute("PRAGMA application_id").fetchall(),
                   con.execute("SELECT type, name, tbl_name, rootpage, sql FROM sqlite_master"
                               " ORDER BY rowid").fetchall()]
            for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall():
                out.append(con.execute(f'SELECT rowid, * FROM "{name}" ORDER BY rowid').fetchall())
            return repr(out)
        finally:
            con.close()
    except (sqlite3.Error, UnicodeDecodeError, MemoryError):
        return None


def varint(raw, i):
    """SQLite's big-endian varint at raw[i] -> (value, next index)."""
    v = 0
    for k in range(8):
        v = v << 7 | raw[i + k] & 0x7F
        if raw[i + k] < 0x80:
            return v, i + k + 1
    return v << 8 | raw[i + 8], i + 9


def row_bytes(path):
    """The file positions SQLite reads rows from (sqlite.org/fileformat2.html):
    the 100-byte file header, and on every page of every table's and index's
    b-tree, sqlite_master's too, the page header, the cell pointers and every
    byte of every cell. Free space and free pages are left out: no row reads
    them. The test database needs no overflow pages."""
    raw = path.read_bytes()
    page = int.from_bytes(raw[16:18], "big")
    usable = page - raw[20]
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    roots = [1] + [r[0] for r in con.execute("SELECT rootpage FROM sqlite_master WHERE rootpage")]
    con.close()
    spots = set(range(100))

    def walk(number):
        base = (number - 1) * page
        head = base + (100 if number == 1 else 0)
        kind, cells = raw[head], int.from_bytes(raw[head + 3:head + 5], "big")
        interior = kind in (2, 5)
        size = 12 if interior else 8
        spots.update(range(head, head + size + 2 * cells))
        for i in range(cells):
            at = base + int.from_bytes(raw[head + size + 2 * i:head + size + 2 * i + 2], "big")
            j = at
            if interior:
                walk(int.from_bytes(raw[j:j + 4], "big"))
                j += 4
            if kind == 5:  # a table's interior cell: child page and a rowid
                j = varint(raw, j)[1]
            else:
                length, j = varint(raw, j)
                if kind == 13:
                    j = varint(raw, j)[1]  # the rowid
                local = usable - 35 if kind == 13 else (usable - 12) * 64 // 255 - 23
                assert length <= local, "an overflow page"
                j += length
            spots.update(range(at, j))
        if interior:
            walk(int.from_bytes(raw[head + 8:head + 12], "big"))

    for root in roots:
        walk(root)
    return spots


def remembered(verify1):
    """verify1 that remembers what verified: the same bytes with a key of the
    same point give the same answer without ECDSA again. A changed message is
    new bytes, so it is verified for real. (The test below runs verify_db
    6,000 times on messages that mostly did not change.)"""
    done = {}

    def point(pub):
        return pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def check(data, lookup):
        hit = done.get(data)
        if hit is not None:
            pub = lookup(hit[0])
            if pub is not None and point(pub) == hit[1]:
                return hit[2]
        used = []
        result = verify1(data, lambda kid: used.append(lookup(kid)) or used[-1])
        done[data] = (result[0], point(used[-1]), result)
        return result
    return check


def test_every_single_byte_change_to_a_row_of_the_database_is_found_or_changes_nothing(made, tmp_path, monkeypatch):
    """Every byte SQLite reads rows from, and 300 random ones anywhere else,
    changed one at a time: verify_db reports a problem, or SQLite reads back
    exactly what it did before. Nothing is masked."""
    db, key = made
    check = remembered(cose_es256.verify1)
    monkeypatch.setattr(audit, "verify1", check)
    monkeypatch.setattr(ledger, "verify1", check)
    raw = db.read_bytes()
    before = content(db)
    rnd = random.Random(6)
    rows = row_bytes(db)
    spots = rows | set(rnd.sample(range(len(raw)), 300))
    con = sqlite3.connect(db)  # the stored TRADEs, BLOCKs, a READING, a WITNESS, the committees: all in rows
    blobs = [bytes(r[0]) for r in con.execute("SELECT data FROM messages WHERE type IN (3, 5) OR seq IN (11, 100)")]
    blobs += [bytes(r[0]) for r in con.execute("SELECT committee FROM blocks")]
    con.close()
    assert all(set(range(raw.find(b) - 8, raw.find(b) + len(b))) <= rows for b in blobs)
    target = tmp_path / "f.sqlite"
    target.write_bytes(raw)
    found, same = [], []
    with open(target, "r+b") as f:
        for pos in sorted(spots):
            f.seek(pos)
            f.write(bytes([raw[pos] ^ rnd.randrange(1, 256)]))
            f.flush()
            if audit.verify_db(target, key, MARKET).problems:
                found.append(pos)
            else:
                assert content(target) == before, pos  # nothing reported: SQLite reads the same ledger
                same.append(pos)
            f.seek(pos)
            f.write(raw[pos:pos + 1])
    assert len(rows) > 6000 and len(found) > 6000 and len(found) + len(same) == len(spots)
    # row bytes that changed nothing SQLite reads: the file header's counters and
    # reserved bytes, and the rowids of sqlite_master's rows (page 1)
    assert all(p < 4096 for p in same if p in rows)


@pytest.fixture(scope="module")
def exported(made):
    db, key = made
    return audit.export_db(db, key), key


def test_the_export_verifies_and_is_the_stored_bytes(made, exported):
    data, key = exported
    report = audit.verify_export(data, key)
    assert report.ok and [b.state for b in report.blocks] == ["final", "final"]
    assert report.counts["entries"] == 8 and report.counts["blocks"] == 2
    items = list(cbor2_sequence(data))
    assert items[0] == {"format": "pgw-ledger/1", "hub_key": key, "devices": 3, "blocks": 2}
    assert audit.export_db(made[0], key) == data  # deterministic
    other = Signer(0x777)
    assert not audit.verify_export(data, cose.encode_key(*other.pub)).ok  # not the hub we trust


def cbor2_sequence(data):
    fp = io.BytesIO(data)
    while fp.tell() < len(data):
        yield cbor2.CBORDecoder(fp).decode()


def test_every_single_byte_change_to_the_export_is_found(exported, monkeypatch):
    data, key = exported
    check = remembered(cose_es256.verify1)
    monkeypatch.setattr(audit, "verify1", check)
    monkeypatch.setattr(ledger, "verify1", check)
    rnd = random.Random(65)
    missed = []
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= rnd.randrange(1, 256)
        if audit.verify_export(bytes(bad)).ok:
            missed.append(pos)
    assert missed == []
    assert not audit.verify_export(data[:-1]).ok and not audit.verify_export(data + b"\x00").ok


def test_a_third_party_checks_the_export_with_pycose_and_cryptography(exported):
    """As docs/hub.md ("The export format") tells a third party, without our code."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    from pycose.keys import CoseKey
    from pycose.messages import Sign1Message

    data, _ = exported
    fp = io.BytesIO(data)
    raw_items = []
    while fp.tell() < len(data):
        at = fp.tell()
        cbor2.CBORDecoder(fp).decode()
        raw_items.append(data[at:fp.tell()])
    header = cbor2.loads(raw_items[0])
    devices = raw_items[1:1 + header["devices"]]
    marker = cbor2.loads(raw_items[1 + header["devices"]])
    block = raw_items[2 + header["devices"]]
    entries = raw_items[3 + header["devices"]:3 + header["devices"] + marker["entries"]]
    # the block: pycose checks the hub's signature
    hub = CoseKey.decode(header["hub_key"])
    # pycose 1.1.0's decode() fails with cbor2 6 (a tag's array comes back as a
    # tuple, test_cose_interop.py): hand it the array
    protected, unprotected, body, sig = cbor2.loads(block).value
    msg = Sign1Message.from_cose_obj([protected, dict(unprotected), body, sig], True)
    msg.key = hub
    assert msg.verify_signature()
    payload = cbor2.loads(msg.payload)
    assert payload[:2] == [1, 5] and payload[4] == 0 and payload[5] == bytes(32) and payload[7] == len(entries)
    # the root: RFC 6962 over the entry bytes
    level = [hashlib.sha256(b"\x00" + e).digest() for e in entries]
    while len(level) > 1:
        up = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        level = up + ([level[-1]] if len(level) % 2 else [])
    assert level[0] == payload[6]
    # one device entry: cbor2 + cryptography with the device's COSE_Key
    entry = cbor2.loads(entries[0])
    protected, _, body, sig = entry.value
    kid = cbor2.loads(protected)[4]
    key = next(cbor2.loads(d) for d in devices if cbor2.loads(d)[2] == kid)
    pub = ec.EllipticCurvePublicNumbers(int.from_bytes(key[-2], "big"), int.from_bytes(key[-3], "big"),
                                        ec.SECP256R1()).public_key()
    tbs = cbor2.dumps(["Signature1", protected, b"", body])
    pub.verify(encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")),
               tbs, ec.ECDSA(hashes.SHA256()))
    # the next block's prev is the hash of this block's bytes
    nxt = raw_items[3 + header["devices"] + marker["entries"] + marker["witnesses"] + 1]
    assert cbor2.loads(cbor2.loads(nxt).value[2])[5] == hashlib.sha256(block).digest()


def test_the_cli_verifies_and_exports(made, tmp_path, capsys):
    db, key = made
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(db, state / "hub.sqlite")
    (state / "hub.cose").write_bytes(key)
    assert cli.main(["ledger", "verify", str(state / "hub.sqlite")]) == 0
    assert "2 blocks" in capsys.readouterr().out
    out = tmp_path / "ledger.cbor"
    assert cli.main(["ledger", "export", str(state / "hub.sqlite"), "--out", str(out)]) == 0
    assert audit.verify_export(out.read_bytes(), key).ok
    assert cli.main(["ledger", "verify", "--export", str(out), "--hub-key", str(state / "hub.cose")]) == 0
    bad = tampered(state / "hub.sqlite", tmp_path, "UPDATE trades SET energy_wh = 1")
    shutil.copy(state / "hub.cose", tmp_path / "hub.cose")
    assert cli.main(["ledger", "verify", str(bad)]) == 1
    assert "trades [trade_id=1] fields" in capsys.readouterr().out
