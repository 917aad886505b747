"""A new version installed into the other code slot on virtual boards
(docs/ota.md "Slots, trial boot and rollback"): written through the install
API (firmware/gateway/ota.py) over the raw REPL, as the downloader will,
switched to, booted on trial, then committed once healthy or rolled back;
SIGKILLs of the board while it is written and around the switch.

The versions are ROMFS images built with host_tools.deploy's build() and
romfs_image() from the firmware with another VERSION (and, for the one that
fails, an app that raises at start). What ran is read from the board: the
`firmware` and `ota` rows of `status` and the lines it prints at boot.

PGW_OTA_KILLS=all kills the board after every chunk of the image (about 80)
instead of a sample (docs/ota.md, "Interrupted updates")."""

import base64
import datetime
import hashlib
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from mpremote.transport_serial import SerialTransport

from conftest import SerialExpect, household_rig, run_tool
from host_tools import deploy as deploy_tool
from host_tools.boards import load_board
from host_tools.sim.household import UTC, Household

REPO = Path(__file__).resolve().parents[2]
BASE = re.search(r'VERSION = "([^"]+)"', (REPO / "firmware/gateway/version.py").read_text()).group(1)
NEXT = BASE + "-next"
CHUNK = 4096
# tests/lib/protocol_vectors.py's hub key (as tests/lib/test_deviceconfig.py has it): a valid
# hub.key for a board that has no signing key, so that the hub is never reached
HUB_KEY = ("a6010202487e8b83e510d0bc99032620012158202b474dc1630ffba512cadfb2268667b8e25b56ca448b76"
           "e1e64a0e6a7fe43d1b225820e2da11f7656bc5cd2c0bb2d513caff893f259c4fcdc31abe4c71b0264fa89a2f")


# ---- versions ---------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """image(version, crash=False) -> a ROMFS image of the firmware with that VERSION."""
    board = load_board("virtual")
    files = {p: f for p, f in deploy_tool.build(board, rom=True).items() if p not in deploy_tool.FILESYSTEM_ONLY}
    work = tmp_path_factory.mktemp("versions")
    made = {}

    def compile_as(device_path, source, name):
        src = work / name / Path(device_path).with_suffix(".py").name
        src.parent.mkdir(exist_ok=True)
        src.write_text(source)
        dest = src.with_suffix(".mpy")
        deploy_tool.compile_mpy(src, dest, board.mpy_cross_arch, "/rom" + device_path)
        return dest

    def image(version, crash=False):
        key = (version, crash)
        if key not in made:
            name = "%s%s" % (version, "-crash" if crash else "")
            variant = dict(files)
            variant["/gateway/version.mpy"] = compile_as("/gateway/version.mpy", 'VERSION = "%s"\n' % version, name)
            if crash:
                app = (REPO / "firmware/gateway/app.py").read_text()
                start = "    async def run(self):\n"
                assert app.count(start) == 1
                app = app.replace(start, start + '        raise RuntimeError("this version fails at start")\n')
                variant["/gateway/app.mpy"] = compile_as("/gateway/app.mpy", app, name)
            made[key] = deploy_tool.romfs_image(variant)
        return made[key]

    return image


# ---- the board --------------------------------------------------------------


class Raw:
    """The board's raw REPL, as a downloader drives the install API."""

    def __init__(self, vb):
        self.t = SerialTransport(str(vb.link), baudrate=115200)
        self.t.enter_raw_repl(soft_reset=True)  # boot.py runs, the app does not
        self.t.exec("from gateway import ota\nfrom binascii import a2b_base64")

    def run(self, code):
        return self.t.exec(code).decode().strip()

    def begin(self, seq, image):
        self.run("j = ota.begin(%d, %d)" % (seq, len(image)))

    def resume(self, seq, image, offset):
        # the downloader's resume: the stored prefix must hash as what it sent
        self.run("j = ota.resume(%d, %d, %d)" % (seq, len(image), offset))
        stored = self.run("import hashlib\nprint(hashlib.sha256(j.stored()[:%d]).digest().hex())" % offset)
        assert stored == hashlib.sha256(image[:offset]).hexdigest(), "the slot lost what was written"

    def write(self, image, start, end, follow=True, step=CHUNK):
        for off in range(start, end, step):
            piece = image[off:min(off + step, end)]
            code = "j.write(%d, a2b_base64(%r))" % (off, base64.b64encode(piece).decode())
            if follow:
                self.run(code)
            else:
                self.t.exec_raw_no_follow(code)

    def finish(self, image):
        self.run("j.finish(bytes.fromhex(%r))" % hashlib.sha256(image).hexdigest())

    def refusal(self, seq):
        return self.run("try:\n ota.begin(%d, 4096)\n print('accepted')\nexcept ota.SlotError as e:\n"
                        " print(e.reason)" % seq)

    def start(self, code):
        """Run code without waiting for it; read() then takes what the board says."""
        self.t.exec_raw_no_follow(code)
        self.said = ""

    def listen(self):
        self.said = ""

    def read(self, pattern, timeout=10.0):
        # the port stays open across the board's resets, as a USB port does
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        self.t.serial.timeout = 0.1
        while not rx.search(self.said):
            assert time.monotonic() < deadline, "timed out waiting for %r; the board said:\n%s" % (
                pattern, self.said[-2000:])
            self.said += self.t.serial.read(max(1, self.t.serial.in_waiting)).decode("utf-8", "replace")
        return rx.search(self.said)

    def close(self):
        self.t.close()


def status(vb):
    """`status` as {row: text}, from the app's console."""
    con = SerialExpect(vb.link)
    try:
        answer = con.command("status", "firmware", timeout=20)
    finally:
        con.close()
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^(\w+) +(.*)$", answer, re.M)}


def running(vb, since, version):
    """Once the app has armed its watchdog: status, checked to be a complete
    version running in place from the ROM."""
    vb.channel.wait_kind("wdt", since=since, timeout=30)
    rows = status(vb)
    assert rows["firmware"] == version, rows
    assert rows["code"] == "rom partition", rows
    return rows


def kill(vb):
    """SIGKILL the board's interpreter, as a power cut; -> a mark before its next boot."""
    boots = [e for e in vb.channel.events if e["kind"] == "boot"]
    mark = vb.channel.mark()
    os.kill(boots[-1]["pid"], signal.SIGKILL)
    vb.channel.wait_kind("boot", since=mark, cause="HARD_RESET", timeout=20)
    return mark


@pytest.fixture
def board(deployed):
    """A deployed board whose trials prove health quickly."""
    # kills and resets within healthy_after_s count as crashes: no safe mode for them here
    (deployed.root / "config.json").write_text(json.dumps({"safe_mode_after": 100, "healthy_after_s": 3,
                                                          "ota": {"trial_s": 30}}))
    mark = deployed.channel.mark()
    deployed.channel.power_cycle()
    running(deployed, mark, BASE)
    return deployed


# ---- commit -----------------------------------------------------------------

START = datetime.datetime(2025, 6, 21, 12, 0, 0, tzinfo=UTC)
RATE = 60  # with 1-minute intervals a READING, and so an ACK, every second


@pytest.fixture(scope="module")
def rig(tmp_path_factory, broker):
    house = Household(seed=3, start=START - datetime.timedelta(days=1), ev=False)
    config = {"interval_min": 1, "healthy_after_s": 2, "ota": {"trial_s": 60}}
    with household_rig(tmp_path_factory.mktemp("ota"), broker, "ota", START, RATE, house, config,
                       ready=r"reading grid seq") as rig:
        yield rig


def readings_stored(rig):
    """The seqs of the board's READINGs the hub stored (and so ACKed)."""
    return [row[1] for row in rig.hub.store.messages(kid=rig.kid, mtype=1)]


def test_a_new_version_boots_on_trial_and_is_committed_once_meters_read_and_the_hub_acks(rig, images):
    image = images(NEXT)
    rig.con.close()  # the raw REPL needs the port
    raw = Raw(rig.vb)
    raw.begin(1, image)
    raw.write(image, 0, len(image))
    raw.finish(image)
    old = max(readings_stored(rig))  # what the old version's journal had delivered
    raw.start("ota.switch()")
    raw.read(r"pgw: slot 1, seq 1 on trial", timeout=30)
    said = raw.read(r"ota: seq 1 healthy: committed in slot 1", timeout=60)
    raw.close()
    # before the commit the new version read its meters, journaled a READING
    # and the hub stored it: what its ACK answers
    trial = raw.said[raw.said.rfind("pgw: slot 1, seq 1 on trial"):said.start()]
    assert re.search(r"meter grid: first reading", trial), trial[-2000:]
    new = [int(seq) for seq in re.findall(r"reading grid seq (\d+)", trial)]
    assert new and min(new) > old, (old, new)
    assert any(seq in readings_stored(rig) for seq in new), new
    rows = status(rig.vb)
    assert rows["firmware"] == NEXT and rows["ota"] == "slot 1, seq 1", rows
    # committed: a power cut now boots the new version again, not on trial
    mark = rig.vb.channel.mark()
    rig.vb.channel.power_cycle()
    rows = running(rig.vb, mark, NEXT)
    assert rows["ota"] == "slot 1, seq 1", rows


# ---- rollback ---------------------------------------------------------------


def test_a_version_that_fails_or_never_gets_healthy_is_rolled_back(board, images):
    # 1. an app that raises at start: reset at once, the next boot rolls back
    image = images(NEXT, crash=True)
    raw = Raw(board)
    raw.begin(1, image)
    raw.write(image, 0, len(image), step=CHUNK - 3)  # pieces of odd lengths: whole write units wait
    raw.finish(image)
    mark = board.channel.mark()  # the failing app never arms a watchdog: the next one is the old app's
    raw.start("ota.switch()")
    raw.read(r"pgw: slot 1, seq 1 on trial", timeout=30)
    raw.read(r"this version fails at start", timeout=30)
    raw.read(r"pgw: trial version stopped; reset to roll back", timeout=30)
    raw.read(r"pgw: trial not committed: back to slot 0, seq 0", timeout=30)
    raw.close()
    rows = running(board, mark, BASE)
    assert rows["ota"] == "slot 0, seq 0, seq 1 rolled back", rows

    # 2. a version that runs but never gets healthy (a hub is configured and
    # never reached): it resets itself after ota.trial_s and is rolled back
    (board.root / "config.json").write_text(json.dumps({
        "safe_mode_after": 100, "healthy_after_s": 1, "ota": {"trial_s": 10},
        "mqtt": {"host": "127.0.0.1", "port": 9}, "hub": {"key": HUB_KEY}}))
    image = images(NEXT)
    raw = Raw(board)
    assert raw.refusal(1) == "failed"  # the version rolled back is not taken again
    assert raw.refusal(0) == "seq"
    raw.begin(2, image)
    raw.write(image, 0, len(image))
    raw.finish(image)
    raw.start("ota.switch()")
    raw.read(r"pgw: slot 1, seq 2 on trial", timeout=30)
    raw.read(r"ota: seq 2 not healthy after 10 s \(no hub link: [^)]*\): reset, back to seq 0", timeout=40)
    raw.read(r"pgw: trial not committed: back to slot 0, seq 0", timeout=30)
    raw.close()
    mark = board.channel.mark()
    board.channel.power_cycle()
    rows = running(board, mark, BASE)
    assert rows["ota"] == "slot 0, seq 0, seq 2 rolled back", rows


# ---- SIGKILL ----------------------------------------------------------------


def test_killed_anywhere_the_board_boots_a_complete_old_or_new_version(board, images):
    image = images(NEXT)
    chunks = -(-len(image) // CHUNK)
    if os.environ.get("PGW_OTA_KILLS") == "all":
        kills_at = list(range(1, chunks))
    else:
        kills_at = [1, chunks // 2]
    raw = Raw(board)
    # the ROM answers as a port with two ROM segments does (docs/virtual-board.md)
    answers = raw.run("rom = ota.rom_ioctl()\n"
                      "print(rom(1), len(rom(2, 0)), len(rom(2, 1)), rom(2, 2), rom(3, 1, 0, 2**21))")
    assert answers == "2 1048576 1048576 -22 -22", answers
    segment0 = raw.run("import hashlib\nprint(hashlib.sha256(rom(2, 0)).digest().hex())")
    raw.begin(1, image)
    written = 0
    for k in kills_at:
        raw.write(image, written, k * CHUNK)
        written = k * CHUNK
        mark = kill(board)
        raw.close()
        rows = running(board, mark, BASE)
        assert rows["ota"] == "slot 0, seq 0, seq 1 being written", rows
        raw = Raw(board)
        raw.resume(1, image, written)

    # killed while a chunk is being written: what was sent may or may not be there
    raw.write(image, written, written + CHUNK, follow=False)
    mark = kill(board)
    raw.close()
    running(board, mark, BASE)
    raw = Raw(board)
    raw.resume(1, image, written)
    raw.write(image, written, len(image))
    raw.finish(image)
    assert raw.run("print(hashlib.sha256(ota.rom_ioctl()(2, 0)).digest().hex())") == segment0  # untouched

    # staged and checked, killed before the switch: the old version, the new one kept ready
    mark = kill(board)
    raw.close()
    assert running(board, mark, BASE)["ota"] == "slot 0, seq 0, seq 1 staged"

    # a torn record write (the new file never renamed) changes nothing
    (board.root / "state" / "ota.txt.new").write_bytes(b"slot=1 se")
    mark = board.channel.mark()
    board.channel.power_cycle()
    assert running(board, mark, BASE)["ota"] == "slot 0, seq 0, seq 1 staged"

    # the switch waits for a trade being delivered (a real agent with a trade
    # for an interval, as gateway/trading.py holds it) and then resets the board
    raw = Raw(board)
    waits = raw.run(
        "import asyncio\nfrom trade.agent import Agent\nfrom gateway.trading import Trading\n"
        "a = Agent({'feed_in_price': 80000, 'retail_price': 300000})\n"
        "kid = b'k' * 8\n"
        "a.on_trade({'trade_id': 1, 'interval_start': 900000, 'interval_min': 15, 'seller': kid,"
        " 'buyer': b'b' * 8, 'energy_wh': 500}, kid)\n"
        "class T:\n interval_s = 900\n rate = 1\n agent = a\n delivering = Trading.delivering\n"
        "class H:\n t = 900000 - 120\n def now_s(self):\n  H.t += 60\n  return H.t\n"
        "class App:\n trading = T()\n hub = H()\n"
        "print(ota.busy(App()))")
    assert waits == "a trade of ours is delivered now or within 60 s", waits  # at 899940
    # from 900000 the clock walks through the traded interval in 60 s steps
    mark = board.channel.mark()
    raw.start("asyncio.run(ota.switch_when_safe(App(), poll_ms=20))")
    raw.read(r"ota: switch waits: a trade of ours is delivered now or within 60 s")
    said = raw.read(r"pgw: switching to slot 1, seq 1 \(trial\)")
    assert said.start() > raw.said.find("ota: switch waits")
    # killed on the trial, after its start was counted and before the commit: rolled back
    raw.read(r"pgw: slot 1, seq 1 on trial", timeout=20)
    board.channel.wait_kind("wdt", since=mark, timeout=20)  # the trial's app: its start is counted
    mark = kill(board)
    raw.read(r"pgw: trial not committed: back to slot 0, seq 0", timeout=20)
    raw.close()
    rows = running(board, mark, BASE)
    assert rows["ota"] == "slot 0, seq 0, seq 1 rolled back", rows

    # the record written and the reset cut short by a kill: the new version on trial
    raw = Raw(board)
    raw.begin(2, image)
    raw.write(image, 0, len(image))
    raw.finish(image)
    raw.run("ota.save(ota.load().switch())")
    mark = kill(board)
    raw.listen()
    raw.read(r"pgw: slot 1, seq 2 on trial", timeout=20)
    raw.read(r"ota: seq 2 healthy: committed in slot 1", timeout=20)
    raw.close()
    # killed after the commit: the new version stays
    mark = kill(board)
    assert running(board, mark, NEXT)["ota"] == "slot 1, seq 2"

    # anti-rollback on the board: only a newer seq is taken
    raw = Raw(board)
    assert [raw.refusal(s) for s in (1, 2, 3)] == ["older", "older", "accepted"]
    raw.close()

    # `pgw deploy` after an update is a fresh install: segment 0, seq 0
    mark = board.channel.mark()
    out = run_tool("pgw", "deploy", "--port", board.link, timeout=120).stdout
    assert "rom: slot record removed: segment 0 boots, as seq 0" in out, out
    assert running(board, mark, BASE)["ota"] == "slot 0, seq 0"
