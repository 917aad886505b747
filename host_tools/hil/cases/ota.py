"""An update under interruption, through the install API the downloader
uses (firmware/gateway/ota.py) over the raw REPL: half the new image
written into the other code slot, the power cut, the old version boots with
the update still staged; resumed (the stored half re-hashed), finished,
switched: the new version boots on trial. The power cut again before the
trial proved healthy: the old version is back and the update marked
failed. docs/ota.md has the rules."""

import base64
import hashlib
import re
import tempfile
from pathlib import Path

from host_tools.hil.case import POWER_CUT, RAW_REPL, ROM_SLOTS, Skip, needs
from host_tools.hil.cases.console import ask, rows, version_on_host

ORDER = 90  # last: it leaves an update marked failed in the slot record
CHUNK = 4096  # one flash block: ota.resume() restarts at a whole one


def new_image(board, version):
    """The firmware as a ROMFS image whose gateway/version.py says `version`."""
    from host_tools import deploy as d

    files = {p: f for p, f in d.build(board, rom=True).items() if p not in d.FILESYSTEM_ONLY}
    with tempfile.TemporaryDirectory(prefix="pgw-hil-ota-") as work:
        src = Path(work) / "version.py"
        src.write_text('VERSION = "%s"\n' % version)
        dest = src.with_suffix(".mpy")
        d.compile_mpy(src, dest, board.mpy_cross_arch, "/rom/gateway/version.mpy")
        files["/gateway/version.mpy"] = dest
        return d.romfs_image(files)


def write(half, image, start, end):
    for off in range(start, end, CHUNK):
        piece = image[off:min(off + CHUNK, end)]
        half.run("j.write(%d, a2b_base64(%r))" % (off, base64.b64encode(piece).decode()))


def state(half):
    """-> (running version, slot record text) from the board."""
    out = half.run("from gateway import ota\nfrom gateway.version import VERSION\n"
                   "from binascii import a2b_base64\nimport hashlib\nprint(VERSION)\nprint(ota.load())")
    version, record = out.splitlines()[-2:]
    return version, record


@needs(RAW_REPL, ROM_SLOTS, POWER_CUT)
def case_update_cut_half_way_then_resumed_boots_on_trial(hil):
    """half an update written, power cut: the old version boots; resumed, finished, switched: the new one on trial"""
    target = hil.target
    base = version_on_host()
    new = base + "-hil"
    image = new_image(target.board, new)
    half = hil.board_half()
    running, record = state(half)
    hil.log("before: %s, %s; image %d bytes" % (running, record, len(image)))
    rec = dict(re.findall(r"(\w+)=(\d+)", record))
    if rec.get("trial") == "1":
        raise Skip("the board runs a trial version (%s): let it commit or roll back first" % record)
    seq = max(int(rec.get("seq", 0)), int(rec.get("failed", 0))) + 1
    half.run("j = ota.begin(%d, %d)" % (seq, len(image)))
    cut_at = (len(image) // 2) // CHUNK * CHUNK
    write(half, image, 0, cut_at)
    hil.release(half)

    mark = target.power_cut()
    target.wait_app(mark)
    half = hil.board_half()
    running, record = state(half)
    hil.log("after the cut: %s, %s" % (running, record))
    assert running == base, "the board runs %s after the cut, not the old %s" % (running, base)
    assert "stage=%d ready=0" % seq in record, record

    half.run("j = ota.resume(%d, %d, %d)" % (seq, len(image), cut_at))
    stored = half.run("print(hashlib.sha256(j.stored()[:%d]).digest().hex())" % cut_at)
    assert stored == hashlib.sha256(image[:cut_at]).hexdigest(), "the slot lost what was written before the cut"
    write(half, image, cut_at, len(image))
    half.run("j.finish(bytes.fromhex(%r))" % hashlib.sha256(image).hexdigest())
    assert "stage=%d ready=1" % seq in state(half)[1]
    mark = target.mark()
    half.start("ota.switch()")
    said = half.expect(r"pgw: slot (\d), seq %d on trial" % seq, timeout=30)
    slot = said.group(1)
    half.reset_under_it()
    hil.release(half)
    target.wait_app(mark)
    con = hil.console()
    status = rows(ask(con, "status", "firmware"))
    hil.log("status on the trial: %s" % status)
    assert status["firmware"] == new, status
    if not status["ota"].startswith("slot %s, seq %d, on trial" % (slot, seq)):
        # committed already (a real hub answered): a power cut keeps the new version
        hil.log("the trial committed before the cut; no rollback to see")
        assert status["ota"] == "slot %s, seq %d" % (slot, seq), status
        return
    hil.release(con)

    mark = target.power_cut()  # on the trial, its start counted: the next boot rolls it back
    target.wait_app(mark)
    half = hil.board_half()
    running, record = state(half)
    hil.log("after a cut on the trial: %s, %s" % (running, record))
    assert running == base, "the board runs %s after a cut on the trial, not the old %s" % (running, base)
    assert "failed=%d" % seq in record and "trial" not in record, record
