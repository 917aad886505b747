# ECDSA over NIST P-256 with SHA-256 digests (ES256; FIPS 186-4, SEC 1),
# nonces by RFC 6979, for MicroPython and CPython.
#
# Speed comes from how MicroPython's bignums cost (unix port): a 256-bit
# product ~0.3 us, its reduction mod p ~0.7 us, a Python call returning a
# 3-tuple several us (multi-block heap allocation), so the hot loops are
# written out inline, with one reduction per result.
#  - k*G: a signed-digit comb, 8 teeth 32 bits apart, over a table of 128
#    affine points (8 KB, built on first use): 31 doublings and 31 mixed
#    additions in Jacobian coordinates, for every scalar.
#  - u1*G + u2*Q (verify): one chain of 256 doublings shared by a width-5
#    wNAF of u2 over affine odd multiples of Q and the comb of u1 in its last
#    32 steps; the result is compared as X == r*Z^2 (mod p), no inversion.
#
# Side channels: signing runs the same sequence of field operations for every
# nonce (no zero digits, no early exit, selections by indexing instead of
# branches) and inverts only blinded values. What the interpreter does not
# allow: bignum operations take time that depends on the values (length
# normalisation, allocation), and the comb table is read at a secret index.
# Verification handles public data only and is variable-time.
from compat import const
from hmac_sha256 import HmacSha256

_P = const(0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF)
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_GX = const(0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296)
_GY = const(0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)
_B = const(0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B)

# The comb table: entry i (0..127) is the affine point c(i)*G with
# c(i) = 2^224 + sum over teeth t < 7 of (-1 if bit t of i else 1) * 2^(32t),
# stored as X || Y, 32 bytes each, big-endian.
TABLE_BYTES = 8192
_ENTRY = const(64)
# Bit t (t < 8) of comb column j is bit 32t + j of a scalar: gathered with one
# multiplication. _TOOTH_BITS has bits 0, 32, ..., 224; times _GATHER
# (sum of 2^(224 - 31t)) each bit 32t lands alone on bit 224 + t (the other 56
# products fall on distinct positions, so nothing carries).
_TOOTH_BITS = const(0x100000001000000010000000100000001000000010000000100000001)
_GATHER = const(0x100000002000000040000000800000010000000200000004000000080)
_LOW_TEETH = const(0x1000000010000000100000001000000010000000100000001)

_TABLE = None


class SignatureError(ValueError):
    # reason: "r range", "s range", "length", "point", "mismatch", "key", "digest"
    def __init__(self, reason, detail=""):
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason


def _inv(a, m):
    # a^-1 mod m for prime m and a in [1, m-1]: extended Euclid, two steps per
    # pass so that nothing is swapped, quotient 1 (~40% of them) by
    # subtraction. ~63 us on the unix port against ~370 us for Fermat's
    # pow(a, m - 2, m). Its time depends on a: callers pass public values or
    # blinded ones. Invariants: b = x0*a0 and a = x1*a0 (mod m).
    b = m
    x0 = 0
    x1 = 1
    while True:
        q = b // a
        if q == 1:
            b -= a
            x0 -= x1
        else:
            b -= q * a
            x0 -= q * x1
        if not b:
            return x1 % m
        q = a // b
        if q == 1:
            a -= b
            x1 -= x0
        else:
            a -= q * b
            x1 -= q * x0
        if not a:
            return x0 % m


def _dbl(X, Y, Z):
    # 2*(X, Y, Z) in Jacobian coordinates, a = -3 (dbl-2001-b); infinity
    # (Z = 0) stays infinity.
    p = _P
    d = Z * Z % p
    g = Y * Y % p
    b = X * g % p
    a = 3 * (X - d) * (X + d) % p
    X = (a * a - (b << 3)) % p
    Z = (Y * Z << 1) % p
    return X, (a * ((b << 2) - X) - (g * g << 3)) % p, Z


def _add(X, Y, Z, x2, y2):
    # (X, Y, Z) + (x2, y2), Jacobian plus affine, every case handled
    # (variable time: public points and the table only).
    p = _P
    if not Z:
        return x2, y2, 1
    zz = Z * Z % p
    h = (x2 * zz - X) % p
    r = (y2 * (zz * Z % p) - Y) % p
    if not h:
        if r:
            return 1, 1, 0
        return _dbl(X, Y, Z)
    hh = h * h % p
    hhh = h * hh % p
    v = X * hh % p
    X = (r * r - hhh - (v << 1)) % p
    return X, (r * (v - X) - Y * hhh) % p, Z * h % p


def _normalize(xs, ys, zs):
    # Jacobian points (lists of X, Y and Z != 0; lists, as a 3-tuple costs
    # a slow heap allocation) to affine in place in xs and ys, with one
    # inversion for all (Montgomery's trick). Public values only.
    p = _P
    prefix = []
    acc = 1
    for z in zs:
        prefix.append(acc)
        acc = acc * z % p
    inv = _inv(acc, p)
    for i in range(len(zs) - 1, -1, -1):
        zi = inv * prefix[i] % p
        inv = inv * zs[i] % p
        zz = zi * zi % p
        xs[i] = xs[i] * zz % p
        ys[i] = ys[i] * zz % p * zi % p


def _put(table, i, x, y):
    o = i * _ENTRY
    table[o:o + 32] = x.to_bytes(32, "big")
    table[o + 32:o + _ENTRY] = y.to_bytes(32, "big")


def _get(table, i):
    o = i * _ENTRY
    return int.from_bytes(table[o:o + 32], "big"), int.from_bytes(table[o + 32:o + _ENTRY], "big")


def _build_table():
    p = _P
    # 2^(32t) G (t = 0..7) and 2^(32t + 1) G (t = 0..6), alternately
    xs, ys, zs = [], [], []
    X, Y, Z = _GX, _GY, 1
    for t in range(15):
        xs.append(X)
        ys.append(Y)
        zs.append(Z)
        for _ in range(1 if t & 1 == 0 else 31):
            X, Y, Z = _dbl(X, Y, Z)
    _normalize(xs, ys, zs)
    table = bytearray(TABLE_BYTES)
    # entry 0: the sum of all teeth
    X, Y, Z = xs[14], ys[14], 1
    for t in range(6, -1, -1):
        X, Y, Z = _add(X, Y, Z, xs[2 * t], ys[2 * t])
    bx, by = [X], [Y]
    _normalize(bx, by, [Z])
    _put(table, 0, bx[0], by[0])
    # entry i with top bit t: entry(i - 2^t) - 2^(32t + 1) G. Batches of at
    # most 16 keep the Jacobian points (~200 bytes each) few.
    for t in range(7):
        dx = xs[2 * t + 1]
        dy = p - ys[2 * t + 1]
        first = 1 << t
        for start in range(first, 2 * first, 16):
            bx, by, bz = [], [], []
            for i in range(start, min(start + 16, 2 * first)):
                x, y = _get(table, i - first)
                X, Y, Z = _add(x, y, 1, dx, dy)
                bx.append(X)
                by.append(Y)
                bz.append(Z)
            _normalize(bx, by, bz)
            for i in range(len(bx)):
                _put(table, start + i, bx[i], by[i])
    return table


def _table():
    # The comb table, built on first use (~ms; TABLE_BYTES of heap from then on).
    global _TABLE
    if _TABLE is None:
        _TABLE = _build_table()
    return _TABLE


def free_table():
    # Give the table's heap back; the next signature or verification builds it again.
    global _TABLE
    _TABLE = None


def _columns(k):
    # Comb columns of an odd k < 2^256. With t = (k - 1)/2 + 2^255, k is
    # sum of (2*t_i - 1) * 2^i: every digit is +1 or -1, none is zero. Column
    # j holds digits j + 32u (u = 0..7); its byte: bit 7 = digit j + 224 is
    # +1, bit u < 7 = digit j + 32u differs in sign from it.
    t = (k >> 1) | (1 << 255)
    t ^= (t >> 224) * _LOW_TEETH
    cols = bytearray(32)
    for j in range(32):
        cols[j] = ((t >> j) & _TOOTH_BITS) * _GATHER >> 224 & 0xFF
    return cols


def _mul_base(k):
    # k*G for k in [1, N-1] as Jacobian (X, Y, Z), the same operations for
    # every k. Only the last addition can meet a doubling (earlier partial
    # sums stay below N in size and differ from the column's point), and it
    # does for exactly two k (tests/lib/p256_vectors.py, COMB_DOUBLING_K):
    # then Z == 0 and the caller takes _mul_public, which handles every case.
    p = _P
    odd = k & 1
    cols = _columns((N - k, k)[odd])  # odd, and x((N - k)G) = x(kG)
    tab = memoryview(_table())
    from_bytes = int.from_bytes
    c = cols[31]
    o = (c & 127) << 6
    X = from_bytes(tab[o:o + 32], "big")
    Y = from_bytes(tab[o + 32:o + 64], "big")
    Y = (p - Y, Y)[c >> 7]
    Z = 1
    for j in range(30, -1, -1):
        # double: dbl-2001-b
        d = Z * Z % p
        g = Y * Y % p
        b = X * g % p
        a = 3 * (X - d) * (X + d) % p
        X = (a * a - (b << 3)) % p
        Z = (Y * Z << 1) % p
        Y = (a * ((b << 2) - X) - (g * g << 3)) % p
        # add the column's point (negated by indexing, not by a branch)
        c = cols[j]
        o = (c & 127) << 6
        x2 = from_bytes(tab[o:o + 32], "big")
        y2 = from_bytes(tab[o + 32:o + 64], "big")
        y2 = (p - y2, y2)[c >> 7]
        zz = Z * Z % p
        h = (x2 * zz - X) % p
        r = (y2 * (zz * Z % p) - Y) % p
        hh = h * h % p
        hhh = h * hh % p
        v = X * hh % p
        X = (r * r - hhh - (v << 1)) % p
        Y = (r * (v - X) - Y * hhh) % p
        Z = Z * h % p
    return X, (p - Y, Y)[odd], Z


def _wnaf5(k):
    # Width-5 NAF of k >= 0, one byte per bit position from the lowest:
    # 0, or |digit| (odd, 1..15) with bit 7 set for a negative digit.
    naf = bytearray(262)
    i = 0
    while k:
        if k & 1:
            d = k & 31
            if d > 16:
                d -= 32
                naf[i] = 0x80 | -d
            else:
                naf[i] = d
            k = (k - d) >> 5
            i += 5
        else:
            k >>= 1
            i += 1
    return naf


def _odd_multiples(qx, qy):
    # Affine Q, 3Q, ..., 15Q. The sums run on the curve isomorphic by
    # (x, y) -> (x*Z^2, y*Z^3), Z that of 2Q, where 2Q is affine: every step
    # is a mixed addition (addition formulas use neither a nor b), and one
    # inversion brings all back. Q has prime order, so no step meets a
    # doubling or an opposite point.
    p = _P
    dx, dy, Z2 = _dbl(qx, qy, 1)
    zz = Z2 * Z2 % p
    X = qx * zz % p
    Y = qy * zz % p * Z2 % p
    Z = 1
    xs = [qx]
    ys = [qy]
    zs = [1]
    for _ in range(7):
        zz = Z * Z % p
        h = (dx * zz - X) % p
        r = (dy * (zz * Z % p) - Y) % p
        hh = h * h % p
        hhh = h * hh % p
        v = X * hh % p
        X = (r * r - hhh - (v << 1)) % p
        Y = (r * (v - X) - Y * hhh) % p
        Z = Z * h % p
        xs.append(X)
        ys.append(Y)
        zs.append(Z * Z2 % p)
    _normalize(xs, ys, zs)
    return xs, ys


def _mul_public(u1, u2, qx, qy):
    # u1*G + u2*Q (Q skipped when u2 == 0) as Jacobian (X, Y, Z), Z == 0 for
    # infinity. Variable time, every case handled.
    p = _P
    naf = _wnaf5(u2)
    top = len(naf) - 1
    while top >= 0 and not naf[top]:
        top -= 1
    if u2:
        xs, ys = _odd_multiples(qx, qy)
    cols = None
    if u1:
        flip = 0 if u1 & 1 else 0x80  # N - u1 is odd: add -(N - u1)G
        cols = _columns(u1 if u1 & 1 else N - u1)
        tab = memoryview(_table())
        if top < 31:
            top = 31
    from_bytes = int.from_bytes
    X = Y = 1
    Z = 0
    for i in range(top, -1, -1):
        # doubling infinity (Z = 0) leaves Z = 0
        d = Z * Z % p
        g = Y * Y % p
        b = X * g % p
        a = 3 * (X - d) * (X + d) % p
        X = (a * a - (b << 3)) % p
        Z = (Y * Z << 1) % p
        Y = (a * ((b << 2) - X) - (g * g << 3)) % p
        c = naf[i]
        if c:
            x2 = xs[(c & 15) >> 1]
            y2 = ys[(c & 15) >> 1]
            if c & 0x80:
                y2 = p - y2
            if Z:
                zz = Z * Z % p
                h = (x2 * zz - X) % p
                r = (y2 * (zz * Z % p) - Y) % p
                if h:
                    hh = h * h % p
                    hhh = h * hh % p
                    v = X * hh % p
                    X = (r * r - hhh - (v << 1)) % p
                    Y = (r * (v - X) - Y * hhh) % p
                    Z = Z * h % p
                elif r:
                    Z = 0
                else:
                    X, Y, Z = _dbl(X, Y, Z)
            else:
                X, Y, Z = x2, y2, 1
        if i < 32 and cols:
            c = cols[i] ^ flip
            o = (c & 127) << 6
            x2 = from_bytes(tab[o:o + 32], "big")
            y2 = from_bytes(tab[o + 32:o + 64], "big")
            if not c & 0x80:
                y2 = p - y2
            if Z:
                zz = Z * Z % p
                h = (x2 * zz - X) % p
                r = (y2 * (zz * Z % p) - Y) % p
                if h:
                    hh = h * h % p
                    hhh = h * hh % p
                    v = X * hh % p
                    X = (r * r - hhh - (v << 1)) % p
                    Y = (r * (v - X) - Y * hhh) % p
                    Z = Z * h % p
                elif r:
                    Z = 0
                else:
                    X, Y, Z = _dbl(X, Y, Z)
            else:
                X, Y, Z = x2, y2, 1
    return X, Y, Z


def _check_key(d):
    if not isinstance(d, int) or not 0 < d < N:
        raise SignatureError("key", "private key not in [1, N-1]")


def _digest_int(digest):
    if not isinstance(digest, (bytes, bytearray, memoryview)) or len(digest) != 32:
        raise SignatureError("digest", "digest must be 32 bytes (SHA-256)")
    return int.from_bytes(bytes(digest), "big")


def check_public(x, y):
    # Raises SignatureError("point") unless (x, y) is a point of the curve
    # (which also excludes infinity: it has no affine coordinates).
    if not isinstance(x, int) or not isinstance(y, int) or not (0 <= x < _P and 0 <= y < _P):
        raise SignatureError("point", "public key coordinates not in [0, P-1]")
    if (y * y - x * (x * x - 3) - _B) % _P:
        raise SignatureError("point", "public key not on the curve")


def encode_point(x, y):
    check_public(x, y)
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def decode_point(data):
    # 0x04 || X || Y (SEC 1 uncompressed) -> (x, y), checked to be on the curve
    if len(data) != 65 or data[0] != 4:
        raise SignatureError("point", "public key must be 65 bytes 0x04||X||Y")
    x = int.from_bytes(bytes(data[1:33]), "big")
    y = int.from_bytes(bytes(data[33:65]), "big")
    check_public(x, y)
    return x, y


def public_key(d):
    _check_key(d)
    X, Y, Z = _mul_base(d)
    if not Z:
        X, Y, Z = _mul_public(d, 0, 0, 0)
    p = _P
    # Z depends on the secret: Fermat's inversion (a public exponent) here,
    # as deriving a key is rare; signing blinds instead (see _sign_with).
    zi = pow(Z, p - 2, p)
    zz = zi * zi % p
    return X * zz % p, Y * zz % p * zi % p


def generate(randbytes):
    # A private key in [1, N-1] from randbytes(n) -> n random bytes, by
    # rejection (one draw in 2^32 is refused).
    for _ in range(64):
        draw = bytes(randbytes(32))
        if len(draw) != 32:
            raise SignatureError("key", "random source gave %d bytes, not 32" % len(draw))
        d = int.from_bytes(draw, "big")
        if 0 < d < N:
            return d
    raise SignatureError("key", "random source gave no key in [1, N-1] in 64 draws")


def _sign_with(d, e, k, mac, v):
    # The signature for nonce k, or None if r or s is 0. Both inversions are
    # of blinded values: b*x for a secret b drawn from the RFC 6979 DRBG's
    # key (HMAC_K(V || 2), HMAC_K(V || 3): the DRBG itself is not advanced,
    # so the nonces stay those of RFC 6979). Euclid then sees a uniformly
    # random value and costs ~63 us where Fermat costs ~370 us.
    p = _P
    n = N
    X, Y, Z = _mul_base(k)
    if not Z:
        X, Y, Z = _mul_public(k, 0, 0, 0)
    blind = int.from_bytes(mac.digest(v, b"\x02"), "big") % (p - 1) + 1
    zi = _inv(Z * blind % p, p) * blind % p
    r = X * (zi * zi % p) % p % n
    if not r:
        return None
    blind = int.from_bytes(mac.digest(v, b"\x03"), "big") % (n - 1) + 1
    s = _inv(k * blind % n, n) * blind % n * (e + r * d) % n
    if not s:
        return None
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _nonces(d, e):
    # RFC 6979 section 3.2 for qlen = hlen = 256: the candidate nonces k in
    # [1, N-1], each with the DRBG's HMAC key and V that produced it.
    x_octets = d.to_bytes(32, "big")
    h_octets = (e % N).to_bytes(32, "big")  # bits2octets
    v = b"\x01" * 32
    mac = HmacSha256(bytes(32))
    mac = HmacSha256(mac.digest(v, b"\x00", x_octets, h_octets))
    v = mac.digest(v)
    mac = HmacSha256(mac.digest(v, b"\x01", x_octets, h_octets))
    v = mac.digest(v)
    while True:
        v = mac.digest(v)
        k = int.from_bytes(v, "big")
        if 0 < k < N:
            yield k, mac, v
        mac = HmacSha256(mac.digest(v, b"\x00"))
        v = mac.digest(v)


def sign_digest(d, digest):
    # ECDSA signature r || s (32 + 32 bytes, big-endian) of a SHA-256 digest,
    # k by RFC 6979 (HMAC-DRBG with SHA-256): deterministic, no low-s
    # normalisation.
    _check_key(d)
    e = _digest_int(digest)
    for k, mac, v in _nonces(d, e):
        sig = _sign_with(d, e, k, mac, v)
        if sig:
            return sig


def verify_digest(pub, digest, sig):
    # None if sig (r || s, 64 bytes) is a valid signature of the SHA-256
    # digest by pub = (x, y); raises SignatureError otherwise. Checked in this
    # order: digest, length, r range, s range, point, mismatch.
    e = _digest_int(digest)
    if not isinstance(sig, (bytes, bytearray, memoryview)) or len(sig) != 64:
        raise SignatureError("length", "signature must be 64 bytes r||s")
    sig = bytes(sig)
    n = N
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if not 0 < r < n:
        raise SignatureError("r range", "r not in [1, N-1]")
    if not 0 < s < n:
        raise SignatureError("s range", "s not in [1, N-1]")
    if not isinstance(pub, (tuple, list)) or len(pub) != 2:
        raise SignatureError("point", "public key must be (x, y)")
    qx, qy = pub
    check_public(qx, qy)
    w = _inv(s, n)
    X, Y, Z = _mul_public(e * w % n, r * w % n, qx, qy)
    p = _P
    if Z:
        zz = Z * Z % p
        # x(R) mod N == r, x(R) = X/Z^2 in [0, P-1]: x(R) is r or r + N
        if (X - r * zz) % p == 0 or (r + n < p and (X - (r + n) * zz) % p == 0):
            return None
    raise SignatureError("mismatch", "signature does not verify")
