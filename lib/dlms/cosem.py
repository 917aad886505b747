# COSEM interface classes a meter client reads (IEC 62056-6-2, Blue Book): class
# ids, attribute indexes, scaler/unit and the unit table, profile-generic capture
# objects and selective-access descriptors, clock, disconnect control (read-only).
from compat import const

from dlms import axdr
from dlms.obis import Obis, ObisError


class CosemError(ValueError):
    pass


# class ids (Blue Book 4.5 .. 4.6) and the versions this module follows
_DATA = const(1)
REGISTER = const(3)
_EXTENDED_REGISTER = const(4)
DEMAND_REGISTER = const(5)
PROFILE_GENERIC = const(7)
CLOCK = const(8)
_DISCONNECT_CONTROL = const(70)

_LOGICAL_NAME = const(1)  # attribute 1 of every class
# Data (1, version 0)
_DATA_VALUE = const(2)
# Register (3, version 0)
REGISTER_VALUE = const(2)
REGISTER_SCALER_UNIT = const(3)
# Extended register (4, version 0): value 2, scaler_unit 3 as Register
_EXTENDED_STATUS = const(4)
_EXTENDED_CAPTURE_TIME = const(5)
# Demand register (5, version 0)
_DEMAND_CURRENT_AVERAGE = const(2)
_DEMAND_LAST_AVERAGE = const(3)
DEMAND_SCALER_UNIT = const(4)
_DEMAND_STATUS = const(5)
_DEMAND_CAPTURE_TIME = const(6)
_DEMAND_START_TIME_CURRENT = const(7)
_DEMAND_PERIOD = const(8)
_DEMAND_NUMBER_OF_PERIODS = const(9)
# Profile generic (7, version 1)
PROFILE_BUFFER = const(2)
PROFILE_CAPTURE_OBJECTS = const(3)
_PROFILE_CAPTURE_PERIOD = const(4)
_PROFILE_SORT_METHOD = const(5)
_PROFILE_SORT_OBJECT = const(6)
_PROFILE_ENTRIES_IN_USE = const(7)
_PROFILE_ENTRIES = const(8)
# Clock (8, version 0)
CLOCK_TIME = const(2)
_CLOCK_TIME_ZONE = const(3)
_CLOCK_STATUS = const(4)
_CLOCK_DST_BEGIN = const(5)
_CLOCK_DST_END = const(6)
_CLOCK_DST_DEVIATION = const(7)
_CLOCK_DST_ENABLED = const(8)
_CLOCK_BASE = const(9)
# Disconnect control (70, version 0): read-only here, no methods
_DISCONNECT_OUTPUT_STATE = const(2)
_DISCONNECT_CONTROL_STATE = const(3)
_DISCONNECT_CONTROL_MODE = const(4)
# control_state values
_DISCONNECTED = const(0)
_CONNECTED = const(1)
_READY_FOR_RECONNECTION = const(2)

# access selectors of Profile generic buffer (attribute 2)
ACCESS_RANGE = const(1)
ACCESS_ENTRY = const(2)

CLOCK_LN = b"\x00\x00\x01\x00\x00\xff"  # 0-0:1.0.0.255

# Names of classes, attributes, clock bases and control states: in
# dlms.cosem_names, loaded when a name is asked for.
_NAMES = const(("class_name", "class_version", "attribute_name", "attribute_index",
          "clock_base_name", "control_state_name"))


def __getattr__(name):
    if name not in _NAMES:
        raise AttributeError(name)
    from dlms import cosem_names

    return getattr(cosem_names, name)


# ---- scaler and unit


def scaler_unit(value):
    # decoded scaler_unit attribute (structure {integer scaler, enum unit}) -> (scaler, unit)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise CosemError("scaler_unit is not a structure of two: %r" % (value,))
    s, u = value
    if type(s) is not int or not -128 <= s <= 127 or type(u) is not int or not 0 <= u <= 255:
        raise CosemError("bad scaler_unit %r" % (value,))
    return s, u


def scale(value, scaler, exp=0):
    # value * 10**scaler as an int in units of 10**exp: scale(2301, -1) -> 230 (V),
    # scale(2301, -1, -3) -> 230100 (mV), scale(5, 3) -> 5000. Exact whenever
    # scaler >= exp; otherwise rounded half away from zero. No float for ints;
    # a float register value is scaled in float, then rounded the same way.
    t = type(value)
    if t is int:
        k = scaler - exp
        if k >= 0:
            return value * 10 ** k
        d = 10 ** -k
        q, r = divmod(-value if value < 0 else value, d)
        if 2 * r >= d:
            q += 1
        return -q if value < 0 else q
    if t is float:
        k = scaler - exp
        x = value * 10 ** k if k >= 0 else value / 10 ** -k
        if x != x or x in (float("inf"), float("-inf")):
            raise CosemError("cannot scale %r" % (value,))
        return int(x + 0.5) if x >= 0 else -int(-x + 0.5)
    raise CosemError("register value %r is not a number" % (value,))


def format_scaled(value, scaler):
    # exact decimal text of value * 10**scaler for an int value: (2301, -1) -> "230.1"
    if type(value) is not int:
        return repr(value * 10 ** scaler if scaler >= 0 else value / 10 ** -scaler)
    if scaler >= 0:
        return str(value * 10 ** scaler)
    digits = str(-value if value < 0 else value)
    if len(digits) <= -scaler:
        digits = "0" * (1 - scaler - len(digits)) + digits
    text = digits[:scaler] + "." + digits[scaler:]
    return "-" + text if value < 0 else text


# DLMS unit symbols: in dlms.names (imported on first use).

# frequent ones by name
_UNIT_W = const(27)
_UNIT_VA = const(28)
_UNIT_VAR = const(29)
_UNIT_WH = const(30)
_UNIT_VAH = const(31)
_UNIT_VARH = const(32)
_UNIT_A = const(33)
_UNIT_V = const(35)
_UNIT_HZ = const(44)
_UNIT_PERCENT = const(56)
_UNIT_COUNT = const(255)


def unit_name(code):
    # symbol of a DLMS unit code, None if the code is not defined
    if type(code) is not int or not 0 < code < 256:
        return None
    from dlms import names
    i = names.UNIT_CODES.find(bytes((code,)))
    if i < 0:
        return None
    start = 0
    for _ in range(i):
        start = names.UNIT_NAMES.find("|", start) + 1
    stop = names.UNIT_NAMES.find("|", start)
    return names.UNIT_NAMES[start:] if stop < 0 else names.UNIT_NAMES[start:stop]


def reading(value, scaler_unit_value, exp=0):
    # register value with its scaler_unit attribute -> (int in units of 10**exp, unit code)
    s, u = scaler_unit(scaler_unit_value)
    return scale(value, s, exp), u


# ---- date-time attributes (Clock time, capture_time, profile timestamps)


def as_date_time(value):
    # a date-time attribute as meters send it: octet-string(12) or date-time (25)
    if isinstance(value, axdr.DateTime):
        return value
    if isinstance(value, (bytes, bytearray)) and len(value) == 12:
        return axdr.DateTime.from_octets(value)
    raise CosemError("not a date-time: %r" % (value,))


def clock_time_data(dt):
    # Data for SET of Clock time (attribute 2): octet-string(12)
    if not isinstance(dt, axdr.DateTime):
        raise CosemError("clock time needs a DateTime")
    return axdr.encode(axdr.OCTET_STRING, dt.to_octets())


# ---- Profile generic


def _obis_bytes(ln):
    if isinstance(ln, Obis):
        return ln.to_bytes()
    if isinstance(ln, str):
        try:
            return Obis.parse(ln).to_bytes()
        except ObisError as e:
            raise CosemError(str(e))
    if isinstance(ln, (bytes, bytearray)) and len(ln) == 6:
        return bytes(ln)
    raise CosemError("bad logical name %r" % (ln,))


def capture_object(class_id, ln, attribute, data_index=0):
    # capture_object_definition as a typed value for axdr.encode
    if not (type(class_id) is int and 0 <= class_id <= 0xFFFF and type(attribute) is int
            and -128 <= attribute <= 127 and type(data_index) is int and 0 <= data_index <= 0xFFFF):
        raise CosemError("bad capture object (%r, %r, %r, %r)" % (class_id, ln, attribute, data_index))
    return (axdr.STRUCTURE, [(axdr.LONG_UNSIGNED, class_id), (axdr.OCTET_STRING, _obis_bytes(ln)),
                             (axdr.INTEGER, attribute), (axdr.LONG_UNSIGNED, data_index)])


def parse_capture_objects(value):
    # decoded capture_objects attribute -> [(class_id, Obis, attribute, data_index)]
    if not isinstance(value, list):
        raise CosemError("capture_objects is not an array")
    out = []
    for item in value:
        if not isinstance(item, list) or len(item) != 4:
            raise CosemError("capture object is not a structure of four: %r" % (item,))
        cid, ln, att, idx = item
        if type(cid) is not int or type(att) is not int or type(idx) is not int \
                or not isinstance(ln, bytes) or len(ln) != 6:
            raise CosemError("bad capture object %r" % (item,))
        out.append((cid, Obis.from_bytes(ln), att, idx))
    return out


def _bound(v):
    if isinstance(v, axdr.DateTime):
        return (axdr.OCTET_STRING, v.to_octets())
    if isinstance(v, tuple) and len(v) == 2:
        return v  # any (tag, value), e.g. (DOUBLE_LONG_UNSIGNED, unix time)
    raise CosemError("range bound needs a DateTime or (tag, value), not %r" % (v,))


def range_descriptor(from_value, to_value, restricting=None, selected=()):
    # access-parameters of selector ACCESS_RANGE as A-XDR bytes: structure
    # {restricting_object, from_value, to_value, selected_values}. The bounds are
    # DateTimes (sent as octet-string(12), as meters expect) or (tag, value);
    # restricting defaults to the clock time (8, 0-0:1.0.0.255, 2, 0); selected
    # is capture objects as (class_id, ln, attribute, data_index), empty = all.
    if restricting is None:
        restricting = (CLOCK, CLOCK_LN, CLOCK_TIME, 0)
    cols = [capture_object(*c) for c in selected]
    try:
        return axdr.encode(axdr.STRUCTURE, [capture_object(*restricting), _bound(from_value),
                                            _bound(to_value), (axdr.ARRAY, cols)])
    except axdr.EncodeError as e:
        raise CosemError(str(e))


def entry_descriptor(from_entry=1, to_entry=0, from_selected_value=1, to_selected_value=0):
    # access-parameters of selector ACCESS_ENTRY: entries and columns count from 1,
    # 0 as the upper bound means "up to the last"
    try:
        return axdr.encode(axdr.STRUCTURE, [(axdr.DOUBLE_LONG_UNSIGNED, from_entry),
                                            (axdr.DOUBLE_LONG_UNSIGNED, to_entry),
                                            (axdr.LONG_UNSIGNED, from_selected_value),
                                            (axdr.LONG_UNSIGNED, to_selected_value)])
    except axdr.EncodeError as e:
        raise CosemError(str(e))
