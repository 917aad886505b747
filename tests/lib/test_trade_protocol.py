# The trade protocol: lib/cose.py (COSE_Sign1 ES256, COSE_Key) and
# lib/trade/ (messages, replay window, topics), and the test vectors in
# docs/protocol.md, checked byte for byte.

from fuzzing import Xorshift32, iterations, mutate
from mpcompat import raises

import cbor
import cose
import p256
from trade import messages as m
from trade import replay, topics
from protocol_vectors import BUDGET, DEVICE_D, HUB_D, VECTORS, Signer, _doc_path, doc_vectors

DEV = Signer(DEVICE_D)
HUB = Signer(HUB_D)
KEYS = {DEV.kid: DEV.pub, HUB.kid: HUB.pub}
P256_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF  # the field prime
lookup = KEYS.get

READING = {"interval_min": 15, "import_wh": 412, "export_wh": 1630, "import_register_wh": 12345678,
           "export_register_wh": 8765432, "power_w": -4210, "meter": b"12345678"}


def signed_reading(seq=1042, ts=1750500000, **changes):
    f = dict(READING)
    f.update(changes)
    return m.sign(m.READING, seq, ts, f, DEV.kid, DEV)


def test_device_id_is_a_hash_of_the_public_key():
    assert len(DEV.kid) == 8 and DEV.kid != HUB.kid
    assert cose.device_id(*DEV.pub) == DEV.kid


def test_reading_round_trip_and_size_budget():
    data = signed_reading()
    assert len(data) <= 128, len(data)
    msg = m.open_signed(data, lookup)
    assert (msg.type, msg.name, msg.seq, msg.ts, msg.kid) == (m.READING, "reading", 1042, 1750500000, DEV.kid)
    assert msg.fields == READING
    assert signed_reading() == data  # RFC 6979: the same message, the same bytes


def test_every_type_round_trips():
    for name, mtype, signer, seq, ts, fields in VECTORS:
        data = m.sign(mtype, seq, ts, fields, signer_kid(signer), SIGNERS[signer])
        assert len(data) <= BUDGET[mtype], (name, len(data))
        msg = m.open_signed(data, lookup)
        want = dict((k, v) for k, v in fields.items() if v is not None)
        assert msg.fields == want, (name, msg.fields)
        assert msg.name == name


SIGNERS = {"device": DEV, "hub": HUB}


def signer_kid(who):
    return SIGNERS[who].kid


def test_doc_vectors_match_byte_for_byte():
    # docs/protocol.md carries, per type: the key, the payload and the signed
    # message in hex. Our encoder and signer must produce exactly those.
    found = doc_vectors()
    assert sorted(found) == sorted(v[0] for v in VECTORS), sorted(found)
    for name, mtype, signer, seq, ts, fields in VECTORS:
        doc = found[name]
        s = SIGNERS[signer]
        assert doc["key"] == s.d.to_bytes(32, "big"), name
        payload = m.encode(mtype, seq, ts, fields)
        assert payload == doc["payload"], (name, payload)
        assert m.sign(mtype, seq, ts, fields, s.kid, s) == doc["signed"], name
        assert m.open_signed(doc["signed"], lookup).seq == seq


def test_unknown_trailing_fields_are_ignored_unknown_types_rejected():
    payload = cbor.loads(m.encode(m.ACK, 5, 1750500000, {"device": DEV.kid, "acked_seq": 4}))
    newer = cose.sign1(cbor.dumps(payload + [77, b"future"]), HUB.kid, HUB)
    msg = m.open_signed(newer, lookup)
    assert msg.fields == {"device": DEV.kid, "acked_seq": 4}
    unknown = cose.sign1(cbor.dumps([1, 42, 5, 1750500000]), HUB.kid, HUB)
    assert raises(m.ProtocolError, m.open_signed, unknown, lookup).reason == "type"
    v2 = cose.sign1(cbor.dumps([2] + payload[1:]), HUB.kid, HUB)
    assert raises(m.ProtocolError, m.open_signed, v2, lookup).reason == "version"


def test_field_checks_name_the_field():
    e = raises(m.ProtocolError, m.encode, m.READING, 1, 1750500000, dict(READING, import_wh=-1))
    assert e.reason == "field" and "import_wh" in str(e)
    e = raises(m.ProtocolError, m.encode, m.READING, 1, 1750500000, dict(READING, meter=None))
    assert e.reason == "missing" and "meter" in str(e)
    e = raises(m.ProtocolError, m.encode, m.ORDER, 1, 1, {"interval_start": 1, "interval_min": 15, "side": 2,
                                                        "energy_wh": 5, "limit_price": 1})
    assert e.reason == "field" and "side" in str(e)
    short = cose.sign1(cbor.dumps([1, m.WITNESS, 1, 2, 7]), DEV.kid, DEV)
    assert raises(m.ProtocolError, m.open_signed, short, lookup).reason == "missing"
    floaty = cose.sign1(cbor.dumps([1, m.ACK, 1, 2, DEV.kid, True]), HUB.kid, HUB)
    assert raises(m.ProtocolError, m.open_signed, floaty, lookup).reason == "field"


def _doc_number(text):
    # "1440", "2^32-1", "2^31" as in docs/protocol.md's range column
    if "^" not in text:
        return int(text)
    base, rest = text.split("^")
    if "-" in rest:
        exp, minus = rest.split("-")
        return int(base) ** int(exp) - int(minus)
    return int(base) ** int(rest)


def doc_fields():
    # {type: [(name, optional, cbor type, lo, hi), ...]} from the field tables
    # of docs/protocol.md: an independent statement of what the encoder checks
    out = {}
    mtype = None
    with open(_doc_path()) as f:
        for line in f:
            if line.startswith("#### "):
                word = line.split()[1]
                mtype = int(word) if word.isdigit() else None
                continue
            cells = [c.strip() for c in line.split("|")[1:-1]]
            if mtype is None or len(cells) != 5 or not cells[0].isdigit():
                continue
            name, cbor_type, text = cells[1], cells[2], cells[3]
            optional = name.endswith(" (optional)")
            name = name.split(" ")[0]
            text = text.replace(" bytes", "").replace(" pairs", "")
            if not text:
                lo, hi = 0, 2 ** 64 - 1  # a plain uint
            elif text.startswith("\u00b1"):
                hi = _doc_number(text[1:])
                lo = -hi
                hi -= 1
            elif "\u2013" in text:
                lo, hi = [_doc_number(t) for t in text.split("\u2013")]
            elif "," in text:
                lo, hi = [int(t) for t in text.split(",")]
            else:
                lo = hi = int(text)
            out.setdefault(mtype, []).append((name, optional, cbor_type, lo, hi))
    return out


def _sized(cbor_type, n):
    # a value of that CBOR type whose checked size is n (its value, for ints)
    if cbor_type == "bstr":
        return b"k" * n
    if cbor_type == "tstr":
        return "\u00e9" * (n // 2) + "v" * (n % 2)  # UTF-8 bytes count, not characters
    if cbor_type == "array":
        return [[0, 2 ** 32 - 1]] * n
    return n


def test_field_bounds_follow_the_doc_tables():
    # each field takes its documented lo and hi and refuses one past either,
    # both when encoding and when decoding another sender's payload
    tables = doc_fields()
    assert sorted(tables) == list(range(1, 10)), sorted(tables)
    for name, mtype, _, seq, ts, fields in VECTORS:
        table = tables[mtype]
        assert sorted(row[0] for row in table) == sorted(fields), (name, table)
        for i in range(len(table)):
            field, optional, cbor_type, lo, hi = table[i]
            for n, ok in ((lo, True), (hi, True), (lo - 1, False), (hi + 1, False)):
                if n < 0 and cbor_type != "uint" and cbor_type != "int":
                    continue
                v = _sized(cbor_type, n)
                values = dict(fields)
                values[field] = v
                payload = [1, mtype, seq, ts] + [values[r[0]] for r in table]
                if ok:
                    assert m.decode(m.encode(mtype, seq, ts, values)).fields[field] == v, (name, field, n)
                    assert m.decode(cbor.dumps(payload)).fields == values, (name, field, n)
                    continue
                e = raises(m.ProtocolError, m.encode, mtype, seq, ts, values)
                assert e.reason == "field" and str(e).startswith("field: %s: " % field), (name, field, n, e)
                if n < 2 ** 64:  # CBOR's ints end there
                    e = raises(m.ProtocolError, m.decode, cbor.dumps(payload))
                    assert e.reason == "field" and str(e).startswith("field: %s: " % field), (name, field, n, e)
            if optional:
                values = dict(fields)
                del values[field]
                assert field not in m.decode(m.encode(mtype, seq, ts, values)).fields
            else:
                cut = [1, mtype, seq, ts] + [fields[r[0]] for r in table[:i]]
                e = raises(m.ProtocolError, m.decode, cbor.dumps(cut))
                assert e.reason == "missing" and str(e) == "missing: %s has no %s" % (name, field), e
                values = dict(fields)
                del values[field]
                e = raises(m.ProtocolError, m.encode, mtype, seq, ts, values)
                assert e.reason == "missing" and str(e) == "missing: %s needs %s" % (name, field), e
        for bad in (-1, 2 ** 64, True, None):
            e = raises(m.ProtocolError, m.encode, mtype, bad, ts, fields)
            assert e.reason == "field" and str(e).startswith("field: seq: "), e
            if bad == 2 ** 64:
                continue
            e = raises(m.ProtocolError, m.decode, cbor.dumps([1, mtype, seq, bad] + [fields[r[0]] for r in table]))
            assert e.reason == "field" and str(e).startswith("field: ts: "), e
        assert m.decode(m.encode(mtype, 2 ** 64 - 1, 2 ** 64 - 1, fields)).seq == 2 ** 64 - 1


def test_size_budget_names_the_type():
    ota = dict(VECTORS[-1][5], version="v" * 16, url="u" * 128)
    e = raises(m.ProtocolError, m.sign, 9, 1, 1750504000, ota, HUB.kid, HUB)
    assert e.reason == "size" and str(e).startswith("size: ota is ") and str(e).endswith(" the budget is 256"), e
    e = raises(m.ProtocolError, m.encode, 0, 1, 1, {})
    assert e.reason == "type" and str(e) == "type: unknown message type 0", e
    assert m.Message(m.ACK, 1, 2, {}).name == "ack"


def test_tampering_wrong_alg_and_wrong_kid_are_refused():
    data = signed_reading()
    # a bit flip anywhere: some reason, never a crash or a success
    for i in range(len(data)):
        for bit in (0, 7):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            e = raises(m.ProtocolError, m.open_signed, bytes(bad), lookup)
            assert e.reason in ("cbor", "format", "alg", "kid", "signature", "version", "type",
                                "missing", "field"), (i, e.reason)
    for n in range(len(data)):
        assert raises(m.ProtocolError, m.open_signed, data[:n], lookup).reason in ("cbor", "format")
    kid, protected, payload, sig = cose.decode1(data)
    # alg ES384 (-35) in the protected header
    p = cbor.dumps({1: -35, 4: kid})
    forged = cbor.dumps(cbor.Tag(18, [p, {}, payload, sig]))
    assert raises(m.ProtocolError, m.open_signed, forged, lookup).reason == "alg"
    # alg only unprotected
    forged = cbor.dumps(cbor.Tag(18, [cbor.dumps({4: kid}), {1: -7}, payload, sig]))
    assert raises(m.ProtocolError, m.open_signed, forged, lookup).reason == "alg"
    # the hub's kid on the device's signature
    p = cbor.dumps({1: -7, 4: HUB.kid})
    forged = cbor.dumps(cbor.Tag(18, [p, {}, payload, sig]))
    assert raises(m.ProtocolError, m.open_signed, forged, lookup).reason == "signature"
    assert raises(m.ProtocolError, m.open_signed, data, {}.get).reason == "kid"
    assert raises(m.ProtocolError, m.open_signed, cbor.dumps(cbor.Tag(98, [])), lookup).reason == "format"
    assert raises(m.ProtocolError, m.open_signed, b"\x00" * 600, lookup).reason == "size"
    deep = b"\xd2\x84" + b"\x81" * 400 + b"\x00"  # nesting: refused by depth, not by the stack
    e = raises(m.ProtocolError, m.open_signed, deep, lookup)
    assert e.reason == "cbor" and "depth" in str(e), e
    huge = b"\xd2\x84\x5a\xff\xff\xff\xff"  # a 4 GB byte string announced in 7 bytes
    e = raises(m.ProtocolError, m.open_signed, huge, lookup)
    assert e.reason == "cbor" and "truncated" in str(e), e


def test_signature_values_out_of_range_are_refused():
    data = signed_reading()
    kid, protected, payload, sig = cose.decode1(data)
    n = p256.N.to_bytes(32, "big")
    for bad in (bytes(32) + sig[32:], sig[:32] + bytes(32), n + sig[32:], sig[:32] + n, sig[:63]):
        forged = cbor.dumps(cbor.Tag(18, [protected, {}, payload, bad]))
        e = raises(m.ProtocolError, m.open_signed, forged, lookup)
        assert e.reason == "signature", e


def test_cose_key_round_trip_and_point_checks():
    key = cose.encode_key(*DEV.pub)
    assert cose.decode_key(key) == (DEV.kid, DEV.pub)
    x, y = DEV.pub
    off = cbor.dumps({1: 2, -1: 1, -2: x.to_bytes(32, "big"), -3: ((y + 1) % P256_P).to_bytes(32, "big")})
    assert raises(cose.CoseError, cose.decode_key, off).reason == "key"
    rsa = cbor.dumps({1: 3, -1: 1})
    assert raises(cose.CoseError, cose.decode_key, rsa).reason == "key"
    assert raises(cose.CoseError, cose.decode_key, b"\xa1").reason == "cbor"


def test_replay_window():
    w = replay.ReplayWindow()
    kid = DEV.kid
    for seq in (10, 12, 11, 75):
        w.accept(kid, seq)
    assert raises(replay.ReplayError, w.accept, kid, 12).reason == "replayed"
    assert raises(replay.ReplayError, w.accept, kid, 11).reason == "too old"  # 75 - 11 = 64: outside
    w.accept(kid, 70)  # inside the window, not seen: late but taken
    assert raises(replay.ReplayError, w.accept, kid, 70).reason == "replayed"
    w.accept(kid, 1000)  # a jump clears the window
    assert raises(replay.ReplayError, w.check, kid, 936).reason == "too old"
    w.check(kid, 937)
    w.restore(kid, 2000)  # after a reboot: only numbers above the persisted highest
    assert raises(replay.ReplayError, w.check, kid, 1990).reason == "replayed"
    w.accept(kid, 2001)
    small = replay.ReplayWindow(max_senders=1)
    small.accept(b"a" * 8, 1)
    assert raises(replay.ReplayError, small.accept, b"b" * 8, 1).reason == "too old"


def test_freshness():
    replay.check_time(1000, 1100)
    assert raises(replay.ReplayError, replay.check_time, 1000, 2000).reason == "stale"
    replay.check_time(1000, 2000, late_ok=True)
    assert raises(replay.ReplayError, replay.check_time, 2000, 1000, late_ok=True).reason == "future"


def test_topics():
    t = topics.device("elm-street", DEV.kid, "reading")
    assert t == "pgw/1/elm-street/dev/%s/reading" % topics.kid_hex(DEV.kid)
    assert topics.parse(t) == ("elm-street", DEV.kid, "reading")
    assert topics.parse(topics.hub("elm-street", "block")) == ("elm-street", None, "block")
    for bad in ("pgw/1/Elm/hub/block", "pgw/2/x/hub/block", "pgw/1/x/dev/zz/reading",
                "pgw/1/x/dev/%s/cmd" % topics.kid_hex(DEV.kid), "pgw/1/x/hub/block/extra", "x"):
        raises(topics.TopicError, topics.parse, bad)
    raises(topics.TopicError, topics.device, "x", DEV.kid, "block")


def test_fuzzed_messages_never_crash():
    # mutated messages: a specific refusal each; one that changed never verifies
    seeds = [signed_reading()] + [m.sign(t, s, ts, f, signer_kid(w), SIGNERS[w])
                                  for _, t, w, s, ts, f in VECTORS[:4]]
    rng = Xorshift32(4242)
    for i in range(iterations(300)):
        seed = seeds[i % len(seeds)]
        data = mutate(rng, seed)
        try:
            m.open_signed(data, lookup)
        except m.ProtocolError:
            continue
        assert data == seed, (i, data)
