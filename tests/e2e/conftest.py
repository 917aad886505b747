"""Fixtures for end-to-end tests: virtual boards running the real firmware on MicroPython."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from host_tools.vboard import VirtualBoardProcess

BIN = Path(sys.executable).parent


def run_tool(name, *args, timeout=60, check=True, input=None):
    """Run a console script of this venv (pgw, mpremote); return CompletedProcess."""
    proc = subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


class SerialExpect:
    """The board's USB console, read the way a person reads it: wait for text."""

    def __init__(self, link):
        self.port = serial.Serial(str(link), 115200, timeout=0.05, exclusive=True)
        self.buffer = ""

    def send(self, data):
        self.port.write(data.encode() if isinstance(data, str) else data)

    def expect(self, pattern, timeout=10.0):
        """Wait until `pattern` (a regex) appears; consume through the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buffer)
            if m:
                self.buffer = self.buffer[m.end():]
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {pattern!r}; console said:\n{self.buffer[-2000:]}")
            self.buffer += self.port.read(4096).decode("utf-8", errors="replace")

    def command(self, line, contains, timeout=10.0):
        """Send a console command; return the prompt-delimited answer holding `contains`.

        Unsolicited lines (boot banner, heartbeat) end in a prompt too, so
        answers are read prompt by prompt until the expected one arrives.
        """
        self.send(line + "\r")
        deadline = time.monotonic() + timeout
        while True:
            answer = self.expect(r"(?s)(.*?)pgw> ", max(0.1, deadline - time.monotonic())).group(1)
            if contains in answer:
                return answer

    def close(self):
        self.port.close()


class Console(SerialExpect):
    """The console with a transcript of everything it said: log lines that
    arrive while a command is answered are kept for wait_log()."""

    def __init__(self, link):
        super().__init__(link)
        self.transcript = ""
        port = self.port
        con = self

        class Recorder:
            def read(self, n):
                data = port.read(n)
                con.transcript += data.decode("utf-8", errors="replace")
                return data

            def write(self, data):
                return port.write(data)

            def close(self):
                port.close()

        self.port = Recorder()

    def mark(self):
        return len(self.transcript)

    def wait_log(self, pattern, since=0, timeout=20.0):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.transcript, since)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %r; console said:\n%s"
                                     % (pattern, self.transcript[-3000:]))
            self.buffer += self.port.read(4096).decode("utf-8", errors="replace")


def deploy_and_enrol(vb, hub):
    """Deploy the firmware, make the board's signing key and register it
    with the hub -> (console, cose_key, kid)."""
    mark = vb.channel.mark()
    run_tool("pgw", "deploy", "--port", vb.link, timeout=120)
    vb.channel.wait_kind("wdt", since=mark, timeout=20)
    con = Console(vb.link)
    answer = con.command("identity provision", "cose_key")
    cose_key = bytes.fromhex(re.search(r"cose_key +([0-9a-f]+)", answer).group(1))
    return con, cose_key, hub.ingest.register(cose_key)


def wait_until(what, predicate, timeout=20.0, pause=0.1):
    """Re-check `predicate` (a console query, a counter) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(pause)  # between queries only; the condition decides


def details(con, name):
    """`meters NAME` as {key: text}."""
    answer = con.command("meters " + name, "protocol")
    rows = {}
    for line in answer.splitlines():
        key, _, text = line.strip().partition("  ")
        if key:
            rows[key] = text.strip()
    assert rows.get("name") == name, answer
    return rows


def errors(rows):
    """The `errors` row of `meters NAME` as {kind: count}."""
    text = rows["errors"]
    return {} if text == "none" else {k: int(v) for k, v in (e.split("=") for e in text.split())}


@pytest.fixture
def vboard(tmp_path):
    """A virtual board with an empty flash."""
    vb = VirtualBoardProcess(tmp_path / "flash", tmp_path / "vb.tty")
    with vb:
        vb.channel.wait_kind("ready", timeout=20)
        yield vb


@pytest.fixture
def deployed(vboard):
    """A virtual board with the firmware deployed by `pgw deploy`, app running."""
    mark = vboard.channel.mark()
    run_tool("pgw", "deploy", "--port", vboard.link, timeout=120)
    # The deploy ends with machine.reset(); wait for the app to arm its watchdog.
    vboard.channel.wait_kind("boot", since=mark, cause="SOFT_RESET", timeout=20)
    vboard.channel.wait_kind("wdt", since=mark, timeout=20)
    return vboard


@pytest.fixture
def console(vboard):
    con = SerialExpect(vboard.link)
    yield con
    con.close()
