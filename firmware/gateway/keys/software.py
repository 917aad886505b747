# The software key provider: an ES256 private key generated on the device
# and kept in one file on its flash. No console command reads that file, no
# message carries it; only the public key leaves the device (as a COSE_Key).
#
# File: MAGIC, then the 32-byte private scalar, then the first 4 bytes of
# its SHA-256, so a damaged file is refused rather than used. Written to a
# temporary name and renamed, so a power cut leaves the old file or the
# new one, never half of one.

import hashlib
import os

import cose
import p256
from compat import const
from gateway.keys import KEY_FILE, KeyProviderError

_MAGIC = const(b"PGWK1")


def _check(d):
    return hashlib.sha256(d).digest()[:4]


def provision(path=KEY_FILE, randbytes=None):
    """Generate the device's key on the device, once -> SoftwareKey.
    Refuses if a key is already there: a device keeps its identity."""
    try:
        os.stat(path)
    except OSError:
        pass
    else:
        raise KeyProviderError("a key already exists in %s" % path)
    d = p256.generate(randbytes or os.urandom)
    raw = d.to_bytes(32, "big")
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.write(_MAGIC + raw + _check(raw))
    os.rename(tmp, path)
    return SoftwareKey(path)


class SoftwareKey:
    """sign_digest() and public_key() as every key provider has them."""

    def __init__(self, path=KEY_FILE):
        self.path = path
        try:
            with open(path, "rb") as f:
                data = f.read(64)
        except OSError:
            raise KeyProviderError("no key in %s: provision the device first" % path)
        raw = data[len(_MAGIC):len(_MAGIC) + 32]
        if not data.startswith(_MAGIC) or len(data) != len(_MAGIC) + 36 or data[-4:] != _check(raw):
            raise KeyProviderError("%s is damaged" % path)
        self._d = int.from_bytes(raw, "big")
        self._pub = p256.public_key(self._d)
        self.kid = cose.device_id(*self._pub)

    def public_key(self):
        return self._pub

    def sign_digest(self, digest):
        return p256.sign_digest(self._d, digest)

    def describe(self):
        return "software key in %s" % self.path

    def __repr__(self):  # never the scalar
        return "<SoftwareKey %s>" % self.path
