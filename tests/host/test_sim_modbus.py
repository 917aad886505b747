"""The Modbus simulators (host_tools/sim/modbus_devices.py), read by pymodbus's own clients.

TCP for the register maps; RTU on a pty pair for several units on one bus,
the silence of a unit nobody has, and the injected faults. The household
clock is driven by hand (a fake monotonic source), so readings compare
exactly with the model and controls can be seen acting a minute later.
"""

import datetime
import math
import struct
import subprocess
import sys
import time

import pytest
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from host_tools.sim.household import UTC, Clock, Household
from host_tools.sim.modbus_devices import SUNSPEC_BASE, ModbusSimulator, parse_devices
from host_tools.sim.ports import PtyPair

NOW = datetime.datetime(2025, 6, 21, 10, 0, 7, tzinfo=UTC)


class ManualTime:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def floats(regs):
    return [struct.unpack(">f", struct.pack(">HH", *regs[i:i + 2]))[0] for i in range(0, len(regs), 2)]


def s16(x):
    return x - 0x10000 if x & 0x8000 else x


@pytest.fixture(scope="module")
def tcp_sim():
    wall = ManualTime()
    clock = Clock(start=NOW, monotonic=wall)
    house = Household(seed=9, start=NOW - datetime.timedelta(hours=10))
    sim = ModbusSimulator("sdm630:1,sunspec:2,wallbox:3", household=house, clock=clock).start_tcp(0)
    sim.wall = wall
    client = ModbusTcpClient("127.0.0.1", port=sim.port, timeout=2)
    assert client.connect()
    sim.client = client
    yield sim
    client.close()
    sim.stop()


def test_sdm630_input_registers_are_float32_big_endian(tcp_sim):
    c = tcp_sim.client
    s = tcp_sim.household.sample(tcp_sim.clock.timestamp())
    volts_amps = floats(c.read_input_registers(0x00, count=12, device_id=1).registers)
    assert volts_amps[:3] == pytest.approx(list(s.voltage), abs=1e-3)
    assert volts_amps[3:] == pytest.approx(list(s.current), abs=1e-4)
    (total_w,) = floats(c.read_input_registers(0x34, count=2, device_id=1).registers)
    assert total_w == pytest.approx(s.grid_w, abs=0.01)  # negative while exporting
    (hz,) = floats(c.read_input_registers(0x46, count=2, device_id=1).registers)
    assert hz == pytest.approx(s.frequency, abs=1e-4)
    imp, exp = floats(c.read_input_registers(0x48, count=4, device_id=1).registers)
    assert imp == pytest.approx(s.import_wh / 1000, rel=1e-6)  # kWh, float32
    assert exp == pytest.approx(s.export_wh / 1000, rel=1e-6)
    assert floats(c.read_holding_registers(0x14, count=2, device_id=1).registers) == [1.0]


def test_sunspec_discovery_walks_the_model_chain(tcp_sim):
    c = tcp_sim.client
    assert c.read_holding_registers(SUNSPEC_BASE, count=2, device_id=2).registers == [0x5375, 0x6E53]
    addr = SUNSPEC_BASE + 2
    models = {}
    while True:
        mid, length = c.read_holding_registers(addr, count=2, device_id=2).registers
        if mid == 0xFFFF:
            break
        body = c.read_holding_registers(addr + 2, count=length, device_id=2).registers
        models[mid] = body
        addr += 2 + length
    assert list(models) == [1, 103, 120, 124, 160]
    assert [len(b) for b in models.values()] == [66, 50, 26, 24, 48]
    maker = struct.pack(">16H", *models[1][:16]).rstrip(b"\x00")
    assert maker == b"PGW Simulators"
    s = tcp_sim.household.sample(tcp_sim.clock.timestamp())
    inv = models[103]
    w = s16(inv[12]) * 10 ** s16(inv[13])
    assert w == pytest.approx(s.pv_w + s.battery_w, abs=1)  # hybrid: PV plus battery at AC
    assert inv[14] * 10 ** s16(inv[15]) == pytest.approx(s.frequency, abs=0.01)
    assert inv[8] * 10 ** s16(inv[11]) == pytest.approx(s.voltage[0], abs=0.1)
    storage = models[124]
    assert storage[6] * 10 ** s16(storage[20]) == pytest.approx(s.soc * 100, abs=0.1)  # ChaState %
    assert models[120][0] == 82  # DERTyp: PV and storage
    mppt = models[160]
    assert mppt[6] == 2 and mppt[8 + 11] + mppt[28 + 11] == pytest.approx(s.pv_w / 0.96, abs=2)


def test_sunspec_storage_control_steers_the_battery(tcp_sim):
    c = tcp_sim.client
    o = SUNSPEC_BASE + 2 + 68 + 52 + 28 + 2  # model 124 body
    assert not c.write_registers(o + 10, [0, 500], device_id=2).isError()  # OutWRte 0, InWRte 50.0 %
    assert not c.write_register(o + 3, 1, device_id=2).isError()  # StorCtl_Mod: limit charging
    tcp_sim.wall.t += 120  # two simulated minutes later
    s = tcp_sim.household.sample(tcp_sim.clock.timestamp())
    assert s.battery_w == pytest.approx(-2500.0) or s.soc >= 0.999
    assert tcp_sim.household.control("battery_w", tcp_sim.clock.timestamp()) == pytest.approx(-2500.0)
    assert c.write_register(o + 3, 4, device_id=2).exception_code == 3  # no such mode bit
    assert c.write_register(o + 6, 1, device_id=2).exception_code == 2  # ChaState is read-only
    assert not c.write_register(o + 3, 0, device_id=2).isError()  # back to self-consumption
    assert tcp_sim.household.control("battery_w", tcp_sim.clock.timestamp() + 60) is None


def test_wallbox_current_limit(tcp_sim):
    c = tcp_sim.client
    regs = c.read_input_registers(4, count=15, device_id=3).registers
    assert regs[0] == 0x0108 and regs[1] in (3, 5, 7)  # layout version, state A2/B2/C2
    assert not c.write_register(261, 60, device_id=3).isError()  # 6.0 A
    assert c.read_holding_registers(261, count=1, device_id=3).registers == [60]
    t = tcp_sim.clock.timestamp() + 60
    assert tcp_sim.household.control("ev_limit_w", t) == pytest.approx(6 * 230 * 3)
    assert c.write_register(261, 200, device_id=3).exception_code == 3  # above 16 A
    assert c.write_register(14, 1, device_id=3).exception_code == 2  # not a holding register


def test_tcp_unknown_unit_is_a_gateway_error(tcp_sim):
    r = tcp_sim.client.read_input_registers(0, count=2, device_id=42)
    assert r.isError() and r.exception_code == 0x0B


def test_parse_devices():
    assert parse_devices("sdm630:1, sunspec:2") == [("sdm630", 1), ("sunspec", 2)]
    for bad in ("sdm630", "meter:1", "sdm630:1,wallbox:1", "sdm630:300", ""):
        with pytest.raises(ValueError):
            parse_devices(bad)


# ---- RTU on one bus ----

@pytest.fixture(scope="module")
def rtu_bus():
    with PtyPair() as pair:
        clock = Clock(start=NOW, monotonic=ManualTime())
        house = Household(seed=9, start=NOW - datetime.timedelta(hours=10))
        sim = ModbusSimulator("sdm630:1,sunspec:2", household=house, clock=clock).start_serial(pair.a)
        client = ModbusSerialClient(pair.b, baudrate=9600, timeout=0.3, retries=0)
        assert client.connect()
        sim.client = client
        yield sim
        client.close()
        sim.stop()


def test_two_units_on_one_rtu_bus(rtu_bus):
    c = rtu_bus.client
    s = rtu_bus.household.sample(rtu_bus.clock.timestamp())
    (v1,) = floats(c.read_input_registers(0, count=2, device_id=1).registers)
    assert v1 == pytest.approx(s.voltage[0], abs=1e-3)
    assert c.read_holding_registers(SUNSPEC_BASE, count=2, device_id=2).registers == [0x5375, 0x6E53]
    (v1_again,) = floats(c.read_input_registers(0, count=2, device_id=1).registers)
    assert v1_again == v1


def test_unknown_unit_is_silent_on_rtu(rtu_bus):
    before = rtu_bus.unknown_unit_requests
    t0 = time.monotonic()
    with pytest.raises(ModbusIOException):
        rtu_bus.client.read_input_registers(0, count=2, device_id=7)
    assert time.monotonic() - t0 >= 0.25, "the client waited its timeout: no answer at all"
    assert rtu_bus.unknown_unit_requests == before + 1
    assert not rtu_bus.client.read_input_registers(0, count=2, device_id=1).isError()


def test_injected_faults(rtu_bus):
    c = rtu_bus.client
    faults = rtu_bus.faults[1]
    faults.exception_next(6)
    r = c.read_input_registers(0, count=2, device_id=1)
    assert r.isError() and r.exception_code == 6  # device busy
    faults.drop_next()
    with pytest.raises(ModbusIOException):
        c.read_input_registers(0, count=2, device_id=1)
    faults.corrupt_next()
    with pytest.raises(ModbusIOException):  # pymodbus discards a frame whose CRC fails
        c.read_input_registers(0, count=2, device_id=1)
    assert faults.corrupted == 1 and faults.dropped == 1
    faults.delay_next(0.15)
    t0 = time.monotonic()
    assert not c.read_input_registers(0, count=2, device_id=1).isError()
    assert time.monotonic() - t0 >= 0.15
    assert not c.read_holding_registers(SUNSPEC_BASE, count=2, device_id=2).isError(), "unit 2 unaffected"


def test_cli_serves_modbus_tcp():
    proc = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "sim", "modbus", "--tcp", "0",
                             "--devices", "sdm630:1,wallbox:5", "--speed", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not lines or "Ctrl-C" not in lines[-1]:
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        head = lines[0]
        assert "sdm630 at unit 1, wallbox at unit 5" in head, head
        port = int(head.split("127.0.0.1:")[1].split(":")[0])
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
        assert client.connect()
        (volts,) = floats(client.read_input_registers(0, count=2, device_id=1).registers)
        assert 215 < volts < 245 and not math.isnan(volts)
        client.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
