# lib/ota: the signed OTA bundle (docs/ota.md, "Bundle format"): the
# manifest and the device's policy, and the streaming reader, on small
# bundles built here with lib code and lib/p256 signatures (both
# interpreters). tests/host/test_ota_build.py checks the real gateway's
# bundle with independent peers (pycose, cbor2, uuid).
import hashlib

import cbor
import cose
import p256
from fuzzing import Xorshift32, iterations, mutate
from mpcompat import raises
from ota import manifest as om
from ota.bundle import BUFFER_BYTES, BundleReader
from ota.manifest import (EXTERNAL_AAD, KIND_FILES, KIND_FIRMWARE, KIND_INDEX, KIND_ROMFS, VENDOR_ID, Manifest,
                          OtaError, Policy)

# a release key for the tests (any scalar in [1, N-1]), and another one
RELEASE_D = 0x5EED0F0A0000000000000000000000000000000000000000000000000000C0DE
OTHER_D = 0x0BADC0DE00000000000000000000000000000000000000000000000000000001
RELEASE_PUB = p256.public_key(RELEASE_D)
RELEASE_KID = cose.device_id(*RELEASE_PUB)
# uuid.uuid5(uuid.UUID("59a55ec0-8ed8-5299-8b29-1c2b12bb7f27"), "virtual"), CPython 3.11
VIRTUAL_CLASS = bytes.fromhex("1ddec5ddae5054a79cc8adba6f82dcac")
CREATED = 1767225600  # 2026-01-01T00:00:00Z
INSTALLED = 4
LIMITS = {KIND_INDEX: 4096, KIND_ROMFS: 65536, KIND_FILES: 65536, KIND_FIRMWARE: 65536}

FILES = (  # sorted by path, as the index must be; one empty file
    ("/gateway/app.mpy", b"M\x06\x00\x1f app bytecode " * 3),
    ("/gateway/meters/__init__.mpy", b""),
    ("/lib/cose.mpy", b"M\x06\x00\x1f cose bytecode"),
    ("/lib/meterprofiles/sdm120.json", b'{"name": "sdm120"}'),
)
ROMFS = b"\xd2\xcd\x31" + bytes(range(200))  # the reader does not look inside
FIRMWARE = b"\xe9" + bytes(range(255, 0, -1))


class Signer:
    def __init__(self, d):
        self.d = d

    def sign_digest(self, digest):
        return p256.sign_digest(self.d, digest)


RELEASE = Signer(RELEASE_D)


def lookup(kid):
    return RELEASE_PUB if kid == RELEASE_KID else None


def sha(data):
    return hashlib.sha256(data).digest()


def policy(installed=INSTALLED, limits=LIMITS, max_total=1 << 20, cls=VIRTUAL_CLASS):
    return Policy(lookup, VENDOR_ID, cls, installed, limits, max_total)


class CachedPolicy(Policy):
    # Verifies each distinct manifest once: the split tests feed the same
    # bundle hundreds of times and test the reader, not p256.
    def __init__(self, *args):
        super().__init__(*args)
        self.seen = {}

    def accept(self, signed):
        if signed not in self.seen:
            self.seen[signed] = Policy.accept(self, signed)
        m = self.seen[signed]
        self.check(m)
        return m


def cached_policy():
    return CachedPolicy(lookup, VENDOR_ID, VIRTUAL_CLASS, INSTALLED, LIMITS, 1 << 20)


def index_of(files):
    return b"".join(cbor.dumps([path, len(data), sha(data)]) for path, data in files)


def payload_map(seq=5, version="0.2.0", vendor=VENDOR_ID, cls=VIRTUAL_CLASS, min_prev=0, comps=(),
                created=CREATED):
    return {1: 1, 2: seq, 3: version, 4: vendor, 5: cls, 6: min_prev, 7: [list(c) for c in comps], 8: created}


def make(mode="files", files=FILES, index=None, code=None, firmware=None, comps=None, payload=None,
         signer=RELEASE, kid=RELEASE_KID, **fields):
    # -> (bundle bytes, length of its manifest)
    if index is None:
        index = index_of(files)
    if code is None:
        code = b"".join(data for _, data in files) if mode == "files" else ROMFS
    parts = [(KIND_INDEX, index), (KIND_FILES if mode == "files" else KIND_ROMFS, code)]
    if firmware is not None:
        parts.append((KIND_FIRMWARE, firmware))
    if comps is None:
        comps = [(kind, len(data), sha(data)) for kind, data in parts]
    if payload is None:
        payload = cbor.dumps(payload_map(comps=comps, **fields))
    signed = cose.sign1(payload, kid, signer, EXTERNAL_AAD)
    return signed + b"".join(data for _, data in parts), len(signed)


_CACHE = {}


def good(mode="files", firmware=None):
    key = (mode, firmware)
    if key not in _CACHE:
        _CACHE[key] = make(mode, firmware=firmware)
    return _CACHE[key]


class Storage:
    # What a device keeps in flash across a reboot: the manifest, each
    # component's bytes (files mode: the index), each file.
    def __init__(self):
        self.manifest = b""
        self.components = {}
        self.files = {}

    def stored_bytes(self):
        # where a download resumes: everything stored is a prefix of the bundle
        return (len(self.manifest) + sum(len(b) for b in self.components.values())
                + sum(len(b) for b in self.files.values()))

    def prefix(self):
        # the stored bytes in stream order, to feed a new reader
        out = bytearray(self.manifest)
        if self.manifest:
            m = Manifest.decode(cose.decode1(self.manifest)[2])
            for kind, _, _ in m.components:
                if kind == KIND_FILES:
                    for path in sorted(self.files):  # index order is path order
                        out += self.files[path]
                else:
                    out += self.components.get(kind, b"")
        return bytes(out)


class Sink:
    # Writes what the reader hands on into a Storage, appending only: an
    # offset that is not the stored length (a gap, or stored bytes handed
    # again) fails the test. Records the calls.
    def __init__(self, storage=None):
        self.storage = storage or Storage()
        self.events = []
        self.entries = []
        self.path = None
        self.kind = None
        self.reads = 0

    def manifest(self, m, signed, stored):
        self.events.append(("manifest", m.seq))
        if stored:
            assert stored == len(signed) and self.storage.manifest == bytes(signed)
        else:
            self.storage.manifest = bytes(signed)

    def component(self, kind, size, stored):
        self.events.append(("component", kind, size))
        self.kind = kind
        if kind != KIND_FILES:
            assert len(self.storage.components.setdefault(kind, bytearray())) == stored

    def index_entry(self, path, size, digest):
        self.entries.append((path, size, digest))

    def file(self, path, size, digest, stored):
        self.events.append(("file", path, size))
        self.path = path
        assert len(self.storage.files.setdefault(path, bytearray())) == stored

    def data(self, kind, offset, mv):
        assert kind == self.kind
        buf = self.storage.files[self.path] if kind == KIND_FILES else self.storage.components[kind]
        assert offset == len(buf), (offset, len(buf))
        buf.extend(mv)

    def file_end(self, path):
        self.events.append(("file_end", path))
        assert path == self.path

    def component_end(self, kind):
        self.events.append(("component_end", kind))

    def read_index(self, offset, mv):
        self.reads += 1
        src = self.storage.components[KIND_INDEX]
        n = min(len(mv), len(src) - offset)
        mv[0:n] = src[offset:offset + n]
        return n


def feed_chunks(reader, data, sizes):
    # feeds data in chunks of the sizes given, cycling -> what the last feed returned
    pos = 0
    i = 0
    done = False
    while pos < len(data):
        n = sizes[i % len(sizes)]
        done = reader.feed(data[pos:pos + n])
        pos += n
        i += 1
    return done


def read_all(data, pol=None, sink=None, sizes=(4096,)):
    sink = sink or Sink()
    reader = BundleReader(pol or policy(), sink)
    assert feed_chunks(reader, data, sizes)
    return reader.finish(), sink


def refused(reason, data, pol=None, sizes=(4096,)):
    # The bundle is refused with `reason`, by feed or by finish
    reader = BundleReader(pol or policy(), Sink())

    def run():
        feed_chunks(reader, data, sizes)
        reader.finish()

    e = raises(OtaError, run)
    assert e.reason == reason, (reason, e.reason, str(e))
    return reader, e


# -- identities


def test_vendor_id_is_uuid5_of_the_project_dns_name():
    assert om.uuid5(om.NAMESPACE_DNS, om.VENDOR_NAME) == VENDOR_ID
    assert om.class_id(VENDOR_ID, "virtual") == VIRTUAL_CLASS
    c = om.class_id(VENDOR_ID, "esp32_devkitc")
    assert c != VIRTUAL_CLASS and c[6] >> 4 == 5 and c[8] >> 6 == 2  # version 5, RFC variant


# -- the manifest


def test_manifest_round_trip_is_deterministic():
    comps = ((KIND_INDEX, 10, sha(b"i")), (KIND_ROMFS, 20, sha(b"r")), (KIND_FIRMWARE, 30, sha(b"f")))
    m = Manifest(7, "0.2.0", VENDOR_ID, VIRTUAL_CLASS, 3, comps, CREATED)
    payload = m.encode()
    assert payload == cbor.dumps(payload_map(7, min_prev=3, comps=comps))
    back = Manifest.decode(payload)
    assert (back.seq, back.version, back.vendor_id, back.class_id, back.min_prev_seq, back.components,
            back.created) == (7, "0.2.0", VENDOR_ID, VIRTUAL_CLASS, 3, comps, CREATED)
    assert back.code_kind() == KIND_ROMFS and back.component(KIND_FIRMWARE) == (30, sha(b"f"))
    signed = om.sign(m, RELEASE_KID, RELEASE)
    got = policy().accept(signed)
    assert got.kid == RELEASE_KID and got.signed_size == len(signed) and got.seq == 7


def _bad_payload(reason, payload):
    e = raises(OtaError, Manifest.decode, payload)
    assert e.reason == reason, (reason, e.reason, str(e))


def test_malformed_manifest_payloads_are_refused():
    comps = [(KIND_INDEX, 10, sha(b"i")), (KIND_FILES, 20, sha(b"f"))]
    ok = payload_map(comps=comps)
    Manifest.decode(cbor.dumps(ok))

    def variant(**changes):
        m = dict(ok)
        for k, v in changes.items():
            m[int(k[1:])] = v
        return cbor.dumps(m)

    _bad_payload("format", variant(k1=2))  # a format this reader does not know
    _bad_payload("format", variant(k1=True))
    _bad_payload("format", variant(k2=0))  # seq starts at 1
    _bad_payload("format", variant(k2=1 << 32))
    _bad_payload("format", variant(k2=-1))
    _bad_payload("format", variant(k3="v" * 33))  # version text over 32 bytes
    _bad_payload("format", variant(k3=""))
    _bad_payload("format", variant(k3="0.2.0\x1b[2J"))  # control characters
    _bad_payload("format", variant(k3=b"0.2.0"))
    _bad_payload("format", variant(k4=VENDOR_ID[:15]))
    _bad_payload("format", variant(k5=VIRTUAL_CLASS + b"\x00"))
    _bad_payload("format", variant(k6=1 << 32))
    _bad_payload("format", variant(k8=1 << 32))
    _bad_payload("format", variant(k9=0))  # unknown key
    _bad_payload("format", cbor.dumps({k: v for k, v in ok.items() if k != 8}))  # missing key
    _bad_payload("format", cbor.dumps([1, 2, 3]))
    _bad_payload("components", variant(k7=[]))
    _bad_payload("components", variant(k7=[list(comps[1]), list(comps[0])]))  # index not first
    _bad_payload("components", variant(k7=[list(comps[0])]))  # no code
    _bad_payload("components", variant(k7=[list(comps[0]), list(comps[1]), [KIND_ROMFS, 5, sha(b"")]]))
    _bad_payload("components", variant(k7=[list(comps[0]), list(comps[1]), list(comps[1])]))
    _bad_payload("components", variant(k7=[list(comps[0]), [5, 20, sha(b"")]]))  # unknown kind
    _bad_payload("components", variant(k7=[list(comps[0]), [KIND_FILES, 20]]))
    _bad_payload("components", variant(k7=[list(comps[0])] * 5))
    _bad_payload("format", variant(k7=[list(comps[0]), [KIND_FILES, 0, sha(b"")]]))  # empty component
    _bad_payload("format", variant(k7=[list(comps[0]), [KIND_FILES, 20, sha(b"")[:31]]]))
    # deterministic encoding only: a long head for a small number
    payload = bytearray(cbor.dumps(ok))
    at = payload.index(b"\x02\x05")  # key 2, seq 5
    _bad_payload("cbor", bytes(payload[:at + 1]) + b"\x18\x05" + bytes(payload[at + 2:]))
    _bad_payload("cbor", cbor.dumps(ok)[:-1])


def test_policy_refuses_what_this_device_must_not_install():
    base = dict(seq=5, version="0.2.0", vendor_id=VENDOR_ID, class_id=VIRTUAL_CLASS, min_prev_seq=0,
                components=((KIND_INDEX, 100, sha(b"")), (KIND_ROMFS, 1000, sha(b""))), created=CREATED)

    def check(reason, pol=None, **changes):
        fields = dict(base)
        fields.update(changes)
        m = Manifest(**fields)
        m.signed_size = 300
        e = raises(OtaError, (pol or policy()).check, m)
        assert e.reason == reason, (reason, e.reason, str(e))

    m = Manifest(**base)
    m.signed_size = 300
    policy().check(m)
    check("vendor", vendor_id=bytes(16))
    check("class", class_id=om.class_id(VENDOR_ID, "esp32_devkitc"))
    check("seq", seq=INSTALLED)  # equal: a replay of the installed version
    check("seq", seq=INSTALLED - 1)  # older: rollback
    check("min_prev", min_prev_seq=INSTALLED + 1)
    check("size", pol=policy(limits={KIND_INDEX: 99, KIND_ROMFS: 1000}))
    check("components", pol=policy(limits={KIND_INDEX: 100, KIND_FILES: 1000}))  # a device without ROM
    check("size", pol=policy(max_total=1399))
    policy(max_total=1400).check(m)


# -- reading whole bundles


def test_files_mode_bundle_round_trip():
    data, mlen = good("files")
    m, sink = read_all(data)
    assert m.seq == 5 and m.version == "0.2.0" and m.kid == RELEASE_KID
    for path, content in FILES:
        assert sink.storage.files[path] == content
    assert sink.storage.manifest == data[:mlen]
    assert sink.storage.components[KIND_INDEX] == index_of(FILES)
    assert sink.entries == [(p, len(d), sha(d)) for p, d in FILES]
    expect = [("manifest", 5), ("component", KIND_INDEX, len(index_of(FILES))), ("component_end", KIND_INDEX),
              ("component", KIND_FILES, sum(len(d) for _, d in FILES))]
    for path, content in FILES:
        expect += [("file", path, len(content)), ("file_end", path)]
    assert sink.events == expect + [("component_end", KIND_FILES)]


def test_romfs_bundle_with_a_firmware_image_round_trip():
    data, _ = good("romfs", FIRMWARE)
    m, sink = read_all(data)
    assert m.code_kind() == KIND_ROMFS
    assert sink.storage.components[KIND_ROMFS] == ROMFS
    assert sink.storage.components[KIND_FIRMWARE] == FIRMWARE
    assert sink.storage.files == {} and sink.reads == 0
    assert [e[0] for e in sink.events] == ["manifest", "component", "component_end", "component",
                                           "component_end", "component", "component_end"]


def test_every_split_point():
    data, _ = good("files")
    pol = cached_policy()
    want = read_all(data, pol)[1].storage
    for k in range(len(data) + 1):
        sink = Sink()
        reader = BundleReader(pol, sink)
        first = reader.feed(data[:k])
        assert first == (k == len(data))
        assert reader.feed(data[k:]) and reader.finish().seq == 5
        assert sink.storage.files == want.files and sink.storage.components == want.components, k


def test_one_byte_at_a_time_and_odd_chunks():
    # one byte a chunk puts a boundary at every byte; the odd sizes make
    # chunks that span several items
    pol = cached_policy()
    for mode, firmware in (("files", None), ("romfs", FIRMWARE)):
        data, _ = good(mode, firmware)
        want = read_all(data, pol)[1].storage
        for sizes in ((1,), (3, 1, 7), (31, 2), (257,)):
            storage = read_all(data, pol, sizes=sizes)[1].storage
            assert storage.files == want.files and storage.components == want.components, (mode, sizes)


def test_buffer_is_one_kilobyte():
    reader = BundleReader(policy(), Sink())
    assert BUFFER_BYTES == 1024 and len(reader._buf) == BUFFER_BYTES


def test_bundle_with_many_files_reads_the_index_back_in_windows():
    # 120 entries are ~9 KB of index: the reader holds 1 KB of it at a time
    files = tuple(("/lib/meterprofiles/profile_%03d.json" % i, bytes((i,)) * (i % 7)) for i in range(120))
    data, _ = make("files", files=files)
    m, sink = read_all(data, policy(limits={KIND_INDEX: 16384, KIND_FILES: 4096}), sizes=(100, 1))
    index = sink.storage.components[KIND_INDEX]
    assert len(index) > 8 * BUFFER_BYTES and sink.reads >= len(index) // BUFFER_BYTES
    assert len(sink.storage.files) == 120
    for path, content in files:
        assert sink.storage.files[path] == content


# -- bad bundles: each is refused and the reader stays dead


def test_bad_signature():
    data, mlen = good("files")
    bad = bytearray(data)
    bad[mlen - 5] ^= 1  # inside the signature
    reader, _ = refused("signature", bytes(bad))
    assert reader.sink.events == [] and reader.sink.storage.manifest == b""  # nothing handed on
    e = raises(OtaError, reader.feed, b"more")  # the reader stays refused
    assert e.reason == "signature"


def test_signed_by_another_key():
    other = Signer(OTHER_D)
    data, _ = make("files", signer=other)  # the release kid, another key
    refused("signature", data)
    data, _ = make("files", signer=other, kid=cose.device_id(*p256.public_key(OTHER_D)))
    refused("kid", data)
    # a trade-protocol signature (no external AAD) is not a release signature
    comps = [(KIND_INDEX, len(index_of(FILES)), sha(index_of(FILES))),
             (KIND_FILES, sum(len(d) for _, d in FILES), sha(b"".join(d for _, d in FILES)))]
    signed = cose.sign1(cbor.dumps(payload_map(comps=comps)), RELEASE_KID, RELEASE)
    refused("signature", signed + good("files")[0][good("files")[1]:])


def test_wrong_class_and_vendor():
    refused("class", make("files", cls=om.class_id(VENDOR_ID, "esp32_devkitc"))[0])
    refused("vendor", make("files", vendor=om.uuid5(om.NAMESPACE_DNS, "example.invalid"))[0])


def test_older_equal_and_too_new_seq():
    refused("seq", make("files", seq=INSTALLED - 1)[0])
    refused("seq", make("files", seq=INSTALLED)[0])
    refused("min_prev", make("files", seq=9, min_prev=INSTALLED + 1)[0])
    read_all(make("files", seq=9, min_prev=INSTALLED)[0])


def test_wrong_digests():
    data, mlen = good("romfs", FIRMWARE)
    at = data.index(ROMFS) + 50
    refused("digest", data[:at] + bytes((data[at] ^ 0x40,)) + data[at + 1:])
    refused("digest", data[:-1] + bytes((data[-1] ^ 1,)))  # the firmware's last byte
    data, mlen = good("files")
    at = mlen + len(index_of(FILES)) + 5  # inside the first file
    reader, e = refused("digest", data[:at] + b"X" + data[at + 1:])
    assert "/gateway/app.mpy" in str(e)
    # a consistent, signed bundle whose index gives a file the wrong digest
    files = list(FILES)
    index = index_of(files[:1]) + cbor.dumps([files[1][0], 0, sha(b"not empty")]) + index_of(files[2:])
    refused("digest", make("files", index=index)[0])


def test_truncated_at_several_points():
    data, mlen = good("files")
    ilen = len(index_of(FILES))
    for cut in (0, 1, 2, mlen // 2, mlen - 1, mlen, mlen + 3, mlen + ilen, mlen + ilen + 1, len(data) - 1):
        reader = BundleReader(cached_policy(), Sink())
        if cut:
            assert not reader.feed(data[:cut])
        e = raises(OtaError, reader.finish)
        assert e.reason == "truncated" and str(cut) in str(e), (cut, str(e))


def test_trailing_bytes():
    data, _ = good("files")
    refused("trailing", data + b"\x00")
    reader = BundleReader(cached_policy(), Sink())
    assert reader.feed(data)
    assert raises(OtaError, reader.feed, b"x").reason == "trailing"
    assert raises(OtaError, reader.finish).reason == "trailing"


def test_not_a_bundle():
    refused("format", b"PK\x03\x04 a zip file")
    refused("cbor", b"\xd2\x84\x5f")  # an indefinite-length string


def test_oversized_fields():
    data, mlen = good("files")
    # a manifest of more than 1 KB is refused before it is all in
    big = cose.sign1(cbor.dumps(payload_map(comps=[])) + bytes(1024), RELEASE_KID, RELEASE, EXTERNAL_AAD)
    reader, e = refused("size", big + data[mlen:], sizes=(600,))
    assert reader.offset <= 1024
    # a COSE_Sign1 that says its payload is 2**32 bytes long
    refused("size", b"\xd2\x84\x43\xa1\x01\x26\xa0\x5a\xff\xff\xff\xff")
    # a component larger than the device takes, a bundle larger than it takes
    refused("size", data, policy(limits={KIND_INDEX: 4096, KIND_FILES: 10}))
    refused("size", data, policy(max_total=len(data) - 1))
    read_all(data, policy(max_total=len(data)))
    refused("components", data, policy(limits={KIND_INDEX: 4096, KIND_ROMFS: 65536}))
    # the manifest's own fields (signed, so only a release key can make them)
    refused("format", make("files", version="v" * 33)[0])


def test_bad_index_entries():
    files = list(FILES)

    def with_index(index, reason, code=None):
        refused(reason, make("files", index=index, code=code)[0])

    entry = [files[0][0], len(files[0][1]), sha(files[0][1])]
    rest = index_of(files[1:])
    for path in ("gateway/app.mpy", "/gateway//app.mpy", "/gateway/../app.mpy", "/gateway/./a", "/",
                 "/gateway/", "/" + "a" * 64, "/gate way.mpy", "/gateway\\app.mpy", "/gateway/\u00e4pp"):
        with_index(cbor.dumps([path] + entry[1:]) + rest, "index")
    with_index(cbor.dumps(entry[:2] + [sha(b"")[:31]]) + rest, "index")
    with_index(cbor.dumps(entry[:2]) + rest, "index")
    with_index(cbor.dumps({1: 2}) + rest, "index")
    with_index(cbor.dumps([entry[0], -1, entry[2]]) + rest, "index")
    with_index(cbor.dumps(entry + [0]) + rest, "index")
    with_index(rest + cbor.dumps(entry), "index")  # not sorted
    with_index(index_of(files[:2]) + index_of(files[1:]), "index")  # a path twice
    with_index(index_of(files)[:-1], "index")  # ends inside an entry
    with_index(index_of(files) + b"\x18", "index")
    with_index(cbor.dumps(["/" + "a" * 63, 1, bytes(32), "x" * 60]) + rest, "index")  # entry over 128 bytes
    with_index(b"\x9f" + rest, "index")  # indefinite length
    with_index(index_of(files[:1]) + cbor.dumps([files[1][0], 1 << 33, bytes(32)]), "index")
    # the files add up to more, or less, than the files component
    with_index(index_of(files), "index", code=b"".join(d for _, d in files) + b"extra")
    with_index(index_of(files), "index", code=b"".join(d for _, d in files)[:-1])
    # in a romfs bundle the files cannot be larger than the image
    refused("index", make("romfs", code=b"tiny")[0])


class ForgetfulSink(Sink):
    # reads the index back with one path changed ("/gateway/app.mpy" ->
    # "/hateway/app.mpy"): still well formed, sizes and digests right, so
    # only hashing the index read back tells
    def read_index(self, offset, mv):
        n = Sink.read_index(self, offset, mv)
        if offset == 0:
            assert mv[3] == ord("g")
            mv[3] = ord("h")
        return n


class ShortSink(Sink):
    def read_index(self, offset, mv):
        return 0


def test_an_index_stored_wrong_is_caught():
    data, _ = good("files")
    for sink in (ForgetfulSink(), ShortSink()):
        reader = BundleReader(policy(), sink)
        e = raises(OtaError, reader.feed, data)
        assert e.reason == "storage", str(e)


class FullSink(Sink):
    def data(self, kind, offset, mv):
        raise OSError(28)  # ENOSPC


def test_a_sink_error_ends_the_reader():
    data, mlen = good("romfs")
    reader = BundleReader(policy(), FullSink())
    assert raises(OSError, reader.feed, data).args[0] == 28
    assert raises(OSError, reader.feed, b"").args[0] == 28


# -- fuzzing: only OtaError, never a crash


def test_fuzz_whole_bundles():
    rng = Xorshift32(0x07A1)
    data, _ = good("files")
    for _ in range(max(40, iterations(40) // 50)):  # each checks a signature
        bad = mutate(rng, data)
        reader = BundleReader(policy(), Sink())
        try:
            feed_chunks(reader, bad, (1 + rng.below(300),))
            reader.finish()
        except OtaError:
            pass


def test_fuzz_after_the_manifest():
    # the manifest stays good: index parsing, the file split and the digests
    # face the hostile bytes
    rng = Xorshift32(0x07A2)
    pol = cached_policy()
    for mode in ("files", "romfs"):
        data, mlen = good(mode)
        for _ in range(max(150, iterations(150) // 5)):
            bad = data[:mlen] + mutate(rng, data[mlen:])
            reader = BundleReader(pol, Sink())
            try:
                feed_chunks(reader, bad, (1 + rng.below(64),))
                reader.finish()
            except OtaError as e:
                assert e.reason in ("index", "digest", "truncated", "trailing"), str(e)


def test_fuzz_signed_indexes():
    # mutated indexes, signed with their true digests: only the index
    # checks stand between them and the sink
    rng = Xorshift32(0x07A3)
    index = index_of(FILES)
    code = b"".join(d for _, d in FILES)
    accepted = 0
    n = max(25, iterations(25) // 100)  # each signs and verifies
    for _ in range(n):
        data, _ = make("files", index=mutate(rng, index), code=code)
        try:
            m, sink = read_all(data, sizes=(1 + rng.below(40),))
            accepted += 1
            assert len(sink.storage.files) == len(sink.entries)
        except OtaError as e:
            assert e.reason in ("index", "digest", "format"), str(e)  # format: an empty index
    assert accepted < n


def test_fuzz_signed_manifests():
    # mutated payloads under a good signature: only the payload's checks
    # and the policy stand between them and the sink
    rng = Xorshift32(0x07A5)
    data, mlen = good("files")
    payload = cose.decode1(data[:mlen])[2]
    for _ in range(max(20, iterations(20) // 100)):  # each signs and verifies
        signed = cose.sign1(mutate(rng, payload), RELEASE_KID, RELEASE, EXTERNAL_AAD)
        reader = BundleReader(policy(), Sink())
        try:
            feed_chunks(reader, signed + data[mlen:], (1 + rng.below(100),))
            reader.finish()
        except OtaError:
            pass


def test_fuzz_manifest_payloads():
    rng = Xorshift32(0x07A4)
    comps = [(KIND_INDEX, 10, sha(b"i")), (KIND_ROMFS, 20, sha(b"r")), (KIND_FIRMWARE, 30, sha(b"f"))]
    payload = cbor.dumps(payload_map(comps=comps))
    for _ in range(iterations(800)):
        try:
            Manifest.decode(mutate(rng, payload))
        except OtaError:
            pass


# -- resume after a reboot


def _resume(mode, firmware, cut, pol):
    data, _ = good(mode, firmware)
    # the first download stops at `cut`: the sink has stored what it was handed
    storage = Storage()
    reader = BundleReader(pol, Sink(storage))
    if cut:
        reader.feed(data[:cut])
    del reader
    # after the reboot: where to go on comes from what is stored
    stored = storage.stored_bytes()
    assert stored <= cut
    prefix = storage.prefix()
    assert prefix == data[:stored]
    sink = Sink(storage)  # appends only: a byte stored twice fails the test
    reader = BundleReader(pol, sink, stored=stored)
    feed_chunks(reader, prefix, (97,))  # read back from storage, hashed again
    feed_chunks(reader, data[stored:], (64,))  # from the network
    assert reader.done and reader.finish().seq == 5
    return storage


def test_resume_continues_where_the_download_stopped():
    pol = cached_policy()
    for mode, firmware in (("files", None), ("romfs", FIRMWARE)):
        data, mlen = good(mode, firmware)
        want = read_all(data, pol)[1].storage
        ilen = len(index_of(FILES))
        for cut in (0, 10, mlen - 1, mlen, mlen + 7, mlen + ilen, mlen + ilen + 1, mlen + ilen + 40,
                    len(data) - 2, len(data)):
            storage = _resume(mode, firmware, cut, pol)
            assert storage.files == want.files and storage.components == want.components, (mode, cut)
            assert storage.manifest == want.manifest
