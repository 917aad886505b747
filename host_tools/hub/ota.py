"""The hub's part in OTA updates (docs/ota.md, "Publishing"): it announces
only bundles it has checked itself.

`pgw ota publish` puts a bundle on the broker, retained, as chunks on
`pgw/1/<c>/ota/<id>/<n>` (id: the first 8 bytes of the bundle's SHA-256 in
hex; n: 0, 1, ...; every chunk CHUNK bytes but the last), then an offer on
`pgw/1/<c>/ota/offer`: the CBOR map {1: id, 2: size, 3: sha256, 4: chunk
size}. This module, fed those messages, gathers the chunks of the offered
bundle, checks its SHA-256 and then the bundle itself with the device's own
reader under the release keys the hub trusts, and only then announces it:
an OTA message (protocol.md, type 9) signed by the hub, retained on
`pgw/1/<c>/hub/ota`, {version, size, sha256, url: "ota/<id>"}, the chunk
topics relative to `pgw/1/<c>/`. The announcement is signed again every
`every_s` seconds, so that its ts stays fresh for devices that come online
later. A new offer replaces the announced bundle once it checks out; a bad
one is refused, counted and leaves the current announcement standing.

The hub also serves the announced bundle: a device asks for chunks on
`pgw/1/<c>/dev/<kid>/otaget` with the CBOR array [id, first, count] (count
at most WINDOW) and gets them on `pgw/1/<c>/dev/<kid>/ota/<n>`, raw bytes.
A device reads one chunk at a time into a 2 KB packet buffer, so it asks
for a small window and asks again from where it stands when one goes
missing; the requests are unsigned (a chunk proves itself by the bundle's
digests) and fall under the device's message budget like its other topics.

Sans-I/O: on_message() and tick() return the (topic, payload, retain)
messages to publish.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import cbor2

CHUNK = 1024  # bytes; a device's MQTT client takes packets up to 2 KB (firmware/gateway/net/mqtt.py)
MAX_BUNDLE = 4 * 1024 * 1024
MAX_PENDING = 2  # offered bundles being gathered at once: older ones are dropped
WINDOW = 8  # chunks one request may ask for
OTA = 9
VERSION = 1


class OfferError(ValueError):
    """reason: "offer" (malformed), "size", "sha256", "bundle" (the reader
    refused it; detail says why)."""

    def __init__(self, reason, detail=""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def bundle_id(sha256: bytes) -> str:
    return sha256[:8].hex()


def chunk_topic(community: str, bid: str, n: int) -> str:
    return f"pgw/1/{community}/ota/{bid}/{n}"


def offer_payload(data: bytes, chunk=CHUNK) -> bytes:
    sha = hashlib.sha256(data).digest()
    return cbor2.dumps({1: bundle_id(sha), 2: len(data), 3: sha, 4: chunk}, canonical=True)


def publications(community: str, data: bytes, chunk=CHUNK):
    """What `pgw ota publish` sends, in order: every chunk, then the offer."""
    bid = bundle_id(hashlib.sha256(data).digest())
    for n, at in enumerate(range(0, len(data), chunk)):
        yield chunk_topic(community, bid, n), data[at:at + chunk]
    yield f"pgw/1/{community}/ota/offer", offer_payload(data, chunk)


def parse_offer(payload: bytes):
    """-> (id, size, sha256, chunk) or OfferError("offer")."""
    try:
        doc = cbor2.loads(payload) if len(payload) <= 256 else None
    except Exception:
        doc = None
    if not isinstance(doc, dict):
        raise OfferError("offer", "not a CBOR map of at most 256 bytes")
    bid, size, sha, chunk = (doc.get(k) for k in (1, 2, 3, 4))
    if not (isinstance(sha, bytes) and len(sha) == 32 and bid == bundle_id(sha)):
        raise OfferError("offer", "id and sha256 do not match")
    if not (isinstance(size, int) and 0 < size <= MAX_BUNDLE):
        raise OfferError("size", f"{size!r} is not in 1..{MAX_BUNDLE}")
    if not (isinstance(chunk, int) and 64 <= chunk <= 1536):
        raise OfferError("offer", f"chunk {chunk!r} is not in 64..1536")
    return bid, size, sha, chunk


class _Gathering:
    """The chunks of one bundle id; size unknown until its offer arrives
    (chunks are published first, and retained ones come back in any order)."""

    def __init__(self):
        self.size = self.sha = self.chunk = self.count = None
        self.parts = {}
        self.nbytes = 0

    def offered(self, size, sha, chunk):
        self.size, self.sha, self.chunk = size, sha, chunk
        self.count = -(-size // chunk)
        for n in [n for n, p in self.parts.items() if not self._fits(n, p)]:
            self.nbytes -= len(self.parts.pop(n))
        return self.complete()

    def _fits(self, n, data):
        return 0 <= n < self.count and len(data) == min(self.chunk, self.size - n * self.chunk)

    def add(self, n, data):
        if self.count is not None and not self._fits(n, data):
            return False
        if n > MAX_BUNDLE // 64 or self.nbytes + len(data) > MAX_BUNDLE:
            return False
        self.nbytes += len(data) - len(self.parts.get(n, b""))
        self.parts[n] = bytes(data)
        return self.complete()

    def complete(self):
        return self.count is not None and len(self.parts) == self.count

    def joined(self):
        return b"".join(self.parts[n] for n in range(self.count))


class OtaRelease:
    """The hub's OTA state: the bundles being gathered, the one announced
    (checked under one of `release_keys`), and the chunks it serves."""

    def __init__(self, community, key, release_keys, next_seq, every_s=60.0):
        self.community = community
        self.key = key  # HubKey
        self.release_keys = list(release_keys)  # (x, y) of each trusted release key
        self.next_seq = next_seq  # () -> the hub's next seq
        self.every_s = every_s
        self.counts = Counter()
        self.current = None  # (version, size, sha256, id) being announced
        self.data = b""  # its bytes, served in chunks
        self.chunk = CHUNK
        self._pending = {}  # id -> _Gathering
        self._last = None  # when it was last announced

    def subscriptions(self):
        c = self.community
        return [f"pgw/1/{c}/ota/offer", f"pgw/1/{c}/ota/+/+", f"pgw/1/{c}/dev/+/otaget"]

    def on_message(self, topic, payload, now):
        parts = topic.split("/")
        if len(parts) == 6 and parts[3] == "dev" and parts[5] == "otaget":
            return self._serve(parts[4], payload)
        if len(parts) == 5 and parts[3:] == ["ota", "offer"]:
            return self._offer(payload, now)
        if len(parts) == 6 and parts[3] == "ota" and parts[5].isdigit() and len(parts[4]) == 16:
            if self.current is not None and parts[4] == self.current[3]:
                return []  # the announced bundle's own retained chunks
            if self._gathering(parts[4]).add(int(parts[5]), payload):
                return self._complete(self._pending.pop(parts[4]), now)
        return []

    def _gathering(self, bid):
        g = self._pending.get(bid)
        if g is None:
            while len(self._pending) >= MAX_PENDING:
                self._pending.pop(next(iter(self._pending)))
            g = self._pending[bid] = _Gathering()
        return g

    def _serve(self, kid_hex, payload):
        try:
            bid, first, count = cbor2.loads(payload) if len(payload) <= 64 else (None, 0, 0)
        except Exception:
            bid = None
        if self.current is None or bid != self.current[3] or not isinstance(first, int) \
                or not isinstance(count, int) or not 0 < count <= WINDOW or first < 0:
            self.counts["ota_bad_request"] += 1
            return []
        self.counts["ota_requests_served"] += 1
        out = []
        for n in range(first, min(first + count, -(-len(self.data) // self.chunk))):
            out.append((f"pgw/1/{self.community}/dev/{kid_hex}/ota/{n}",
                        self.data[n * self.chunk:(n + 1) * self.chunk], False))
        return out

    def _offer(self, payload, now):
        try:
            bid, size, sha, chunk = parse_offer(payload)
        except OfferError as e:
            self.counts["ota_" + e.reason] += 1
            return []
        if self.current is not None and self.current[2] == sha:
            return []
        if self._gathering(bid).offered(size, sha, chunk):
            return self._complete(self._pending.pop(bid), now)
        return []

    def _complete(self, g, now):
        data = g.joined()
        if hashlib.sha256(data).digest() != g.sha:
            self.counts["ota_sha256"] += 1
            return []
        manifest = self._verify(data)
        if manifest is None:
            self.counts["ota_bundle"] += 1
            return []
        if len(manifest.version) > 16:  # the OTA message's version field holds 16 bytes
            self.counts["ota_version"] += 1
            return []
        self.counts["ota_accepted"] += 1
        self.current = (manifest.version, len(data), g.sha, bundle_id(g.sha))
        self.data, self.chunk = data, g.chunk
        return self.announce(now)

    def _verify(self, data):
        from host_tools.ota import OtaBuildError, verify
        from ota.manifest import OtaError

        for pub in self.release_keys:
            try:
                return verify(data, pub)
            except (OtaError, OtaBuildError):
                continue
        return None

    def tick(self, now):
        if self.current is None or (self._last is not None and now - self._last < self.every_s):
            return []
        return self.announce(now)

    def announce(self, now):
        version, size, sha, bid = self.current
        self._last = now
        payload = cbor2.dumps([VERSION, OTA, self.next_seq(), int(now), version, size, sha, "ota/" + bid])
        return [(f"pgw/1/{self.community}/hub/ota", self.key.sign1(payload), True)]
