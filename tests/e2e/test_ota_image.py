"""A full firmware image over the air (docs/ota.md, "Full firmware images
(ESP32)"), end to end on a virtual board whose board file has ESP32 OTA
partitions (virtual_ota): a bundle of this firmware with another VERSION
and an ESP32 app image made by esptool's elf2image, offered to a real hub
on the test broker, downloaded by the board (killed once inside the image
and resumed), its code written into the other ROM slot and the image into
the next app partition, switched to, booted on trial and committed: the
supervisor's bootloader reports on the GPIO channel which partition booted,
its otadata state and its image's SHA-256, so what booted is read from the
channel, not from the firmware. Then a version that never gets healthy: the
reset at its trial deadline boots the previous app again and boot.py rolls
the code slot back."""

import datetime
import hashlib
import os
import re
import signal
import time

import pytest
from esptool.cmds import elf2image

from conftest import household_rig
from host.test_flash import make_elf
from host_tools import deploy as deploy_tool
from host_tools import ota
from host_tools.boards import load_board
from host_tools.sim.household import UTC, Household
from host_tools.vboard.supervisor import app_flash
from test_ota_download import BASE, REPO, hold_chunks_from, offer, progress, wait

BOARD = load_board("virtual_ota")
START = datetime.datetime(2025, 6, 21, 12, 0, 0, tzinfo=UTC)
RATE = 60  # 1-minute intervals: a READING, and so an ACK, every second
TRIAL_S = 15


def app_image(tag, code_kb=300):
    """An ESP32 app image (esptool's elf2image) of a few hundred KB; `tag` makes each one differ."""
    code = bytes((i * 7 + tag) & 0xFF for i in range(code_kb * 1024))
    return elf2image(make_elf(0x400D0018, [(".flash.text", 0x400D0018, code, True),
                                           (".dram0.data", 0x3FFB0000, b"firmware %d\0" % tag * 8, False)]),
                     "esp32")


def variant(tmp, version, never_healthy=False):
    """This checkout's code for virtual_ota with another VERSION (and, for
    the version that fails, a health check that never passes)."""
    files = ota.code_files(BOARD)

    def compile_as(device_path, source):
        src = tmp / version / device_path.rsplit("/", 1)[1].replace(".mpy", ".py")
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(source)
        dest = src.with_suffix(".mpy")
        deploy_tool.compile_mpy(src, dest, BOARD.mpy_cross_arch, "/rom" + device_path)
        files[device_path] = dest

    compile_as("/gateway/version.mpy", 'VERSION = "%s"\n' % version)
    if never_healthy:
        source = (REPO / "firmware/gateway/ota.py").read_text()
        start = "def unhealthy(app):\n"
        assert source.count(start) == 1
        compile_as("/gateway/ota.mpy", source.replace(start, start + '    return "this version never gets healthy"\n'))
    return files


@pytest.fixture(scope="module")
def rig(tmp_path_factory, broker, release):
    house = Household(seed=7, start=START - datetime.timedelta(days=1), ev=False)
    config = {"interval_min": 1, "healthy_after_s": 2, "ota": {"trial_s": TRIAL_S, "key": release.cose_key().hex()}}
    with household_rig(tmp_path_factory.mktemp("otaimg"), broker, "otaimg", START, RATE, house, config,
                       ready=r"reading grid seq", board="virtual_ota") as rig:
        rig.hub.serve_ota([release.pub], every_s=60)
        rig.tmp = tmp_path_factory.mktemp("bundles")
        # flashed as `pgw flash` does it: everything erased, the first image in ota_0
        rig.images = {0: app_image(0)}
        flash = app_flash(rig.vb.root, BOARD)
        flash.erase()
        flash.write_image(rig.images[0], "ota_0")
        mark = rig.con.mark()
        rig.vb.channel.power_cycle()
        rig.con.wait_log(r"reading grid seq", since=mark, timeout=30)
        yield rig


def booted(rig, since, timeout=30):
    """The bootloader's report of the next reset after `since` (GPIO channel)."""
    return rig.vb.channel.wait_kind("bootloader", since=since, timeout=timeout)


def stored_past(rig, at, timeout):
    """Once the progress line vouches for more than `at` bytes after the head
    -> its count; the console is read meanwhile, so the board never waits on it."""
    deadline = time.monotonic() + timeout
    while True:
        p = progress(rig)
        if len(p) == 4 and int(p[3]) > at:
            return int(p[3])
        assert time.monotonic() < deadline, "progress %r, hub %r" % (p, dict(rig.hub.ota.counts))
        rig.con.port.read(4096)  # kept in the transcript


def sha(data):
    return hashlib.sha256(data).hexdigest()


def status(rig):
    answer = rig.con.command("status", "uptime", timeout=20)
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^(\w+) +(.*?)\r?$", answer, re.M)}


def test_the_flashed_image_boots_from_ota_0(rig):
    first = [e for e in rig.vb.channel.events if e["kind"] == "bootloader"][-1]
    assert (first["app"], first["state"], first["ota_seq"]) == ("ota_0", "VALID", 1), first
    assert first["sha256"] == sha(rig.images[0]) and first["size"] == len(rig.images[0])


def test_a_bundle_with_an_image_is_downloaded_resumed_inside_the_image_booted_and_committed(rig, release):
    version = BASE + "-fw"
    rig.images[1] = image = app_image(1)
    b = ota.build_bundle(BOARD, release, 1, version, firmware=image, files=variant(rig.tmp, version))
    code = b.manifest.component(2)[0]  # the ROMFS image; the firmware image follows it
    head = len(b.signed) + len(b.index)
    # the hub holds back the chunks from 40 KB into the image: the kill lands in it
    release_chunks = hold_chunks_from(rig, (head + code) // 1024 + 40)
    mark = rig.con.mark()
    t, done = offer(rig, b.data)
    wait(rig, r"ota: version %s announced" % re.escape(version), mark, 60)
    stored = stored_past(rig, code, 60)
    assert (stored - code) % 4096 == 0, stored  # a whole block of the image
    release_chunks()
    pid = [e for e in rig.vb.channel.events if e["kind"] == "boot"][-1]["pid"]
    mark, ch = rig.con.mark(), rig.vb.channel.mark()
    os.kill(pid, signal.SIGKILL)
    assert booted(rig, ch)["app"] == "ota_0"  # a power cut mid-download: the old app
    ch = rig.vb.channel.mark()  # the switch follows the staging at once: mark before
    resumed = wait(rig, r"ota: resuming at (\d+) of %d bytes" % len(b.data), mark, 60)
    assert int(resumed.group(1)) >= head + stored, resumed.group(0)  # not from the start of the image
    wait(rig, r"ota: version %s \(seq 1\) checked and staged" % re.escape(version), mark, 60)
    wait(rig, r"pgw: firmware image set to boot with seq 1", mark, 30)
    set_boot = rig.vb.channel.wait_kind("otadata", op="set_boot", since=ch, timeout=10)
    assert (set_boot["app"], set_boot["state"]) == ("ota_1", "NEW"), set_boot
    trial = booted(rig, ch)
    assert (trial["app"], trial["state"]) == ("ota_1", "PENDING_VERIFY"), trial
    assert trial["sha256"] == sha(image), trial
    wait(rig, r"pgw: slot 1, seq 1 on trial", mark, 30)
    wait(rig, r"ota: seq 1 healthy: committed in slot 1", mark, 60)
    valid = rig.vb.channel.wait_kind("otadata", op="mark_app_valid_cancel_rollback", since=ch, timeout=10)
    assert (valid["app"], valid["state"]) == ("ota_1", "VALID"), valid
    t.join(60)
    assert "ann" in done, done
    rows = status(rig)
    assert rows["firmware"] == version and rows["ota"] == "slot 1, seq 1", rows
    # committed: a power cut boots the new image again, valid now
    mark, ch = rig.con.mark(), rig.vb.channel.mark()
    rig.vb.channel.power_cycle()
    again = booted(rig, ch)
    assert (again["app"], again["state"], again["sha256"]) == ("ota_1", "VALID", sha(image)), again
    rig.con.wait_log(r"reading grid seq", since=mark, timeout=30)


def test_a_version_that_never_gets_healthy_rolls_back_its_image_and_its_code(rig, release):
    running = status(rig)
    assert running["ota"] == "slot 1, seq 1", running  # the previous test's version
    version = BASE + "-sick"
    image = app_image(2)
    b = ota.build_bundle(BOARD, release, 2, version, firmware=image,
                         files=variant(rig.tmp, version, never_healthy=True))
    mark, ch = rig.con.mark(), rig.vb.channel.mark()
    t, done = offer(rig, b.data)
    wait(rig, r"ota: version %s \(seq 2\) checked and staged" % re.escape(version), mark, 60)
    trial = booted(rig, ch)
    assert (trial["app"], trial["state"], trial["sha256"]) == ("ota_0", "PENDING_VERIFY", sha(image)), trial
    wait(rig, r"pgw: slot 0, seq 2 on trial", mark, 30)
    ch = rig.vb.channel.mark()
    wait(rig, r"ota: seq 2 not healthy after %d s \(this version never gets healthy\)" % TRIAL_S, mark,
         TRIAL_S + 30)
    # the reset at the deadline: the bootloader aborts the image never marked
    # valid and boots the previous one; boot.py rolls the code slot back
    back = booted(rig, ch)
    assert (back["app"], back["state"], back["sha256"]) == ("ota_1", "VALID", sha(rig.images[1])), back
    assert not [e for e in rig.vb.channel.events[ch:] if e["kind"] == "otadata"]  # never marked valid
    wait(rig, r"pgw: trial not committed: back to slot 1, seq 1", mark, 30)
    rig.con.wait_log(r"reading grid seq", since=rig.con.mark(), timeout=30)
    t.join(60)
    rows = status(rig)
    assert rows["firmware"] == BASE + "-fw" and rows["ota"] == "slot 1, seq 1, seq 2 rolled back", rows
