"""`make demo`: a virtual board running the real firmware, shown on its console.

At this stage the neighbourhood is one household: a virtual board is
started, the firmware deployed with `pgw deploy`, and the technician
console shows the heartbeat and a `status`. Later stages grow this into
the trading neighbourhood.
"""

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from host_tools.console import BoardLink
from host_tools.deploy import deploy
from host_tools.vboard import VirtualBoardProcess


def say(text):
    print(f"\n== {text}", flush=True)


def main():
    work = Path(tempfile.mkdtemp(prefix="pgw-demo-"))
    flash, link = work / "flash", work / "vb.tty"
    say(f"starting a virtual board: pgw vboard --root {flash} --link {link}")
    with VirtualBoardProcess(flash, link) as vb:
        vb.channel.wait_kind("ready", timeout=20)
        say(f"deploying the firmware: pgw deploy --port {link}")
        (flash / "config.json").write_text(json.dumps({"heartbeat_s": 2}))
        mark = vb.channel.mark()
        deploy(str(link), "virtual")
        vb.channel.wait_kind("wdt", since=mark, timeout=20)

        say(f"the board's console (pgw console --port {link})")
        console = BoardLink(str(link), 115200)
        heartbeats = []

        def show(line):
            print(f"  board> {line}", flush=True)
            if line.startswith("hb "):
                heartbeats.append(line)

        console.line_sink = show
        try:
            deadline = time.monotonic() + 15
            while len(heartbeats) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            seen = console.prompts()
            print("  you>   status", flush=True)
            console.write(b"status\r")
            console.wait_prompt(seen, 10)
        finally:
            console.close()
        leds = vb.channel.outputs("status_led")
        say(f"the GPIO channel saw the status LED switch {len(leds)} times, "
            f"and the relays held open: {vb.channel.level('relay_battery')}, "
            f"{vb.channel.level('relay_ev_enable')}")
    shutil.rmtree(work, ignore_errors=True)
    say("done. To try it yourself:")
    print(f"  .venv/bin/pgw vboard --root /tmp/vb --link /tmp/vb.tty &\n"
          f"  .venv/bin/pgw deploy --port /tmp/vb.tty\n"
          f"  .venv/bin/pgw console --port /tmp/vb.tty")
    return 0 if len(heartbeats) >= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
