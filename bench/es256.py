"""ES256 (ECDSA P-256, SHA-256) timings: lib/p256.py on the MicroPython unix
port, and the peers on CPython (python-ecdsa, cryptography/OpenSSL).

bench/run.py calls the functions; `python bench/es256.py` prints them as JSON.
Times are the best, over rounds, of the mean per operation within a round,
after a warm-up with the comb table already built.
"""

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MICROPYTHON = Path(sys.executable).parent / "micropython"
HEAP = "160wK"  # the board budget (-X heapsize, scaled to the word size)
KEY = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721  # RFC 6979 A.2.5

# Runs under MicroPython with lib/ imported from its .py sources (compiled to
# bytecode at import: the same bytecode as from .mpy). Prints "name value" lines.
MP_SCRIPT = """
import sys
sys.path.insert(0, %(lib)r)
import gc, time, hashlib
gc.collect()
before = gc.mem_alloc()
import p256
gc.collect()
print("import_heap_raw", gc.mem_alloc() - before)
before = gc.mem_alloc()
t0 = time.ticks_us()
p256._table()
print("table_build_ms", time.ticks_diff(time.ticks_us(), t0) / 1000)
gc.collect()
print("table_heap_raw", gc.mem_alloc() - before)
d = %(key)d
pub = p256.public_key(d)
digests = [hashlib.sha256(b"reading %%d" %% i).digest() for i in range(%(ops)d)]
sigs = [p256.sign_digest(d, h) for h in digests]
for h, s in zip(digests, sigs):
    p256.verify_digest(pub, h, s)
best_sign = best_verify = 1e9
for _ in range(%(rounds)d):
    t0 = time.ticks_us()
    for h in digests:
        p256.sign_digest(d, h)
    best_sign = min(best_sign, time.ticks_diff(time.ticks_us(), t0) / 1000 / len(digests))
    t0 = time.ticks_us()
    for h, s in zip(digests, sigs):
        p256.verify_digest(pub, h, s)
    best_verify = min(best_verify, time.ticks_diff(time.ticks_us(), t0) / 1000 / len(digests))
print("sign", best_sign)
print("verify", best_verify)
"""


def _run_micropython(ops=40, rounds=5):
    code = MP_SCRIPT % {"lib": str(ROOT / "lib"), "key": KEY, "ops": ops, "rounds": rounds}
    out = subprocess.run([str(MICROPYTHON), "-X", "heapsize=" + HEAP, "-c", code],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    return {k: float(v) for k, v in (line.split() for line in out.splitlines() if line.strip())}


def _runs(processes=3):
    return [_run_micropython() for _ in range(processes)]


def micropython_ms(runs=None):
    """{"sign", "verify", "table_build_ms"} in ms on the MicroPython unix port
    (-X heapsize=160wK, lib as .py), best of 3 interpreter runs."""
    runs = runs or _runs()
    return {name: round(min(r[name] for r in runs), 3) for name in ("sign", "verify", "table_build_ms")}


def micropython_heap(runs=None):
    """Heap taken by `import p256` (with compat and hmac_sha256) and by the comb
    table, in bytes: raw on this 64-bit build, and the 32-bit equivalent
    (raw * 4 // 8; the table is byte data, so its 32-bit size is about raw)."""
    r = (runs or _runs(1))[0]
    imp, table = int(r["import_heap_raw"]), int(r["table_heap_raw"])
    return {"import_raw": imp, "import_32bit": imp * 4 // 8, "table_raw": table}


def _best_mean_ms(op, items, rounds=5):
    for item in items[:3]:
        op(item)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for item in items:
            op(item)
        best = min(best, (time.perf_counter() - t0) * 1000 / len(items))
    return round(best, 4)


def python_ecdsa_sign_ms():
    """python-ecdsa on CPython: SigningKey.sign_digest_deterministic (RFC 6979,
    SHA-256) of a 32-byte digest."""
    import ecdsa

    sk = ecdsa.SigningKey.from_secret_exponent(KEY, curve=ecdsa.NIST256p, hashfunc=hashlib.sha256)
    digests = [hashlib.sha256(b"reading %d" % i).digest() for i in range(40)]
    return _best_mean_ms(lambda h: sk.sign_digest_deterministic(h, hashfunc=hashlib.sha256), digests)


def openssl_sign_ms():
    """cryptography (OpenSSL) on CPython: ec.ECDSA(SHA256) signature of a
    30-byte message (it hashes the message itself; random nonce)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.derive_private_key(KEY, ec.SECP256R1())
    algorithm = ec.ECDSA(hashes.SHA256())
    messages = [b"reading %d of the meter ......" % i for i in range(200)]
    return _best_mean_ms(lambda m: key.sign(m, algorithm), messages)


def _lib_path():
    if str(ROOT / "lib") not in sys.path:
        sys.path.insert(0, str(ROOT / "lib"))


def table_bytes():
    _lib_path()
    import p256

    return p256.TABLE_BYTES


# A READING at the edge of the 128-byte design target (docs/protocol.md):
# seq and registers near 2**32, a 15-minute interval, an 8-byte serial.
READING = {"interval_min": 15, "import_wh": 60000, "export_wh": 60000, "import_register_wh": 4000000000,
           "export_register_wh": 4000000000, "power_w": -60000, "meter": b"12345678"}
READING_SEQ = 4000000000
READING_TS = 1750500000


def signed_reading_bytes():
    """Bytes of that READING as the trade protocol signs it (COSE_Sign1, ES256)."""
    _lib_path()
    import cose
    import p256
    from trade import messages as m

    class Key:
        def sign_digest(self, digest):
            return p256.sign_digest(KEY, digest)

    kid = cose.device_id(*p256.public_key(KEY))
    return len(m.sign(m.READING, READING_SEQ, READING_TS, READING, kid, Key()))


def signed_reading_bytes_json_jws():
    """The same reading as a JSON object signed as a compact JWS (RFC 7515,
    ES256, header alg + kid), as a JSON API would send it."""
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    _lib_path()
    import cose
    import p256

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    kid = cose.device_id(*p256.public_key(KEY)).hex()
    header = json.dumps({"alg": "ES256", "kid": kid}, separators=(",", ":")).encode()
    body = dict(READING, meter=READING["meter"].decode())
    payload = json.dumps(dict({"v": 1, "type": "reading", "seq": READING_SEQ, "ts": READING_TS}, **body),
                         separators=(",", ":")).encode()
    signing_input = b64(header) + b"." + b64(payload)
    key = ec.derive_private_key(KEY, ec.SECP256R1())
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return len(signing_input + b"." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big")))


def main():
    runs = _runs()
    print(json.dumps({
        "micropython_ms": micropython_ms(runs),
        "micropython_heap_bytes": micropython_heap(runs),
        "python_ecdsa_sign_ms": python_ecdsa_sign_ms(),
        "openssl_sign_ms": openssl_sign_ms(),
        "table_bytes": table_bytes(),
        "signed_reading_bytes": signed_reading_bytes(),
        "signed_reading_bytes_json_jws": signed_reading_bytes_json_jws(),
    }, indent=2))


if __name__ == "__main__":
    main()
