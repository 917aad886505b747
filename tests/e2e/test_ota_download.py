"""An update over the air, end to end on a virtual board (docs/ota.md,
"Download"): a bundle of this firmware with another VERSION, built with
host_tools.ota, offered with `pgw ota publish`'s code to a real hub on the
test broker, which checks it and announces it. The board downloads it in
chunks, checks it as it streams, writes its code into the other ROM slot,
switches when no trade is due, boots it on trial and commits it once its
meters read and the hub ACKs. Killed mid-download, it resumes where its
progress line says; a bundle for another board class is refused and the
board keeps running what it runs. What ran is read from the board."""

import datetime
import hashlib
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import household_rig
from host_tools import deploy as deploy_tool
from host_tools import ota
from host_tools.boards import load_board
from host_tools.sim.household import UTC, Household

REPO = Path(__file__).resolve().parents[2]
BASE = re.search(r'VERSION = "([^"]+)"', (REPO / "firmware/gateway/version.py").read_text()).group(1)
NEXT = BASE + "-ota"
START = datetime.datetime(2025, 6, 21, 12, 0, 0, tzinfo=UTC)
RATE = 60  # 1-minute intervals: a READING, and so an ACK, every second


def variant(tmp, version):
    """This checkout's code for the virtual board, with another VERSION."""
    board = load_board("virtual")
    files = ota.code_files(board)
    src = tmp / version / "version.py"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text('VERSION = "%s"\n' % version)
    dest = src.with_suffix(".mpy")
    deploy_tool.compile_mpy(src, dest, board.mpy_cross_arch, "/rom/gateway/version.mpy")
    files["/gateway/version.mpy"] = dest
    return files


@pytest.fixture(scope="module")
def rig(tmp_path_factory, broker, release):
    house = Household(seed=5, start=START - datetime.timedelta(days=1), ev=False)
    config = {"interval_min": 1, "healthy_after_s": 2, "ota": {"trial_s": 90, "key": release.cose_key().hex()}}
    with household_rig(tmp_path_factory.mktemp("otadl"), broker, "otadl", START, RATE, house, config,
                       ready=r"reading grid seq") as rig:
        rig.hub.serve_ota([release.pub], every_s=60)
        rig.tmp = tmp_path_factory.mktemp("bundles")
        yield rig


def offer(rig, data):
    """`pgw ota publish`'s work, in a thread: it returns once the hub announced."""
    done = {}

    def run():
        try:
            done["ann"] = ota.publish(data, "127.0.0.1", rig.hub.port, rig.hub.community, timeout=60,
                                      out=lambda *a: None)
        except Exception as e:  # said by the test below
            done["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, done


def progress(rig):
    """The board's download progress line, read from its flash (a host directory)."""
    try:
        return (rig.vb.root / "state" / "ota-dl.txt").read_text().split()
    except OSError:
        return []


def wait(rig, pattern, mark, timeout):
    """wait_log, and on a timeout what the board said about its update."""
    try:
        return rig.con.wait_log(pattern, since=mark, timeout=timeout)
    except AssertionError:
        raise AssertionError("timed out waiting for %r: progress %r, hub %r, board said:\n%s" % (
            pattern, progress(rig), dict(rig.hub.ota.counts),
            "\n".join(re.findall(r".*(?:ota|pgw:|Error).*", rig.con.transcript[mark:])))) from None


def stored_code(rig, timeout):
    """Once the progress line vouches for stored code -> its bytes; the
    console is read meanwhile, so the board never waits on it."""
    deadline = time.monotonic() + timeout
    while True:
        p = progress(rig)
        if len(p) == 4 and int(p[3]) > 0:
            return int(p[3])
        assert time.monotonic() < deadline, "no code stored; progress %r, hub %r; console:\n%s" % (
            p, dict(rig.hub.ota.counts), "\n".join(re.findall(r".*ota.*", rig.con.transcript)))
        rig.con.port.read(4096)  # kept in the transcript


def hold_chunks_from(rig, first):
    """The hub serves chunks below `first` only, until the returned release() is called."""
    serve = rig.hub.ota._serve
    limit = [first]

    def held(kid_hex, payload):
        return [o for o in serve(kid_hex, payload) if int(o[0].rsplit("/", 1)[1]) < limit[0]]

    rig.hub.ota._serve = held

    def release():
        limit[0] = 1 << 30
    return release


def test_an_announced_bundle_is_downloaded_resumed_after_a_kill_staged_and_committed(rig, release):
    bundle = ota.build_bundle(load_board("virtual"), release, 1, NEXT, files=variant(rig.tmp, NEXT)).data
    # the hub holds back the chunks after the first 40 KB: the kill lands mid-download
    release = hold_chunks_from(rig, 40)
    mark = rig.con.mark()
    t, done = offer(rig, bundle)
    rig.con.wait_log(r"ota: version %s announced" % re.escape(NEXT), since=mark, timeout=60)
    at = stored_code(rig, 60)
    answer = rig.con.command("status", "of %d bytes" % len(bundle), timeout=20)  # the technician's view
    got = re.search(r"^download +(\d+) of %d bytes\r?$" % len(bundle), answer, re.M)
    assert got and 40 * 1024 >= int(got.group(1)) > at, answer
    release()
    boots = [e for e in rig.vb.channel.events if e["kind"] == "boot"]
    mark = rig.con.mark()
    os.kill(boots[-1]["pid"], signal.SIGKILL)
    resumed = wait(rig, r"ota: resuming at (\d+) of %d bytes" % len(bundle), mark, 60)
    assert int(resumed.group(1)) > at, resumed.group(0)  # the head and the stored code, not from 0
    wait(rig, r"ota: version %s \(seq 1\) checked and staged" % re.escape(NEXT), mark, 120)
    wait(rig, r"pgw: slot 1, seq 1 on trial", mark, 60)
    wait(rig, r"ota: seq 1 healthy: committed in slot 1", mark, 90)
    t.join(60)
    assert "ann" in done, done
    answer = rig.con.command("status", "firmware", timeout=20)
    assert re.search(r"^firmware +%s\r?$" % re.escape(NEXT), answer, re.M), answer
    assert re.search(r"^ota +slot 1, seq 1", answer, re.M), answer


def compromised(rig):
    """The hub announces whatever is offered, unchecked (a hub taken over, or
    a bad release tool): the board's own checks are all that stand."""
    from types import SimpleNamespace

    def announce_anything(data):
        try:
            return ota.split_manifest(data)[1]
        except Exception:
            return SimpleNamespace(version="?")

    rig.hub.ota._verify = announce_anything


def flipped(data, at):
    return data[:at] + bytes((data[at] ^ 0x01,)) + data[at + 1:]


def test_a_bad_bundle_is_refused_and_the_board_runs_on(rig, release, monkeypatch):
    """Acceptance 3 (docs/ota.md, "What a device accepts"): a bad signature,
    another board class, an older seq, a wrong digest, a truncated bundle;
    and a full ESP32 image for a board without OTA app partitions."""
    running = NEXT if "seq 1" in rig.con.command("status", "firmware", timeout=20) else BASE
    assert running == NEXT, "runs after the download test, on seq 1"
    compromised(rig)
    virtual = load_board("virtual")
    good = ota.build_bundle(virtual, release, 2, "0.0.2", files=variant(rig.tmp, "0.0.2-virtual")).data
    signed = len(ota.split_manifest(good)[0])
    cases = (
        ("signature", flipped(good, signed - 5)),  # inside the COSE signature
        ("class", ota.build_bundle(load_board("esp32_devkitc"), release, 2, "0.0.2").data),
        ("seq", ota.build_bundle(virtual, release, 1, "0.0.1", files=variant(rig.tmp, "0.0.1-virtual")).data),
        ("digest", flipped(good, len(good) - 100)),  # in the code: found at its end
        ("truncated", good[:-3000]),
    )
    # `pgw ota build` refuses an image for this board; a release tool that did not
    monkeypatch.setattr(ota, "_ota_partition_size", lambda board: 1 << 20)
    monkeypatch.setattr(virtual, "ota_apps", [("ota_0", 0x10000, 1 << 20), ("ota_1", 0x110000, 1 << 20)])
    image = b"\xe9" + bytes(4095)
    cases += (("components: this device cannot install a firmware",
               ota.build_bundle(virtual, release, 2, "0.0.2", firmware=image, files=variant(rig.tmp, "0.0.2-v")).data),)
    for why, data in cases:
        mark = rig.con.mark()
        t, done = offer(rig, data)
        wait(rig, r"ota: bundle refused: %s.*keeping seq 1" % why, mark, 90)
        t.join(60)
        answer = rig.con.command("status", "slot 1, seq 1", timeout=20)
        assert re.search(r"^firmware +%s\r?$" % re.escape(running), answer, re.M), (why, answer)
        assert re.search(r"^ota +slot 1, seq 1", answer, re.M), (why, answer)
        assert progress(rig) == ["done", hashlib.sha256(data).hexdigest()], (why, progress(rig))
    mark = rig.con.mark()
    rig.con.wait_log(r"reading grid seq", since=mark, timeout=30)  # still trading its readings
