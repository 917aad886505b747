# SunSpec model 124 (storage): the register writes that make a hybrid
# inverter charge or discharge its battery at a setpoint. Sans-I/O: the
# caller reads the model (its ID register on) and sends the Requests.
#
# StorCtl_Mod bit 0 holds charging to InWRte, bit 1 discharging to OutWRte,
# both in percent of WChaMax scaled by InOutWRte_SF. Both bits with both
# rates at 0 hold the battery idle. The rates go first, then the mode: the
# inverter never runs a new mode with old rates.
from compat import const
from modbus import sunspec
from modbus.pdu import write_multiple_registers, write_single_register

MODEL = 124
_IDLE = const(3)  # StorCtl_Mod
_CHARGE = const(1)
_DISCHARGE = const(2)
_CTL = const(3)  # StorCtl_Mod's offset from the first data register
_OUT = const(10)  # OutWRte, then InWRte at 11


class StorageError(ValueError):
    pass


def setpoint_writes(address, regs, battery_w):
    """address: the register of model 124's ID; regs: the model from its ID
    on (ID, L, 24 points). battery_w: + charges, - discharges, 0 idles;
    beyond WChaMax it is cut to WChaMax. -> [pdu.Request] in order."""
    if isinstance(battery_w, bool) or not isinstance(battery_w, int):
        raise StorageError("battery_w must be an int, got %r" % (battery_w,))
    try:
        wmax = sunspec.point_scaled(MODEL, regs, "WChaMax")
        spec = sunspec.point_spec(MODEL, "InWRte")
        sf = regs[2 + spec[3]]
    except (sunspec.SunSpecError, IndexError) as e:
        raise StorageError("model 124: %s" % e)
    sf = sf - 0x10000 if sf & 0x8000 else sf
    if not wmax or wmax < 0 or not -3 <= sf <= 0:
        raise StorageError("model 124: WChaMax %r W, InOutWRte_SF %d: no rate can be set" % (wmax, sf))
    w = min(abs(battery_w), wmax)
    raw = w * 100 * 10 ** -sf // wmax  # percent of WChaMax, rounded down: never above the setpoint
    out_raw = raw if battery_w < 0 else 0
    in_raw = raw if battery_w > 0 else 0
    mode = _CHARGE if battery_w > 0 else _DISCHARGE if battery_w < 0 else _IDLE
    base = address + 2
    return [write_multiple_registers(base + _OUT, [out_raw, in_raw]),
            write_single_register(base + _CTL, mode)]
