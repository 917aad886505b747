# AES-128 block primitive (one ECB block at a time): MicroPython's cryptolib on
# the device, the `cryptography` package on CPython. GCM is built on this in aesgcm.
from compat import const

try:
    import cryptolib as _cryptolib
except ImportError:
    _cryptolib = None
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_MODE_ECB = const(1)  # cryptolib.aes mode 1 = ECB


class Aes128:
    def __init__(self, key):
        if len(key) != 16:
            raise ValueError("AES-128 key must be 16 bytes")
        key = bytes(key)
        if _cryptolib is not None:
            # Bound once: calling it later allocates nothing (checked with heap_lock).
            self._encrypt = _cryptolib.aes(key, _MODE_ECB).encrypt
            self._update = None
        else:
            self._encrypt = None
            self._update = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update

    def encrypt_block(self, src, dst):
        # Encrypt 16 bytes from src into the preallocated 16-byte buffer dst
        # (src and dst may be the same buffer).
        if self._encrypt is not None:
            self._encrypt(src, dst)
        else:
            dst[0:16] = self._update(bytes(src[0:16]))
