# AES block primitive and AES-128-GCM/GMAC (lib/aes.py, lib/aesgcm.py).
import sys

from fuzzing import Xorshift32, iterations
from mpcompat import raises

import aes
import aesgcm
from aesgcm import AesGcm, AuthenticationError, GcmError


def h(text):
    return bytes.fromhex(text)


# McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", revised 2005,
# Appendix B, test cases 1-6 (AES-128): key, IV, plaintext, AAD, ciphertext, tag.
K0 = "00000000000000000000000000000000"
K1 = "feffe9928665731c6d6a8f9467308308"
P = ("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
     "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255")
A = "feedfacedeadbeeffeedfacedeadbeefabaddad2"
C3 = ("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
      "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985")
MCGREW_VIEGA = (
    (K0, "000000000000000000000000", "", "", "", "58e2fccefa7e3061367f1d57a4e7455a"),
    (K0, "000000000000000000000000", "00000000000000000000000000000000", "",
     "0388dace60b6a392f328c2b971b2fe78", "ab6e47d42cec13bdf53a67b21257bddf"),
    (K1, "cafebabefacedbaddecaf888", P, "", C3, "4d5c2af327cd64a62cf35abd2ba6fab4"),
    (K1, "cafebabefacedbaddecaf888", P[:120], A, C3[:120], "5bc94fbc3221a5db94fae95ae7121a47"),
    # test case 5: a 64-bit IV (J0 comes from GHASH of the IV)
    (K1, "cafebabefacedbad", P[:120], A,
     "61353b4c2806934a777ff51fa22a4755699b2a714fcdc6f83766e5f97b6c7423"
     "73806900e49f24b22b097544d4896b424989b5e1ebac0f07c23f4598", "3612d2e79e3b0785561be14aaca2fccb"),
    # test case 6: a 480-bit IV
    (K1, "9313225df88406e555909c5aff5269aa6a7a9538534f7da1e4c303d2a318a728"
     "c3c0c95156809539fcf0e2429a6b525416aedbf5a0de6a57a637b39b", P[:120], A,
     "8ce24998625615b603a033aca13fb894be9112a5c3a211a8ba262a3cca7e2ca7"
     "01e4a9a4fba43c90ccdcb281d48c7c6fd62875d2aca417034c34aee5", "619cc5aefffe0bfa462af43c1699d050"),
)


def test_aes_block_fips197_example():
    # FIPS 197, Appendix C.1 (AES-128)
    out = bytearray(16)
    aes.Aes128(h("000102030405060708090a0b0c0d0e0f")).encrypt_block(h("00112233445566778899aabbccddeeff"), out)
    assert bytes(out) == h("69c4e0d86a7b0430d8cdb78070b4c55a"), bytes(out).hex()


def test_aes_block_in_place():
    buf = bytearray(16)
    aes.Aes128(bytes(16)).encrypt_block(buf, buf)
    # E(0^128, 0^128) is GCM's hash key H of test cases 1-2 (McGrew & Viega)
    assert bytes(buf) == h("66e94bd4ef8a2c3b884cfa59ca342b2e"), bytes(buf).hex()


def test_aes_rejects_other_key_sizes():
    raises(ValueError, aes.Aes128, bytes(24))
    raises(ValueError, aesgcm.AesGcm, bytes(15))


def test_mcgrew_viega_vectors_encrypt():
    for i, (k, iv, p, a, c, t) in enumerate(MCGREW_VIEGA):
        ct, tag = AesGcm(h(k)).encrypt(h(iv), h(p), h(a), 16)
        assert ct == h(c), "case %d ct %s" % (i + 1, ct.hex())
        assert tag == h(t), "case %d tag %s" % (i + 1, tag.hex())


def test_mcgrew_viega_vectors_decrypt():
    for i, (k, iv, p, a, c, t) in enumerate(MCGREW_VIEGA):
        got = AesGcm(h(k)).decrypt(h(iv), h(c), h(a), h(t))
        assert got == h(p), "case %d" % (i + 1)


def test_truncated_tag_is_the_prefix():
    # test case 4 with 12..16-byte tags: the tag is cut, nothing else changes
    g = AesGcm(h(K1))
    iv = h("cafebabefacedbaddecaf888")
    for n in (12, 13, 14, 15, 16):
        ct, tag = g.encrypt(iv, h(P[:120]), h(A), n)
        assert tag == h("5bc94fbc3221a5db94fae95ae7121a47")[:n], tag.hex()
        assert g.decrypt(iv, ct, h(A), tag) == h(P[:120])


def test_tag_length_limits():
    g = AesGcm(h(K1))
    iv = h("cafebabefacedbaddecaf888")
    raises(GcmError, g.encrypt, iv, b"x", b"", 11)
    raises(GcmError, g.encrypt, iv, b"x", b"", 17)
    raises(GcmError, g.gmac, iv, b"x", 8)
    raises(GcmError, g.decrypt, iv, b"x", b"", bytes(4))
    raises(GcmError, g.encrypt, b"", b"x", b"", 12)  # empty IV


def test_wrong_tag_ciphertext_or_aad_fail():
    g = AesGcm(h(K1))
    iv = h("cafebabefacedbaddecaf888")
    ct, tag = g.encrypt(iv, h(P), h(A), 12)
    bad_tag = bytearray(tag)
    bad_tag[11] ^= 1
    raises(AuthenticationError, g.decrypt, iv, ct, h(A), bytes(bad_tag))
    bad_ct = bytearray(ct)
    bad_ct[0] ^= 0x80
    raises(AuthenticationError, g.decrypt, iv, bytes(bad_ct), h(A), tag)
    raises(AuthenticationError, g.decrypt, iv, ct, h(A)[:-1], tag)
    raises(AuthenticationError, g.decrypt, iv, ct[:-1], h(A), tag)
    raises(AuthenticationError, g.decrypt, h("cafebabefacedbaddecaf889"), ct, h(A), tag)
    raises(AuthenticationError, AesGcm(h(K0)).decrypt, iv, ct, h(A), tag)
    exc = raises(GcmError, g.decrypt, iv, ct, h(A), bytes(bad_tag))
    assert isinstance(exc, AuthenticationError), exc


def test_no_plaintext_is_released_on_failure():
    g = AesGcm(h(K1))
    iv = h("cafebabefacedbaddecaf888")
    ct, tag = g.encrypt(iv, h(P), b"", 12)
    out = bytearray(b"\xaa" * len(ct))
    raises(AuthenticationError, g.decrypt_into, iv, ct, b"", tag[:11] + bytes((tag[11] ^ 0xFF,)), out)
    assert out == bytearray(b"\xaa" * len(ct)), "buffer untouched"
    assert g.decrypt_into(iv, ct, b"", tag, out) == len(ct)
    assert bytes(out) == h(P)
    raises(GcmError, g.decrypt_into, iv, ct, b"", tag, bytearray(3))


def test_every_length_round_trips():
    g = AesGcm(h(K1))
    data = bytes(range(256)) * 2
    for n in list(range(0, 40)) + [63, 64, 65, 255, 256, 257, 511]:
        iv = bytes((n & 0xFF,)) * 12
        aad = data[:n % 37]
        ct, tag = g.encrypt(iv, data[:n], aad)
        assert len(ct) == n and len(tag) == 12
        assert g.decrypt(iv, ct, aad, tag) == data[:n], n


def test_memoryview_inputs():
    g = AesGcm(h(K1))
    iv = h("cafebabefacedbaddecaf888")
    frame = b"hdr" + h(C3) + h("4d5c2af327cd64a62cf35abd2ba6fab4") + b"end"
    mv = memoryview(frame)
    got = g.decrypt(iv, mv[3:67], b"", mv[67:83])
    assert got == h(P)


def test_gmac_is_gcm_without_plaintext():
    # test case 1's tag is GMAC(empty); GCM tag of case 4 recomputed as GMAC
    # over the AAD alone differs from the GCM tag (the ciphertext counts)
    assert AesGcm(h(K0)).gmac(h("000000000000000000000000"), b"", 16) == h("58e2fccefa7e3061367f1d57a4e7455a")
    g = AesGcm(h(K1))
    iv = h("cafebabefacedbaddecaf888")
    assert g.gmac(iv, h(A)) == g.encrypt(iv, b"", h(A))[1]


def test_crypt_unauthenticated_is_gcm_counter_mode():
    # GCM ciphertext without the tag; applying it twice gives the input back
    g = AesGcm(h(K1))
    iv = h("cafebabefacedbaddecaf888")
    assert g.crypt_unauthenticated(iv, h(P)) == h(C3)
    assert g.crypt_unauthenticated(iv, h(C3)) == h(P)


def test_counter_blocks_follow_j0():
    # SP 800-38D 7.1: with a 96-bit IV, J0 = IV | 00000001 and the keystream
    # blocks are E(IV | 00000002), E(IV | 00000003), ...
    g = AesGcm(h(K1))
    iv = h("cafebabefacedbaddecaf888")
    two = g.crypt_unauthenticated(iv, bytes(32))
    ks = bytearray(16)
    aes.Aes128(h(K1)).encrypt_block(iv + h("00000003"), ks)
    assert two[16:] == bytes(ks), two.hex()


def test_block_loops_allocate_nothing():
    # The per-block loops (counter mode, GHASH) run under heap_lock on
    # MicroPython; on CPython (where every int is an object) only the result
    # is checked.
    lock = unlock = None
    if sys.implementation.name == "micropython":
        import micropython

        lock, unlock = micropython.heap_lock, micropython.heap_unlock
    g = AesGcm(h(K1))
    g._set_j0(h("cafebabefacedbaddecaf888"))
    src = h(P)
    out = bytearray(len(src))
    if lock:
        lock()
    try:
        g._gctr(src, out)
        g._ghash_blocks(out, 0, len(out))
    finally:
        if unlock:
            unlock()
    assert bytes(out) == h(C3), bytes(out).hex()
    g._ghash_lengths(0, len(out))
    ek = bytearray(16)
    aes.Aes128(h(K1)).encrypt_block(h("cafebabefacedbaddecaf888") + h("00000001"), ek)
    tag = bytes(a ^ b for a, b in zip(g._ghash_result(), ek))
    assert tag == h("4d5c2af327cd64a62cf35abd2ba6fab4"), tag.hex()


def test_fuzz_any_change_fails_authentication():
    # Flip one random bit of ciphertext, tag or AAD: always AuthenticationError.
    g = AesGcm(h(K1))
    iv = h("cafebabefacedbaddecaf888")
    aad = h(A)
    ct, tag = g.encrypt(iv, h(P)[:50], aad)
    rng = Xorshift32(0x1234567)
    for _ in range(iterations(300) // 10 + 1):
        which = rng.below(3)
        state = rng.next()
        c2, t2, a2 = bytearray(ct), bytearray(tag), bytearray(aad)
        target = (c2, t2, a2)[which]
        target[state % len(target)] ^= 1 << ((state >> 8) & 7)
        raises(AuthenticationError, g.decrypt, iv, bytes(c2), bytes(a2), bytes(t2))
