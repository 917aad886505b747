"""The device's signing identity on a virtual board: a software key made on
the device, its public COSE_Key on the console, the private key in a file no
command prints, and messages signed on the device that pycose and
cryptography verify."""

import hashlib
import json
import re

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pycose.keys import CoseKey
from pycose.messages import Sign1Message

from conftest import run_tool


def console(board, *lines):
    return run_tool("pgw", "console", "--port", board.link, input="".join(l + "\n" for l in lines)).stdout


def rows(text):
    return dict(re.findall(r"^(\w+) +(\S.*)$", text, re.M))


def test_key_is_made_on_the_device_and_only_its_public_half_is_shown(deployed):
    assert "no signing key yet" in console(deployed, "identity")
    out = console(deployed, "identity provision")
    ident = rows(out)
    assert ident["provider"] == "software key in /state/device.key", out
    key_file = deployed.root / "state" / "device.key"
    raw = key_file.read_bytes()
    assert raw[:5] == b"PGWK1" and len(raw) == 5 + 32 + 4
    d = int.from_bytes(raw[5:37], "big")
    # the COSE_Key shown is the public key of the scalar in the file
    cose_key = bytes.fromhex(ident["cose_key"])
    m = cbor2.loads(cose_key)
    pub = ec.derive_private_key(d, ec.SECP256R1()).public_key().public_numbers()
    assert (m[1], m[3], m[-1]) == (2, -7, 1)
    assert (int.from_bytes(m[-2], "big"), int.from_bytes(m[-3], "big")) == (pub.x, pub.y)
    point = b"\x04" + m[-2] + m[-3]
    assert bytes.fromhex(ident["kid"]) == m[2] == hashlib.sha256(point).digest()[:8]
    assert CoseKey.decode(cose_key).kid == m[2]
    # a second provision keeps the identity
    again = console(deployed, "identity provision")
    assert again.strip().startswith("ERR a key already exists"), again
    # no console command shows the private key, in any form
    helptext = console(deployed, "help")
    names = [l.split()[0] for l in helptext.splitlines() if l.strip() and not l.startswith("pgw")]
    assert "identity" in names and "status" in names, helptext
    names.remove("reboot")  # the one command that would end the session
    everything = console(deployed, *names, *("help " + n for n in names))
    secret = raw[5:37]
    for form in (secret.hex(), secret.hex().upper(), str(d), repr(secret)[2:-1]):
        assert form not in everything and form not in out
    # the identity survives a power cycle
    mark = deployed.channel.mark()
    deployed.channel.power_cycle()
    deployed.channel.wait_kind("wdt", since=mark, timeout=20)
    assert rows(console(deployed, "identity"))["kid"] == ident["kid"]


SIGN_ON_DEVICE = """
import json
from gateway import keys
from trade import messages as m
k = keys.load()
f = {"interval_min": 15, "import_wh": 412, "export_wh": 0, "import_register_wh": 12345678,
     "export_register_wh": 0, "power_w": 380, "meter": b"12345678"}
print(json.dumps([m.sign(m.READING, 1 + i, 1750500000 + 900 * i, f, k.kid, k).hex() for i in range(3)]))
"""


def test_readings_signed_on_the_device_verify_with_pycose_and_cryptography(deployed):
    ident = rows(console(deployed, "identity"))
    if "kid" not in ident:  # alone, this test provisions the key itself
        ident = rows(console(deployed, "identity provision"))
    key = CoseKey.decode(bytes.fromhex(ident["cose_key"]))
    out = run_tool("mpremote", "connect", deployed.link, "exec", SIGN_ON_DEVICE).stdout
    signed = [bytes.fromhex(h) for h in json.loads(out.strip().splitlines()[-1])]
    m = cbor2.loads(bytes.fromhex(ident["cose_key"]))
    pub = ec.EllipticCurvePublicNumbers(int.from_bytes(m[-2], "big"), int.from_bytes(m[-3], "big"),
                                        ec.SECP256R1()).public_key()
    for i, data in enumerate(signed):
        assert len(data) <= 128
        tag = cbor2.loads(data)
        protected, unprotected, payload, sig = tag.value
        msg = Sign1Message.from_cose_obj([protected, dict(unprotected), payload, sig], True)
        msg.key = key
        assert msg.verify_signature(), i
        tbs = cbor2.dumps(["Signature1", protected, b"", payload])
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        pub.verify(der, tbs, ec.ECDSA(hashes.SHA256()))
        assert cbor2.loads(payload)[:5] == [1, 1, 1 + i, 1750500000 + 900 * i, 15]
