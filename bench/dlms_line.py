"""HDLC link efficiency, measured on the line: a 1,000-row load profile read by
the firmware on a virtual board, through its RS-485 pty paced at 9600 baud,
from the gurux-dlms meter simulator.

The simulator records every byte that crosses the line in both directions;
the frames in them are parsed again (lib/dlms/hdlc.py's Framer) to sum their
information fields. Efficiency = information-field bytes / line bytes, for
the whole session: SNRM/UA, AARQ/AARE, the profile by block transfer, RLRQ,
DISC. The frame size is the one the firmware negotiates (512 bytes).
"""

import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime.datetime(2025, 6, 21, 10, 0, 7, tzinfo=datetime.timezone.utc)
BAUD = 9600
ROWS = 1000

# Runs on the board (mpremote exec; the app stops): the firmware's own driver
# reads the last ROWS rows of the profile, counting them.
_READ = """
import asyncio, json, time
import deviceconfig
from gateway import board as _board
from gateway.meters.service import MeterService
from gateway.meters import dlms_profile
meters, errs = deviceconfig.validate({"meters": [json.loads(%r)]})
assert not errs, errs
d = MeterService(meters["meters"], _board.load(), print).meters[0].driver
state = [0]
def on_row(row):
    state[0] += 1
async def main():
    await d.open()
    t0 = time.ticks_ms()
    n = await dlms_profile.read_profile(d, %d, %d, on_row)
    ms = time.ticks_diff(time.ticks_ms(), t0)
    await d.close()
    print(json.dumps([n, state[0], ms]))
asyncio.run(main())
"""


def _info_bytes(stream):
    from dlms import hdlc

    framer = hdlc.Framer()
    total = frames = 0
    for ev in framer.feed(stream):
        if isinstance(ev, hdlc.Frame):
            total += len(ev.info)
            frames += 1
        else:
            raise RuntimeError("the line carried a bad frame: %r" % (ev,))
    return total, frames


def measure(work):
    """-> dict: efficiency, line and information bytes, frames, read time."""
    from host_tools.deploy import deploy
    from host_tools.sim import dlms_meter as dm
    from host_tools.sim.household import Clock, Household
    from host_tools.vboard import VirtualBoardProcess

    clock = Clock(start=NOW, monotonic=lambda: 0.0)
    meter = dm.Meter(household=Household(seed=5, start=NOW - datetime.timedelta(days=11)), clock=clock)
    rows = meter.profile_rows()
    t_from, t_to = rows[-ROWS][0], rows[-1][0]
    with VirtualBoardProcess(work / "flash", work / "vb.tty") as vb:
        vb.channel.wait_kind("ready", timeout=20)
        mark = vb.channel.mark()
        deploy(str(vb.link), "virtual", out=lambda *_: None)
        vb.channel.wait_kind("wdt", since=mark, timeout=20)
        server = dm.SerialServer(meter, f"{vb.link}.rs485", BAUD, record=True).start()
        try:
            cfg = {"name": "grid", "protocol": "dlms-hdlc", "security": "lls", "password": "12345678",
                   "baudrate": BAUD, "timeout_ms": 2000, "registers": ["1-0:1.8.0"]}
            t0 = time.monotonic()
            out = subprocess.run(
                [str(Path(sys.executable).parent / "mpremote"), "connect", str(vb.link), "exec",
                 _READ % (json.dumps(cfg), t_from, t_to)],
                capture_output=True, text=True, timeout=300)
            wall = time.monotonic() - t0
        finally:
            server.stop()
    if out.returncode:
        raise RuntimeError("profile read failed: %s %s" % (out.stdout, out.stderr))
    n, counted, ms = json.loads(out.stdout.strip().splitlines()[-1])
    if n != ROWS or counted != ROWS:
        raise RuntimeError("read %d rows (%d counted), not %d" % (n, counted, ROWS))
    rx = b"".join(d for way, d in server.transcript if way == "rx")
    tx = b"".join(d for way, d in server.transcript if way == "tx")
    info_rx, frames_rx = _info_bytes(rx)
    info_tx, frames_tx = _info_bytes(tx)
    line = len(rx) + len(tx)
    info = info_rx + info_tx
    return {"efficiency": info / line, "line_bytes": line, "info_bytes": info,
            "frames": frames_rx + frames_tx, "profile_read_ms": ms, "wall_s": wall}


if __name__ == "__main__":
    import tempfile

    sys.path[:0] = [str(ROOT), str(ROOT / "lib")]
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(measure(Path(tmp)), indent=2))
