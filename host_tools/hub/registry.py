"""The hub's device registry (docs/hub.md, "The registry"): installers
register, rotate and revoke device keys with signed requests; `pgw
provision` (host_tools/provision.py) sends them.

A request is a COSE_Sign1 (ES256) signed by an installer key the hub was
started with (`pgw hub --installer-key FILE`), with external_aad
b"pgw-registry-1", published on pgw/1/<community>/installer/register, at
most 1024 bytes. Its payload is a CBOR map:

    1 action     1 register, 2 revoke
    2 community  text: the hub's community
    3 ts         uint, unix seconds, within MAX_SKEW_S of the hub's wall clock
    4 nonce      16 bytes: two requests never have the same payload
    5 device     register: the device's COSE_Key (its kid: SHA-256 of the point, first 8 bytes)
    6 kid        revoke: the device's kid
    7 name       register, optional: 1..64 characters, the household's label
    8 replaces   register, optional: the kid this key replaces (a rotation)

Rules:
- a request is applied once: the SHA-256 of its payload keys the
  `registrations` table, so a replay is refused (`replay`), in the
  freshness window too;
- a revoked kid never comes back: registering it again is refused
  (`revoked`), and ingest refuses its messages (`rejected_revoked`);
- a rotation stores the request, registers the new key and revokes the
  old one in one transaction (one row);
- every accepted request is kept whole, with its installer's COSE_Key, in
  the registry's own file beside the ledger (hub.registry.sqlite: the
  ledger holds only what `pgw ledger verify` checks), so an auditor can
  check without the hub who registered or revoked a key (check_file());
  that file decides: the ledger's devices table and ingest follow it, and
  a start re-applies what a hub killed after the commit had not;
- a request that names an installer gets an answer, signed by the hub with
  the same external_aad, on pgw/1/<community>/installer/<installer kid>/result:
  {1: "ok" or the refusal's reason, 2: SHA-256 of the request's payload,
  3: the device's kid or null, 4: the hub's time, 5: a readable line};
- what is refused changes nothing and is counted (`rejected_<reason>`).

The freshness check uses the wall clock even when the hub runs a simulated
one: the installer's laptop keeps real time."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from host_tools.hub import cose_es256
from host_tools.hub.cose_es256 import Rejected, decode_cose_key, encode_cose_key, kid_of, loads_exact
from host_tools.hub.ratelimit import DeviceBudgets

AAD = b"pgw-registry-1"
MAX_REQUEST = 1024
MAX_SKEW_S = 300
REGISTER, REVOKE = 1, 2
ACTION, COMMUNITY, TS, NONCE, DEVICE, KID, NAME, REPLACES = 1, 2, 3, 4, 5, 6, 7, 8
OUTCOME, REQUEST, RESULT_KID, RESULT_TS, DETAIL = 1, 2, 3, 4, 5
# Installers send a few requests a day: a burst of 20, then one every 2 s.
# Over it a request is dropped before its signature is checked.
REQUEST_RATE, REQUEST_BURST = 0.5, 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS registrations (
    request BLOB PRIMARY KEY,     -- SHA-256 of the request's payload
    received REAL NOT NULL,
    installer BLOB NOT NULL,      -- the installer's kid
    installer_key BLOB NOT NULL,  -- its COSE_Key: the request checks without the hub
    action INTEGER NOT NULL,      -- 1 register, 2 revoke
    kid BLOB NOT NULL,            -- the device
    device_key BLOB,              -- register: its COSE_Key, deterministic encoding
    name TEXT,                    -- register: the name it is listed under
    replaces BLOB,                -- a rotation: the kid revoked with it
    ts INTEGER NOT NULL,
    data BLOB NOT NULL            -- the COSE_Sign1 as received
);
CREATE INDEX IF NOT EXISTS registrations_by_kid ON registrations (kid);
"""


def registry_path(ledger_path):
    """The registry's file beside the ledger: hub.sqlite -> hub.registry.sqlite."""
    if str(ledger_path) == ":memory:":
        return ":memory:"
    p = Path(ledger_path)
    return str(p.with_name(p.stem + ".registry" + p.suffix))


def register_topic(community):
    return f"pgw/1/{community}/installer/register"


def result_topic(community, installer_kid):
    return f"pgw/1/{community}/installer/{installer_kid.hex()}/result"


# ---- COSE_Sign1 with the registry's external_aad (RFC 9052 section 4.4) ----


def sign(private_key, payload):
    """A COSE_Sign1 of `payload` under AAD, kid from the key."""
    return cose_es256.sign1(private_key, payload, AAD)


def verify(data, public_key):
    """A COSE_Sign1 under AAD signed by `public_key` -> its payload bytes."""
    kid, protected, payload, sig = cose_es256.open_sign1(data, MAX_REQUEST)
    if kid != kid_of(public_key):
        raise Rejected("kid", f"signed by {kid.hex()}, not {kid_of(public_key).hex()}")
    cose_es256.check_signature(public_key, protected, payload, sig, AAD)
    return payload


def load_public_key(path):
    """An installer's public key from FILE -> (kid, public key, COSE_Key):
    a COSE_Key (binary, or hex text as `pgw provision keygen` prints it),
    or a PEM public key. A PEM private key is refused: it stays with the installer."""
    raw = Path(path).read_bytes()
    if raw.lstrip().startswith(b"-----BEGIN"):
        if b"PRIVATE KEY" in raw:
            raise ValueError(f"{path} is a private key: give the hub the public one (installer.cose)")
        pub = serialization.load_pem_public_key(raw)
        if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
            raise ValueError(f"{path}: not a P-256 key")
        return kid_of(pub), pub, encode_cose_key(pub)
    try:
        raw = bytes.fromhex(raw.decode().strip())
    except (UnicodeDecodeError, ValueError):
        pass
    try:
        kid, pub = decode_cose_key(raw)
    except Rejected as e:
        raise ValueError(f"{path}: not a P-256 COSE_Key ({e})") from None
    return kid, pub, encode_cose_key(pub)


def _without_kid(cose_key):
    """A COSE_Key's map without its kid (label 2) -> (canonical bytes, the kid it claimed)."""
    try:
        m = loads_exact(cose_key)
    except Exception:
        raise Rejected("key", "the device's COSE_Key is not CBOR") from None
    if not isinstance(m, Mapping):
        raise Rejected("key", "the device's COSE_Key is not a map")
    claimed = m.get(2)
    return cbor2.dumps({k: v for k, v in m.items() if k != 2}, canonical=True), claimed


def decode_request(payload):
    """A request's payload -> its map; shapes and sizes checked (not the community or time)."""
    try:
        p = loads_exact(payload)
    except Exception:
        raise Rejected("payload", "not CBOR") from None
    if not isinstance(p, Mapping) or not p:
        raise Rejected("payload", "not a map")
    kinds = {ACTION: int, COMMUNITY: str, TS: int, NONCE: bytes, DEVICE: bytes, KID: bytes, NAME: str,
             REPLACES: bytes}
    for k, v in p.items():
        if type(k) is not int or k not in kinds:
            raise Rejected("payload", f"unknown field {k!r}")
        if type(v) is not kinds[k]:
            raise Rejected("payload", f"field {k} must be {kinds[k].__name__}")
    for k in (ACTION, COMMUNITY, TS, NONCE):
        if k not in p:
            raise Rejected("payload", f"field {k} missing")
    if p[ACTION] not in (REGISTER, REVOKE):
        raise Rejected("payload", f"action {p[ACTION]}: 1 register or 2 revoke")
    if not 0 <= p[TS] < 2 ** 32 or len(p[NONCE]) != 16 or not 1 <= len(p[COMMUNITY]) <= 32:
        raise Rejected("payload", "ts, nonce (16 bytes) or community (1..32) out of range")
    if p[ACTION] == REGISTER:
        if DEVICE not in p or KID in p or len(p[DEVICE]) > 256:
            raise Rejected("payload", "register takes the device's COSE_Key (5), at most 256 bytes, and no kid (6)")
        if NAME in p and not 1 <= len(p[NAME]) <= 64:
            raise Rejected("payload", "name must be 1..64 characters")
        if REPLACES in p and len(p[REPLACES]) != 8:
            raise Rejected("payload", "replaces must be an 8-byte kid")
    elif KID not in p or len(p[KID]) != 8 or any(k in p for k in (DEVICE, NAME, REPLACES)):
        raise Rejected("payload", "revoke takes the device's 8-byte kid (6) alone")
    return p


class Registry:
    """store: the hub's Store (the ledger); key: its HubKey; ingest: its
    Ingest (keys registered and revoked here take effect there);
    installer_keys: COSE_Keys (bytes) the hub trusts; clock: wall time for
    freshness; path: the registry's file (default: beside the ledger)."""

    def __init__(self, store, key, ingest, community, installer_keys=(), clock=time.time,
                 max_skew_s=MAX_SKEW_S, budget=None, path=None):
        self.store, self.key, self.ingest, self.community = store, key, ingest, community
        self.clock, self.max_skew_s = clock, max_skew_s
        self.budget = budget or DeviceBudgets(REQUEST_RATE, REQUEST_BURST)
        self.counts = Counter()
        self._lock = threading.Lock()  # one request at a time: its checks and its transaction
        self.installers = {}  # kid -> (public key, COSE_Key)
        for cose_key in installer_keys:
            self.trust(cose_key)
        self.path = path or registry_path(store.path)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._follow()

    def _follow(self):
        """Ingest and the ledger's devices as the registry says: the revoked
        kids refused, and a registration the ledger lacks (the hub was killed
        between the two commits) applied again."""
        self.ingest.revoked.update(self._revoked())
        have = {bytes(k) for k, _, _ in self.store.devices()}
        for kid, device_key, name in self.db.execute(
                "SELECT kid, device_key, name FROM registrations WHERE action = ? ORDER BY received", (REGISTER,)):
            kid = bytes(kid)
            if kid not in have and kid not in self.ingest.revoked:
                self.ingest.register(bytes(device_key), name)
                have.add(kid)
                self.counts["reapplied"] += 1

    def _revoked(self):
        rows = self.db.execute("SELECT kid FROM registrations WHERE action = ? UNION "
                               "SELECT replaces FROM registrations WHERE replaces IS NOT NULL", (REVOKE,))
        return {bytes(k) for (k,) in rows}

    def close(self):
        with self._lock:
            self.db.close()

    def trust(self, cose_key):
        """Trust an installer's public COSE_Key -> its kid."""
        kid, pub = decode_cose_key(cose_key)
        self.installers[kid] = (pub, encode_cose_key(pub))
        return kid

    def subscriptions(self):
        return [register_topic(self.community)]

    def owns(self, topic):
        return topic == register_topic(self.community)

    def handle(self, topic, data):
        """A request -> [(topic, answer)] to publish (QoS 1), maybe none."""
        if not self.budget.allow("register"):
            self.counts["rejected_rate_limited"] += 1
            return []
        with self._lock:
            installer = None
            digest = kid = None
            try:
                installer, protected, payload, sig = cose_es256.open_sign1(data, MAX_REQUEST)
                digest = hashlib.sha256(payload).digest()
                known = self.installers.get(installer)
                if known is None:
                    raise Rejected("unknown_installer", f"installer {installer.hex()} is not trusted by this hub")
                cose_es256.check_signature(known[0], protected, payload, sig, AAD)
                p = decode_request(payload)
                kid = p.get(KID)
                outcome, detail, kid = self._apply(p, digest, installer, known[1], data)
            except Rejected as e:
                self.counts["rejected_" + e.reason] += 1
                if installer is None:
                    return []  # nobody to answer
                outcome, detail = e.reason, str(e)
            return [(result_topic(self.community, installer), self._answer(outcome, digest, kid, detail))]

    def _answer(self, outcome, digest, kid, detail):
        body = {OUTCOME: outcome, REQUEST: digest, RESULT_KID: kid, RESULT_TS: int(time.time()), DETAIL: detail}
        return sign(self.key.private_key, cbor2.dumps(body, canonical=True))

    def _apply(self, p, digest, installer, installer_key, data):
        """The checks that need the hub's state, then one transaction -> (outcome, detail, kid)."""
        if p[COMMUNITY] != self.community:
            raise Rejected("community", f"for community {p[COMMUNITY]!r}, this hub is {self.community!r}")
        now = self.clock()
        if p[TS] < now - self.max_skew_s:
            raise Rejected("stale", f"ts {p[TS]} is more than {self.max_skew_s} s before the hub's {int(now)}")
        if p[TS] > now + self.max_skew_s:
            raise Rejected("future", f"ts {p[TS]} is more than {self.max_skew_s} s after the hub's {int(now)}")
        device_key = replaces = None
        if p[ACTION] == REGISTER:
            plain, claimed = _without_kid(p[DEVICE])
            kid, pub = decode_cose_key(plain)
            if claimed is not None and claimed != kid:
                raise Rejected("kid_mismatch", f"the COSE_Key says kid {_hex(claimed)}, its key is {kid.hex()}")
            device_key = encode_cose_key(pub)
            replaces = p.get(REPLACES)
            if replaces == kid:
                raise Rejected("payload", "a key cannot replace itself")
        else:
            kid = p[KID]
        names = {bytes(k): n for k, _, n in self.store.devices()}
        # a name carries over: to a re-registration without one, and to the key that replaces it
        name = p.get(NAME) or names.get(kid) or names.get(replaces)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM registrations WHERE request = ?", (digest,)).fetchone():
                raise Rejected("replay", "this request was applied before")
            revoked = self._revoked()
            for k in (kid, replaces):
                if k is not None and k in revoked:
                    raise Rejected("revoked", f"kid {k.hex()} was revoked; a revoked key never comes back")
            if p[ACTION] == REVOKE and kid not in names:
                raise Rejected("unknown_kid", f"no device {kid.hex()} is registered")
            if replaces is not None and replaces not in names:
                raise Rejected("unknown_kid", f"the key to replace, {replaces.hex()}, is not registered")
            db.execute("INSERT INTO registrations (request, received, installer, installer_key, action, kid,"
                       " device_key, name, replaces, ts, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (digest, time.time(), installer, installer_key, p[ACTION], kid, device_key,
                        name if device_key else None, replaces, p[TS], data))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        # committed: the ledger and ingest follow (a start re-applies this if the hub dies here)
        gone = kid if p[ACTION] == REVOKE else replaces
        if gone is not None:
            self.ingest.revoked.add(gone)
        if device_key is not None:
            self.ingest.register(device_key, name)
        if p[ACTION] == REVOKE:
            self.counts["revoked"] += 1
            return "ok", f"revoked {kid.hex()}", kid
        self.counts["rotated" if replaces else "registered"] += 1
        return "ok", (f"registered {kid.hex()}" + (f" in place of {replaces.hex()} (revoked)" if replaces else "")), kid

    def registrations(self, kid=None):
        """[(installer kid, action, device kid, replaces, ts, signed request)], oldest first."""
        q = "SELECT installer, action, kid, replaces, ts, data FROM registrations"
        with self._lock:
            rows = self.db.execute(q + (" WHERE kid = ? OR replaces = ?" if kid else "") + " ORDER BY received",
                                   (kid, kid) if kid else ()).fetchall()
        return [(bytes(i), a, bytes(k), bytes(r) if r is not None else None, ts, bytes(d))
                for i, a, k, r, ts, d in rows]


def check_file(path):
    """An auditor's check of a registry file, without the hub -> [problems]
    (empty: all good): each request verifies under the installer key kept
    with it, is the request its row's key names, and says what its row says."""
    uri = "file:" + str(Path(path).resolve()) + "?mode=ro"
    db = sqlite3.connect(uri, uri=True)
    try:
        rows = db.execute("SELECT request, installer, installer_key, action, kid, device_key, replaces, ts, data"
                          " FROM registrations ORDER BY received").fetchall()
    finally:
        db.close()
    problems = []
    for request, installer, installer_key, action, kid, device_key, replaces, ts, data in rows:
        where = "request %s" % bytes(request).hex()[:16]
        try:
            ikid, pub = decode_cose_key(bytes(installer_key))
            payload = verify(bytes(data), pub)
            p = decode_request(payload)
            if ikid != bytes(installer) or hashlib.sha256(payload).digest() != bytes(request):
                raise Rejected("row", "installer or request hash")
            if action == REGISTER:
                dk = bytes(device_key)
                dkid, dpub = decode_cose_key(dk)
                if dk != encode_cose_key(dpub) or dkid != decode_cose_key(_without_kid(p[DEVICE])[0])[0]:
                    raise Rejected("row", "the device key is not the request's")
            want = (p[ACTION], p[KID] if action == REVOKE else dkid, p.get(REPLACES), p[TS])
            if want != (action, bytes(kid), None if replaces is None else bytes(replaces), ts):
                raise Rejected("row", "the row does not say what the request says")
        except (Rejected, TypeError, ValueError) as e:
            problems.append(f"{where}: {e}")
    return problems


def _hex(v):
    return v.hex() if isinstance(v, bytes) else repr(v)[:40]
