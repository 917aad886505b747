# Vectors for tests/lib/test_p256.py (both interpreters), and a reader for the
# NIST CAVP response files shipped by the cryptography-vectors package.
import os

# RFC 6979, appendix A.2.5 (ECDSA, 256 bits, prime field), key pair and the
# SHA-256 signatures of "sample" and "test": (message, k, r, s).
RFC6979_X = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
RFC6979_UX = 0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6
RFC6979_UY = 0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299
RFC6979_SHA256 = (
    (b"sample",
     0xA6E3C57DD01ABE90086538398355DD4C3B17AA873382B0F24D6129493D8AAD60,
     0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716,
     0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8),
    (b"test",
     0xD16B6AE827F17175E040871A1C7EC3500192C4C92677336EC2537ACAEE0008E0,
     0xF1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367,
     0x019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083),
)

# RFC 4231, section 4 (HMAC-SHA-256 test cases 1-7): key, data, MAC (case 5
# gives the MAC truncated to 128 bits).
_LONG_KEY = b"\xaa" * 131
RFC4231 = (
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
    (_LONG_KEY, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (_LONG_KEY, b"This is a test using a larger than block-size key and a larger than "
     b"block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
)

# The one odd nonce (and N minus it) for which the comb's last addition meets
# a doubling: k = N + 2c where c < 0 is the value of k's own column 0 (the
# sum of its +-2^(32u) digits, u = 0..7), so the partial sum before the last
# addition equals c (mod N). Found by trying all 256 column-0 sign patterns;
# lib/p256.py falls back to its general multiplication there.
COMB_DOUBLING_K = 0xFFFFFFFD00000002FFFFFFFDFFFFFFFDBCE6FAAFA7179E86F3B9CAC0FC632553

SIGVER = "asymmetric/ECDSA/FIPS_186-3/SigVer.rsp"
PKV = "asymmetric/ECDSA/FIPS_186-3/PKV.rsp"


def vectors_dir():
    # The cryptography_vectors package directory: importable on CPython; under
    # MicroPython tests/conftest.py exports it as PGW_CRYPTOGRAPHY_VECTORS.
    getenv = getattr(os, "getenv", None)
    found = getenv("PGW_CRYPTOGRAPHY_VECTORS") if getenv else None
    if found:
        return found
    try:
        import cryptography_vectors
    except ImportError:
        return None
    path = cryptography_vectors.__file__
    return path[:path.rfind("/")]


def rsp_records(name, section):
    # The records (dicts of "Key = value" lines, blank-line separated) of one
    # [section] of a NIST CAVP .rsp file under vectors_dir(); None if the
    # package is not there.
    base = vectors_dir()
    if base is None:
        return None
    records = []
    record = {}
    inside = False
    with open(base + "/" + name) as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                if inside:
                    break
                inside = line == "[" + section + "]"
            elif inside and line and not line.startswith("#"):
                key, value = line.split(" = ", 1)
                record[key] = value
            elif record:
                records.append(record)
                record = {}
    if record:
        records.append(record)
    return records
