# lib/dlms/cosem.py: interface classes, scaler/unit, units, profile-generic
# capture objects and selective access, clock values. Runs on both interpreters.
from fuzzing import Xorshift32, iterations
from mpcompat import raises

from dlms import axdr, cosem
from dlms.axdr import DateTime
from dlms.cosem import CosemError
from dlms.obis import Obis


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


def test_class_ids_and_attribute_indexes():
    # Blue Book (DLMS UA 1000-1) class ids and attribute numbering
    assert (cosem.REGISTER, cosem.DEMAND_REGISTER, cosem.PROFILE_GENERIC, cosem.CLOCK) == (3, 5, 7, 8)
    want = (
        (1, 2, "value"), (3, 2, "value"), (3, 3, "scaler_unit"), (4, 4, "status"),
        (4, 5, "capture_time"), (5, 2, "current_average_value"), (5, 3, "last_average_value"),
        (5, 4, "scaler_unit"), (5, 9, "number_of_periods"), (7, 2, "buffer"),
        (7, 3, "capture_objects"), (7, 4, "capture_period"), (7, 5, "sort_method"),
        (7, 6, "sort_object"), (7, 7, "entries_in_use"), (7, 8, "profile_entries"),
        (8, 2, "time"), (8, 3, "time_zone"), (8, 4, "status"), (8, 9, "clock_base"),
        (70, 2, "output_state"), (70, 3, "control_state"), (70, 4, "control_mode"),
        (70, 1, "logical_name"),
    )
    for class_id, index, name in want:
        assert cosem.attribute_name(class_id, index) == name, (class_id, index)
        assert cosem.attribute_index(class_id, name) == index, (class_id, name)
    assert cosem.attribute_name(3, 4) is None and cosem.attribute_name(3, 0) is None
    assert cosem.attribute_name(99, 1) is None and cosem.attribute_index(8, "nope") is None
    assert (cosem.PROFILE_BUFFER, cosem.PROFILE_CAPTURE_OBJECTS, cosem.CLOCK_TIME) == (2, 3, 2)
    assert cosem.class_version(cosem.PROFILE_GENERIC) == 1 and cosem.class_version(cosem.CLOCK) == 0
    assert cosem.class_name(70) == "disconnect_control" and cosem.class_name(2) is None


def test_scaler_unit_from_a_meter():
    # Aidon 6540 push (toreamun/amshan-homeassistant#47): 1-0:32.7.0 = 2372,
    # scaler_unit {integer -1, enum 35 (V)}
    value, _ = axdr.decode(h("02020fff1623"))
    assert cosem.scaler_unit(value) == (-1, 35), value
    assert cosem.reading(2372, value) == (237, 35)
    assert cosem.reading(2372, value, -3) == (237200, 35), "millivolts, exact"
    assert cosem.format_scaled(2372, -1) == "237.2"
    assert cosem.unit_name(35) == "V"
    for bad in ([1], [1, 2, 3], (200, 27), [-1, 256], ["x", 27], [-1, None], None, 5):
        raises(CosemError, cosem.scaler_unit, bad)


def test_scale_is_exact_for_integers():
    vectors = (
        ((2301, -1), 230), ((2305, -1), 231), ((-2305, -1), -231), ((2304, -1), 230),
        ((-25, -1), -3), ((-24, -1), -2), ((5, 3), 5000), ((0, -5), 0), ((7, 0), 7),
        ((123456789012345678, 3), 123456789012345678000),  # long64 energy in Wh
        ((0xFFFFFFFFFFFFFFFF, -3), 18446744073709552),
        ((1, -1), 0), ((5, -1), 1), ((-5, -1), -1),
    )
    for (value, scaler), want in vectors:
        got = cosem.scale(value, scaler)
        assert got == want and type(got) is int, (value, scaler, got)
    assert cosem.scale(2301, -1, -3) == 230100
    assert cosem.scale(2301, -2, -1) == 230, "rounded half away from zero: 230.1 -> 230"
    assert cosem.scale(12, 2, 3) == 1, "1200 Wh in kWh, rounded"
    assert cosem.scale(1.5, 0) == 2 and cosem.scale(-1.5, 0) == -2
    assert cosem.scale(230.25, 0, -2) == 23025
    raises(CosemError, cosem.scale, "5", 0)
    raises(CosemError, cosem.scale, None, 0)
    raises(CosemError, cosem.scale, float("nan"), 0)
    raises(CosemError, cosem.scale, float("inf"), 0)


def test_format_scaled():
    vectors = (((2301, -1), "230.1"), ((-5, -2), "-0.05"), ((5, -2), "0.05"), ((12, 2), "1200"),
               ((0, -3), "0.000"), ((100, -2), "1.00"), ((-123456, -3), "-123.456"), ((7, 0), "7"))
    for (value, scaler), want in vectors:
        got = cosem.format_scaled(value, scaler)
        assert got == want, (value, scaler, got)


def test_unit_names():
    want = ((27, "W"), (30, "Wh"), (32, "varh"), (35, "V"), (33, "A"), (44, "Hz"), (29, "var"),
            (28, "VA"), (31, "VAh"), (9, "\u00b0C"), (56, "%"), (255, "count"), (254, "other"),
            (1, "a"), (7, "s"), (13, "m\u00b3"), (57, "Ah"), (60, "Wh/m\u00b3"), (72, "dB"))
    for code, name in want:
        assert cosem.unit_name(code) == name, (code, cosem.unit_name(code))
    for code in (0, 58, 59, 68, 69, 73, 128, 253, 256, -1, None, "W"):
        assert cosem.unit_name(code) is None, code


def test_range_descriptor_vectors():
    # u9n/dlms-cosem tests/test_xdlms/test_selective_access.py, test_parse_range_descriptor:
    # a 15-minute profile read from 01.10.2017 00:00 to 01:00 (deviation -60, DST);
    # the vector there is "01 01" (optional present, selector 1) and then these octets
    want = h("0204 0204 120008 0906 0000010000ff 0f02 120000"
             " 090c 07e10a0107000000 00ffc480 090c 07e10a0107010000 00ffc480 0100")
    got = cosem.range_descriptor(DateTime(2017, 10, 1, 0, 0, 0, 0, -60, 0x80),
                                 DateTime(2017, 10, 1, 1, 0, 0, 0, -60, 0x80))
    assert got == want, got.hex()
    # same file, test_range_descriptor_to_bytes (weekday left unspecified)
    want = h("0204 0204 120008 0906 0000010000ff 0f02 120000"
             " 090c 07e40101ff00030000ff8800 090c 07e40106ff00030000ffc400 0100")
    got = cosem.range_descriptor(DateTime(2020, 1, 1, 0, 3, 0, 0, -120, 0, 0xFF),
                                 DateTime(2020, 1, 6, 0, 3, 0, 0, -60, 0, 0xFF),
                                 restricting=(cosem.CLOCK, Obis(0, 0, 1, 0, 0), 2, 0))
    assert got == want, got.hex()
    assert cosem.ACCESS_RANGE == 1 and cosem.ACCESS_ENTRY == 2


def test_range_descriptor_with_columns_and_other_bounds():
    got = cosem.range_descriptor((axdr.DOUBLE_LONG_UNSIGNED, 1704067200),
                                 (axdr.DOUBLE_LONG_UNSIGNED, 1704153600),
                                 restricting=(1, "0-0:1.1.0.255", 2, 0),  # a Data object
                                 selected=[(cosem.CLOCK, "0-0:1.0.0.255", 2, 0),
                                           (cosem.REGISTER, "1-0:1.8.0", 2, 0)])
    want = h("0204 0204 120001 0906 0000010100ff 0f02 120000 06 65920080 06 65935200"
             " 0102 0204 120008 0906 0000010000ff 0f02 120000"
             " 0204 120003 0906 0100010800ff 0f02 120000")
    assert got == want, got.hex()
    value, _ = axdr.decode(got)
    assert cosem.parse_capture_objects(value[3]) == [
        (8, Obis(0, 0, 1, 0, 0), 2, 0), (3, Obis(1, 0, 1, 8, 0), 2, 0)], value[3]
    for bad in ((1, 2), ("2024",)):
        raises(CosemError, cosem.range_descriptor, bad[0], DateTime(2024, 1, 1, 0, 0, 0))
    raises(CosemError, cosem.range_descriptor, DateTime(), DateTime(), (70000, "0-0:1.0.0", 2, 0))
    raises(CosemError, cosem.range_descriptor, DateTime(), DateTime(), None, [(3, "1-0:1.8", 2, 0)])
    raises(CosemError, cosem.range_descriptor, (17, 300), DateTime())  # unsigned


def test_entry_descriptor():
    # entry_descriptor ::= structure {from_entry double-long-unsigned, to_entry
    # double-long-unsigned, from_selected_value long-unsigned, to_selected_value
    # long-unsigned} (Blue Book, Profile generic selective access 2)
    assert cosem.entry_descriptor() == h("0204 0600000001 0600000000 120001 120000")
    assert cosem.entry_descriptor(10, 20, 2, 3) == h("0204 060000000a 0600000014 120002 120003")
    raises(CosemError, cosem.entry_descriptor, -1)
    raises(CosemError, cosem.entry_descriptor, 1, 0, 70000)


def test_capture_objects():
    # a load profile's capture_objects: clock time, status, +A, -A
    items = [cosem.capture_object(8, "0-0:1.0.0.255", 2), cosem.capture_object(1, "0-0:96.10.1", 2),
             cosem.capture_object(3, Obis(1, 0, 1, 8, 0), 2), cosem.capture_object(3, h("0100020800ff"), 2, 0)]
    data = axdr.encode(axdr.ARRAY, items)
    assert data[:20] == h("0104 0204 120008 0906 0000010000ff 0f02 120000"), data.hex()
    value, _ = axdr.decode(data)
    got = cosem.parse_capture_objects(value)
    assert got[0] == (8, Obis(0, 0, 1, 0, 0), 2, 0) and got[3] == (3, Obis(1, 0, 2, 8, 0), 2, 0), got
    for bad in (5, [[8, h("0000010000ff"), 2]], [[8, b"\x00", 2, 0]], [[8, h("0000010000ff"), None, 0]],
                [5], [["8", h("0000010000ff"), 2, 0]]):
        raises(CosemError, cosem.parse_capture_objects, bad)
    for args in ((70000, "0-0:1.0.0", 2), (8, "0-0:1.0.0", 200), (8, 5, 2), (8, "0-0:1.0.0", 2, -1)):
        raises(CosemError, cosem.capture_object, *args)


def test_clock_values():
    octets = h("07e8030502 0c1e0000 ffc4 00")
    dt = cosem.as_date_time(octets)
    assert (dt.year, dt.hour, dt.minute, dt.deviation) == (2024, 12, 30, -60), dt
    assert cosem.as_date_time(dt) is dt
    assert cosem.as_date_time(bytearray(octets)) == dt
    for bad in (bytes(11), None, 5, "2024"):
        raises(CosemError, cosem.as_date_time, bad)
    assert cosem.clock_time_data(dt) == h("090c") + octets
    raises(CosemError, cosem.clock_time_data, octets)
    assert cosem.clock_base_name(1) == "internal_crystal" and cosem.clock_base_name(9) is None
    assert cosem.control_state_name(2) == "ready_for_reconnection"
    assert cosem.control_state_name(1) == "connected"
    assert cosem.control_state_name(3) is None and cosem.control_state_name(None) is None


def test_fuzz_capture_objects_and_scaler_unit():
    # attribute values come from the meter: mutated encodings either parse or
    # raise AxdrError / CosemError, nothing else
    seeds = (axdr.encode(axdr.ARRAY, [cosem.capture_object(8, "0-0:1.0.0.255", 2),
                                      cosem.capture_object(3, "1-0:1.8.0", 2)]),
             h("02020fff1623"), h("020212000116ff"))
    rng = Xorshift32(0xC0FFEE)
    for i in range(iterations(2000)):
        buf = bytearray(seeds[i % len(seeds)])
        for _ in range(1 + i % 3):
            state = rng.next()
            at = state % len(buf)
            buf[at] = (state >> 8) & 0xFF
        try:
            value, _ = axdr.decode(bytes(buf))
        except axdr.AxdrError:
            continue
        for parse in (cosem.parse_capture_objects, cosem.scaler_unit, cosem.as_date_time):
            try:
                parse(value)
            except CosemError:
                pass
