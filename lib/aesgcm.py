# AES-128-GCM and GMAC (NIST SP 800-38D) over the aes.Aes128 block primitive.
# GHASH uses Shoup's 4-bit tables with each 128-bit value held as five small
# ints (28+28+28+28+16 bits): below 2**30, so no bignum and no heap allocation
# per block on 32-bit ports. Not re-entrant: one AesGcm reuses its buffers.
from compat import const

import aes


class GcmError(ValueError):
    pass


class AuthenticationError(GcmError):
    # wrong key, or the data or its tag were altered: no plaintext is released
    pass


_MIN_TAG = const(12)
_MAX_TAG = const(16)
_M28 = const(0xFFFFFFF)

# Shoup's reduction of the four bits shifted out, pre-shifted into word 0
# (bits 100..127): 0x0000, 0x1c20, ... 0xb5e0 (as in mbedTLS's gcm.c) << 12.
_R = const((0x0000000, 0x1C20000, 0x3840000, 0x2460000, 0x7080000, 0x6CA0000, 0x48C0000, 0x54E0000,
      0xE100000, 0xFD20000, 0xD940000, 0xC560000, 0x9180000, 0x8DA0000, 0xA9C0000, 0xB5E0000))


def _check_tag_len(n):
    if n < _MIN_TAG or n > _MAX_TAG:
        raise GcmError("tag length must be 12..16 bytes")


class AesGcm:
    def __init__(self, key):
        self._enc = aes.Aes128(key).encrypt_block  # bound once: no allocation per use
        h = bytearray(16)
        self._enc(bytes(16), h)
        self._init_tables(int.from_bytes(h, "big"))
        self._y = [0, 0, 0, 0, 0]  # GHASH state, five words
        self._x = [0, 0, 0, 0, 0]  # scratch: the block being multiplied
        self._ctr = bytearray(16)  # counter block
        self._ks = bytearray(16)  # keystream block
        self._ej0 = bytearray(16)  # E(K, J0), masks the tag
        self._pad = bytearray(16)  # partial / length block

    def _init_tables(self, h):
        # M[n] = H * n for the 16 nibbles n; GCM bit order: n = 8 stands for x^0.
        m = [0] * 16
        m[8] = h
        for i in (4, 2, 1):
            v = m[i * 2]
            m[i] = (v >> 1) ^ (0xE1 << 120) if v & 1 else v >> 1
        for i in (2, 4, 8):
            for j in range(1, i):
                m[i + j] = m[i] ^ m[j]
        self._t0 = [(v >> 100) & _M28 for v in m]
        self._t1 = [(v >> 72) & _M28 for v in m]
        self._t2 = [(v >> 44) & _M28 for v in m]
        self._t3 = [(v >> 16) & _M28 for v in m]
        self._t4 = [v & 0xFFFF for v in m]

    # -- GHASH -----------------------------------------------------------

    def _ghash_blocks(self, d, off, end):
        # Absorb the full 16-byte blocks d[off:end] into the GHASH state.
        t0 = self._t0
        t1 = self._t1
        t2 = self._t2
        t3 = self._t3
        t4 = self._t4
        r = _R
        xs = self._x
        y = self._y
        z0 = y[0]
        z1 = y[1]
        z2 = y[2]
        z3 = y[3]
        z4 = y[4]
        while off < end:
            # X = Y xor block, split into the five words
            xs[0] = z4 ^ ((d[off + 14] << 8) | d[off + 15])
            xs[1] = z3 ^ (((d[off + 10] & 15) << 24) | (d[off + 11] << 16) | (d[off + 12] << 8) | d[off + 13])
            xs[2] = z2 ^ ((d[off + 7] << 20) | (d[off + 8] << 12) | (d[off + 9] << 4) | (d[off + 10] >> 4))
            xs[3] = z1 ^ (((d[off + 3] & 15) << 24) | (d[off + 4] << 16) | (d[off + 5] << 8) | d[off + 6])
            xs[4] = z0 ^ ((d[off] << 20) | (d[off + 1] << 12) | (d[off + 2] << 4) | (d[off + 3] >> 4))
            off += 16
            # Y = X * H, nibble by nibble from the least significant end
            x = xs[0]
            nib = x & 15
            x >>= 4
            z0 = t0[nib]
            z1 = t1[nib]
            z2 = t2[nib]
            z3 = t3[nib]
            z4 = t4[nib]
            cnt = 3
            for k in range(5):
                if k:
                    x = xs[k]
                for _ in range(cnt):
                    nib = x & 15
                    x >>= 4
                    rem = z4 & 15
                    z4 = (z4 >> 4) | ((z3 & 15) << 12)
                    z3 = (z3 >> 4) | ((z2 & 15) << 24)
                    z2 = (z2 >> 4) | ((z1 & 15) << 24)
                    z1 = (z1 >> 4) | ((z0 & 15) << 24)
                    z0 = (z0 >> 4) ^ r[rem] ^ t0[nib]
                    z1 ^= t1[nib]
                    z2 ^= t2[nib]
                    z3 ^= t3[nib]
                    z4 ^= t4[nib]
                cnt = 7
        y[0] = z0
        y[1] = z1
        y[2] = z2
        y[3] = z3
        y[4] = z4

    def _ghash(self, data):
        # Absorb data, zero-padded to a whole number of blocks.
        n = len(data)
        full = n & ~15
        if full:
            self._ghash_blocks(data, 0, full)
        if full < n:
            pad = self._pad
            for i in range(16):
                pad[i] = 0
            pad[0 : n - full] = data[full:n]
            self._ghash_blocks(pad, 0, 16)

    def _ghash_reset(self):
        y = self._y
        for i in range(5):
            y[i] = 0

    def _ghash_lengths(self, alen, clen):
        pad = self._pad
        pad[0:8] = (alen * 8).to_bytes(8, "big")
        pad[8:16] = (clen * 8).to_bytes(8, "big")
        self._ghash_blocks(pad, 0, 16)

    def _ghash_result(self):
        y = self._y
        v = (y[0] << 100) | (y[1] << 72) | (y[2] << 44) | (y[3] << 16) | y[4]
        return v.to_bytes(16, "big")

    # -- counter mode ----------------------------------------------------

    def _set_j0(self, iv):
        # J0 into self._ctr; E(K, J0) into self._ej0.
        n = len(iv)
        if n == 0:
            raise GcmError("empty IV")
        ctr = self._ctr
        if n == 12:
            ctr[0:12] = iv
            ctr[12] = 0
            ctr[13] = 0
            ctr[14] = 0
            ctr[15] = 1
        else:
            self._ghash_reset()
            self._ghash(iv)
            self._ghash_lengths(0, n)
            ctr[0:16] = self._ghash_result()
        self._enc(ctr, self._ej0)

    def _gctr(self, src, out):
        # out[i] = src[i] xor keystream, counter blocks from inc32(J0).
        ctr = self._ctr
        ks = self._ks
        enc = self._enc
        n = len(src)
        off = 0
        while off < n:
            # inc32: the low 32 bits of the counter block, big-endian
            i = 15
            while i >= 12:
                v = (ctr[i] + 1) & 0xFF
                ctr[i] = v
                if v:
                    break
                i -= 1
            enc(ctr, ks)
            m = n - off
            if m > 16:
                m = 16
            for i in range(m):
                out[off + i] = src[off + i] ^ ks[i]
            off += m

    def _tag_into(self, aad, ctext, dst, tag_len):
        # S = GHASH(A, C); tag = MSB(E(K, J0) xor S); J0 must be set.
        self._ghash_reset()
        self._ghash(aad)
        self._ghash(ctext)
        self._ghash_lengths(len(aad), len(ctext))
        s = self._ghash_result()
        ej0 = self._ej0
        for i in range(tag_len):
            dst[i] = s[i] ^ ej0[i]

    # -- public API --------------------------------------------------------

    def encrypt(self, iv, plaintext, aad=b"", tag_len=12):
        # -> (ciphertext, tag)
        _check_tag_len(tag_len)
        self._set_j0(iv)
        out = bytearray(len(plaintext))
        self._gctr(plaintext, out)
        tag = bytearray(tag_len)
        self._tag_into(aad, out, tag, tag_len)
        return bytes(out), bytes(tag)

    def decrypt_into(self, iv, ciphertext, aad, tag, out):
        # Verify the tag, then decrypt into out (at least len(ciphertext)
        # bytes); returns the plaintext length. Raises AuthenticationError,
        # leaving out untouched, when the tag does not match.
        tag_len = len(tag)
        _check_tag_len(tag_len)
        if len(out) < len(ciphertext):
            raise GcmError("output buffer too small")
        self._set_j0(iv)
        want = self._ks
        self._tag_into(aad, ciphertext, want, tag_len)
        diff = 0
        for i in range(tag_len):  # constant time: no early exit
            diff |= want[i] ^ tag[i]
        if diff:
            raise AuthenticationError("GCM tag mismatch")
        self._gctr(ciphertext, out)
        return len(ciphertext)

    def decrypt(self, iv, ciphertext, aad, tag):
        out = bytearray(len(ciphertext))
        self.decrypt_into(iv, ciphertext, aad, tag, out)
        return bytes(out)

    def gmac(self, iv, aad, tag_len=12):
        # GCM with empty plaintext: a MAC over aad (DLMS HLS-GMAC).
        _check_tag_len(tag_len)
        self._set_j0(iv)
        tag = bytearray(tag_len)
        self._tag_into(aad, b"", tag, tag_len)
        return bytes(tag)

    def crypt_unauthenticated(self, iv, data):
        # GCM's counter mode alone, no tag: only for DLMS "encryption only"
        # (security control 0x2x) frames, which carry none. Encrypts and decrypts.
        self._set_j0(iv)
        out = bytearray(len(data))
        self._gctr(data, out)
        return bytes(out)
