"""The board a HIL run is against, and what it offers the cases.

`VirtualTarget` starts a virtual board itself (host_tools.vboard), with its
meters' line on the board's RS-485 pty and its GPIO channel, and deploys the
firmware with host_tools.deploy. Power cuts are SIGKILLs of its
interpreter, which the supervisor restarts as a hard reset.

`HardwareTarget` is a real board on a USB serial port. Meters reach its
RS-485 bus through a USB-RS485 adapter (`meter_port`); its power is cut by a
command (`power_cmd`: a relay, a switchable USB hub port) or by the
technician when prompted (`interactive`). It has no GPIO channel: cases that
observe outputs are skipped, with the reason.

`lacks(need)` is None when the target has what a case needs, else the
reason the case is skipped.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host_tools.hil import case

# The virtual rig's /config.json: the cases cut the power and reset the
# board more often than a crash loop would, which must not end in safe mode;
# a hub is configured (never reached: nothing listens on port 9) because a
# technician's login needs the device's key and a hub link, as in the field.
VIRTUAL_CONFIG = {"safe_mode_after": 100, "mqtt": {"host": "127.0.0.1", "port": 9}}


class Target:
    kind = "?"
    channel = None  # the GPIO channel, when there is one
    meter_port = None

    def __init__(self, board, port, log=print):
        from host_tools.boards import load_board

        self.board = load_board(board)
        self.port = str(port)
        self.log = log

    def lacks(self, need):
        if need == case.ROM_SLOTS and self.board.romfs_segments < 2:
            return ("board %s has no A/B code slots: its board file declares %d ROMFS segments, "
                    "updates into a second slot need 2" % (self.board.name, self.board.romfs_segments))
        return None

    def board_half(self, soft_reset=True):
        from host_tools.hil.board import BoardHalf

        return BoardHalf(self.port, soft_reset=soft_reset, timeout=self.boot_s)

    def console(self):
        from host_tools.sim.day import Console

        return Console(self.port)

    def properties(self):
        return {"target": self.kind, "board": self.board.name, "port": self.port}

    def __enter__(self):
        self.setup()
        return self

    def __exit__(self, *exc):
        self.close()


class VirtualTarget(Target):
    kind = "virtual"
    boot_s = 20.0

    def __init__(self, work=None, board="virtual", heap_kb=None, deploy=True, log=print):
        self._tmp = None
        if work is None:
            work = self._tmp = tempfile.mkdtemp(prefix="pgw-hil-")
        self.work = Path(work)
        super().__init__(board, self.work / "vb.tty", log)
        self.heap_kb = heap_kb
        self.deploy = deploy
        self.vb = None

    def setup(self):
        from host_tools.deploy import deploy
        from host_tools.vboard import VirtualBoardProcess

        root = self.work / "flash"
        root.mkdir(parents=True, exist_ok=True)
        config = root / "config.json"
        if not config.exists():  # deploy leaves it alone; the boot after deploy checks it
            from host_tools.hub.cose_es256 import HubKey

            hub = HubKey.load_or_create(self.work / "hub.key")
            config.write_text(json.dumps(dict(VIRTUAL_CONFIG, hub={"key": hub.cose_key().hex()})))
        self.vb = VirtualBoardProcess(root, self.port, board=self.board.name, heap_kb=self.heap_kb,
                                      log=self.work / "vboard.log")
        self.vb.start(timeout=self.boot_s)
        self.channel = self.vb.channel
        self.meter_port = "%s.rs485" % self.port
        if self.deploy:
            # at the REPL (an empty flash) or in the app (a kept one, --work)
            self.channel.wait_for(lambda e: e.get("kind") in ("ready", "wdt"), timeout=self.boot_s)
            mark = self.channel.mark()
            deploy(self.port, None, out=self.log)
            self.wait_app(mark)
            self._provision()
        self.log("hil: virtual board %s, flash %s, console %s, meters on %s, gpio %s.gpio"
                 % (self.board.name, root, self.port, self.meter_port, self.port))

    def board_half(self, soft_reset=True):
        try:
            return super().board_half(soft_reset)
        except OSError as e:
            # code still running from an earlier raw REPL (a Ctrl-C does not
            # stop it on the virtual board): cut the power and try again
            self.log("hil: %s; power cut and again" % e)
            self.power_cut()
            return super().board_half(soft_reset)

    def _provision(self):
        # The device's signing key, made on the board (`identity provision`
        # at the console) unless a kept flash (--work) has one; the app takes
        # it up at the next boot.
        con = self.console()
        try:
            answer = con.command("identity", "key")
            if "no signing key" not in answer:
                return
            answer = con.command("identity provision", "kid", timeout=60)
        finally:
            con.close()
        self.log("hil: identity provision: %s" % " ".join(answer.split()[:2]))
        mark = self.channel.mark()
        self.channel.power_cycle()
        self.wait_app(mark)

    def wait_app(self, mark=0, timeout=None):
        """Until the app runs (it arms its watchdog first thing) after `mark`."""
        self.channel.wait_kind("wdt", since=mark, timeout=timeout or self.boot_s)

    def power_cut(self):
        """SIGKILL the interpreter: the supervisor boots it again as a hard
        reset, flash and ROM as the kill left them. -> a mark before the boot."""
        boots = [e for e in self.channel.events if e.get("kind") == "boot"]
        mark = self.channel.mark()
        os.kill(boots[-1]["pid"], signal.SIGKILL)
        self.channel.wait_kind("boot", since=mark, cause="HARD_RESET", timeout=self.boot_s)
        return mark

    def mark(self):
        return self.channel.mark()

    def close(self):
        if self.vb is not None:
            self.vb.stop()
            self.vb = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


class HardwareTarget(Target):
    kind = "hardware"
    boot_s = 30.0

    def __init__(self, port, board, meter_port=None, power_cmd=None, interactive=False, deploy=True,
                 log=print, ask=None, pin=None):
        super().__init__(board, port, log)
        self.pin = pin
        self.meter_port = meter_port
        self.power_cmd = power_cmd
        self.interactive = interactive
        self.deploy = deploy
        self.ask = ask or _ask_technician

    def lacks(self, need):
        if need == case.GPIO:
            return ("needs the GPIO channel to see the relays and the pilot: a virtual board has it; "
                    "on hardware a second board as a logic probe would (not supported yet)")
        if need == case.METER_LINE and not self.meter_port:
            return "needs a meter line: pass --meter-port, the USB-RS485 adapter wired to the board's RS-485 bus"
        if need == case.POWER_CUT and not (self.power_cmd or self.interactive):
            return "needs a way to cut the board's power: pass --power-cmd CMD (relay, USB hub port) or --interactive"
        return super().lacks(need)

    def setup(self):
        if not os.path.exists(self.port):
            raise OSError("no serial port %s: is the board plugged in?" % self.port)
        if self.deploy:
            from host_tools.deploy import deploy

            deploy(self.port, self.board.name, out=self.log)
        self.wait_app()
        self.log("hil: %s on %s; meters on %s; power %s" % (
            self.board.name, self.port, self.meter_port or "-",
            self.power_cmd or ("the technician" if self.interactive else "-")))

    def mark(self):
        return None

    def wait_app(self, mark=None, timeout=None):
        """Until the console answers a bare line with its prompt."""
        from host_tools.sim.day import SerialExpect

        deadline = time.monotonic() + (timeout or self.boot_s)
        self._wait_port(deadline)
        con = SerialExpect(self.port)
        try:
            while True:
                con.send("\r")
                try:
                    con.expect(r"pgw> ", timeout=1.0)
                    return
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise AssertionError("the app did not answer on %s within %.0f s"
                                             % (self.port, timeout or self.boot_s)) from None
        finally:
            con.close()

    def power_cut(self):
        if self.power_cmd:
            self.log("hil: power cycle: %s" % self.power_cmd)
            proc = subprocess.run(self.power_cmd, shell=True, capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                raise RuntimeError("--power-cmd exited %d: %s" % (proc.returncode, proc.stderr.strip()))
        elif self.interactive:
            self.ask("switch the board's power off and on again, then press Enter")
        else:
            raise RuntimeError("no way to cut the power: --power-cmd or --interactive")
        self._wait_port(time.monotonic() + self.boot_s)
        return None

    def _wait_port(self, deadline):
        # A board powered off takes its USB serial device with it.
        while not os.path.exists(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError("%s did not come back" % self.port)
            time.sleep(0.2)  # polling for a device node; nothing to wait on

    def close(self):
        pass


def _ask_technician(prompt):
    print("\a\nHIL: %s " % prompt, end="", file=sys.stderr, flush=True)
    sys.stdin.readline()
