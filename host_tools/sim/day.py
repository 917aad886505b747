"""A gateway's day with crashes and outages: one virtual board running the
real firmware through simulated hours, for the end-to-end test
(tests/e2e/test_gateway_day.py), `make soak` and the heap benchmark
(bench/gateway_heap.py).

The rig:

- a virtual board (`heap_kb` as asked) with the firmware deployed by
  `pgw deploy`, its signing key provisioned and registered with the hub;
- the grid meter: a DLMS meter (gurux-dlms, HDLC on the board's RS-485 pty,
  HLS-GMAC), with energy registers, power and phase currents;
- a SunSpec hybrid inverter with its battery (unit 2) and a wallbox (unit 3)
  on one Modbus TCP simulator (pymodbus), one household behind all three;
- the control section (grid, battery and EV meters) with small dwell limits;
- the simulation's NTP server; the hub (host_tools/hub) on the real broker;
- the board's MQTT connection through a NetProxy to the broker, so that the
  rig can blackhole it in flaps;
- a subscriber of its own (paho) on the device's reading topic that records
  every publish with its arrival time.

    with Day(work_dir, broker, Plan(hours=24, rate=720, kills=20)) as day:
        report = day.run()
    assert not report.problems()

`Day.run()` lets the simulated hours pass while it kills the board with
SIGKILL at seeded random moments (some right after a `reading ... seq`
console line, when the journal has just been written), blackholes the
proxy for short random spans, and stops the broker for `outage_h`
simulated hours at `outage_at_h`. Then it stops the meters, waits until
the journal is empty and returns a `Report`.

The console helpers at the top (SerialExpect, Console, deploy_and_enrol,
wait_until, run_tool) are the ones tests/e2e/conftest.py hands to the
other end-to-end tests.
"""

from __future__ import annotations

import bisect
import datetime
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import serial

BIN = Path(sys.executable).parent

# ---- driving a virtual board's console -----------------------------------


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
        self.port = self._open(link)
        self.buffer = ""

    def _open(self, link):
        return serial.Serial(str(link), 115200, timeout=0.05, exclusive=True)

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


class _PortReader:
    """A serial port read by a thread of its own, so that the arrival time of
    every byte is known even while the caller is busy (killing the board,
    waiting for a boot). read() hands out what the thread took in."""

    def __init__(self, port):
        self.port = port
        self.arrivals = []  # (monotonic time, bytes received up to then)
        self._data = bytearray()
        self._received = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="console-reader", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._closing:
            try:
                data = self.port.read(4096)
            except (OSError, serial.SerialException, TypeError):
                return  # closed under us
            if data:
                with self._cond:
                    self._received += len(data)
                    self.arrivals.append((time.monotonic(), self._received))
                    self._data += data
                    self._cond.notify_all()

    def read(self, n):
        with self._cond:
            if not self._data:
                self._cond.wait(0.05)
            out = bytes(self._data[:n])
            del self._data[:n]
            return out

    def write(self, data):
        return self.port.write(data)

    def time_of(self, offset):
        """When the byte at `offset` (counted from the first) arrived."""
        with self._cond:
            i = bisect.bisect_right(self.arrivals, offset, key=lambda a: a[1])
            return self.arrivals[min(i, len(self.arrivals) - 1)][0]

    def close(self):
        self._closing = True
        self._thread.join(2)
        self.port.close()


class LiveConsole(Console):
    """A Console whose port is read all the time: `time_of(pos)` tells when
    the transcript's character at `pos` arrived (the console speaks ASCII,
    so characters and bytes count alike)."""

    def _open(self, link):
        self.reader = _PortReader(super()._open(link))
        return self.reader

    def time_of(self, pos):
        return self.reader.time_of(pos)

    def pump(self, until):
        """Take in what the board says until monotonic time `until`."""
        while time.monotonic() < until:
            self.buffer += self.port.read(4096).decode("utf-8", errors="replace")
            # nothing is asked meanwhile: what precedes the last prompt answers nothing
            i = self.buffer.rfind("pgw> ")
            if i >= 0:
                self.buffer = self.buffer[i + 5:]


# board name -> (files, rom): what the first `pgw deploy` of this process
# left on a fresh board: its flash's files but /state ({relative path:
# bytes}) and the ROM partition's host file
_DEPLOYED = {}


def _rom_file(vb):
    return vb.root.with_name(vb.root.name + ".romfs")


def deploy(vb):
    """The firmware on vb, a board with an empty flash, as `pgw deploy` puts
    it there; returns once the app has armed its watchdog.

    The first deploy per board kind in a process runs `pgw deploy`; later
    ones write the same files and power-cycle, which saves the two and a
    half seconds each end-to-end rig would spend in mpremote. The boot
    that follows checks the (absent) config and soft-reboots as after a
    real deploy; only its reset cause is PWRON_RESET, not SOFT_RESET.
    The tests of deploy itself run `pgw deploy`."""
    mark = vb.channel.mark()
    kept = _DEPLOYED.get(vb.board)
    if kept is None or any(vb.root.iterdir()):
        run_tool("pgw", "deploy", "--port", vb.link, timeout=120)
        vb.channel.wait_kind("wdt", since=mark, timeout=20)
        if vb.board not in _DEPLOYED:
            files = {p.relative_to(vb.root): p.read_bytes() for p in vb.root.rglob("*")
                     if p.is_file() and p.relative_to(vb.root).parts[0] != "state"}
            _DEPLOYED[vb.board] = (files, _rom_file(vb).read_bytes())
        return
    files, rom = kept
    for rel, data in files.items():
        (vb.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (vb.root / rel).write_bytes(data)
    _rom_file(vb).write_bytes(rom)
    vb.channel.power_cycle()
    vb.channel.wait_kind("wdt", since=mark, timeout=20)


def deploy_and_enrol(vb, hub, console=Console):
    """Deploy the firmware, make the board's signing key and register it
    with the hub -> (console, cose_key, kid)."""
    deploy(vb)
    con = console(vb.link)
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


# ---- the scenario ----------------------------------------------------------

START = datetime.datetime(2025, 6, 21, 0, 0, 0, tzinfo=datetime.timezone.utc)  # midsummer: PV all day
COMMUNITY = "day"
READING_LINE = r"reading (\w+) seq (\d+) ts (\d+)[^\n]*\n"
HEAP_ROW = re.compile(r"heap +([\d.]+) KB free, ([\d.]+) KB used")
# Console text that means the firmware itself failed: any traceback (an app
# crash prints one before the fail-safe), the heap running out, safe mode,
# and an interpreter death that was not our SIGKILL.
CRASH_SIGNS = re.compile(r"Traceback \(most recent call last\)|MemoryError|memory allocation failed"
                         r"|pgw: app crashed|SAFE MODE|interpreter died \(signal (?!9\))\d+\)")
METERS = ("grid", "wallbox")  # the meters with energy registers: a READING per interval each


class DayError(RuntimeError):
    """The day could not go on: the board crashed (with stop_on_crash) or never came up."""


@dataclass
class Plan:
    """What happens to the board during its simulated day.

    rate: simulated seconds per wall second (the board's clock_rate, the
    simulators' clock). kills: SIGKILLs at seeded random moments, of which
    the share `after_reading` (rounded) right after a `reading ... seq`
    console line.
    outage_at_h/outage_h: the broker stopped from that simulated hour for
    that long (None: no outage). flaps: the proxy blackholed that many
    times, each for flap_s seconds (a range, wall time). heap_kb: the
    board's 32-bit-equivalent heap (None: the board file's 160 KB)."""

    hours: float = 24.0
    rate: int = 720
    kills: int = 20
    after_reading: float = 0.3
    outage_at_h: float | None = 9.0
    outage_h: float = 2.0
    flaps: int = 6
    flap_s: tuple = (0.3, 3.0)
    heap_kb: int | None = None
    seed: int = 1
    baudrate: int = 9600  # the DLMS meter's RS-485 line
    drain_s: float = 90.0  # wall seconds the journal gets to empty at the end (a lost ACK waits 30 s)
    stop_on_crash: bool = True  # end the day at the first sign of a crash (report.crashed)


@dataclass
class Reading:
    seq: int
    ts: int
    interval_min: int
    import_wh: int
    export_wh: int
    import_register_wh: int
    export_register_wh: int
    power_w: int
    meter: str
    data: bytes  # the signed message as the subscriber got it
    seen: float  # monotonic time of its first arrival


@dataclass
class Report:
    plan: Plan
    readings: dict = field(default_factory=dict)  # meter -> [Reading], distinct seqs, by ts
    publishes: list = field(default_factory=list)  # (monotonic time, signed bytes), as received
    duplicates: int = 0  # publishes of a seq seen before, byte-identical
    conflicts: list = field(default_factory=list)  # seqs seen with different bytes
    undecodable: int = 0
    hub_seqs: list = field(default_factory=list)  # READING seqs the hub stored, once each by its key
    hub_data: dict = field(default_factory=dict)  # seq -> bytes the hub stored
    hub_counts: dict = field(default_factory=dict)
    outage_detected_s: float | None = None  # broker stopped -> "mqtt: link lost" on the console
    outage_connected_s: float | None = None  # broker back -> "mqtt: connected"
    outage_resumed_s: float | None = None  # broker back -> the subscriber's next READING
    outage_hold_s: float | None = None  # of that, the proxy held the board back (hub, subscriber reconnecting)
    kills: list = field(default_factory=list)  # dicts: t (wall s into the day), after_reading, line
    flaps: list = field(default_factory=list)  # (t, seconds down)
    boots: dict = field(default_factory=dict)  # reset cause -> count
    heap_free_start_kb: float | None = None
    heap_free_end_kb: float | None = None
    crashed: bool = False
    crash_lines: list = field(default_factory=list)
    journal: dict = field(default_factory=dict)  # the `journal` console rows at the end
    status: dict = field(default_factory=dict)  # the last `status` console rows
    depth_zero: bool = False
    wall_s: float = 0.0
    setup_s: float = 0.0
    transcript_path: str = ""
    ended_early: str = ""  # why the day stopped before its end, if it did

    def tiling_problems(self, meter):
        """Where a meter's readings do not tile time: holes, overlaps, seqs
        out of order, energies that do not match the registers."""
        out = []
        rows = self.readings.get(meter, [])
        for r0, r1 in zip(rows, rows[1:]):
            span = r1.ts - r0.ts
            if span != r1.interval_min * 60:
                what = "hole" if span > r1.interval_min * 60 else "overlap"
                out.append("%s: %s between seq %d (ts %d) and seq %d (ts %d, %d min)" % (
                    meter, what, r0.seq, r0.ts, r1.seq, r1.ts, r1.interval_min))
            if r1.import_register_wh - r0.import_register_wh != r1.import_wh:
                out.append("%s: import register %d -> %d but seq %d says +%d Wh" % (
                    meter, r0.import_register_wh, r1.import_register_wh, r1.seq, r1.import_wh))
            if r1.export_register_wh - r0.export_register_wh != r1.export_wh:
                out.append("%s: export register %d -> %d but seq %d says +%d Wh" % (
                    meter, r0.export_register_wh, r1.export_register_wh, r1.seq, r1.export_wh))
            if r1.seq <= r0.seq:
                out.append("%s: seq %d at ts %d after seq %d at ts %d" % (meter, r1.seq, r1.ts, r0.seq, r0.ts))
        return out

    def delivery_problems(self):
        """What the hub and the subscriber disagree on, or did not get."""
        out = []
        seen = {r.seq: r for rows in self.readings.values() for r in rows}
        missing = sorted(set(self.hub_seqs) - set(seen))
        if missing:
            out.append("the subscriber missed seqs the hub stored: %s" % missing[:20])
        extra = sorted(set(seen) - set(self.hub_seqs))
        if extra:
            out.append("the hub lacks seqs the subscriber saw: %s" % extra[:20])
        differ = [s for s, d in self.hub_data.items() if s in seen and _payload(d) != _payload(seen[s].data)]
        if differ:
            out.append("the hub stored other payloads than were published: %s" % differ[:20])
        if self.conflicts:
            out.append("seqs published with different bytes: %s" % self.conflicts[:20])
        rejected = {k: v for k, v in self.hub_counts.items() if k.startswith("rejected")}
        if rejected:
            out.append("the hub rejected messages: %s" % rejected)
        if self.undecodable:
            out.append("%d publishes were not READINGs" % self.undecodable)
        return out

    def coverage_problems(self):
        """Meters whose readings do not reach from the day's first hour to its end."""
        out = []
        start, end = START.timestamp(), START.timestamp() + self.plan.hours * 3600
        for meter in METERS:
            rows = self.readings.get(meter)
            if not rows:
                out.append("%s: no readings" % meter)
                continue
            if rows[0].ts - rows[0].interval_min * 60 > start + 3600:
                out.append("%s: the first reading (seq %d) ends at ts %d, late" % (meter, rows[0].seq, rows[0].ts))
            if rows[-1].ts < end - 900:
                out.append("%s: the last reading (seq %d) ends at ts %d, early" % (meter, rows[-1].seq, rows[-1].ts))
        return out

    def problems(self):
        """Everything that says the day went wrong; empty when it went right."""
        out = self.coverage_problems()
        for meter in sorted(self.readings):
            out += self.tiling_problems(meter)
        out += self.delivery_problems()
        if self.ended_early:
            out.append("the day ended early: %s" % self.ended_early)
        if not self.depth_zero:
            out.append("the journal did not empty: %s" % self.journal)
        if self.crashed:
            out.append("the firmware crashed: %s" % self.crash_lines[:5])
        if self.boots.get("WDT_RESET"):
            out.append("the watchdog reset the board %d times" % self.boots["WDT_RESET"])
        return out

    def summary(self):
        counts = {m: len(rows) for m, rows in self.readings.items()}
        kills_ar = sum(1 for k in self.kills if k["after_reading"])

        def f(x):
            return "-" if x is None else "%.2f" % x

        return ("day: %.1f simulated h at rate %d, heap %s KB; setup %.0f s, run %.0f s wall; readings %s, "
                "%d duplicates; %d kills (%d after a reading line), %d flaps; outage detected %s s, "
                "connected %s s, publishing %s s after the broker's return (held %s s); free heap %s -> %s KB; "
                "boots %s; crashed %s; journal %s" % (
                    self.plan.hours, self.plan.rate, self.plan.heap_kb or 160, self.setup_s, self.wall_s,
                    counts, self.duplicates, len(self.kills), kills_ar, len(self.flaps),
                    f(self.outage_detected_s), f(self.outage_connected_s), f(self.outage_resumed_s),
                    f(self.outage_hold_s), f(self.heap_free_start_kb), f(self.heap_free_end_kb),
                    self.boots, self.crashed, self.journal.get("depth"), ))


def _rows(answer):
    """A console table -> {key: text}."""
    rows = {}
    for line in answer.splitlines():
        key, _, text = line.strip().partition("  ")
        if key:
            rows[key] = text.strip()
    return rows


def _draw(rng, n, lo, hi, quiet):
    """n moments drawn uniformly from [lo, hi] minus the quiet spans."""
    if not n:
        return []
    spans = [(lo, hi)]
    for q0, q1 in quiet:
        spans = [piece for a, b in spans for piece in ((a, min(b, q0)), (max(a, q1), b)) if piece[1] > piece[0]]
    total = sum(b - a for a, b in spans)
    if not spans or total <= 0:
        raise ValueError("no room for %d events between %.1f and %.1f s" % (n, lo, hi))
    out = []
    for _ in range(n):
        x = rng.uniform(0, total)
        for a, b in spans:
            if x <= b - a:
                out.append(a + x)
                break
            x -= b - a
    return out


def _payload(signed):
    import cbor2

    return cbor2.loads(signed).value[2]


def decode_reading(signed, seen):
    """A READING's signed bytes -> Reading (the signature is not checked here)."""
    import cbor2

    p = cbor2.loads(_payload(signed))
    if not isinstance(p, list) or len(p) != 11 or p[:2] != [1, 1]:
        raise ValueError("not a READING: %r" % (p,))
    return Reading(seq=p[2], ts=p[3], interval_min=p[4], import_wh=p[5], export_wh=p[6],
                   import_register_wh=p[7], export_register_wh=p[8], power_w=p[9],
                   meter=bytes(p[10]).decode(), data=bytes(signed), seen=seen)


class Subscriber:
    """A test subscriber on one topic (paho, straight to the broker): every
    publish with its arrival time. It reconnects within a fifth of a second
    of the broker's return; `ready` is set once its subscription holds."""

    def __init__(self, port, topic, client_id):
        import paho.mqtt.client as paho

        self.topic = topic
        self.received = []  # (monotonic time, bytes)
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_disconnect = lambda *a: self.ready.clear()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.received.append((time.monotonic(), bytes(msg.payload)))

    def since(self, t):
        with self._lock:
            return [r for r in self.received if r[0] >= t]

    def snapshot(self):
        with self._lock:
            return list(self.received)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


class Day:
    """The rig; see the module docstring. `work`: a directory of its own.
    `broker`: a host_tools.broker.Broker (started), which run() stops and
    starts for the outage. `log(text)`: progress lines."""

    def __init__(self, work, broker, plan=None, log=None):
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.broker = broker
        self.plan = plan or Plan()
        self.log = log or (lambda text: None)
        self.rng = random.Random(self.plan.seed)
        self.clock = None
        self._closers = []
        self.vb = self.con = self.hub = self.proxy = self.sub = None
        self.serial = self.modbus = self.ntp = None
        self.kid = self.cose_key = None
        self.report = Report(plan=self.plan)
        self._crash_pos = 0

    # ---- setting up ----

    def __enter__(self):
        try:
            self._set_up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def _sim_now(self):
        return self.clock.timestamp() if self.clock is not None else START.timestamp()

    def _set_up(self):
        from host_tools.hub.ingest import device_topic
        from host_tools.hub.service import HubService
        from host_tools.netproxy import NetProxy
        from host_tools.vboard import VirtualBoardProcess

        t0 = time.monotonic()
        plan = self.plan
        self.hub = HubService(self.work / "hub", "127.0.0.1", self.broker.port, COMMUNITY,
                              clock=self._sim_now).start()
        self._closers.append(self.hub.stop)
        # the hub is a peer here, not under test: back within a fifth of a second
        self.hub.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)
        if not self.hub.connected.wait(10):
            raise RuntimeError("the hub did not connect to the broker")
        self.proxy = NetProxy("127.0.0.1", self.broker.port)
        self._closers.append(self.proxy.close)

        flash, link = self.work / "flash", self.work / "vb.tty"
        vb = VirtualBoardProcess(flash, link).start()
        self._closers.append(lambda: self.vb.stop())
        self.vb = vb
        vb.channel.wait_kind("ready", timeout=20)
        con, self.cose_key, self.kid = deploy_and_enrol(vb, self.hub, console=LiveConsole)
        con.close()  # a new console for the board that runs the day
        self.sub = Subscriber(self.broker.port, device_topic(COMMUNITY, self.kid, "reading"),
                              "pgw-day-sub-" + self.kid.hex())
        self._closers.append(self.sub.close)
        if not self.sub.ready.wait(10):
            raise RuntimeError("the test subscriber did not subscribe")

        self._start_simulators()
        (flash / "config.json").write_text(json.dumps(self._config()))
        if plan.heap_kb:
            # deployed at the board's own heap; the day runs on the one asked for
            vb.stop()
            vb = self.vb = VirtualBoardProcess(flash, link, heap_kb=plan.heap_kb).start()
        self.con = LiveConsole(link)
        self._closers.append(lambda: self.con.close())
        vb.channel.power_cycle()  # the first boot of the day with the console listening
        for line in (r"mqtt: connected", r"clock: set from", r"control: fail-safe over"):  # last: meters read
            self._await(line, timeout=30)
        self.report.setup_s = time.monotonic() - t0
        self.log("day: set up in %.1f s, kid %s" % (self.report.setup_s, self.kid.hex()))

    def _await(self, pattern, since=0, timeout=30.0):
        """wait_log, but a crash on the console ends the wait at once (DayError)."""
        m = self.con.wait_log(r"(?P<want>%s)|(?P<crash>%s)" % (pattern, CRASH_SIGNS.pattern), since, timeout)
        if m.group("crash"):
            raise DayError(self._crash_text(m))
        return m

    def _crash_text(self, m):
        # the line that says what happened: a traceback's last line, else the sign's own
        text = self.con.transcript
        error = re.compile(r"^\w*(?:Error|Exception)\b.*$", re.M).search(text, m.start(), m.start() + 2000)
        at = error.start() if error else m.start()
        line = text[text.rfind("\n", 0, at) + 1:text.find("\n", at)].strip()
        return "the board crashed: %s\n%s" % (line, self._excerpt(m.start()))

    def _excerpt(self, pos):
        text = self.con.transcript
        return text[text.rfind("\n", 0, max(0, pos - 600)) + 1:pos + 900]

    def _check_crash(self):
        m = CRASH_SIGNS.search(self.con.transcript, self._crash_pos)
        self._crash_pos = max(self._crash_pos, len(self.con.transcript) - 200)  # a sign may be cut in two
        if m and self.plan.stop_on_crash:
            raise DayError(self._crash_text(m))

    def _pump(self, until):
        """Let time pass until monotonic `until`, the console read, crashes looked for."""
        while True:
            self.con.pump(min(until, time.monotonic() + 0.5))
            self._check_crash()
            if time.monotonic() >= until:
                return

    def _start_simulators(self):
        from host_tools.sim import dlms_meter as dm
        from host_tools.sim.household import Clock, Household
        from host_tools.sim.modbus_devices import ModbusSimulator
        from host_tools.sim.ntp import SimNtpServer

        plan = self.plan
        house = Household(seed=plan.seed, start=START - datetime.timedelta(days=2))
        # every day the run touches, computed before the clock runs, not mid-request
        for day in range(int(plan.hours // 24) + 2):
            house.sample(START.timestamp() + day * 86400 + 3600)
        self.clock = Clock(start=START, speed=plan.rate)
        meter = dm.Meter(household=house, clock=self.clock)
        meter.sample()
        self.meter = meter
        self.modbus = ModbusSimulator("sunspec:2,wallbox:3", household=house, clock=self.clock).start_tcp(0)
        self._closers.append(self.modbus.stop)
        self.ntp = SimNtpServer(self.clock.timestamp).start()
        self._closers.append(self.ntp.close)
        self.serial = dm.SerialServer(meter, f"{self.vb.link}.rs485", baudrate=plan.baudrate).start()
        self._closers.append(self.serial.stop)

    def _config(self):
        from host_tools.sim import dlms_meter as dm

        plan = self.plan
        mb = {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": self.modbus.port, "period_s": 1,
              "timeout_ms": 1000}
        return {
            "community": COMMUNITY, "interval_min": 15, "clock_rate": plan.rate,
            # a start that a SIGKILL cuts short is not a crash loop of the app
            "safe_mode_after": 100, "healthy_after_s": 2,
            "mqtt": {"host": "127.0.0.1", "port": self.proxy.port},
            "ntp": {"host": "127.0.0.1", "port": self.ntp.port, "period_s": 3600},
            "hub": {"key": self.hub.key.cose_key().hex()},
            "meters": [
                {"name": "grid", "protocol": "dlms-hdlc", "security": "hls-gmac",
                 "ek": dm.DEFAULT_EK.hex().upper(), "ak": dm.DEFAULT_AK.hex().upper(),
                 "system_title": "5047574757000001", "baudrate": plan.baudrate, "period_s": 1,
                 "timeout_ms": 500, "retries": 1,
                 "registers": ["1-0:1.8.0", "1-0:2.8.0", "1-0:16.7.0", "1-0:31.7.0", "1-0:51.7.0",
                               "1-0:71.7.0"]},
                dict(mb, name="inverter", unit=2, profile="sunspec_inverter"),
                dict(mb, name="wallbox", unit=3, profile="heidelberg_ec"),
            ],
            "control": {"grid_meter": "grid", "battery_meter": "inverter", "ev_meter": "wallbox",
                        "period_ms": 1000},
            "limits": {"relay_min_on_ms": 2000, "relay_min_off_ms": 2000, "relay_max_switches": 100,
                       "relay_window_ms": 60000, "stale_ms": 5000, "fuse_a": 25, "fuse_margin_ma": 3000,
                       "battery_max_w": 5000, "soc_min_pct": 10, "soc_max_pct": 95},
        }

    def close(self):
        if not self.broker.running:
            self.broker.start()  # a day cut short in its outage leaves the broker as it found it
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception as e:  # the rest still has to go
                self.log("day: closing: %s: %s" % (type(e).__name__, e))
        if self.con is not None and hasattr(self.con, "transcript"):
            path = self.work / "console.txt"
            path.write_text(self.con.transcript)
            self.report.transcript_path = str(path)

    # ---- the day ----

    def _outage_span(self):
        """Wall seconds (from the day's start) when the broker stops and returns."""
        plan = self.plan
        if plan.outage_at_h is None:
            return None
        a = plan.outage_at_h * 3600 / plan.rate
        return a, a + plan.outage_h * 3600 / plan.rate

    def _schedule(self, t_start, t_end):
        """[(wall seconds from the day's start, what, argument)] in order."""
        plan, rng = self.plan, self.rng
        outage = self._outage_span()
        # the outage's edges are measured: no kill, no flap near them
        quiet = [(outage[0] - 4.0, outage[0] + 5.0), (outage[1] - 2.0, outage[1] + 3.0)] if outage else []
        after = [i < round(plan.kills * plan.after_reading) for i in range(plan.kills)]
        rng.shuffle(after)
        events = [(t, "kill", a) for t, a in zip(_draw(rng, plan.kills, t_start, t_end - 5.0, quiet), after)]
        # Flaps end 35 s before the day does: a publish lost in one is sent
        # again only when its ACK is 30 s overdue, and the drain would wait.
        quiet = [(outage[0] - 9.0 - plan.flap_s[1], outage[1] + 3.0)] if outage else []
        events += [(t, "flap", round(rng.uniform(*plan.flap_s), 3))
                   for t in _draw(rng, plan.flaps, t_start, t_end - 35.0, quiet)]
        if outage:
            events += [(outage[0], "outage", None), (outage[1], "return", None)]
        return sorted(events, key=lambda e: e[0])

    def run(self):
        """The day -> Report. With plan.stop_on_crash, a crash ends it early
        (report.crashed, what was delivered until then)."""
        plan = self.plan
        # the day's start: the simulated clock's START
        t0 = time.monotonic() - (self.clock.timestamp() - START.timestamp()) / plan.rate
        t_end = plan.hours * 3600 / plan.rate
        try:
            self.report.heap_free_start_kb = self._settled_heap(before_day=True)
            events = self._schedule(time.monotonic() - t0 + 2.0, t_end)
            self.log("day: %d kills, %d flaps, outage %s; free heap %.1f KB" % (
                plan.kills, plan.flaps, self._outage_span(), self.report.heap_free_start_kb))
            for t, kind, arg in events:
                self._pump(t0 + t)
                self._step(kind, arg, time.monotonic() - t0)
            self._pump(t0 + t_end)
            self.proxy.restore()
            self.report.wall_s = time.monotonic() - t0
            self.log("day: %.1f simulated hours over after %.0f s" % (plan.hours, self.report.wall_s))
            self.report.heap_free_end_kb = self._settled_heap()
            # the meters stop: no new readings, so "nothing unacknowledged" can hold
            self.serial.stop()
            self.modbus.stop()
            self._drain()
        except DayError as e:
            self.report.wall_s = time.monotonic() - t0
            self.report.ended_early = str(e).splitlines()[0]
            self.log("day: ended early at %.0f s: %s" % (self.report.wall_s, self.report.ended_early))
        self._collect()
        return self.report

    def _step(self, kind, arg, t):
        try:
            if kind == "kill":
                self._kill(arg, t)
            elif kind == "flap":
                self.proxy.flap([("down", arg)])
                self.report.flaps.append((round(t, 3), arg))
                self.log("day: network down for %.1f s at %.1f s" % (arg, t))
            elif kind == "outage":
                self._outage_start()
            else:
                self._outage_end()
        except AssertionError:
            self._check_crash()  # a wait that timed out because the board crashed says so
            raise

    def _kill(self, after_reading, t):
        con, ch = self.con, self.vb.channel
        line = None
        if after_reading:
            mark = con.mark()
            try:
                m = con.wait_log(READING_LINE, since=mark, timeout=max(10.0, 4 * 900 / self.plan.rate))
                line = m.group(0).strip()
            except AssertionError:
                pass  # no reading in time (still booting after the last kill): killed anyway
        boot = [e for e in ch.events if e.get("kind") == "boot"][-1]
        mark = ch.mark()
        try:
            os.kill(boot["pid"], signal.SIGKILL)
        except ProcessLookupError:
            return  # it is restarting for its own reasons: the boot counts will tell
        self.report.kills.append({"t": round(t, 3), "after_reading": after_reading, "line": line})
        ch.wait_kind("boot", since=mark, timeout=30)
        self.log("day: killed the board at %.1f s%s" % (t, " after: " + line if line else ""))

    def _link_up(self):
        return re.search(r"mqtt +up ", self.con.command("net", "mqtt", timeout=15))

    def _outage_start(self):
        con = self.con
        wait_until("the board's MQTT link before the outage", self._link_up, timeout=30, pause=0.5)
        mark = con.mark()
        t_stop = time.monotonic()
        self.broker.stop()
        m = con.wait_log(r"mqtt: link lost[^\n]*\n", since=mark, timeout=15)
        self.report.outage_detected_s = con.time_of(m.start()) - t_stop
        self.log("day: broker stopped; link lost after %.2f s" % self.report.outage_detected_s)

    def _outage_end(self):
        con = self.con
        mark = con.mark()
        # Held until the subscriber and the hub are back, so that neither
        # misses the backlog; the hold counts in the measured resume time.
        self.proxy.blackhole(hold=True)
        self.broker.start()
        t_back = time.monotonic()
        self.sub.ready.wait(5)
        self.hub.connected.wait(5)
        self.proxy.restore()
        self.report.outage_hold_s = time.monotonic() - t_back
        m = con.wait_log(r"mqtt: connected[^\n]*\n", since=mark, timeout=15)
        self.report.outage_connected_s = con.time_of(m.start()) - t_back
        first = wait_until("a reading after the broker's return", lambda: self.sub.since(t_back), timeout=15,
                           pause=0.02)
        self.report.outage_resumed_s = first[0][0] - t_back
        self.log("day: broker back; connected after %.2f s, publishing after %.2f s (held %.2f s)" % (
            self.report.outage_connected_s, self.report.outage_resumed_s, self.report.outage_hold_s))

    def _status_heap(self):
        answer = self.con.command("status", "heap", timeout=15)
        self.report.status = _rows(answer)
        return float(HEAP_ROW.search(answer).group(1))

    def _settled_heap(self, samples=3, before_day=False):
        """Free heap (KB, after gc) once the journal is empty; the most of a
        few samples, as polls in flight hold a little of it at any moment.
        Before the day, a journal that does not empty ends it: its events
        would have no time left to happen in."""
        if not self._wait_depth_zero(60):
            self._check_crash()
            if before_day:
                raise DayError("the journal did not empty in 60 s before the day's events; the console said: %s"
                               % self.con.transcript[-300:].strip())
        return max(self._status_heap() for _ in range(samples))

    def _journal(self):
        return _rows(self.con.command("journal", "depth", timeout=15))

    def _wait_depth_zero(self, timeout):
        try:
            wait_until("an empty journal", lambda: self._journal().get("depth") == "0 unacknowledged",
                       timeout=timeout, pause=0.5)
            return True
        except AssertionError:
            return False

    def _drain(self):
        self.report.depth_zero = self._wait_depth_zero(self.plan.drain_s)
        self.report.journal = self._journal()
        hub_has = lambda: {row[1] for row in self.hub.store.messages(kid=self.kid, mtype=1)}  # noqa: E731
        try:
            # every ACK the board took was sent after the hub stored the seq; the
            # subscriber's copy travels beside the hub's, so it is there too
            wait_until("the subscriber to have what the hub stored",
                       lambda: hub_has() <= {decode_reading(d, 0).seq for _, d in self.sub.snapshot()},
                       timeout=10, pause=0.2)
        except (AssertionError, ValueError):
            pass  # reported as a delivery problem

    def _collect(self):
        rep = self.report
        first = {}
        for t, data in self.sub.snapshot():
            rep.publishes.append((t, data))
            try:
                r = decode_reading(data, t)
            except Exception:
                rep.undecodable += 1
                continue
            old = first.get(r.seq)
            if old is None:
                first[r.seq] = r
            elif old.data == data:
                rep.duplicates += 1
            elif r.seq not in rep.conflicts:
                rep.conflicts.append(r.seq)
        for r in first.values():
            rep.readings.setdefault(r.meter, []).append(r)
        for rows in rep.readings.values():
            rows.sort(key=lambda r: (r.ts, r.seq))
        for _, seq, _, _, data in self.hub.store.messages(kid=self.kid, mtype=1):
            rep.hub_seqs.append(seq)
            rep.hub_data[seq] = bytes(data)
        rep.hub_counts = dict(self.hub.ingest.counts)
        rep.boots = dict(Counter(e.get("cause") for e in self.vb.channel.events if e.get("kind") == "boot"))
        shown = 0
        for m in CRASH_SIGNS.finditer(self.con.transcript):
            rep.crashed = True
            if m.start() >= shown:  # one excerpt per crash, not one per sign in it
                rep.crash_lines.append(self._excerpt(m.start()))
                shown = m.start() + 900
