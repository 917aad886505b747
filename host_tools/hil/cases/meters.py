"""Meters on the board's RS-485 bus: a simulated Eastron SDM630 (pymodbus,
host_tools/sim) served on the meter line (the virtual board's RS-485 pty,
or a USB-RS485 adapter on the board's bus), read by the firmware's own
Modbus meter driver on the board."""

import datetime
import json
import time

from host_tools.hil.case import METER_LINE, RAW_REPL, Skip, needs

ORDER = 20
NOW = datetime.datetime(2025, 6, 21, 10, 0, 7, tzinfo=datetime.timezone.utc)

# The board half's start, for one meter config (JSON): the firmware's
# meter service builds its driver on the board's RS-485 bus (its UART, pins
# and direction pin from /board.json); then the case's own main().
SETUP = """
import asyncio, gc, meterconfig
from gateway import board as gboard
from gateway.meters import MeterError
from gateway.meters.service import MeterService
cfgs, errs = meterconfig.validate_meters([%s])
if errs:
    raise ValueError(errs)
del meterconfig, sys.modules["meterconfig"]  # used once, as the app drops it after boot
gc.collect()
svc = MeterService(cfgs, gboard.load(), print)
h = svc.find("grid")
if h.driver is None:
    raise ValueError(h.problem)
"""

# Polls when the host says the meter is there; then once more through a bad CRC.
BOARD = SETUP % json.dumps({"name": "grid", "protocol": "modbus-rtu", "unit": 1, "profile": "sdm630",
                            "timeout_ms": 500}) + """
hil.set("device", h.driver.where)
hil.next("ready")
hil.wait("meter")
async def main():
    d = h.driver
    await d.open()
    v = await d.poll()
    for k in sorted(v):
        hil.set(k, v[k])
    hil.next("read")
    hil.wait("corrupt")
    try:
        await d.poll()
        hil.set("error", "none")
    except MeterError as e:
        hil.set("error", e.kind)
    v = await d.poll()
    hil.set("power_again", v["power_w"])
    await d.close()
asyncio.run(main())
"""


@needs(RAW_REPL, METER_LINE)
def case_modbus_rtu_meter_read_by_the_board(hil):
    """the board's SDM630 driver reads the simulated meter's values; a bad CRC is caught, the next poll reads"""
    from host_tools.sim.household import Clock, Household
    from host_tools.sim.modbus_devices import ModbusSimulator

    clock = Clock(start=NOW, monotonic=lambda: 0.0)  # frozen: the readings hold still
    house = Household(seed=9, start=NOW - datetime.timedelta(hours=10))
    half = hil.board_half()
    half.start(BOARD)
    half.next("ready")
    hil.log("board: %s" % half.values["device"])
    assert half.values["device"].startswith("unit 1 on rs485 (9600 8N1)"), half.values
    sim = ModbusSimulator("sdm630:1", household=house, clock=clock)
    sim.start_serial(hil.target.meter_port, 9600)
    try:
        half.go("meter")
        half.next("read", timeout=20)
        got = half.values
        s = house.sample(clock.timestamp())
        hil.log("read: power %s W (model %.0f), L1 %s mV (model %.0f)" % (
            got.get("power_w"), s.grid_w, got.get("voltage_l1_mv"), s.voltage[0] * 1000))
        for k in range(3):
            assert abs(got["voltage_l%d_mv" % (k + 1)] - s.voltage[k] * 1000) <= 1, (k, got)
            assert abs(got["current_l%d_ma" % (k + 1)] - s.current[k] * 1000) <= 1, (k, got)
            assert abs(got["power_l%d_w" % (k + 1)] - s.phase_w[k]) <= 1, (k, got)
        assert abs(got["power_w"] - s.grid_w) <= 1, got
        assert abs(got["frequency_mhz"] - s.frequency * 1000) <= 1, got
        assert abs(got["energy_import_wh"] - s.import_wh) <= 2, got  # float32 kWh: ~1 Wh at 10 MWh
        assert abs(got["energy_export_wh"] - s.export_wh) <= 2, got
        faults = sim.faults[1]
        faults.corrupt_next(1)
        half.go("corrupt")
        assert half.value("error") == "crc", half.values
        assert faults.corrupted == 1, faults.corrupted
        assert half.value("power_again") == got["power_w"], half.values
        half.done()
    finally:
        sim.stop()


# A DLMS/COSEM meter on the same line: HDLC at 9600 baud, an HLS-GMAC
# association (AES-GCM on the board), four registers with their scalers.
DLMS_METER = {"name": "grid", "protocol": "dlms-hdlc", "security": "hls-gmac", "ek": "%(ek)s", "ak": "%(ak)s",
              "system_title": "5047574757000001", "timeout_ms": 1000,
              "registers": ["1-0:1.8.0", "1-0:2.8.0", "1-0:16.7.0", "1-0:32.7.0"]}

DLMS_BOARD = SETUP + """
hil.next("ready")
hil.wait("meter")
async def main():
    d = h.driver
    await d.open()
    v = await d.poll()
    for k in sorted(v):
        hil.set(k, v[k])
    await d.close()
asyncio.run(main())
"""


@needs(RAW_REPL, METER_LINE)
def case_dlms_meter_read_by_the_board_over_hls_gmac(hil):
    """the board's DLMS driver associates with HLS-GMAC over HDLC and reads registers with their scalers"""

    from host_tools.sim.household import Clock, Household

    try:
        from host_tools.sim import dlms_meter as dm
    except ImportError as e:
        raise Skip("the DLMS meter simulator needs gurux-dlms (the optional test-peer extra): %s" % e) from None
    clock = Clock(start=NOW, monotonic=lambda: 0.0)
    house = Household(seed=7, start=NOW - datetime.timedelta(hours=10))
    # The board keeps the highest invocation counter it saw from this meter
    # across reboots and runs (docs/meters.md) and refuses a lower one, as it
    # should: the simulator starts from the wall clock, as a meter's only grows.
    meter = dm.Meter(household=house, clock=clock, server_ic=int(time.time()))
    cfg = json.dumps(DLMS_METER) % {"ek": dm.DEFAULT_EK.hex().upper(), "ak": dm.DEFAULT_AK.hex().upper()}
    half = hil.board_half()
    half.start(DLMS_BOARD % cfg)
    half.next("ready")
    raw = meter.values()  # the household's first sample is computed here, not mid-request
    server = dm.SerialServer(meter, hil.target.meter_port).start()
    try:
        half.go("meter")
        half.done(timeout=60)
    finally:
        server.stop()
    got = half.values
    hil.log("read: %s; meter registers %s" % (got, raw))
    assert got["energy_import_wh"] == raw["import_wh"] and got["energy_export_wh"] == raw["export_wh"], got
    assert got["power_w"] == raw["net_w"], got
    assert got["voltage_l1_mv"] == raw["v1"] * 100, got  # scaler -1, V -> mV
    assert meter.stats["associations"] == 1 and meter.stats["bad_tag"] == 0, meter.stats
