"""lib/cose.py and lib/trade/ against independent implementations (CPython):
pycose verifies what lib/ signs, on CPython and on MicroPython; lib/ verifies
what pycose and `cryptography` sign; COSE_Keys go both ways; the test
vectors in docs/protocol.md verify with pycose."""

import json
import os
import subprocess
import sys

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys import CoseKey, EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for sub in ("tests/lib", "lib"):
    path = os.path.join(ROOT, sub)
    if path not in sys.path:
        sys.path.insert(0, path)

import cose  # noqa: E402
import p256  # noqa: E402
import protocol_vectors as pv  # noqa: E402
from protocol_vectors import Signer  # noqa: E402
from trade import messages as m  # noqa: E402


def pycose_key(pub, d=None):
    x, y = pub
    kw = {"crv": P256, "x": x.to_bytes(32, "big"), "y": y.to_bytes(32, "big")}
    if d is not None:
        kw["d"] = d.to_bytes(32, "big")
    return EC2Key(**kw)


def pycose_decode(data):
    # pycose 1.1.0's Sign1Message.decode() fails with cbor2 6 (a tag's array
    # comes back as a tuple; see PEERS.md): decode the tag, then hand pycose the array
    tag = cbor2.loads(data)
    assert isinstance(tag, cbor2.CBORTag) and tag.tag == 18
    protected, unprotected, payload, sig = tag.value  # and its map a frozen dict
    return Sign1Message.from_cose_obj([protected, dict(unprotected), payload, sig], True)


def pycose_verify(data, pub):
    msg = pycose_decode(data)
    msg.key = pycose_key(pub)
    return msg.verify_signature(), msg


def test_doc_vectors_verify_with_pycose_and_match_cbor2():
    doc = pv.doc_vectors()
    keys = {"device": pv.DEVICE_D, "hub": pv.HUB_D}
    for name, mtype, signer, seq, ts, fields in pv.VECTORS:
        d = keys[signer]
        ok, msg = pycose_verify(doc[name]["signed"], p256.public_key(d))
        assert ok, name
        assert msg.payload == doc[name]["payload"]
        arr = cbor2.loads(msg.payload)
        assert arr[:4] == [1, mtype, seq, ts], name
        assert cbor2.dumps(arr, canonical=True) == msg.payload  # deterministic
        assert msg.phdr[KID] == cose.device_id(*p256.public_key(d))


def test_lib_verifies_what_pycose_signs():
    for i in range(20):
        priv = ec.generate_private_key(ec.SECP256R1())
        nums = priv.private_numbers()
        pub = (nums.public_numbers.x, nums.public_numbers.y)
        kid = cose.device_id(*pub)
        payload = m.encode(m.ACK, i, 1750500000 + i, {"device": kid, "acked_seq": i})
        msg = Sign1Message(phdr={Algorithm: Es256, KID: kid}, payload=payload)
        msg.key = pycose_key(pub, nums.private_value)
        data = msg.encode()
        got = m.open_signed(data, {kid: pub}.get)
        assert (got.kid, got.seq, got["acked_seq"]) == (kid, i, i)


def test_lib_verifies_what_cryptography_signs_as_raw_r_s():
    priv = ec.generate_private_key(ec.SECP256R1())
    n = priv.public_key().public_numbers()
    pub = (n.x, n.y)
    kid = cose.device_id(*pub)
    protected = cbor2.dumps({1: -7, 4: kid})
    payload = m.encode(m.WITNESS, 3, 1750500000, {"height": 1, "block": bytes(32)})
    tbs = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = decode_dss_signature(priv.sign(tbs, ec.ECDSA(hashes.SHA256())))
    data = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, r.to_bytes(32, "big") + s.to_bytes(32, "big")]))
    assert m.open_signed(data, {kid: pub}.get)["height"] == 1


def test_cose_keys_both_ways():
    s = Signer(pv.DEVICE_D)
    ours = cose.encode_key(*s.pub)
    theirs = CoseKey.decode(ours)
    assert theirs.x == s.pub[0].to_bytes(32, "big") and theirs.y == s.pub[1].to_bytes(32, "big")
    assert theirs.kid == s.kid
    assert cose.decode_key(pycose_key(s.pub).encode()) == (s.kid, s.pub)  # no kid: derived


@settings(max_examples=40, deadline=None)
@given(seq=st.integers(0, 2**64 - 1), ts=st.integers(0, 2**40), imp=st.integers(0, 2**32 - 1),
       power=st.integers(-2**31, 2**31 - 1), meter=st.binary(min_size=1, max_size=16))
def test_random_readings_verify_with_pycose(seq, ts, imp, power, meter):
    s = Signer(pv.DEVICE_D)
    fields = {"interval_min": 15, "import_wh": imp, "export_wh": 0, "import_register_wh": imp,
              "export_register_wh": 0, "power_w": power, "meter": meter}
    data = cose.sign1(m.encode(m.READING, seq, ts, fields), s.kid, s)
    ok, msg = pycose_verify(data, s.pub)
    assert ok and cbor2.loads(msg.payload)[4:] == [15, imp, 0, imp, 0, power, meter]


MP_SIGN = """
import sys
sys.path[:0] = [%r, %r]
import json, p256, cose
from trade import messages as m
class S:
    def __init__(self, d):
        self.d = d
        self.pub = p256.public_key(d)
    def sign_digest(self, h):
        return p256.sign_digest(self.d, h)
s = S(%d)
kid = cose.device_id(*s.pub)
out = []
for i in range(5):
    f = {"interval_min": 15, "import_wh": 100 + i, "export_wh": 7, "import_register_wh": 5000 + i,
         "export_register_wh": 9, "power_w": -i, "meter": b"MP-1"}
    out.append(m.sign(m.READING, 10 + i, 1750500000 + 900 * i, f, kid, s).hex())
print(json.dumps(out))
"""


def test_messages_signed_on_micropython_verify_with_pycose_and_cryptography():
    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    code = MP_SIGN % (os.path.join(ROOT, "lib"), os.path.join(ROOT, "tests/lib"), pv.DEVICE_D)
    out = subprocess.run([mp, "-X", "heapsize=160wK", "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    s = Signer(pv.DEVICE_D)
    pub = ec.EllipticCurvePublicNumbers(s.pub[0], s.pub[1], ec.SECP256R1()).public_key()
    for i, hexmsg in enumerate(json.loads(out)):
        data = bytes.fromhex(hexmsg)
        ok, msg = pycose_verify(data, s.pub)
        assert ok, i
        # and with cryptography directly: Sig_structure, raw r||s to DER
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        tag = cbor2.loads(data)
        protected, _, payload, sig = tag.value
        tbs = cbor2.dumps(["Signature1", protected, b"", payload])
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        pub.verify(der, tbs, ec.ECDSA(hashes.SHA256()))
        assert cbor2.loads(payload)[:3] == [1, 1, 10 + i]
        # deterministic signing: CPython running lib/ signs the same bytes
        f = {"interval_min": 15, "import_wh": 100 + i, "export_wh": 7, "import_register_wh": 5000 + i,
             "export_register_wh": 9, "power_w": -i, "meter": b"MP-1"}
        assert m.sign(m.READING, 10 + i, 1750500000 + 900 * i, f, s.kid, s) == data


MP_VERIFY = """
import sys
sys.path[:0] = [%r]
import json
from trade import messages as m
cases = json.loads(%r)
out = []
for kid_hex, x, y, data_hex in cases:
    kid = bytes.fromhex(kid_hex)
    try:
        msg = m.open_signed(bytes.fromhex(data_hex), {kid: (x, y)}.get)
        out.append(["ok", msg.seq])
    except m.ProtocolError as e:
        out.append([e.reason, None])
print(json.dumps(out))
"""


def test_lib_on_micropython_verifies_what_pycose_and_cryptography_sign():
    cases, expect = [], []
    for i in range(12):
        priv = ec.generate_private_key(ec.SECP256R1())
        nums = priv.private_numbers()
        x, y = nums.public_numbers.x, nums.public_numbers.y
        kid = cose.device_id(x, y)
        payload = m.encode(m.ACK, 100 + i, 1750500000, {"device": kid, "acked_seq": i})
        if i % 2:  # pycose builds the whole message
            msg = Sign1Message(phdr={Algorithm: Es256, KID: kid}, payload=payload)
            msg.key = pycose_key((x, y), nums.private_value)
            data = msg.encode()
        else:  # cryptography signs our Sig_structure; cbor2 frames it
            protected = cbor2.dumps({1: -7, 4: kid})
            tbs = cbor2.dumps(["Signature1", protected, b"", payload])
            r, s = decode_dss_signature(priv.sign(tbs, ec.ECDSA(hashes.SHA256())))
            data = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload,
                                                  r.to_bytes(32, "big") + s.to_bytes(32, "big")]))
        if i % 3 == 2:  # and some tampered with: one bit of the payload
            bad = bytearray(data)
            bad[len(bad) - 70] ^= 0x01
            data = bytes(bad)
            expect.append("signature")
        else:
            expect.append("ok")
        cases.append([kid.hex(), x, y, data.hex()])
    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    code = MP_VERIFY % (os.path.join(ROOT, "lib"), json.dumps(cases))
    out = subprocess.run([mp, "-X", "heapsize=160wK", "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert [g[0] for g in got] == expect, got
    assert [g[1] for g in got if g[0] == "ok"] == [100 + i for i, e in enumerate(expect) if e == "ok"]
