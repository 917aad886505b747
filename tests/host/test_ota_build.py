"""`pgw ota build|keygen|show` (host_tools/ota.py) on the real firmware, checked
with independent code: pycose verifies the manifest's COSE_Sign1 with the
external AAD, cbor2 decodes the manifest and the index, uuid computes the
class ids, hashlib re-hashes the files deploy builds; and the device's own
reader (lib/ota/bundle.py) takes the bundle apart again."""

import hashlib
import json
import uuid
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys import EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message

from host_tools import deploy, ota
from host_tools.boards import board_names, load_board
from host_tools.cli import main as pgw

import cose  # noqa: E402  (lib/, on sys.path through tests/mpplugin.py)
from ota.bundle import BundleReader  # noqa: E402
from ota.manifest import (EXTERNAL_AAD, KIND_FILES, KIND_FIRMWARE, KIND_INDEX, KIND_ROMFS, MAX_MANIFEST,  # noqa: E402
                          VENDOR_ID, OtaError, Policy)

BOARDS = Path(__file__).resolve().parents[2] / "boards"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A release key made by `pgw ota keygen`, and bundles built by `pgw ota build`."""
    tmp = tmp_path_factory.mktemp("ota")
    key = tmp / "release.pem"
    assert pgw(["ota", "keygen", "--out", str(key)]) == 0
    out = {"dir": tmp, "key": key}
    for board, seq in (("virtual", 7), ("esp32_devkitc", 3)):
        path = tmp / f"{board}.pgwota"
        assert pgw(["ota", "build", "--board", board, "--key", str(key), "--seq", str(seq), "--version", "0.2.0",
                    "--min-prev-seq", "2", "--out", str(path)]) == 0
        out[board] = path.read_bytes()
    return out


def _pub(key_path):
    n = serialization.load_pem_private_key(key_path.read_bytes(), None).public_key().public_numbers()
    return n.x, n.y


def _split(data):
    """-> (the manifest's tag value, its length, the rest) by cbor2 alone."""
    import io

    fp = io.BytesIO(data)
    tag = cbor2.CBORDecoder(fp).decode()
    return tag, fp.tell(), data[fp.tell():]


def _pycose_verify(tag, pub, aad):
    protected, unprotected, payload, sig = tag.value
    # pycose 1.1.0's Sign1Message.decode() fails with cbor2 6 (PEERS.md): hand it the array
    msg = Sign1Message.from_cose_obj([protected, dict(unprotected), payload, sig], True)
    x, y = pub
    msg.key = EC2Key(crv=P256, x=x.to_bytes(32, "big"), y=y.to_bytes(32, "big"))
    msg.external_aad = aad
    return msg.verify_signature(), msg


class Collect:
    """A sink that keeps everything the reader hands on, by kind and by file."""

    def __init__(self):
        self.parts = {}
        self.files = {}
        self.entries = []
        self.path = None

    def manifest(self, m, signed, stored):
        self.signed = bytes(signed)

    def component(self, kind, size, stored):
        self.parts[kind] = bytearray()

    def index_entry(self, path, size, digest):
        self.entries.append((path, size, digest))

    def file(self, path, size, digest, stored):
        self.path = path
        self.files[path] = bytearray()

    def data(self, kind, offset, mv):
        self.parts[kind] += mv
        if kind == KIND_FILES:
            assert offset == len(self.files[self.path])
            self.files[self.path] += mv

    def file_end(self, path):
        pass

    def component_end(self, kind):
        pass

    def read_index(self, offset, mv):
        src = self.parts[KIND_INDEX]
        n = min(len(mv), len(src) - offset)
        mv[:n] = src[offset:offset + n]
        return n


def _read(data, pub, board, installed=2, limits=None):
    kid = cose.device_id(*pub)
    limits = limits or {KIND_INDEX: 16384, KIND_ROMFS: 1 << 20, KIND_FILES: 1 << 20}
    policy = Policy(lambda k: pub if k == kid else None, VENDOR_ID, ota.class_id(board), installed, limits,
                    2 << 20)
    sink = Collect()
    reader = BundleReader(policy, sink)
    for at in range(0, len(data), 1024):  # 1 KB chunks, as the board downloads
        reader.feed(data[at:at + 1024])
    return reader.finish(), sink


def test_ids_are_uuid5():
    vendor = uuid.uuid5(uuid.NAMESPACE_DNS, "prosumer-gateway.invalid")
    assert VENDOR_ID == vendor.bytes
    for name in board_names():
        assert ota.class_id(name) == uuid.uuid5(vendor, load_board(name).name).bytes


def test_keygen_prints_the_cose_key_and_refuses_to_overwrite(tmp_path, capsys):
    key = tmp_path / "k.pem"
    assert pgw(["ota", "keygen", "--out", str(key)]) == 0
    out = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines()[1:])
    kid, pub = cose.decode_key(bytes.fromhex(out["cose_key"]))
    assert pub == _pub(key) and kid.hex() == out["kid"] == cose.device_id(*pub).hex()
    assert key.with_suffix(".cose").read_bytes().hex() == out["cose_key"]  # the public half, beside it
    assert key.stat().st_mode & 0o077 == 0  # the owner's alone
    before = key.read_bytes()
    assert pgw(["ota", "keygen", "--out", str(key)]) == 1
    assert "exists" in capsys.readouterr().err and key.read_bytes() == before


def test_manifest_verifies_with_pycose_and_decodes_with_cbor2(release):
    pub = _pub(release["key"])
    for board, seq in (("virtual", 7), ("esp32_devkitc", 3)):
        tag, mlen, _ = _split(release[board])
        assert isinstance(tag, cbor2.CBORTag) and tag.tag == 18 and mlen <= MAX_MANIFEST
        ok, msg = _pycose_verify(tag, pub, EXTERNAL_AAD)
        assert ok and msg.phdr[Algorithm] is Es256 and msg.phdr[KID] == cose.device_id(*pub)
        assert cbor2.loads(tag.value[0]) == {1: -7, 4: cose.device_id(*pub)}
        # without the AAD (a trade message's Sig_structure) it does not verify
        assert not _pycose_verify(tag, pub, b"")[0]
        payload = cbor2.loads(msg.payload)
        assert cbor2.dumps(payload, canonical=True) == msg.payload  # deterministic
        assert sorted(payload) == list(range(1, 9))
        assert payload[1] == 1 and payload[2] == seq and payload[3] == "0.2.0" and payload[6] == 2
        assert payload[4] == VENDOR_ID and payload[5] == ota.class_id(board)
        assert [c[0] for c in payload[7]] == [KIND_INDEX, KIND_ROMFS if board == "virtual" else KIND_FILES]


def test_index_and_components_match_what_deploy_builds(release):
    for board_name in ("virtual", "esp32_devkitc"):
        board = load_board(board_name)
        tag, mlen, rest = _split(release[board_name])
        comps = cbor2.loads(tag.value[2])[7]
        at = 0
        parts = []
        for kind, size, digest in comps:
            part = rest[at:at + size]
            assert len(part) == size and hashlib.sha256(part).digest() == digest
            parts.append(part)
            at += size
        assert at == len(rest)
        built = deploy.build(board, rom=board_name == "virtual")
        expect = {p: f for p, f in built.items() if p not in deploy.FILESYSTEM_ONLY}
        entries = list(ota.index_entries(parts[0]))
        assert [e[0] for e in entries] == sorted(expect)
        assert {"/gateway/app.mpy", "/lib/cose.mpy", "/lib/ota/bundle.mpy", "/lib/umqtt/simple.mpy",
                "/lib/meterprofiles/sdm120.json"} <= set(expect)
        assert not {"/boot.py", "/main.py", "/board.json"} & {e[0] for e in entries}
        for path, size, digest in entries:
            data = expect[path].read_bytes()
            assert size == len(data) and digest == hashlib.sha256(data).digest(), path
        if board_name == "virtual":
            assert parts[1] == deploy.romfs_image(expect)
        else:
            assert parts[1] == b"".join(expect[p].read_bytes() for p in sorted(expect))


def test_the_device_reader_takes_the_real_bundles(release):
    pub = _pub(release["key"])
    m, sink = _read(release["virtual"], pub, "virtual")
    assert m.seq == 7 and m.version == "0.2.0"
    files = ota.code_files(load_board("virtual"))
    assert sink.parts[KIND_ROMFS] == deploy.romfs_image(files)  # what a ROM slot receives
    assert [e[0] for e in sink.entries] == sorted(files)
    m, sink = _read(release["esp32_devkitc"], pub, "esp32_devkitc")
    files = ota.code_files(load_board("esp32_devkitc"))
    assert {p: bytes(b) for p, b in sink.files.items()} == {p: f.read_bytes() for p, f in files.items()}
    # the acceptance's bad manifests, on the real bundle
    data = release["virtual"]
    for reason, kwargs in (("class", {"board": "esp32_devkitc"}), ("seq", {"installed": 7}),
                           ("min_prev", {"installed": 1})):
        args = {"data": data, "pub": pub, "board": "virtual"}
        args.update(kwargs)
        with pytest.raises(OtaError) as e:
            _read(**args)
        assert e.value.reason == reason
    _, mlen, _ = _split(data)
    for reason, bad in (("signature", data[:mlen - 1] + bytes((data[mlen - 1] ^ 1,)) + data[mlen:]),
                        ("digest", data[:-100] + bytes((data[-100] ^ 1,)) + data[-99:]),
                        ("truncated", data[:len(data) // 2])):
        with pytest.raises(OtaError) as e:
            _read(bad, pub, "virtual")
        assert e.value.reason == reason


def test_show_verifies_and_says_why_not(release, capsys):
    path = release["dir"] / "virtual.pgwota"
    assert pgw(["ota", "show", str(path), "--key", str(release["key"])]) == 0
    out = capsys.readouterr().out
    assert "class      1ddec5dd-ae50-54a7-9cc8-adba6f82dcac (board virtual)" in out
    assert "/lib/ota/bundle.mpy" in out and "verified   yes" in out
    cose_key = cose.encode_key(*_pub(release["key"])).hex()
    assert pgw(["ota", "show", str(path), "--pub", cose_key]) == 0
    assert "verified   yes" in capsys.readouterr().out
    assert pgw(["ota", "show", str(path)]) == 0
    assert "not checked" in capsys.readouterr().out
    other = release["dir"] / "other.pem"
    assert pgw(["ota", "keygen", "--out", str(other)]) == 0
    capsys.readouterr()
    assert pgw(["ota", "show", str(path), "--key", str(other)]) == 1
    assert "verified   NO: kid" in capsys.readouterr().out
    bad = release["dir"] / "bad.pgwota"
    data = release["virtual"]
    at = data.index(b"\x58\x20", 5000) + 2  # a file's SHA-256 in the index (bstr of 32 bytes)
    bad.write_bytes(data[:at] + bytes((data[at] ^ 1,)) + data[at + 1:])
    assert pgw(["ota", "show", str(bad), "--pub", cose_key]) == 1
    assert "verified   NO: digest" in capsys.readouterr().out


def _ota_board(tmp_path):
    # esp32_devkitc with MicroPython's OTA layout: otadata, ota_0, ota_1
    data = json.loads((BOARDS / "esp32_devkitc.json").read_text())
    data["board"] = "esp32_ota_test"
    data["flash"]["partitions"] = [
        {"name": "nvs", "offset": 0x9000, "size": 0x5000},
        {"name": "otadata", "offset": 0xE000, "size": 0x2000},
        {"name": "ota_0", "offset": 0x10000, "size": 0x180000},
        {"name": "ota_1", "offset": 0x190000, "size": 0x180000},
        {"name": "vfs", "offset": 0x310000, "size": 0xF0000},
    ]
    data["flash"]["filesystem"] = {"offset": 0x310000, "size_kb": 960, "type": "littlefs2"}
    path = tmp_path / "esp32_ota_test.json"
    path.write_text(json.dumps(data))
    return path


def test_firmware_image_rides_along_on_boards_with_ota_partitions(release, tmp_path, capsys):
    image = tmp_path / "micropython.bin"
    image.write_bytes(b"\xe9\x06\x02\x20" + bytes(range(256)) * 64)
    out = tmp_path / "fw.pgwota"
    args = ["ota", "build", "--key", str(release["key"]), "--seq", "4", "--version", "0.2.0",
            "--firmware", str(image), "--out", str(out)]
    assert pgw(args + ["--board", "esp32_devkitc"]) == 1
    assert "no ESP32 OTA partitions" in capsys.readouterr().err and not out.exists()
    board = _ota_board(tmp_path)
    assert pgw(args + ["--board", str(board)]) == 0
    m, sink = _read(out.read_bytes(), _pub(release["key"]), "esp32_ota_test",
                    limits={KIND_INDEX: 16384, KIND_FILES: 1 << 20, KIND_FIRMWARE: 0x180000})
    assert [c[0] for c in m.components] == [KIND_INDEX, KIND_FILES, KIND_FIRMWARE]
    assert sink.parts[KIND_FIRMWARE] == image.read_bytes()
    image.write_bytes(b"\x7fELF" + bytes(100))
    assert pgw(args + ["--board", str(board)]) == 1
    assert "0xE9" in capsys.readouterr().err


def test_build_refuses_what_no_device_could_install(release, tmp_path, capsys):
    base = ["ota", "build", "--board", "virtual", "--key", str(release["key"]), "--version", "0.2.0",
            "--out", str(tmp_path / "x")]
    assert pgw(base + ["--seq", "0"]) == 1
    assert pgw(base + ["--seq", "5", "--min-prev-seq", "5"]) == 1
    assert pgw(base[:-2] + ["--seq", "5", "--version", "v" * 33, "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "--seq must be" in err and "--min-prev-seq" in err and "version" in err
    assert not (tmp_path / "x").exists()
