# HMAC-SHA256 (RFC 2104, FIPS 198-1) on hashlib.sha256: MicroPython has no
# hmac module, and its sha256 objects cannot be copied, so a prepared key
# keeps its two padded 64-byte blocks and hashes them again per message.
import hashlib

from compat import const

_BLOCK = const(64)
# 0x36 and 0x5c in every byte of a block, as one integer each
_IPAD = const(((1 << 8 * _BLOCK) - 1) // 0xFF * 0x36)
_OPAD = const(((1 << 8 * _BLOCK) - 1) // 0xFF * 0x5C)


class HmacSha256:
    # A key prepared once for several messages (RFC 6979 nonces use each key
    # two to four times).
    def __init__(self, key):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        # XOR of the whole block as one integer: a byte loop is ~20x slower
        # on MicroPython.
        k = int.from_bytes(bytes(key) + bytes(_BLOCK - len(key)), "big")
        self._inner = (k ^ _IPAD).to_bytes(_BLOCK, "big")
        self._outer = (k ^ _OPAD).to_bytes(_BLOCK, "big")

    def digest(self, *parts):
        # HMAC of the concatenation of parts (bytes-like), 32 bytes
        h = hashlib.sha256(self._inner)
        for part in parts:
            h.update(part)
        h2 = hashlib.sha256(self._outer)
        h2.update(h.digest())
        return h2.digest()


def hmac_sha256(key, data):
    return HmacSha256(key).digest(data)


def equal(a, b):
    # Constant-time comparison of two byte strings (time depends on the
    # length only), for comparing MACs.
    if len(a) != len(b):
        return False
    diff = 0
    for x, y in zip(a, b):
        diff |= x ^ y
    return diff == 0
