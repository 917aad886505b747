# The normalised vocabulary of readings: one name per quantity, one integer unit, OBIS where one exists.
#
# Every meter, inverter, battery and wallbox reading leaves the gateway as
# {quantity name: int}.  The unit is part of the name (`_wh`, `_mv`, `_ma`,
# `_mhz`, `_permille`) and readings are integers, so nothing upstream parses
# units or meets float rounding.  Sign conventions:
#   power_w and power_lN_w   active power at the measuring point, import
#                            (energy taken from the grid or bus) positive
#   battery_power_w          positive while charging, negative discharging
#   pv_power_w, inverter_power_w   production / AC output positive
# OBIS codes (IEC 62056-61) name the equivalent register of a DLMS meter.

from compat import const

# unit -> (dimension, power of ten relative to the dimension's base unit),
# as "unit:dimension:exponent" words: one string, not a dict, until asked for
# (UNITS is built on first access; the lookups below scan the string).
_U = const((" mV:V:-3 V:V:0 kV:V:3 mA:A:-3 A:A:0 kA:A:3 mW:W:-3 W:W:0 kW:W:3 MW:W:6 VA:VA:0 kVA:VA:3 var:var:0 kvar:var:3 mWh:Wh:-3 Wh:Wh:0 kWh:Wh:3 MWh:Wh:6 VAh:VAh:0 kVAh:VAh:3 varh:varh:0 kvarh:varh:3 mHz:Hz:-3 Hz:Hz:0 1:1:0 %:1:-2 permille:1:-3 mdegC:degC:-3 degC:degC:0 C:degC:0 ms:s:-3 s:s:0 mAh:Ah:-3 Ah:Ah:0 ohm:ohm:0 kohm:ohm:3 state:state:0 "))

# name, unit, OBIS or "-", one line each; QUANTITIES (name -> (name, unit,
# OBIS or None)) is built on first access.
_Q = const(
    "energy_import_wh Wh 1-0:1.8.0\n"  # active energy imported (+A)
    "energy_export_wh Wh 1-0:2.8.0\n"  # active energy exported (-A)
    "energy_import_l1_wh Wh 1-0:21.8.0\n"  # active energy imported, L1
    "energy_import_l2_wh Wh 1-0:41.8.0\n"  # active energy imported, L2
    "energy_import_l3_wh Wh 1-0:61.8.0\n"  # active energy imported, L3
    "energy_export_l1_wh Wh 1-0:22.8.0\n"  # active energy exported, L1
    "energy_export_l2_wh Wh 1-0:42.8.0\n"  # active energy exported, L2
    "energy_export_l3_wh Wh 1-0:62.8.0\n"  # active energy exported, L3
    "energy_reactive_import_varh varh 1-0:3.8.0\n"  # reactive energy imported (+R)
    "energy_reactive_export_varh varh 1-0:4.8.0\n"  # reactive energy exported (-R)
    "power_w W 1-0:16.7.0\n"  # active power, import positive
    "power_import_w W 1-0:1.7.0\n"  # active power imported (+P)
    "power_export_w W 1-0:2.7.0\n"  # active power exported (-P)
    "power_l1_w W 1-0:36.7.0\n"  # active power L1, import positive
    "power_l2_w W 1-0:56.7.0\n"  # active power L2, import positive
    "power_l3_w W 1-0:76.7.0\n"  # active power L3, import positive
    "apparent_power_va VA 1-0:9.7.0\n"  # apparent power
    "reactive_power_var var -\n"  # reactive power
    "voltage_l1_mv mV 1-0:32.7.0\n"  # voltage L1-N
    "voltage_l2_mv mV 1-0:52.7.0\n"  # voltage L2-N
    "voltage_l3_mv mV 1-0:72.7.0\n"  # voltage L3-N
    "current_l1_ma mA 1-0:31.7.0\n"  # current L1
    "current_l2_ma mA 1-0:51.7.0\n"  # current L2
    "current_l3_ma mA 1-0:71.7.0\n"  # current L3
    "current_n_ma mA 1-0:91.7.0\n"  # current in the neutral
    "frequency_mhz mHz 1-0:14.7.0\n"  # grid frequency
    "power_factor_permille permille 1-0:13.7.0\n"  # power factor
    "pv_power_w W -\n"  # PV production (DC), positive
    "pv_energy_wh Wh -\n"  # PV energy produced (DC), lifetime
    "pv_voltage_mv mV -\n"  # PV (DC) voltage
    "pv_current_ma mA -\n"  # PV (DC) current
    "inverter_power_w W -\n"  # inverter AC output, positive
    "inverter_energy_wh Wh -\n"  # inverter AC energy output, lifetime
    "inverter_state state -\n"  # SunSpec operating state (1 off .. 8 standby)
    "inverter_rated_power_w W -\n"  # continuous output rating
    "inverter_power_limit_permille permille -\n"  # output limit, of WMax
    "battery_soc_permille permille -\n"  # battery state of charge
    "battery_power_w W -\n"  # battery power, charging positive
    "battery_voltage_mv mV -\n"  # battery voltage
    "battery_capacity_wh Wh -\n"  # battery nominal energy
    "battery_charge_max_w W -\n"  # battery charge power limit
    "battery_discharge_max_w W -\n"  # battery discharge power limit
    "battery_reserve_permille permille -\n"  # battery minimum reserve
    "battery_state state -\n"  # SunSpec ChaSt (1 off .. 7 testing)
    "ev_state state -\n"  # IEC 61851-1 state: 1 A, 2 B, 3 C, 4 D, 5 E, 6 F
    "ev_current_setpoint_ma mA -\n"  # charger current setpoint
    "ev_current_max_ma mA -\n"  # charger hardware current limit
    "ev_session_energy_wh Wh -\n"  # energy of the running session
    "temperature_mdegc mdegC -\n"  # device temperature
)


def __getattr__(attr):
    # the public dicts, built once on first use
    if attr == "QUANTITIES":
        d = {}
        for line in _Q.split("\n"):
            if line:
                n, u, o = line.split(" ")
                d[n] = (n, u, None if o == "-" else o)
    elif attr == "UNITS":
        d = {}
        for w in _U.split():
            u, dim, e = w.split(":")
            d[u] = (dim, int(e))
    else:
        raise AttributeError(attr)
    globals()[attr] = d
    return d


def _row(name):
    # -> (name, unit, OBIS or None) or None
    if not isinstance(name, str) or " " in name or "\n" in name or not name:
        return None
    key = name + " "
    if _Q.startswith(key):  # the first row has no "\n" before it ("\n" + _Q would copy the table)
        i = 0
    else:
        i = _Q.find("\n" + key) + 1
        if not i:
            return None
    n, u, o = _Q[i:_Q.index("\n", i)].split(" ")
    return (n, u, None if o == "-" else o)


def _unit(u):
    # unit -> (dimension, exponent) or None
    if not isinstance(u, str) or not u or " " in u or ":" in u:
        return None
    i = _U.find(" " + u + ":")
    if i < 0:
        return None
    _, dim, e = _U[i + 1:_U.index(" ", i + 1)].split(":")
    return (dim, int(e))


def unit(name):
    # -> unit of quantity `name`, or None when the name is not in the vocabulary.
    row = _row(name)
    return row[1] if row else None


def obis(name):
    row = _row(name)
    return row[2] if row else None


def by_obis(text):
    # "A-B:C.D.E" -> the quantity with that OBIS code, or None
    if not isinstance(text, str) or not text or text == "-" or " " in text or "\n" in text:
        return None
    i = _Q.find(" " + text + "\n")
    if i < 0:
        return None
    return _Q[_Q.rfind("\n", 0, i) + 1:i].split(" ")[0]


def names():
    return sorted(line.split(" ")[0] for line in _Q.split("\n") if line)


def exponent(from_unit, name):
    # Power of ten that turns a value in from_unit into quantity `name`'s unit:
    # exponent("V", "voltage_l1_mv") == 3.  ValueError if the dimensions differ.
    row = _row(name)
    if row is None:
        raise ValueError("unknown quantity %r" % (name,))
    src = _unit(from_unit)
    if src is None:
        raise ValueError("unknown unit %r" % (from_unit,))
    dst = _unit(row[1])
    if src[0] != dst[0]:
        raise ValueError("unit %r does not fit quantity %s (%s)" % (from_unit, name, row[1]))
    return src[1] - dst[1]


def scale_int(raw, exp10):
    # raw * 10**exp10 as an int, rounded half away from zero.
    if exp10 >= 0:
        return raw * 10 ** exp10
    d = 10 ** -exp10
    q = (2 * abs(raw) + d) // (2 * d)
    return -q if raw < 0 else q


def float_bits_scaled(bits, wide, exp10):
    # IEEE 754 binary32 (wide False) or binary64 bits -> round(value * 10**exp10)
    # as an exact int, half away from zero; None for NaN, infinity and values
    # beyond 2**63 (no meter reading is that big).  Integer arithmetic, so a
    # board with single-precision floats gets the same answer as the host.
    eb, mb = (11, 52) if wide else (8, 23)
    e = (bits >> mb) & ((1 << eb) - 1)
    m = bits & ((1 << mb) - 1)
    if e == (1 << eb) - 1:
        return None
    if e:
        m |= 1 << mb
    else:
        e = 1
    e -= (1 << (eb - 1)) - 1 + mb  # value = m * 2**e
    if e > 64 + 4 * max(0, -exp10):
        return None
    num = m
    den = 1
    if e >= 0:
        num <<= e
    else:
        den <<= -e
    if exp10 >= 0:
        num *= 10 ** exp10
    else:
        den *= 10 ** -exp10
    q = (2 * num + den) // (2 * den)
    if q >= 1 << 63:
        return None
    return -q if bits >> (eb + mb) else q
