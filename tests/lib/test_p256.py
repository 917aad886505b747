# ECDSA P-256 / SHA-256 (lib/p256.py) and HMAC-SHA256 (lib/hmac_sha256.py).
import hashlib

import p256_vectors as pv
from fuzzing import Xorshift32, iterations, mutate, noise
from mpcompat import SkipTest, raises

import hmac_sha256
import p256
from p256 import N, SignatureError

# The curve's field prime and generator (FIPS 186-4 D.1.2.3): p256's are const().
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5


def sha256(data):
    return hashlib.sha256(data).digest()


def reason(func, *args):
    return raises(SignatureError, func, *args).reason


def keys(seed, count):
    rng = Xorshift32(seed)
    out = []
    while len(out) < count:
        d = int.from_bytes(noise(rng, 32), "big")
        if 0 < d < N:
            out.append(d)
    return out


RFC_PUB = (pv.RFC6979_UX, pv.RFC6979_UY)


# -- HMAC-SHA256 -------------------------------------------------------------


def test_hmac_rfc4231():
    for i, (key, data, mac) in enumerate(pv.RFC4231):
        got = hmac_sha256.hmac_sha256(key, data).hex()
        assert got.startswith(mac), "case %d: %s" % (i + 1, got)


def test_hmac_prepared_key_parts():
    key, data, mac = pv.RFC4231[1]
    prepared = hmac_sha256.HmacSha256(key)
    assert prepared.digest(data[:5], data[5:]).hex() == mac
    assert prepared.digest(bytearray(data)).hex() == mac  # reusable
    assert hmac_sha256.equal(b"abc", b"abc")
    assert not hmac_sha256.equal(b"abc", b"abd")
    assert not hmac_sha256.equal(b"abc", b"ab")


# -- RFC 6979 ----------------------------------------------------------------


def test_rfc6979_public_key():
    assert p256.public_key(pv.RFC6979_X) == RFC_PUB


def test_rfc6979_nonces_and_signatures():
    for msg, k, r, s in pv.RFC6979_SHA256:
        digest = sha256(msg)
        got_k = next(p256._nonces(pv.RFC6979_X, int.from_bytes(digest, "big")))[0]
        assert got_k == k, (msg, hex(got_k))
        sig = p256.sign_digest(pv.RFC6979_X, digest)
        assert sig == r.to_bytes(32, "big") + s.to_bytes(32, "big"), (msg, sig.hex())
        assert p256.verify_digest(RFC_PUB, digest, sig) is None


def test_sign_is_deterministic_and_takes_bytearray():
    digest = sha256(b"meter reading")
    sig = p256.sign_digest(pv.RFC6979_X, digest)
    assert p256.sign_digest(pv.RFC6979_X, bytearray(digest)) == sig
    assert len(sig) == 64


# -- NIST CAVP (cryptography-vectors package) --------------------------------


def test_nist_sigver_p256_sha256():
    records = pv.rsp_records(pv.SIGVER, "P-256,SHA-256")
    if records is None:
        raise SkipTest("cryptography_vectors not found (PGW_CRYPTOGRAPHY_VECTORS unset)")
    assert len(records) == 15, len(records)
    passed = 0
    for i, rec in enumerate(records):
        pub = (int(rec["Qx"], 16), int(rec["Qy"], 16))
        sig = int(rec["R"], 16).to_bytes(32, "big") + int(rec["S"], 16).to_bytes(32, "big")
        digest = sha256(bytes.fromhex(rec["Msg"]))
        try:
            p256.verify_digest(pub, digest, sig)
            verdict = "P"
        except SignatureError:
            verdict = "F"
        assert verdict == rec["Result"][0], "vector %d: %s, expected %s" % (i, verdict, rec["Result"])
        passed += verdict == "P"
    assert 0 < passed < 15, passed


def test_nist_pkv_p256():
    records = pv.rsp_records(pv.PKV, "P-256")
    if records is None:
        raise SkipTest("cryptography_vectors not found (PGW_CRYPTOGRAPHY_VECTORS unset)")
    assert len(records) >= 10, len(records)
    for i, rec in enumerate(records):
        x = int(rec["Qx"], 16)
        y = int(rec["Qy"], 16)
        try:
            p256.check_public(x, y)
            verdict = "P"
        except SignatureError as exc:
            assert exc.reason == "point", exc.reason
            verdict = "F"
        assert verdict == rec["Result"][0], "vector %d: %s, expected %s" % (i, verdict, rec["Result"])


# -- bad input: each gives its reason -----------------------------------------


def test_bad_r_and_s():
    digest = sha256(b"sample")
    sig = p256.sign_digest(pv.RFC6979_X, digest)
    r, s = sig[:32], sig[32:]
    zero = bytes(32)
    big = N.to_bytes(32, "big")
    top = b"\xff" * 32
    assert reason(p256.verify_digest, RFC_PUB, digest, zero + s) == "r range"
    assert reason(p256.verify_digest, RFC_PUB, digest, big + s) == "r range"
    assert reason(p256.verify_digest, RFC_PUB, digest, top + s) == "r range"
    assert reason(p256.verify_digest, RFC_PUB, digest, r + zero) == "s range"
    assert reason(p256.verify_digest, RFC_PUB, digest, r + big) == "s range"
    assert reason(p256.verify_digest, RFC_PUB, digest, r + top) == "s range"
    # (r, N - s) verifies too (ECDSA's malleability; nothing here normalises s)
    other = (N - int.from_bytes(s, "big")).to_bytes(32, "big")
    assert p256.verify_digest(RFC_PUB, digest, r + other) is None


def test_bad_lengths():
    digest = sha256(b"sample")
    sig = p256.sign_digest(pv.RFC6979_X, digest)
    for bad in (b"", sig[:63], sig + b"\x00", sig + sig):
        assert reason(p256.verify_digest, RFC_PUB, digest, bad) == "length", len(bad)
    assert reason(p256.verify_digest, RFC_PUB, digest, "x" * 64) == "length"
    for bad in (b"", digest[:31], digest + b"\x00"):
        assert reason(p256.verify_digest, RFC_PUB, bad, sig) == "digest"
        assert reason(p256.sign_digest, pv.RFC6979_X, bad) == "digest"
    assert reason(p256.sign_digest, pv.RFC6979_X, "x" * 32) == "digest"


def test_bad_private_keys():
    digest = sha256(b"sample")
    for d in (0, N, N + 1, -1, 1 << 256, "1", None):
        assert reason(p256.sign_digest, d, digest) == "key", d
        assert reason(p256.public_key, d) == "key", d


def test_bad_public_keys():
    digest = sha256(b"sample")
    sig = p256.sign_digest(pv.RFC6979_X, digest)
    x, y = RFC_PUB
    bad = (
        (x, (y + 1) % P),  # off the curve
        (x, P - y + P),  # y >= P (y + P would be on the curve mod P)
        (x + P, y),
        (-x, y),
        (0, 0),
        (x, None),
        ("x", y),
    )
    for pub in bad:
        assert reason(p256.check_public, pub[0], pub[1]) == "point", pub
        assert reason(p256.verify_digest, pub, digest, sig) == "point", pub
    for pub in ((x, y, 1), None, (x,), "xy"):
        assert reason(p256.verify_digest, pub, digest, sig) == "point", pub
    assert p256.verify_digest([x, y], digest, sig) is None
    # the negated key is on the curve but does not verify
    assert reason(p256.verify_digest, (x, P - y), digest, sig) == "mismatch"


def test_bit_flips_in_signature_and_digest():
    digest = sha256(b"test")
    sig = p256.sign_digest(pv.RFC6979_X, digest)
    for i in range(0, 512, 37):
        flipped = bytearray(sig)
        flipped[i >> 3] ^= 0x80 >> (i & 7)
        part = int.from_bytes(flipped[:32] if i < 256 else flipped[32:], "big")
        want = "mismatch" if part < N else ("r range" if i < 256 else "s range")
        assert reason(p256.verify_digest, RFC_PUB, digest, bytes(flipped)) == want, i
    for i in range(0, 256, 29):
        flipped = bytearray(digest)
        flipped[i >> 3] ^= 1 << (i & 7)
        assert reason(p256.verify_digest, RFC_PUB, bytes(flipped), sig) == "mismatch", i


# -- points, keys, round trips ------------------------------------------------


def test_encode_decode_point():
    data = p256.encode_point(*RFC_PUB)
    assert len(data) == 65 and data[0] == 4
    assert p256.decode_point(data) == RFC_PUB
    assert p256.decode_point(bytearray(data)) == RFC_PUB
    assert p256.encode_point(GX, GY)[1:33] == GX.to_bytes(32, "big")
    for bad in (data[:64], data + b"\x00", b"\x02" + data[1:], b"\x03" + data[1:33], b""):
        assert reason(p256.decode_point, bad) == "point", bad
    off = bytearray(data)
    off[64] ^= 1
    assert reason(p256.decode_point, bytes(off)) == "point"
    big = b"\x04" + b"\xff" * 32 + data[33:]
    assert reason(p256.decode_point, big) == "point"
    assert reason(p256.encode_point, RFC_PUB[0], RFC_PUB[1] + 1) == "point"


def test_public_key_small_multiples():
    # 1*G is the generator; (N-1)*G is its negation; 2*G matches the doubling
    assert p256.public_key(1) == (GX, GY)
    assert p256.public_key(N - 1) == (GX, P - GY)
    for d in (2, 3, 0xFFFFFFFF, 1 << 128, N >> 1):
        x, y = p256.public_key(d)
        p256.check_public(x, y)
        nx, ny = p256.public_key(N - d)
        assert (nx, ny) == (x, P - y), d


def test_comb_exceptional_nonce_falls_back():
    k = pv.COMB_DOUBLING_K
    assert p256._mul_base(k)[2] == 0  # the comb alone gives up here
    for d in (k, N - k):
        X, Y, Z = p256._mul_public(d, 0, 0, 0)
        zi = pow(Z, P - 2, P)
        want = (X * zi * zi % P, Y * zi * zi * zi % P)
        assert p256.public_key(d) == want
        p256.check_public(*want)
        # the same nonce in a signature
        digest = sha256(b"edge")
        e = int.from_bytes(digest, "big")
        sig = p256._sign_with(pv.RFC6979_X, e, d, hmac_sha256.HmacSha256(b"key"), b"v" * 32)
        assert int.from_bytes(sig[:32], "big") == want[0] % N
        p256.verify_digest(RFC_PUB, digest, sig)


def test_r_plus_n_branch():
    # x(R) >= N, so r = x(R) - N: with Q = R, digest 0 and s = r, u1 = 0 and
    # u2 = 1 make R = Q. x = N + 3 is the first x >= N on the curve.
    b = (GY * GY - GX * (GX * GX - 3)) % P  # the curve's b
    x = N + 3
    rhs = (x * x * x - 3 * x + b) % P
    y = pow(rhs, (P + 1) // 4, P)  # P = 3 (mod 4)
    assert y * y % P == rhs
    r = (x - N).to_bytes(32, "big")
    assert p256.verify_digest((x, y), bytes(32), r + r) is None
    other = (x - N + 1).to_bytes(32, "big")
    assert reason(p256.verify_digest, (x, y), bytes(32), other + r) == "mismatch"


def test_mul_public_meets_doublings_and_infinity():
    # u1*G + u2*Q with Q = G: partial sums meet the addends (doublings) or
    # their negations (infinity); each must come out as (u1 + u2)*G.
    pairs = ((1, 1), (2, N - 2), (N - 1, 1), (5, 3), (1 << 31, 1 << 31), (3, N - 1),
             (0xFFFFFFFF, 0xFFFFFFFF), (N >> 1, N >> 1), (N - 5, 3), (7, 7 << 200))
    for u1, u2 in pairs:
        X, Y, Z = p256._mul_public(u1, u2, GX, GY)
        total = (u1 + u2) % N
        if total == 0:
            assert Z == 0, (u1, u2)
            continue
        zi = pow(Z, P - 2, P)
        assert (X * zi * zi % P, Y * zi * zi * zi % P) == p256.public_key(total), (u1, u2)
    # a signature whose R is infinity: e = -r*d with d = 1
    r = 12345
    digest = (N - r).to_bytes(32, "big")
    sig = r.to_bytes(32, "big") + (54321).to_bytes(32, "big")
    assert reason(p256.verify_digest, (GX, GY), digest, sig) == "mismatch"


def test_table_is_the_comb_of_g():
    table = p256._table()
    assert len(table) == p256.TABLE_BYTES <= 8192
    for i in (0, 1, 2, 77, 127):
        x, y = p256._get(table, i)
        p256.check_public(x, y)
        c = 1 << 224
        for t in range(7):
            c += -(1 << (32 * t)) if i >> t & 1 else 1 << (32 * t)
        assert (x, y) == p256.public_key(c % N), i
    p256.free_table()
    assert p256._table() == table  # built again, the same


def test_generate():
    rng = Xorshift32(7)
    d = p256.generate(lambda n: noise(rng, n))
    assert 0 < d < N
    draws = [N.to_bytes(32, "big"), bytes(32), (N - 1).to_bytes(32, "big")]
    assert p256.generate(lambda n: draws.pop(0)) == N - 1
    assert reason(p256.generate, lambda n: bytes(n)) == "key"
    assert reason(p256.generate, lambda n: b"\x01" * 16) == "key"  # short draw


def test_round_trips_random_keys():
    rng = Xorshift32(20250601)
    for i, d in enumerate(keys(99, 6)):
        pub = p256.public_key(d)
        digest = noise(rng, 32)
        sig = p256.sign_digest(d, digest)
        assert p256.verify_digest(pub, digest, sig) is None, i
        assert p256.decode_point(p256.encode_point(*pub)) == pub
        other = p256.public_key(d % (N - 1) + 1)
        assert reason(p256.verify_digest, other, digest, sig) == "mismatch", i


def test_digest_at_or_above_n():
    # e >= N: bits2octets reduces it for the nonce, the signature uses e mod N
    d = pv.RFC6979_X
    pub = RFC_PUB
    for e in (N, N + 5, (1 << 256) - 1, 0):
        digest = e.to_bytes(32, "big")
        sig = p256.sign_digest(d, digest)
        p256.verify_digest(pub, digest, sig)
        if e >= N:
            assert sig == p256.sign_digest(d, (e - N).to_bytes(32, "big")), hex(e)


def test_fuzz_signatures_and_public_keys():
    # Capped: each mutation may cost a full verification (~4 ms on MicroPython).
    n = min(iterations(120), 3000)
    rng = Xorshift32(0xEC256)
    digest = sha256(b"fuzz")
    sig = p256.sign_digest(pv.RFC6979_X, digest)
    point = p256.encode_point(*RFC_PUB)
    verdicts = {}
    for _ in range(n):
        if rng.below(2):
            candidate = mutate(rng, sig)
            pub = RFC_PUB
        else:
            candidate = sig
            data = mutate(rng, point)
            try:
                pub = p256.decode_point(data)
            except SignatureError as exc:
                assert exc.reason == "point", exc.reason
                pub = (int.from_bytes(data[1:33], "big"), int.from_bytes(data[33:65], "big"))
        try:
            p256.verify_digest(pub, digest, candidate)
            outcome = "ok" if (candidate, pub) == (sig, RFC_PUB) else "forged"
        except SignatureError as exc:
            outcome = exc.reason
        assert outcome != "forged", (candidate.hex(), pub)
        verdicts[outcome] = verdicts.get(outcome, 0) + 1
    assert verdicts.get("mismatch") and verdicts.get("length"), verdicts
