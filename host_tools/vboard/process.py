"""Start and stop a virtual board from Python (tests, the demo, benchmarks)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from host_tools.vboard.channel import GpioChannel


class VirtualBoardProcess:
    """`pgw vboard` as a child process, with its GPIO channel open.

    >>> with VirtualBoardProcess(tmp / "flash", tmp / "vb.tty") as vb:
    ...     vb.channel.wait_kind("ready")
    """

    def __init__(self, root, link, board="virtual", heap_kb=None, log=None):
        self.root = Path(root)
        self.link = Path(link)
        self.board = board
        self.heap_kb = heap_kb
        self.log_path = Path(log) if log else Path(f"{link}.log")
        self.proc = None
        self.channel = None

    def start(self, timeout=20.0):
        cmd = [sys.executable, "-m", "host_tools.cli", "vboard", "--root", str(self.root),
               "--link", str(self.link), "--board", self.board]
        if self.heap_kb:
            cmd += ["--heap-kb", str(self.heap_kb)]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=dict(os.environ))
        try:
            self.channel = GpioChannel(self.link, timeout=timeout)
            # The first boot has finished boot.py and main.py (or is in main.py's loop).
            self.channel.wait_kind("boot", timeout=timeout)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self):
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
