"""Cross-checks of lib/p256.py (ECDSA P-256, SHA-256 digests, RFC 6979
nonces) against independent implementations (CPython only): the
`cryptography` package (OpenSSL) and python-ecdsa; plus one run of lib/p256.py
under the MicroPython unix port whose signatures `cryptography` checks.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import ecdsa
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed, decode_dss_signature, encode_dss_signature)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from ecdsa.util import sigdecode_string, sigencode_string
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
for sub in ("tests/lib", "lib"):
    path = str(ROOT / sub)
    if path not in sys.path:
        sys.path.insert(0, path)

import p256  # noqa: E402
import p256_vectors as pv  # noqa: E402

MICROPYTHON = Path(sys.executable).parent / "micropython"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PREHASHED = ec.ECDSA(Prehashed(hashes.SHA256()))
scalars = st.integers(min_value=1, max_value=p256.N - 1)
digests = st.binary(min_size=32, max_size=32)


def ossl_public(d):
    nums = ec.derive_private_key(d, ec.SECP256R1()).public_key().public_numbers()
    return nums.x, nums.y


def ossl_verify(pub, digest, sig):
    key = ec.EllipticCurvePublicNumbers(pub[0], pub[1], ec.SECP256R1()).public_key()
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        key.verify(der, digest, PREHASHED)
    except InvalidSignature:
        return False
    return True


def ossl_sign(d, digest):
    der = ec.derive_private_key(d, ec.SECP256R1()).sign(digest, PREHASHED)
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def pyecdsa_sign(d, digest):
    sk = ecdsa.SigningKey.from_secret_exponent(d, curve=ecdsa.NIST256p, hashfunc=hashlib.sha256)
    return sk.sign_digest_deterministic(digest, hashfunc=hashlib.sha256, sigencode=sigencode_string)


def pyecdsa_verify(pub, digest, sig):
    vk = ecdsa.VerifyingKey.from_string(p256.encode_point(*pub), curve=ecdsa.NIST256p,
                                        hashfunc=hashlib.sha256)
    try:
        return vk.verify_digest(sig, digest, sigdecode=sigdecode_string)
    except ecdsa.BadSignatureError:
        return False


@FUZZ
@given(scalars, digests)
def test_lib_signatures_verify_with_both_peers(d, digest):
    pub = p256.public_key(d)
    assert pub == ossl_public(d)
    sig = p256.sign_digest(d, digest)
    assert ossl_verify(pub, digest, sig)
    assert pyecdsa_verify(pub, digest, sig)
    # RFC 6979 on both sides: the very same bytes
    assert sig == pyecdsa_sign(d, digest)


@FUZZ
@given(scalars, digests)
def test_openssl_signatures_verify_in_lib(d, digest):
    pub = ossl_public(d)
    sig = ossl_sign(d, digest)  # random nonce
    assert p256.verify_digest(pub, digest, sig) is None
    wrong = bytes([digest[0] ^ 1]) + digest[1:]
    with pytest.raises(p256.SignatureError) as exc:
        p256.verify_digest(pub, wrong, sig)
    assert exc.value.reason == "mismatch"


@FUZZ
@given(scalars, digests, st.integers(min_value=0, max_value=511))
def test_corrupted_signatures_agree_with_openssl(d, digest, bit):
    pub = p256.public_key(d)
    sig = bytearray(p256.sign_digest(d, digest))
    sig[bit >> 3] ^= 1 << (bit & 7)
    sig = bytes(sig)
    try:
        p256.verify_digest(pub, digest, sig)
        ours = True
    except p256.SignatureError:
        ours = False
    assert not ours and not ossl_verify(pub, digest, sig)


def test_openssl_message_signing_hashes_itself():
    # cryptography's ec.ECDSA(SHA256) over a message = our digest of it
    key = ec.generate_private_key(ec.SECP256R1())
    nums = key.public_key().public_numbers()
    msg = b"15-minute settlement interval 2025-06-01T10:15"
    r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert p256.verify_digest((nums.x, nums.y), hashlib.sha256(msg).digest(), sig) is None


def test_edge_scalars_match_openssl():
    for d in (1, 2, 3, p256.N - 1, p256.N - 2, p256.N >> 1, (p256.N >> 1) + 1, 1 << 255,
              pv.COMB_DOUBLING_K, p256.N - pv.COMB_DOUBLING_K):
        assert p256.public_key(d) == ossl_public(d), hex(d)


def test_generated_keys_match_openssl():
    for _ in range(20):
        d = p256.generate(os.urandom)
        assert p256.public_key(d) == ossl_public(d)


def test_encode_point_matches_openssl():
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    data = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    nums = key.public_numbers()
    assert p256.decode_point(data) == (nums.x, nums.y)
    assert p256.encode_point(nums.x, nums.y) == data


@FUZZ
@given(scalars, scalars, st.integers(min_value=0, max_value=200))
def test_r_plus_n_signatures_agree_with_peers(u1, u2, t):
    # A signature whose R has x(R) >= N (r = x(R) - N), built with
    # python-ecdsa's point arithmetic: pick such an R, then Q = (R - u1*G)/u2,
    # s = r/u2 and e = u1*s, so that u1*G + u2*Q = R.
    curve = ecdsa.NIST256p.curve
    n, p = p256.N, curve.p()
    x = n + t
    rhs = (x ** 3 - 3 * x + curve.b()) % p
    y = pow(rhs, (p + 1) // 4, p)
    if y * y % p != rhs:
        return  # no point with this x
    R = ecdsa.ellipticcurve.Point(curve, x, y, n)
    G = ecdsa.NIST256p.generator.to_affine()
    Q = (R + (-(G * u1))) * pow(u2, n - 2, n)
    r = x - n
    s = r * pow(u2, n - 2, n) % n
    digest = (u1 * s % n).to_bytes(32, "big")
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    pub = (Q.x(), Q.y())
    assert p256.verify_digest(pub, digest, sig) is None
    assert ossl_verify(pub, digest, sig)
    assert pyecdsa_verify(pub, digest, sig)


MP_SIGNER = """
import sys
sys.path.insert(0, %r)
import hashlib, p256
d = %d
x, y = p256.public_key(d)
print("pub", "%%064x%%064x" %% (x, y))
for i in range(4):
    digest = hashlib.sha256(b"reading %%d" %% i).digest()
    print("sig", digest.hex(), p256.sign_digest(d, digest).hex())
"""


def test_micropython_signatures_verify_with_openssl():
    if not MICROPYTHON.exists():
        pytest.fail("MicroPython unix port missing at %s: run `make test`" % MICROPYTHON)
    d = 0x1F2E3D4C5B6A798897A6B5C4D3E2F1000112233445566778899AABBCCDDEEFF0
    code = MP_SIGNER % (str(ROOT / "lib"), d)
    out = subprocess.run([str(MICROPYTHON), "-X", "heapsize=160wK", "-c", code],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    lines = [line.split() for line in out.splitlines()]
    pub = ossl_public(d)
    assert lines[0] == ["pub", "%064x%064x" % pub]
    sigs = [line[1:] for line in lines[1:]]
    assert len(sigs) == 4
    for digest_hex, sig_hex in sigs:
        digest, sig = bytes.fromhex(digest_hex), bytes.fromhex(sig_hex)
        assert ossl_verify(pub, digest, sig)
        assert sig == p256.sign_digest(d, digest)  # same bytes as CPython
