"""An update over the air interrupted at chunk boundaries (docs/ota.md,
"Interrupted updates"): the real gateway bundle (this firmware with another
VERSION) served by a real hub over the test broker, the board's MQTT link
through a NetProxy. The hub serves the chunks below n only; once the board
says it stands at chunk n, the download is interrupted there, and chunk n
is let through for the next boundary:

- cut: every connection of the board reset (RST), or silenced (blackhole)
  until the board gives the link up; it reconnects and asks again from n;
- kill: SIGKILL of the board's interpreter (a power cut); it boots the old
  version and resumes from its progress line.

After every interruption the board must run the old version, complete and
bootable: `status` says its firmware and its `ota` row as before (and how
much of the bundle it holds: all of chunks 0 .. n-1 after a cut), its app
marks itself healthy again (kill) and a reading it publishes afterwards is
stored by the hub. Then the chunks after the last boundary, interruptions
after the last chunk (while the bundle is checked, staged and switched to),
and the new version on trial and committed.

Where the board stands is what it says itself: sent the hub's announcement
again (as each reconnect and the hub's minute do), it answers "ota: at chunk
K of N: asking again" and asks the hub for chunk K on. The hub's requests
are not that observable: a request for chunk n also goes out while the
chunks before it are still arriving.

PGW_OTA_INTERRUPTS=all interrupts at every boundary (about 330 for each
mode: `make ota-soak`); by default a sample: the first chunk, the chunks
around the end of the index, a 4 KB block of the code and the chunk after
it, the middle and the last chunk."""

import datetime
import os
import re
import signal
import threading
import time

import pytest

from conftest import household_rig
from host_tools import ota
from host_tools.boards import load_board
from host_tools.netproxy import NetProxy
from host_tools.sim.household import Household
from test_ota_download import BASE, RATE, START, offer, progress, variant

CHUNK = 1024  # the hub's chunk size
BLOCK = 4096  # the progress line vouches for whole blocks of the code
ALL = os.environ.get("PGW_OTA_INTERRUPTS") == "all"


@pytest.fixture(scope="module")
def rig(tmp_path_factory, broker, release):
    house = Household(seed=7, start=START - datetime.timedelta(days=1), ev=False)
    with NetProxy("127.0.0.1", broker.port) as proxy:
        # healthy_after_s 1: a kill's check waits for the app to mark itself healthy
        config = {"interval_min": 1, "healthy_after_s": 1, "mqtt": {"port": proxy.port},
                  "ota": {"trial_s": 90, "key": release.cose_key().hex()}}
        with household_rig(tmp_path_factory.mktemp("otaint"), broker, "otaint", START, RATE, house, config,
                           ready=r"reading grid seq") as rig:
            rig.proxy = proxy
            rig.hub.serve_ota([release.pub], every_s=60)
            rig.gate = Gate(rig.hub.ota)
            rig.tmp = tmp_path_factory.mktemp("bundles")
            yield rig


class Gate:
    """The hub serves the chunks below `limit` only; `served` is set once
    the chunk `watch` has been served."""

    def __init__(self, hub_ota):
        self.limit = 1 << 30
        self.watch = None
        self.served = threading.Event()
        serve = hub_ota._serve

        def gated(kid_hex, payload):
            out = [o for o in serve(kid_hex, payload) if int(o[0].rsplit("/", 1)[1]) < self.limit]
            if any(int(o[0].rsplit("/", 1)[1]) == self.watch for o in out):
                self.served.set()
            return out

        hub_ota._serve = gated


def said(rig, mark):
    """What the board said about its update and its boots since mark."""
    return "\n".join(re.findall(r".*(?:ota|pgw:|mqtt|Error|vboard).*", rig.con.transcript[mark:]))


def wait(rig, pattern, mark, timeout):
    try:
        return rig.con.wait_log(pattern, since=mark, timeout=timeout)
    except AssertionError:
        raise AssertionError("timed out waiting for %r: progress %r, hub %r, board said:\n%s" % (
            pattern, progress(rig), dict(rig.hub.ota.counts), said(rig, mark))) from None


AT = r"ota: at chunk (\d+) of (\d+): asking again"


def stand_at(rig, ann, n, timeout=30):
    """Let the hub serve the chunks below n and wait until the board has
    handled them all: it is sent the announcement again until it says it
    stands at n."""
    gate = rig.gate
    gate.watch = n - 1
    gate.served.clear()
    gate.limit = n
    deadline = time.monotonic() + timeout
    topic = "pgw/1/%s/hub/ota" % rig.hub.community
    while True:
        mark = rig.con.mark()
        rig.pub.send(topic, ann)
        k = int(wait(rig, AT, mark, max(1, deadline - time.monotonic())).group(1))
        assert k <= n, "the board took chunk %d, held back by the hub (at %d): %s" % (k - 1, n, said(rig, mark))
        if k == n:
            return
        assert time.monotonic() < deadline, "the board stays at chunk %d, not %d" % (k, n)
        gate.served.wait(max(0, deadline - time.monotonic()))  # chunk n-1 is on its way: ask again after


def status_rows(rig):
    answer = rig.con.command("status", "firmware", timeout=20)
    rows = dict(re.findall(r"^(firmware|ota|download) +(.*?)\r?$", answer, re.M))
    assert {"firmware", "ota"} <= set(rows), answer
    return rows


def boot_record(rig):
    try:
        return (rig.vb.root / "state" / "boot.txt").read_text()
    except OSError:
        return ""


def healthy(rig, timeout=20):
    """The app has run healthy_after_s since its start: the boot record says so."""
    deadline = time.monotonic() + timeout
    while not re.search(r"\bunhealthy=0\b", boot_record(rig)):
        assert time.monotonic() < deadline, "the app never got healthy: boot record %r" % boot_record(rig)
        rig.con.port.read(4096)  # kept in the transcript; returns after at most 50 ms


def published_since(rig, t0, timeout=20):
    """A message of the board's (a reading, each second) stored by the hub after t0."""
    deadline = time.monotonic() + timeout
    while rig.hub.store.last_arrival.get(rig.kid, 0) <= t0:
        assert time.monotonic() < deadline, "nothing from the board stored by the hub since the interruption"
        rig.con.port.read(4096)


def boundaries(chunks, head):
    """The chunk boundaries n (chunks 0..n-1 in, n not yet) to interrupt at."""
    if ALL:
        return list(range(1, chunks))
    block = (head + BLOCK) // CHUNK  # the chunk that completes the code's first 4 KB block
    return sorted({1, head // CHUNK, head // CHUNK + 1, block, block + 1, chunks // 2, chunks - 1})


def current_pid(rig):
    return [e for e in rig.vb.channel.events if e["kind"] == "boot"][-1]["pid"]


def record(rig):
    """The board's slot record (/state/ota.txt), as its flash holds it."""
    try:
        return (rig.vb.root / "state" / "ota.txt").read_text()
    except OSError:
        return ""


def kill_when(rig, pid, what, holds, timeout=30):
    """SIGKILL the interpreter `pid` as soon as its flash shows `what`
    (files are replaced by a rename, so each read sees one whole state)
    -> whether it was killed. Only that boot is killed: once it has ended
    (it reset itself first), nothing is."""
    deadline = time.monotonic() + timeout
    while not holds():
        if current_pid(rig) != pid:
            return False
        assert time.monotonic() < deadline, "the board's flash never showed %s: record %r, progress %r" % (
            what, record(rig), progress(rig))
        time.sleep(0.0002)  # between reads of two small files; the board's writes decide
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def interrupt(rig, mode, n, before):
    """Interrupt the download at boundary n (the hub holds chunk n back),
    then check that the board runs the old version, complete and bootable."""
    t0 = time.time()
    mark, events = rig.con.mark(), rig.vb.channel.mark()
    if mode == "kill":
        os.kill(current_pid(rig), signal.SIGKILL)
        rig.vb.channel.wait_kind("boot", timeout=20, since=events)
        wait(rig, r"pgw: boot \d+, board virtual, reset HARD_RESET", mark, 30)
        k = int(wait(rig, AT, mark, 30).group(1))
        assert k <= n, "resumed at chunk %d, after boundary %d" % (k, n)
        healthy(rig)
    else:
        if mode == "blackhole":  # silence: the board gives the link up after mqtt.dead_s
            rig.proxy.blackhole()
            wait(rig, r"mqtt: link lost", mark, 30)
            rig.proxy.restore()
        else:
            assert rig.proxy.reset_all() >= 1
        # the retained announcement after the reconnect: it asks again from n, not earlier or later
        m = wait(rig, r"mqtt: connected(?s:.*?)" + AT, mark, 30)
        assert int(m.group(1)) == n, "after the cut at %d the board asks from %s" % (n, m.group(1))
        assert [e for e in rig.vb.channel.events[events:] if e["kind"] == "boot"] == [], \
            "the board rebooted on a cut link: %s" % said(rig, mark)
    rows = status_rows(rig)
    assert rows["firmware"] == before["firmware"], (n, rows)
    # the ota row is the old version's, with the new one being written once its code has started
    assert rows["ota"] in (before["ota"], before["ota"] + ", seq %d being written" % before["seq"]), (n, rows)
    assert "being written" in rows["ota"] or n * CHUNK <= before["head"] + CHUNK, (n, rows)
    # the bundle's bytes its reader holds: chunks 0 .. n-1 after a cut, a prefix of them after a kill
    got = re.fullmatch(r"(\d+) of %d bytes" % before["size"], rows.get("download", ""))
    assert got and int(got.group(1)) <= n * CHUNK, (n, rows)
    assert mode == "kill" or int(got.group(1)) == n * CHUNK, (n, rows)
    published_since(rig, t0)


def update(rig, release, mode):
    """One update interrupted at the boundaries, then around its end, to a
    committed new version."""
    old = status_rows(rig)
    seq = int(re.match(r"slot \d, seq (\d+)", old["ota"]).group(1)) + 1
    version = "%s-i%d" % (BASE, seq)
    bundle = ota.build_bundle(load_board("virtual"), release, seq, version, files=variant(rig.tmp, version)).data
    signed, manifest = ota.split_manifest(bundle)
    head = len(signed) + manifest.component(1)[0]  # the manifest and the index
    chunks = -(-len(bundle) // CHUNK)
    points = boundaries(chunks, head)
    before = dict(old, seq=seq, head=head, size=len(bundle))
    gate = rig.gate
    gate.limit = 0
    start = rig.con.mark()
    t, done = offer(rig, bundle)
    wait(rig, r"ota: version %s announced" % re.escape(version), start, 60)
    t.join(60)
    ann = done["ann"]
    for i, n in enumerate(points):
        stand_at(rig, ann, n)
        interrupt(rig, "blackhole" if mode == "cut" and i % 8 == 3 else mode, n, before)
    # Around the end: all but the last chunk in; then an interruption as the
    # last one is served (the board checks the bundle and the slot, stages,
    # switches), and kills once its flash shows it staged, and switched.
    stand_at(rig, ann, chunks - 1)
    gate.watch = chunks - 1
    gate.served.clear()
    pid, events = current_pid(rig), rig.vb.channel.mark()
    gate.limit = chunks
    rig.pub.send("pgw/1/%s/hub/ota" % rig.hub.community, ann)
    assert gate.served.wait(30), said(rig, start)
    if mode == "cut":
        rig.proxy.reset_all()
    else:
        os.kill(pid, signal.SIGKILL)
        pid = rig.vb.channel.wait_kind("boot", timeout=20, since=events)["pid"]
    # staged (the record says ready=1; the progress line and the switch come next)
    events = rig.vb.channel.mark()
    staged = kill_when(rig, pid, "the new version staged", lambda: re.search(r"\bready=1\b", record(rig)))
    if mode == "kill" and staged:  # the next boot switches: killed after the switch's record, before its reset
        pid = rig.vb.channel.wait_kind("boot", timeout=20, since=events)["pid"]
        kill_when(rig, pid, "the switch", lambda: re.search(r"\btrial=1 tries=0\b", record(rig)))
    wait(rig, r"pgw: slot \d, seq %d on trial" % seq, start, 60)
    wait(rig, r"ota: seq %d healthy: committed in slot \d" % seq, start, 90)
    rows = status_rows(rig)
    assert rows["firmware"] == version, rows
    assert re.match(r"slot \d, seq %d$" % seq, rows["ota"]), rows
    log = rig.con.transcript[start:]
    assert "cannot resume" not in log and "refused" not in log, said(rig, start)


def test_a_download_cut_at_chunk_boundaries_resumes_and_ends_on_a_complete_version(rig, release):
    update(rig, release, "cut")


def test_a_download_killed_at_chunk_boundaries_resumes_and_ends_on_a_complete_version(rig, release):
    update(rig, release, "kill")
