# Readable names of COSEM classes, attributes and values (dlms.cosem's
# class_name, attribute_name, ...) and of OBIS codes (dlms.obis's name,
# codes, table_size): display and tests only, so loaded on first use, apart
# from dlms.names, which error texts load.
from compat import const
from dlms.names import OBIS_KEYS, OBIS_NAMES

# COSEM classes (Blue Book 4.5 .. 4.6): class id, the version dlms.cosem
# follows, name, attribute names from attribute 1
_CLASSES = const((
    (1, 0, "data", "logical_name value"),
    (3, 0, "register", "logical_name value scaler_unit"),
    (4, 0, "extended_register", "logical_name value scaler_unit status capture_time"),
    (5, 0, "demand_register",
     "logical_name current_average_value last_average_value scaler_unit status"
     " capture_time start_time_current period number_of_periods"),
    (7, 1, "profile_generic",
     "logical_name buffer capture_objects capture_period sort_method sort_object"
     " entries_in_use profile_entries"),
    (8, 0, "clock",
     "logical_name time time_zone status daylight_savings_begin daylight_savings_end"
     " daylight_savings_deviation daylight_savings_enabled clock_base"),
    (70, 0, "disconnect_control", "logical_name output_state control_state control_mode"),
))


def _class(class_id):
    for entry in _CLASSES:
        if entry[0] == class_id:
            return entry
    return None


def class_name(class_id):
    entry = _class(class_id)
    return entry[2] if entry else None


def class_version(class_id):
    entry = _class(class_id)
    return entry[1] if entry else None


def attribute_name(class_id, index):
    entry = _class(class_id)
    if entry is None or index < 1:
        return None
    names = entry[3].split()
    return names[index - 1] if index <= len(names) else None


def attribute_index(class_id, name):
    entry = _class(class_id)
    if entry is None:
        return None
    names = entry[3].split()
    return names.index(name) + 1 if name in names else None


# Clock clock_base and Disconnect control control_state values
def _word(words, i):
    w = words.split()
    return w[i] if type(i) is int and 0 <= i < len(w) else None


def clock_base_name(value):
    return _word("not_defined internal_crystal mains_50hz mains_60hz gps radio_controlled", value)


def control_state_name(value):
    return _word("disconnected connected ready_for_reconnection", value)


# ---- dlms.obis names


def _obis_lookup(key):
    i = OBIS_KEYS.find(key)
    while i >= 0 and i % 6:
        i = OBIS_KEYS.find(key, i + 1)
    if i < 0:
        return None
    start = 0
    for _ in range(i // 6):
        start = OBIS_NAMES.find("\n", start) + 1
    stop = OBIS_NAMES.find("\n", start)
    return OBIS_NAMES[start:] if stop < 0 else OBIS_NAMES[start:stop]


def obis_name(obis):
    # readable name of an Obis (or 6 octets, or OBIS text), None if unknown.
    # Another channel B or a billing period F (historic value) is named after
    # the base code with the channel / period appended.
    from dlms.obis import Obis, ObisError

    if isinstance(obis, str):
        obis = Obis.parse(obis)
    ln = obis.to_bytes() if isinstance(obis, Obis) else bytes(obis)
    if len(ln) != 6:
        raise ObisError("logical name needs 6 octets")
    n = _obis_lookup(ln)
    if n is not None:
        return n
    n = _obis_lookup(ln[:1] + b"\x00" + ln[2:5] + b"\xff")
    if n is None:
        return None
    if ln[1]:
        n += ", channel %d" % ln[1]
    if ln[5] != 255:
        n += ", billing period %d" % ln[5]
    return n


def obis_table_size():
    # octets of the name table's data (keys + names), for the RAM budget
    return len(OBIS_KEYS) + len(OBIS_NAMES)


def obis_codes():
    # every named code, in table order (for docs and tests; allocates)
    from dlms.obis import Obis

    return [Obis.from_bytes(OBIS_KEYS[i:i + 6]) for i in range(0, len(OBIS_KEYS), 6)]
