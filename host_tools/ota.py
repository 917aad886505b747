"""`pgw ota`: signed update bundles (docs/ota.md, "Bundle format").

    pgw ota keygen --out release.pem
    pgw ota build --board B --key release.pem --seq N --version V [--min-prev-seq M]
                  [--firmware IMAGE] --out FILE
    pgw ota show FILE [--pub COSE_KEY | --key release.pem]

A bundle is manifest || index || code [|| firmware]: the manifest a
COSE_Sign1 by the release key (lib/ota/manifest.py), the index the SHA-256
and size of each file the version installs, the code the ROMFS image those
files make (boards with a ROM partition) or the files themselves, one after
the other in index order. The files and the image come from
host_tools.deploy's build() and romfs_image(), so a bundle installs exactly
what `pgw deploy` would; boot.py, main.py and board.json stay on the
filesystem and are not part of a bundle.

Signing and verifying use the board's own code in lib/ (cose, ota), with
the key held by `cryptography`; `show` checks a bundle with the device's
streaming reader. The tests check the result with pycose and cbor2.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import sys
import uuid
from pathlib import Path
from typing import NamedTuple

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from host_tools import deploy
from host_tools.boards import board_names, load_board

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "lib") not in sys.path:  # the board's own code: cbor, cose, ota
    sys.path.insert(0, str(REPO / "lib"))

import cbor  # noqa: E402
import cose  # noqa: E402
from ota import manifest as om  # noqa: E402
from ota.bundle import BundleReader  # noqa: E402
from ota.manifest import KIND_FILES, KIND_FIRMWARE, KIND_INDEX, KIND_NAMES, KIND_ROMFS, OtaError  # noqa: E402

ESP32_IMAGE_MAGIC = 0xE9  # first byte of an ESP-IDF app image
READ_CHUNK = 1024  # what `show` feeds the reader at a time, as a board would


class OtaBuildError(RuntimeError):
    """A bundle cannot be made as asked; `reason` is a short word."""

    def __init__(self, reason, detail):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class ReleaseKey:
    """The release key (P-256), from a PEM file; signs for lib/cose.py."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey):
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or private_key.curve.name != "secp256r1":
            raise OtaBuildError("key", "the release key must be an EC P-256 private key")
        self.private_key = private_key
        n = private_key.public_key().public_numbers()
        self.pub = (n.x, n.y)
        self.kid = cose.device_id(n.x, n.y)

    @classmethod
    def load(cls, path) -> "ReleaseKey":
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
        except OSError as e:
            raise OtaBuildError("key", f"{path}: {e.strerror}") from None
        except (ValueError, TypeError) as e:
            raise OtaBuildError("key", f"{path}: not an unencrypted PEM private key ({e})") from None
        return cls(key)

    def sign_digest(self, digest: bytes) -> bytes:
        der = self.private_key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        r, s = utils.decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def cose_key(self) -> bytes:
        return cose.encode_key(*self.pub)


def keygen(path) -> ReleaseKey:
    """A new release key, written as PKCS#8 PEM readable by its owner only.
    An existing file is never overwritten: losing a release key strands
    every gateway that trusts it."""
    path = Path(path)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise OtaBuildError("key", f"{path} exists; not overwriting a release key") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return ReleaseKey(key)


def class_id(board_name: str) -> bytes:
    return om.class_id(om.VENDOR_ID, board_name)


def code_files(board) -> dict:
    """{device path: local file} that a version installs on `board`: what
    deploy's build() makes, less what stays on the filesystem."""
    files = deploy.build(board, rom=bool(board.romfs_bytes))
    return {p: f for p, f in sorted(files.items()) if p not in deploy.FILESYSTEM_ONLY}


def index_bytes(files: dict) -> bytes:
    """The index: a CBOR sequence of [path, size, sha256], sorted by path."""
    out = bytearray()
    for path in sorted(files):
        data = Path(files[path]).read_bytes()
        out += cbor.dumps([path, len(data), hashlib.sha256(data).digest()])
    return bytes(out)


def _ota_partition_size(board):
    sizes = [p["size"] for p in board.flash.get("partitions", ()) if p["name"].startswith("ota_")]
    return min(sizes) if len(sizes) >= 2 else 0


class Bundle(NamedTuple):
    data: bytes            # the whole bundle
    manifest: om.Manifest
    signed: bytes          # the manifest's COSE_Sign1
    index: bytes
    code: bytes            # the ROMFS image, or the files concatenated
    files: dict            # {device path: local file}


def build_bundle(board, key: ReleaseKey, seq: int, version: str, min_prev_seq: int = 0,
                 firmware: bytes | None = None, created: int | None = None, files: dict | None = None) -> Bundle:
    """files: {device path: local file} to bundle instead of this checkout's
    code_files(board) (tests bundle variants of the firmware)."""
    if not 1 <= seq <= om.MAX_SEQ:
        raise OtaBuildError("seq", f"--seq must be in 1..{om.MAX_SEQ}")
    if not 0 <= min_prev_seq < seq:
        raise OtaBuildError("seq", f"--min-prev-seq must be in 0..{seq - 1}: no device could install it")
    if firmware is not None:
        room = _ota_partition_size(board)
        if not board.ota_apps or not room:  # the virtual_ota board's stand-in has them too
            raise OtaBuildError("firmware", f"board {board.name!r} has no ESP32 OTA partitions (ota_0, ota_1) "
                                "for a firmware image")
        if not firmware or firmware[0] != ESP32_IMAGE_MAGIC:
            raise OtaBuildError("firmware", "not an ESP32 app image (first byte must be 0xE9)")
        if len(firmware) > room:
            raise OtaBuildError("firmware", f"image of {len(firmware)} bytes, the OTA partitions hold {room}")
    if created is None:  # reproducible builds set SOURCE_DATE_EPOCH
        created = int(os.environ.get("SOURCE_DATE_EPOCH") or datetime.datetime.now().timestamp())
    cid = class_id(board.name)
    try:  # the fields alone, before anything is compiled
        om.Manifest(seq, version, om.VENDOR_ID, cid, min_prev_seq,
                    ((KIND_INDEX, 1, bytes(32)), (KIND_FILES, 1, bytes(32))), created).encode()
    except OtaError as e:
        raise OtaBuildError(e.reason, str(e)) from None
    files = code_files(board) if files is None else dict(sorted(files.items()))
    index = index_bytes(files)
    if board.romfs_bytes:
        kind = KIND_ROMFS
        code = deploy.romfs_image(files)
        if len(code) > board.romfs_bytes:
            raise OtaBuildError("size", f"the ROMFS image ({len(code)} bytes) does not fit the board's "
                                f"{board.romfs_bytes}-byte ROM partition")
    else:
        kind = KIND_FILES
        code = b"".join(Path(files[p]).read_bytes() for p in sorted(files))
    parts = [(KIND_INDEX, index), (kind, code)]
    if firmware is not None:
        parts.append((KIND_FIRMWARE, bytes(firmware)))
    comps = tuple((k, len(b), hashlib.sha256(b).digest()) for k, b in parts)
    try:
        m = om.Manifest(seq, version, om.VENDOR_ID, cid, min_prev_seq, comps, created)
        signed = om.sign(m, key.kid, key)
    except OtaError as e:
        raise OtaBuildError(e.reason, str(e)) from None
    return Bundle(signed + b"".join(b for _, b in parts), m, signed, index, code, files)


# -- reading a bundle on the host ------------------------------------------


def split_manifest(data: bytes):
    """-> (manifest bytes, Manifest decoded without checking the signature)."""
    import io

    fp = io.BytesIO(data)
    try:
        cbor2.CBORDecoder(fp).decode()
        n = fp.tell()
        _, _, payload, _ = cose.decode1(data[:n])
    except (cbor2.CBORDecodeError, cose.CoseError, EOFError) as e:
        raise OtaError("format", f"no COSE_Sign1 manifest at the start: {e}") from None
    return data[:n], om.Manifest.decode(payload)


def index_entries(index: bytes):
    """The index's [path, size, sha256] entries, decoded by cbor2."""
    import io

    fp = io.BytesIO(index)
    dec = cbor2.CBORDecoder(fp)
    out = []
    while fp.tell() < len(index):
        out.append(dec.decode())
    return out


class _HashingSink:
    """Stores nothing: the reader checks every digest as the bytes pass."""

    def __init__(self):
        self.index = bytearray()  # files mode reads it back
        self.components = []

    def manifest(self, m, signed, stored):
        pass

    def component(self, kind, size, stored):
        self.components.append((kind, size))

    def index_entry(self, path, size, digest):
        pass

    def file(self, path, size, digest, stored):
        pass

    def data(self, kind, offset, mv):
        if kind == KIND_INDEX:
            self.index += mv

    def file_end(self, path):
        pass

    def component_end(self, kind):
        pass

    def read_index(self, offset, mv):
        n = min(len(mv), len(self.index) - offset)
        mv[:n] = self.index[offset:offset + n]
        return n


def verify(data: bytes, pub) -> om.Manifest:
    """Check a bundle as a device would, with the device's reader: the
    signature under `pub` (x, y), then every size and digest. The policy is
    the manifest's own vendor and class, with a device on min_prev_seq:
    whether a given device takes it also depends on its installed seq."""
    _, m = split_manifest(data)
    kid = cose.device_id(*pub)
    policy = om.Policy(lambda k: pub if k == kid else None, m.vendor_id, m.class_id, m.min_prev_seq,
                       {KIND_INDEX: om.MAX_SEQ, KIND_ROMFS: om.MAX_SEQ, KIND_FILES: om.MAX_SEQ,
                        KIND_FIRMWARE: om.MAX_SEQ}, 1 << 40)
    reader = BundleReader(policy, _HashingSink())
    view = memoryview(data)
    for at in range(0, len(data), READ_CHUNK):
        reader.feed(view[at:at + READ_CHUNK])
    return reader.finish()


def load_public(text) -> tuple:
    """--pub: a COSE_Key in hex (as keygen prints it), or a file holding
    that hex, the COSE_Key's bytes, or a PEM public or private key."""
    raw = None
    path = Path(text)
    if len(text) < 256 and path.is_file():
        raw = path.read_bytes()
        if b"-----BEGIN" in raw:
            try:
                key = serialization.load_pem_public_key(raw)
            except ValueError:
                key = serialization.load_pem_private_key(raw, None).public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
                raise OtaBuildError("key", f"{text}: not a P-256 key")
            n = key.public_numbers()
            return n.x, n.y
    else:
        raw = text.encode()
    try:
        raw = bytes.fromhex(raw.decode().strip())
    except (UnicodeDecodeError, ValueError):
        pass
    try:
        return cose.decode_key(raw)[1]
    except cose.CoseError as e:
        raise OtaBuildError("key", f"--pub: not a COSE_Key ({e})") from None


def _uuid(b):
    return str(uuid.UUID(bytes=b))


def describe(data: bytes, name: str = "bundle") -> list:
    """The lines `pgw ota show` prints about a bundle (nothing verified)."""
    signed, m = split_manifest(data)
    kid = cose.decode1(signed)[0]
    boards = {class_id(b): b for b in board_names()}
    created = datetime.datetime.fromtimestamp(m.created, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"bundle     {name}, {len(data):,} bytes",
        f"manifest   {len(signed)} bytes, COSE_Sign1 ES256, release kid {kid.hex()}",
        f"seq        {m.seq} (installs over seq {m.min_prev_seq}..{m.seq - 1})",
        f"version    {m.version}",
        f"vendor     {_uuid(m.vendor_id)}" + (f" ({om.VENDOR_NAME})" if m.vendor_id == om.VENDOR_ID else ""),
        f"class      {_uuid(m.class_id)}" + (f" (board {boards[m.class_id]})" if m.class_id in boards else
                                             " (no board file here)"),
        f"created    {created}",
        "components",
    ]
    at = len(signed)
    index = b""
    for kind, size, digest in m.components:
        lines.append(f"  {KIND_NAMES[kind]:<9}{size:>10,} bytes at {at:>9,}  sha256 {digest.hex()}")
        if kind == KIND_INDEX:
            index = data[at:at + size]
        at += size
    try:
        entries = index_entries(index)
    except (cbor2.CBORDecodeError, EOFError) as e:
        lines.append(f"index      not readable: {e}")
        return lines
    total = sum(e[1] for e in entries if isinstance(e, list) and len(e) == 3 and isinstance(e[1], int))
    lines.append(f"index      {len(entries)} files, {total:,} bytes")
    for e in entries:
        if isinstance(e, list) and len(e) == 3 and isinstance(e[0], str) and isinstance(e[2], bytes):
            lines.append(f"  {e[0]:<44}{e[1]:>8,}  {e[2].hex()[:16]}")
        else:
            lines.append(f"  malformed entry {e!r}")
    return lines


# -- the command line ------------------------------------------------------


def add_arguments(p):
    sub = p.add_subparsers(dest="ota_command", required=True, metavar="keygen|build|show|publish")
    k = sub.add_parser("keygen", help="make a release key (P-256, PEM) and print its COSE_Key for device configs")
    k.add_argument("--out", required=True, metavar="FILE", help="where to write the private key (not overwritten); its public COSE_Key goes beside it (.cose)")
    b = sub.add_parser("build", help="build and sign the update bundle of this checkout for a board")
    b.add_argument("--board", required=True, help="board definition (name or .json path)")
    b.add_argument("--key", required=True, metavar="PEM", help="the release key (from `pgw ota keygen`)")
    b.add_argument("--seq", required=True, type=int, help="sequence number, above every earlier release's")
    b.add_argument("--version", required=True, help="version text the device reports, e.g. 0.2.0")
    b.add_argument("--min-prev-seq", type=int, default=0, metavar="M",
                   help="devices must run seq M or later to install this (default 0: any)")
    b.add_argument("--firmware", metavar="IMAGE", help="also carry a MicroPython app image (ESP32 OTA partitions)")
    b.add_argument("--out", required=True, metavar="FILE")
    s = sub.add_parser("show", help="print a bundle's manifest and index; verify it with --pub or --key")
    s.add_argument("bundle", metavar="FILE")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--pub", metavar="COSE_KEY", help="release public key: COSE_Key hex, or a file (hex, PEM)")
    g.add_argument("--key", metavar="PEM", help="the release private key's file")
    u = sub.add_parser("publish", help="offer a bundle to the hub, which checks it and announces it to the gateways")
    u.add_argument("bundle", metavar="FILE")
    u.add_argument("--broker", required=True, metavar="URL", help="the hub's MQTT broker, mqtt://host:port")
    u.add_argument("--community", default="demo")
    u.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="how long to wait for the hub's announcement (default 60 s)")


def run(args) -> int:
    return {"keygen": _keygen, "build": _build, "show": _show, "publish": _publish}[args.ota_command](args)


def publish(data: bytes, host: str, port: int, community: str, timeout: float = 60.0, out=print):
    """Put the bundle on the broker as retained chunks and an offer, then
    wait until the hub announces it (docs/ota.md, "Publishing") -> the
    announcement's COSE_Sign1 bytes. TimeoutError when the hub does not
    announce it: it refused the bundle (see its counts) or is not running."""
    import threading

    import paho.mqtt.client as mqtt

    from host_tools.hub import ota as hub_ota

    sha = hashlib.sha256(data).digest()
    announced = threading.Event()
    seen = {}

    def on_message(client, userdata, msg):
        try:
            payload = cbor2.loads(cbor2.loads(msg.payload).value[2])
        except Exception:
            return
        if isinstance(payload, list) and len(payload) >= 7 and payload[6] == sha:
            seen["ann"] = msg.payload
            announced.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pgw-ota-publish-{os.getpid()}")
    client.on_message = on_message
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        client.subscribe(f"pgw/1/{community}/hub/ota", qos=1)
        pubs = list(hub_ota.publications(community, data))
        infos = [client.publish(topic, payload, qos=1, retain=True) for topic, payload in pubs]
        for info in infos:
            info.wait_for_publish(timeout)
        out(f"ota: offered {len(data):,} bytes as {len(pubs) - 1} chunks, id {hub_ota.bundle_id(sha)}")
        if not announced.wait(timeout):
            raise TimeoutError(f"the hub did not announce bundle {hub_ota.bundle_id(sha)} within {timeout:g} s: "
                               "is it running with --release-key for this bundle's key?")
        out("ota: announced by the hub on " + f"pgw/1/{community}/hub/ota")
        return seen["ann"]
    finally:
        client.loop_stop()
        client.disconnect()


def _publish(args):
    from urllib.parse import urlparse

    url = urlparse(args.broker)
    if url.scheme != "mqtt":
        raise ValueError("--broker must be mqtt://host:port")
    publish(Path(args.bundle).read_bytes(), url.hostname or "127.0.0.1", url.port or 1883, args.community,
            args.timeout)
    return 0


def _keygen(args):
    key = keygen(args.out)
    # the public half beside it, as `pgw provision keygen` does: what
    # `pgw provision --ota-key`, `pgw hub --release-key` and `show --pub` take
    pub = Path(args.out).with_suffix(".cose")
    pub.write_bytes(key.cose_key())
    print(f"release key written to {args.out} (keep it offline: it can update every gateway that trusts it)")
    print(f"public key written to {pub}")
    print(f"kid       {key.kid.hex()}")
    print(f"cose_key  {key.cose_key().hex()}")
    return 0


def _build(args):
    board = load_board(args.board)
    key = ReleaseKey.load(args.key)
    firmware = None
    if args.firmware:
        try:
            firmware = Path(args.firmware).read_bytes()
        except OSError as e:
            raise OtaBuildError("firmware", f"{args.firmware}: {e.strerror}") from None
    b = build_bundle(board, key, args.seq, args.version, args.min_prev_seq, firmware)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(b.data)
    tmp.replace(out)
    code = "romfs image" if board.romfs_bytes else "files"
    print(f"ota: {board.name} seq {args.seq} version {args.version}: {len(b.files)} files, {code} "
          f"{len(b.code):,} bytes" + (f", firmware {len(firmware):,} bytes" if firmware else ""))
    print(f"ota: wrote {out} ({len(b.data):,} bytes; manifest {len(b.signed)} bytes, kid {key.kid.hex()})")
    return 0


def _show(args):
    data = Path(args.bundle).read_bytes()
    for line in describe(data, args.bundle):
        print(line)
    if args.pub is None and args.key is None:
        print("verified   not checked: give --pub COSE_KEY or --key PEM")
        return 0
    pub = load_public(args.pub) if args.pub else ReleaseKey.load(args.key).pub
    try:
        m = verify(data, pub)
    except OtaError as e:
        print(f"verified   NO: {e}")
        return 1
    print(f"verified   yes: signed by release kid {m.kid.hex()}, every size and SHA-256 matches")
    return 0
