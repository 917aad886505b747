"""host_tools/hub/registry.py: installers' signed registrations, rotations
and revocations at the hub, without a board. Devices sign their readings
with lib/ (as the firmware does); stored requests and the hub's answers are
checked with pycose, independent of the hub's code. The last tests run
`pgw provision`'s MQTT side (host_tools/provision.py) against a HubService
on the real broker."""

import hashlib
import json
import sqlite3
import sys
import types
from pathlib import Path

import cbor2
import pytest

from pycose_check import pycose_payload
from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "tests" / "lib")]

import cose  # noqa: E402
from fuzzing import Xorshift32, iterations, mutate  # noqa: E402
from protocol_vectors import Signer  # noqa: E402
from trade import messages as m  # noqa: E402

from host_tools import provision as pv  # noqa: E402
from host_tools.hub import registry as reg  # noqa: E402
from host_tools.hub.cose_es256 import HubKey, decode_cose_key, encode_cose_key, kid_of  # noqa: E402
from host_tools.hub.ingest import Ingest  # noqa: E402
from host_tools.hub.ratelimit import DeviceBudgets  # noqa: E402
from host_tools.hub.store import Store  # noqa: E402

NOW = 1750503600
COMMUNITY = "street"
TOPIC = reg.register_topic(COMMUNITY)
READING = {"interval_min": 15, "import_wh": 120, "export_wh": 0, "import_register_wh": 5000,
           "export_register_wh": 0, "power_w": 480, "meter": b"grid"}
INSTALLER = ec.derive_private_key(0x1A57A11E5, ec.SECP256R1())
INSTALLER_COSE = encode_cose_key(INSTALLER.public_key())
INSTALLER_KID = kid_of(INSTALLER.public_key())


class Hub:
    """Store, key, ingest and registry as HubService wires them, on a fixed clock."""

    def __init__(self, path, installers=(INSTALLER_COSE,), budget=None):
        self.store = Store(path / "hub.sqlite")
        self.key = HubKey.load_or_create(path / "hub.pem")
        self.ingest = Ingest(self.store, self.key, COMMUNITY, clock=lambda: NOW)
        # a budget that never runs out, but where a test says otherwise
        self.registry = reg.Registry(self.store, self.key, self.ingest, COMMUNITY, installers, clock=lambda: NOW,
                                     budget=budget or DeviceBudgets(rate=1e6, burst=1e6))

    def send(self, data):
        """-> the hub's answer as a dict (its signature checked with pycose), or None without one."""
        out = self.registry.handle(TOPIC, data)
        if not out:
            return None
        (topic, answer), = out
        signer = cbor2.loads(cbor2.loads(data).value[0])[4]  # the installer the request names
        assert topic == "pgw/1/%s/installer/%s/result" % (COMMUNITY, signer.hex()), topic
        return pycose_payload(answer, self.key.cose_key())

    def reading(self, signer, seq):
        topic = "pgw/1/%s/dev/%s/reading" % (COMMUNITY, signer.kid.hex())
        return self.ingest.handle(topic, m.sign(m.READING, seq, NOW - 60, READING, signer.kid, signer))

    def rows(self, sql="SELECT COUNT(*) FROM registrations"):
        return self.registry.db.execute(sql).fetchall()

    def close(self):
        self.registry.close()
        self.store.close()


@pytest.fixture
def hub(tmp_path):
    h = Hub(tmp_path)
    yield h
    h.close()


def device(d=0x1234567):
    s = Signer(d)
    return s, cose.encode_key(*s.pub)


def request(action=reg.REGISTER, installer=INSTALLER, ts=NOW - 5, **fields):
    return pv.registration(installer, fields.pop("community", COMMUNITY), action, ts=ts, **fields)


def signed_payload(payload, installer=INSTALLER):
    return reg.sign(installer, cbor2.dumps(payload, canonical=True))


def test_a_registration_is_stored_whole_and_its_device_trades(hub):
    s, key = device()
    data = request(device=key, name="Lindenweg 12")
    answer = hub.send(data)
    assert answer[1] == "ok" and answer[3] == s.kid, answer
    assert answer[2] == hashlib.sha256(cbor2.loads(data).value[2]).digest()
    assert hub.registry.counts == {"registered": 1}
    # stored as received, with the installer's key: checkable without the hub
    (installer, action, kid, replaces, ts, blob), = hub.registry.registrations(s.kid)
    assert (installer, action, kid, replaces, ts, blob) == (INSTALLER_KID, 1, s.kid, None, NOW - 5, data)
    stored_key = bytes(hub.rows("SELECT installer_key FROM registrations")[0][0])
    p = pycose_payload(blob, stored_key)
    assert p[5] == key and p[7] == "Lindenweg 12" and p[2] == COMMUNITY, p
    assert [(bytes(k), bytes(c), n) for k, c, n in hub.store.devices()] == [(s.kid, key, "Lindenweg 12")]
    assert len(hub.reading(s, 1)) == 1 and hub.ingest.counts["accepted"] == 1
    # the same device again (a new config, same key): a new request, accepted
    assert hub.send(request(device=key, name="Lindenweg 12a"))[1] == "ok"
    assert hub.store.devices()[0][2] == "Lindenweg 12a"


def refused(hub, data, reason, answered=True):
    before = dict(hub.registry.counts)
    devices = hub.store.devices()
    rows = hub.rows()
    answer = hub.send(data)
    if answered:
        assert answer is not None and answer[1] == reason, (reason, answer)
    else:
        assert answer is None, answer
    assert hub.registry.counts["rejected_" + reason] == before.get("rejected_" + reason, 0) + 1, hub.registry.counts
    assert hub.store.devices() == devices  # nothing changed
    assert hub.rows() == rows
    return answer


def test_each_bad_request_is_refused_with_its_reason_and_counted(hub):
    s, key = device()
    good = request(device=key)
    # a signature that does not verify: one bit of the payload changed after signing
    tag = cbor2.loads(good)
    p, u, payload, sig = tag.value
    flipped = cbor2.dumps(cbor2.CBORTag(18, [p, u, payload[:-1] + bytes([payload[-1] ^ 1]), sig]))
    refused(hub, flipped, "signature")
    # signed by another key, or without the registry's external_aad
    stranger = ec.derive_private_key(0x5EC0, ec.SECP256R1())
    refused(hub, request(device=key, installer=stranger), "unknown_installer")
    plain = HubKey(INSTALLER).sign1(cbor2.loads(good).value[2])
    refused(hub, plain, "signature")
    refused(hub, request(device=key, ts=NOW - 301), "stale")
    refused(hub, request(device=key, ts=NOW + 301), "future")
    refused(hub, request(device=key, community="other"), "community")
    # a COSE_Key whose kid is not its key's
    other, other_key = device(0x7654321)
    m_ = cbor2.loads(key)
    m_[2] = other.kid
    refused(hub, request(device=cbor2.dumps(m_, canonical=True)), "kid_mismatch")
    m_ = cbor2.loads(key)
    m_[-3] = bytes([m_[-3][0] ^ 1]) + m_[-3][1:]  # off the curve
    refused(hub, request(device=cbor2.dumps(m_, canonical=True)), "key")
    refused(hub, request(reg.REVOKE, kid=s.kid), "unknown_kid")
    refused(hub, request(device=key, replaces=other.kid), "unknown_kid")
    refused(hub, request(device=key, replaces=s.kid), "payload")
    refused(hub, b"\x00" * 1025, "size", answered=False)
    refused(hub, request(device=key, name="x" * 900), "size", answered=False)
    refused(hub, b"not cbor \xff", "cbor", answered=False)
    refused(hub, cbor2.dumps([1, 2, 3]), "format", answered=False)
    refused(hub, good + b"\x00", "cbor", answered=False)
    assert hub.registry.counts["registered"] == 0
    # the good one still goes through; sent again, it is a replay
    assert hub.send(good)[1] == "ok"
    refused(hub, good, "replay")
    assert hub.registry.counts["registered"] == 1


def test_payloads_of_the_wrong_shape(hub):
    s, key = device()
    base = {1: 1, 2: COMMUNITY, 3: NOW, 4: bytes(16), 5: key}
    bad = [
        [], {}, {**base, 9: 1}, {**base, "x": 1}, {**base, 1: 3}, {**base, 3: -1},
        {**base, 3: True}, {**base, 4: bytes(15)}, {**base, 2: ""}, {**base, 6: s.kid},
        {**base, 7: ""}, {**base, 8: b"short"}, {**base, 5: "text"},
        {k: v for k, v in base.items() if k != 4}, {k: v for k, v in base.items() if k != 5},
        {1: 2, 2: COMMUNITY, 3: NOW, 4: bytes(16), 6: s.kid, 5: key}, {1: 2, 2: COMMUNITY, 3: NOW, 4: bytes(16)},
        {1: 2, 2: COMMUNITY, 3: NOW, 4: bytes(16), 6: b"1234567"},
    ]
    for payload in bad:
        refused(hub, signed_payload(payload), "payload")


def test_a_rotation_registers_the_new_key_and_revokes_the_old_at_once(tmp_path):
    hub = Hub(tmp_path)
    old, old_key = device(0x1111)
    new, new_key = device(0x2222)
    assert hub.send(request(device=old_key))[1] == "ok"
    assert len(hub.reading(old, 1)) == 1
    answer = hub.send(request(device=new_key, replaces=old.kid))
    assert answer[1] == "ok" and "in place of %s" % old.kid.hex() in answer[5], answer
    assert hub.registry.counts["rotated"] == 1
    # the old key's later messages are refused (no ACK), counted; the new key's go in
    assert hub.reading(old, 2) == [] and hub.ingest.counts["rejected_revoked"] == 1
    assert len(hub.reading(new, 2)) == 1
    # a revoked key never comes back, nor is it replaced twice
    refused(hub, request(device=old_key), "revoked")
    refused(hub, request(device=device(0x3333)[1], replaces=old.kid), "revoked")
    refused(hub, request(reg.REVOKE, kid=old.kid), "revoked")
    # both stay in devices: the old key's stored messages must still verify in an audit
    assert {bytes(k) for k, _, _ in hub.store.devices()} == {old.kid, new.kid}
    hub.close()
    # a restarted hub remembers
    hub = Hub(tmp_path)
    assert hub.ingest.revoked == {old.kid}
    assert hub.reading(old, 3) == [] and len(hub.reading(new, 3)) == 1
    assert hub.send(request(reg.REVOKE, kid=new.kid))[1] == "ok"
    assert hub.reading(new, 4) == [] and hub.ingest.revoked == {old.kid, new.kid}
    assert [r[1] for r in hub.registry.registrations()] == [1, 1, 2]
    hub.close()


def test_a_rotation_is_one_transaction_and_the_registry_decides(tmp_path):
    hub = Hub(tmp_path)
    old, old_key = device(0x1111)
    new, new_key = device(0x2222)
    assert hub.send(request(device=old_key, name="Lindenweg 12"))[1] == "ok"
    # the registry's insert fails (a full disk, say): nothing changes
    hub.registry.db.execute("CREATE TRIGGER full BEFORE INSERT ON registrations"
                            " BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(Exception, match="disk full"):
        hub.registry.handle(TOPIC, request(device=new_key, replaces=old.kid))
    assert hub.ingest.revoked == set() and len(hub.reading(old, 1)) == 1
    assert hub.reading(new, 1) == [] and hub.ingest.counts["rejected_unknown_key"] == 1
    assert [r[2] for r in hub.registry.registrations()] == [old.kid]
    hub.registry.db.execute("DROP TRIGGER full")
    # the hub dies after the registry's commit, before the ledger has the new key
    def killed(*args):
        raise OSError("killed")

    hub.ingest.register = killed
    with pytest.raises(OSError):
        hub.registry.handle(TOPIC, request(device=new_key, replaces=old.kid))
    hub.close()
    hub = Hub(tmp_path)  # the start applies what the registry holds
    assert hub.registry.counts["reapplied"] == 1 and hub.ingest.revoked == {old.kid}
    assert {bytes(k): n for k, _, n in hub.store.devices()} == {old.kid: "Lindenweg 12", new.kid: "Lindenweg 12"}
    assert hub.reading(old, 2) == [] and len(hub.reading(new, 2)) == 1
    hub.close()


def test_an_auditor_checks_the_registry_file_and_the_ledger_stays_verifiable(tmp_path):
    from host_tools.hub import audit

    hub = Hub(tmp_path)
    old, old_key = device(0x1111)
    new, new_key = device(0x2222)
    for data in (request(device=old_key), request(device=new_key, replaces=old.kid), request(reg.REVOKE, kid=new.kid)):
        assert hub.send(data)[1] == "ok"
    hub.close()
    path = tmp_path / "hub.registry.sqlite"
    assert reg.check_file(path) == []
    # the ledger holds only what `pgw ledger verify` checks: the registry is beside it
    report = audit.verify_db(tmp_path / "hub.sqlite", HubKey.load_or_create(tmp_path / "hub.pem").cose_key())
    assert report.ok, report.problems
    db = sqlite3.connect(path, isolation_level=None)
    data = bytes(db.execute("SELECT data FROM registrations WHERE action = 2").fetchone()[0])
    db.execute("UPDATE registrations SET data = ? WHERE action = 2", (data[:-1] + bytes([data[-1] ^ 1]),))
    db.execute("UPDATE registrations SET replaces = NULL WHERE replaces IS NOT NULL")
    db.close()
    problems = reg.check_file(path)
    assert len(problems) == 2 and "signature" in problems[1] and "does not say" in problems[0], problems


def test_requests_over_the_budget_are_dropped_unchecked(tmp_path):
    hub = Hub(tmp_path, budget=DeviceBudgets(rate=0.001, burst=3))
    for i in range(5):
        hub.registry.handle(TOPIC, b"junk")
    assert hub.registry.counts["rejected_cbor"] == 3 and hub.registry.counts["rejected_rate_limited"] == 2
    hub.close()


def test_mutated_requests_are_each_refused_or_applied_never_a_crash(hub):
    # Half mutate the signed bytes (the structure and signature checks), half
    # mutate the payload and sign it again (the payload's own checks).
    rng = Xorshift32(0x7E6157)
    _, key = device()
    good = request(device=key)
    payload = cbor2.loads(good).value[2]
    n = iterations(400)
    for i in range(n):
        data = mutate(rng, good) if i % 2 else reg.sign(INSTALLER, mutate(rng, payload))
        hub.registry.handle(TOPIC, data)
    counts = hub.registry.counts
    assert sum(counts.values()) == n and counts["rejected_rate_limited"] == 0, counts
    assert counts["rejected_payload"] > n // 10 and counts["rejected_signature"] and counts["rejected_cbor"], counts
    for kid, cose_key, _ in hub.store.devices():  # what went in is a real key, under its own kid
        assert decode_cose_key(bytes(cose_key))[0] == bytes(kid)


# ---- pgw provision's own pieces ----


def test_label_holds_kid_fingerprint_and_code():
    s, key = device()
    text = pv.label(s.kid, key, "lindenweg", "Lindenweg 12")
    fp = hashlib.sha256(key).digest()[:8].hex()  # the device's COSE_Key is already deterministic
    assert pv.fingerprint(key).hex() == fp
    assert "device id    %s" % s.kid.hex() in text
    assert "fingerprint  %s %s %s %s" % (fp[:4], fp[4:8], fp[8:12], fp[12:]) in text
    assert text.rstrip().endswith("PGW:1:LINDENWEG:%s:%s" % (s.kid.hex().upper(), fp.upper()))
    assert "█" in text and "name         Lindenweg 12" in text


def options(**kw):
    base = dict(config=None, community="street", hub="mqtt://10.0.0.2:1884", wifi_ssid=None, wifi_password=None,
                meters=None, meter=[], set=[])
    return types.SimpleNamespace(**dict(base, **kw))


def test_config_from_options_is_checked_by_the_device_schema(tmp_path):
    hub_key = HubKey.load_or_create(tmp_path / "hub.pem").cose_key()
    doc, values = pv.build_config(options(
        wifi_ssid="Lindenweg 12", wifi_password="correct horse battery", set=["limits.fuse_a=25"],
        meter=["name=grid,protocol=modbus-tcp,host=192.168.1.40,unit=1,profile=sdm630,port=502"]),
        hub_key, INSTALLER_COSE)
    assert values["mqtt"]["host"] == "10.0.0.2" and values["mqtt"]["port"] == 1884
    assert values["hub"]["key"] == hub_key and values["ota"]["key"] == INSTALLER_COSE
    assert values["limits"]["fuse_a"] == 25 and values["meters"][0]["port"] == 502
    assert json.loads(pv.config_bytes(doc)) == doc
    assert "correct horse" not in pv.shown_config(doc) and '"password": "***"' in pv.shown_config(doc)
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"community": "elsewhere"}))
    for bad, why in ((options(set=["limits.fuse_a=2"]), "limits"), (options(set=["mqtt.prot=1"]), "unknown"),
                     (options(meter=["name=grid,protocol=modbus-tcp,host=x,profile=nosuch"]), "no profile"),
                     (options(meter=["name=Grid,protocol=modbus-tcp"]), "meters"),
                     (options(config=str(conf)), "elsewhere"), (options(wifi_password="short"), "wifi.password")):
        with pytest.raises(pv.ProvisionError) as e:
            pv.build_config(bad, hub_key, None)
        assert e.value.reason == "config" and why in str(e.value), (why, str(e.value))


# ---- over the broker: provision's HubLink and HubService's hook ----


@pytest.fixture
def live_hub(tmp_path, broker):
    from host_tools.hub.service import HubService

    hub = HubService(tmp_path / "hub", "127.0.0.1", broker.port, COMMUNITY, installer_keys=[INSTALLER_COSE]).start()
    assert hub.connected.wait(10) and hub.subscribed.wait(10)
    yield hub
    hub.stop()


def test_a_registration_over_mqtt(live_hub, broker):
    s, key = device()
    link = pv.HubLink("mqtt://127.0.0.1:%d" % broker.port, COMMUNITY, timeout=10)
    try:
        hub_key = link.hub_key(pinned=live_hub.key.cose_key())
        assert hub_key == live_hub.key.cose_key()
        answer = link.request(pv.registration(INSTALLER, COMMUNITY, reg.REGISTER, device=key), INSTALLER_KID, hub_key)
        assert answer["outcome"] == "ok" and answer["kid"] == s.kid, answer
        stranger = ec.derive_private_key(0x5EC0, ec.SECP256R1())
        answer = link.request(pv.registration(stranger, COMMUNITY, reg.REGISTER, device=device(9)[1]),
                              kid_of(stranger.public_key()), hub_key)
        assert answer["outcome"] == "unknown_installer", answer
        with pytest.raises(pv.ProvisionError) as e:
            link.hub_key(pinned=HubKey(stranger).cose_key())
        assert e.value.reason == "hub_key_mismatch"
    finally:
        link.close()
    assert s.kid in {bytes(k) for k, _, _ in live_hub.store.devices()}
    assert live_hub.registry.counts == {"registered": 1, "rejected_unknown_installer": 1}
