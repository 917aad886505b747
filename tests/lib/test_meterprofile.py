# lib/meterprofile.py and lib/quantities.py: profiles as data, read planning, decoding.
# The register profiles here are small copies of the shipped ones (lib/meterprofiles/
# is checked file by file in tests/host/test_modbus_interop.py, since lib tests read no files).
import struct

from fuzzing import Xorshift32, iterations
from mpcompat import raises

import meterprofile
import quantities
from meterprofile import ProfileError
from modbus import pdu, sunspec


def f32(x):
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [hi, lo]


def f64(x):
    return list(struct.unpack(">HHHH", struct.pack(">d", x)))


SDM = {
    "schema": 1, "name": "sdm_test", "max_registers": 80,
    "blocks": [
        {"fc": 4, "start": 0, "count": 80, "values": [
            {"quantity": "voltage_l1_mv", "offset": 0, "type": "f32", "unit": "V"},
            {"quantity": "current_l1_ma", "offset": 6, "type": "f32", "unit": "A"},
            {"quantity": "power_w", "offset": 52, "type": "f32", "unit": "W"},
            {"quantity": "power_factor_permille", "offset": 62, "type": "f32", "unit": "1"},
            {"quantity": "frequency_mhz", "offset": 70, "type": "f32", "unit": "Hz"},
            {"quantity": "energy_import_wh", "offset": 72, "type": "f32", "unit": "kWh"},
            {"quantity": "energy_export_wh", "offset": 74, "type": "f32", "unit": "kWh"}]},
        {"fc": 4, "start": 346, "count": 2, "values": [
            {"quantity": "energy_import_l1_wh", "offset": 0, "type": "f32", "unit": "kWh"}]},
    ],
}


def test_vocabulary():
    assert quantities.unit("energy_import_wh") == "Wh"
    assert quantities.obis("energy_import_wh") == "1-0:1.8.0"
    assert quantities.obis("energy_export_wh") == "1-0:2.8.0"
    assert quantities.obis("voltage_l1_mv") == "1-0:32.7.0"
    assert quantities.obis("current_l2_ma") == "1-0:51.7.0"
    assert quantities.obis("frequency_mhz") == "1-0:14.7.0"
    assert quantities.obis("battery_soc_permille") is None
    assert quantities.unit("nonsense") is None
    for name in quantities.names():
        u = quantities.unit(name)
        assert u in quantities.UNITS, (name, u)
        suffix = {"Wh": "_wh", "W": "_w", "mV": "_mv", "mA": "_ma", "mHz": "_mhz", "permille": "_permille",
                  "VA": "_va", "var": "_var", "varh": "_varh", "mdegC": "_mdegc", "state": "_state"}[u]
        assert name.endswith(suffix), (name, u)
    assert quantities.exponent("V", "voltage_l1_mv") == 3
    assert quantities.exponent("kWh", "energy_import_wh") == 3
    assert quantities.exponent("%", "battery_soc_permille") == 1
    raises(ValueError, quantities.exponent, "A", "voltage_l1_mv")
    raises(ValueError, quantities.exponent, "furlong", "voltage_l1_mv")


def test_exact_scaling():
    assert quantities.scale_int(2301, 2) == 230100
    assert quantities.scale_int(2305, -1) == 231 and quantities.scale_int(-2305, -1) == -231
    assert quantities.scale_int(2304, -1) == 230 and quantities.scale_int(-2304, -1) == -230
    bits = lambda x: struct.unpack(">I", struct.pack(">f", x))[0]
    assert quantities.float_bits_scaled(bits(230.1), False, 3) == 230100
    assert quantities.float_bits_scaled(bits(12345.678), False, 3) == 12345678
    assert quantities.float_bits_scaled(bits(-0.5), False, 0) == -1
    assert quantities.float_bits_scaled(bits(0.0), False, 3) == 0
    assert quantities.float_bits_scaled(0x7FC00000, False, 0) is None  # NaN
    assert quantities.float_bits_scaled(0x7F800000, False, 0) is None  # +inf
    assert quantities.float_bits_scaled(0x00000001, False, 50) == 140130  # smallest subnormal 1.4013e-45 * 1e50
    assert quantities.float_bits_scaled(bits(3e38), False, 0) is None  # beyond 2**63
    b64 = struct.unpack(">Q", struct.pack(">d", 123456789.123456))[0]
    assert quantities.float_bits_scaled(b64, True, 3) == 123456789123


def sdm_registers():
    regs = [0] * 80
    for off, x in ((0, 230.1), (6, 5.25), (52, -1234.5), (62, -0.98), (70, 49.99), (72, 12345.678), (74, 0.5)):
        regs[off:off + 2] = f32(x)
    return regs


def test_sdm_profile_reads_and_decodes():
    p = meterprofile.load(SDM)
    reads = p.reads()
    assert [(r.fc, r.start, r.count) for r in reads] == [(4, 0, 80), (4, 346, 2)], reads
    req = reads[0].requests()
    assert len(req) == 1 and req[0].pdu == pdu.read_input_registers(0, 80).pdu
    got = p.decode(reads[0], sdm_registers())
    want = {"voltage_l1_mv": 230100, "current_l1_ma": 5250, "power_w": -1235, "power_factor_permille": -980,
            "frequency_mhz": 49990, "energy_import_wh": 12345678, "energy_export_wh": 500}
    assert got == want, got
    assert p.decode(reads[1], f32(1.5)) == {"energy_import_l1_wh": 1500}
    raises(ProfileError, p.decode, reads[1], [0])
    assert p.quantities()[0] == "current_l1_ma"


def test_nan_is_left_out():
    p = meterprofile.load(SDM)
    regs = sdm_registers()
    regs[0:2] = [0x7FC0, 0]
    got = p.decode(p.reads()[0], regs)
    assert "voltage_l1_mv" not in got and got["frequency_mhz"] == 49990, got


def profile(values, **extra):
    doc = {"schema": 1, "name": "t", "blocks": [{"fc": 3, "start": 100, "values": values}]}
    doc.update(extra)
    return meterprofile.load(doc)


def decode1(values, regs, **extra):
    p = profile(values, **extra)
    r = p.reads()[0]
    return p.decode(r, regs + [0] * (r.count - len(regs)))


def test_integer_types_orders_and_scales():
    cases = (
        ({"type": "u16", "unit": "A", "scale": -1}, [65], "current_l1_ma", 6500),
        ({"type": "s16", "unit": "W"}, [0xFFFE], "power_w", -2),
        ({"type": "u32", "unit": "Wh"}, [0x0001, 0x0002], "energy_import_wh", 65538),
        ({"type": "acc32", "unit": "kWh", "scale": -2}, [0, 12345], "energy_import_wh", 123450),
        ({"type": "u32", "unit": "Wh", "word_order": "little"}, [0x0002, 0x0001], "energy_import_wh", 65538),
        ({"type": "s32", "unit": "W"}, [0xFFFF, 0xFF38], "power_w", -200),
        ({"type": "s32", "unit": "W", "word_order": "little"}, [0xFF38, 0xFFFF], "power_w", -200),
        ({"type": "u16", "unit": "W", "byte_order": "little"}, [0x3412], "power_w", 0x1234),
        ({"type": "u64", "unit": "Wh"}, [0, 1, 0, 0], "energy_import_wh", 1 << 32),
        ({"type": "s64", "unit": "W"}, [0xFFFF] * 4, "power_w", -1),
        ({"type": "u16", "unit": "W", "sign": -1}, [300], "power_w", -300),
        ({"type": "u16", "unit": "%", "scale": -1}, [655], "battery_soc_permille", 655),
        ({"type": "u16", "unit": "kW", "scale": -2}, [123], "power_w", 1230),
        ({"type": "f64", "unit": "kWh"}, f64(1.0006), "energy_import_wh", 1001),
        ({"type": "f32", "unit": "V", "word_order": "little"}, f32(230.0)[::-1], "voltage_l1_mv", 230000),
    )
    for spec, regs, q, want in cases:
        v = {"quantity": q, "offset": 0}
        v.update(spec)
        got = decode1([v], regs)
        assert got == {q: want}, (spec, got, want)


def test_word_order_default_from_the_profile():
    got = decode1([{"quantity": "energy_import_wh", "offset": 0, "type": "u32", "unit": "Wh"}],
                  [0x0002, 0x0001], word_order="little")
    assert got == {"energy_import_wh": 65538}, got


def test_invalid_map_and_scale_factor_register():
    values = [
        {"quantity": "power_w", "offset": 0, "type": "s16", "unit": "W", "sf": "W_SF"},
        {"offset": 1, "type": "sunssf", "id": "W_SF"},
        {"quantity": "ev_state", "offset": 2, "type": "u16", "unit": "state", "map": {"2": 1, "7": 3}},
        {"quantity": "current_l1_ma", "offset": 3, "type": "u16", "unit": "A", "invalid": 65535},
    ]
    assert decode1(values, [1234, 0xFFFF, 7, 10]) == {"power_w": 123, "ev_state": 3, "current_l1_ma": 10000}
    assert decode1(values, [1234, 2, 99, 65535]) == {"power_w": 123400}  # unmapped state, invalid current
    assert decode1(values, [1234, 0x8000, 2, 1]) == {"ev_state": 1, "current_l1_ma": 1000}  # SF not implemented


def test_planning_groups_adjacent_blocks():
    def blocks(*spans, **extra):
        doc = {"schema": 1, "name": "plan", "blocks": []}
        for i, (fc, start, count) in enumerate(spans):
            doc["blocks"].append({"fc": fc, "start": start, "count": count, "values": [
                {"quantity": quantities.names()[i], "offset": 0, "type": "u16",
                 "unit": quantities.unit(quantities.names()[i])}]})
        doc.update(extra)
        return [(r.fc, r.start, r.count, len(r.values)) for r in meterprofile.load(doc).reads()]
    assert blocks((4, 10, 2), (4, 0, 10), (4, 12, 3)) == [(4, 0, 15, 3)]
    assert blocks((4, 0, 10), (4, 11, 2)) == [(4, 0, 10, 1), (4, 11, 2, 1)]
    assert blocks((4, 0, 10), (4, 11, 2), max_gap=1) == [(4, 0, 13, 2)]
    assert blocks((3, 0, 10), (4, 10, 2)) == [(3, 0, 10, 1), (4, 10, 2, 1)]
    assert blocks((4, 0, 100), (4, 100, 30)) == [(4, 0, 100, 1), (4, 100, 30, 1)]
    assert blocks((4, 0, 60), (4, 60, 20), max_registers=80) == [(4, 0, 80, 2)]
    assert blocks((4, 0, 60), (4, 60, 21), max_registers=81) == [(4, 0, 81, 2)]
    assert blocks((4, 0, 60), (4, 50, 30)) == [(4, 0, 80, 2)]  # overlapping


def test_optional_blocks_are_read_alone():
    doc = {"schema": 1, "name": "opt", "blocks": [
        {"fc": 4, "start": 0, "values": [{"quantity": "power_w", "offset": 0, "type": "s16", "unit": "W"}]},
        {"fc": 4, "start": 1, "optional": True,
         "values": [{"quantity": "current_n_ma", "offset": 0, "type": "u16", "unit": "mA"}]},
        {"fc": 4, "start": 2, "values": [{"quantity": "frequency_mhz", "offset": 0, "type": "u16", "unit": "mHz"}]},
    ]}
    reads = meterprofile.load(doc).reads()
    got = [(r.start, r.count, r.optional) for r in reads]
    assert got == [(0, 1, False), (1, 1, True), (2, 1, False)], got
    doc["blocks"][1]["optional"] = "yes"
    assert "blocks[1].optional: must be one of False/True" in error_of(doc)


def test_grouped_values_decode_at_their_place():
    doc = {"schema": 1, "name": "g", "max_gap": 8, "blocks": [
        {"fc": 4, "start": 10, "values": [{"quantity": "power_w", "offset": 0, "type": "s16", "unit": "W", "sf": "sf"},
                                          {"offset": 1, "type": "sunssf", "id": "sf"}]},
        {"fc": 4, "start": 0, "values": [{"quantity": "current_l1_ma", "offset": 1, "type": "u16", "unit": "mA"}]},
    ]}
    p = meterprofile.load(doc)
    (r,) = p.reads()
    assert (r.start, r.count) == (0, 12), r
    got = p.decode(r, [0, 1500] + [0] * 8 + [42, 1])
    assert got == {"current_l1_ma": 1500, "power_w": 420}, got


def error_of(doc):
    exc = raises(ProfileError, meterprofile.load, doc)
    return str(exc)


def test_validation_names_profile_and_field():
    def v(**kw):
        base = {"quantity": "power_w", "offset": 0, "type": "s16", "unit": "W"}
        base.update(kw)
        return {"schema": 1, "name": "bad", "blocks": [{"fc": 4, "start": 0, "values": [base]}]}
    cases = (
        (v(quantity="power_kw"), "profile bad: blocks[0].values[0].quantity: not in the vocabulary"),
        (v(type="f33"), "profile bad: blocks[0].values[0].type: must be one of"),
        (v(unit="A"), "profile bad: blocks[0].values[0].unit: unit 'A' does not fit quantity power_w"),
        (v(unit="parsec"), "blocks[0].values[0].unit: unknown unit"),
        (v(offset=125), "blocks[0].values[0].offset: must be a whole number 0..124"),
        (v(offset=True), "blocks[0].values[0].offset"),
        (v(sign=2), "blocks[0].values[0].sign"),
        (v(sf="X"), "blocks[0].values[0].sf: no sunssf register with id 'X'"),
        (v(wordorder="big"), "blocks[0].values[0]: unknown field 'wordorder'"),
        (v(map={"x": 1}, unit="state", quantity="ev_state"), "blocks[0].values[0].map: key 'x'"),
        (v(unit="state", quantity="ev_state", scale=1), "an enumeration takes an integer type and no scaling"),
        (v(invalid=70000), "blocks[0].values[0].invalid"),
        (v(type="f32", sf="x"), "blocks[0].values[0].sf: scale factors apply to integer types"),
    )
    for doc, want in cases:
        got = error_of(doc)
        assert want in got, (got, want)
    doc = v()
    doc["blocks"][0]["count"] = 200
    assert "blocks[0].count" in error_of(doc)
    doc = v(offset=100)
    doc["blocks"][0]["count"] = 50
    assert "do not reach the last value" in error_of(doc)
    doc = v(offset=100)
    doc["max_registers"] = 80
    assert "exceed max_registers 80" in error_of(doc)
    doc = v()
    doc["blocks"][0]["values"].append({"quantity": "power_w", "offset": 1, "type": "s16", "unit": "W"})
    assert "power_w already comes from blocks[0].values[0]" in error_of(doc)
    doc = v()
    doc["blocks"][0]["start"] = 65535
    doc["blocks"][0]["count"] = 2
    assert "runs past register 65535" in error_of(doc)
    for key, value, want in (("schema", 2, "profile bad: schema: must be 1"), ("name", "Bad Name", "name: must be"),
                             ("type", "magic", "type: must be one of"),
                             ("blocks", [], "'blocks' must be a non-empty list"),
                             ("colour", "red", "unknown field 'colour'"), ("values", [], "belong to sunspec profiles")):
        doc = v()
        doc[key] = value
        got = error_of(doc)
        assert want in got, (key, got, want)
    assert "must be an object" in error_of([1, 2])


SUNSPEC_DOC = {
    "schema": 1, "name": "ss", "type": "sunspec", "models": [1, 103, 124, 160],
    "values": [
        {"quantity": "inverter_power_w", "model": [103, 113], "point": "W"},
        {"quantity": "voltage_l1_mv", "model": [103, 113], "point": "PhVphA"},
        {"quantity": "frequency_mhz", "model": [103, 113], "point": "Hz"},
        {"quantity": "inverter_state", "model": [103, 113], "point": "St"},
        {"quantity": "battery_soc_permille", "model": 124, "point": "ChaState"},
        {"quantity": "battery_state", "model": 124, "point": "ChaSt", "map": {"3": 30, "4": 40}},
        {"quantity": "pv_power_w", "model": 160, "point": "DCW", "module": "sum"},
        {"quantity": "power_w", "model": 203, "point": "W", "sign": -1},
    ],
}


def sunspec_device():
    # base 40000: SunS, model 103 (W 4321, V 230.1, Hz 50.01, St 4), model 124
    # (ChaState 65.5 %, ChaSt 3), end.  Offsets from sunspec/models json.
    inv = [103, 50] + [0] * 50
    inv[2 + 8] = 2301  # PhVphA
    inv[2 + 11] = 0xFFFF  # V_SF -1
    inv[2 + 12] = 4321  # W
    inv[2 + 14] = 5001  # Hz
    inv[2 + 15] = 0xFFFE  # Hz_SF -2
    inv[2 + 36] = 4
    bat = [124, 24] + [0] * 24
    bat[2 + 6] = 655
    bat[2 + 9] = 3
    bat[2 + 20] = 0xFFFF  # ChaState_SF -1
    regs = [0x5375, 0x6E53] + inv + bat + [0xFFFF, 0]
    return {40000 + i: regs[i] for i in range(len(regs))}


def test_sunspec_profile_end_to_end():
    p = meterprofile.load(SUNSPEC_DOC)
    mem = sunspec_device()
    d = sunspec.Discovery()
    while d.next_read():
        a, n = d.next_read()
        d.answer([mem[x] for x in range(a, a + n)])
    assert [m[0] for m in d.models] == [103, 124], d.models
    reads = p.reads(d.models)
    assert [(r.fc, r.start, r.count, r.model) for r in reads] == [(3, 40002, 52, 103), (3, 40054, 26, 124)], reads
    assert p.missing(d.models) == ["power_w", "pv_power_w"], p.missing(d.models)
    got = {}
    for r in reads:
        regs = []
        for req in r.requests():
            regs += [mem[x] for x in range(req.address, req.address + req.count)]
        got.update(p.decode(r, regs))
    want = {"inverter_power_w": 4321, "voltage_l1_mv": 230100, "frequency_mhz": 50010, "inverter_state": 4,
            "battery_soc_permille": 655, "battery_state": 30}
    assert got == want, got


def test_sunspec_quantity_from_the_first_model_present():
    doc = {"schema": 1, "name": "bat", "type": "sunspec", "values": [
        {"quantity": "battery_soc_permille", "model": 124, "point": "ChaState"},
        {"quantity": "battery_soc_permille", "model": 802, "point": "SoC"}]}
    p = meterprofile.load(doc)
    both = [(124, 100, 24), (802, 200, 62)]
    reads = p.reads(both)
    assert [r.model for r in reads] == [124], reads
    only_802 = [(802, 200, 62)]
    (r,) = p.reads(only_802)
    regs = [802, 62] + [0] * 62
    regs[2 + 9] = 6543  # SoC
    regs[2 + 54] = 0xFFFE  # SoC_SF -2
    assert p.decode(r, regs) == {"battery_soc_permille": 654}
    assert p.missing([]) == ["battery_soc_permille"] and p.missing(only_802) == []


def test_sunspec_profile_validation():
    def doc(**kw):
        v = {"quantity": "inverter_power_w", "model": 103, "point": "W"}
        v.update(kw)
        return {"schema": 1, "name": "ss", "type": "sunspec", "values": [v]}
    cases = (
        (doc(model=999), "values[0].model: SunSpec model 999 is not known"),
        (doc(model="103"), "values[0].model: must be a model id or a list"),
        (doc(model=["103"]), "values[0].model: SunSpec model '103' is not known"),
        (doc(point="Watts"), "values[0].point: model 103 has no point 'Watts'"),
        (doc(quantity="voltage_l1_mv"), "values[0].unit: unit 'W' does not fit"),
        (doc(module=-1), "values[0].module"),
        (doc(model=[]), "values[0].model: must be a model id or a list"),
    )
    for d, want in cases:
        got = error_of(d)
        assert want in got, (got, want)
    d = doc()
    d["blocks"] = []
    assert "'blocks' belong to registers profiles" in error_of(d)
    d = doc()
    d["models"] = [1, 5]
    assert "models: must list known SunSpec model ids" in error_of(d)


def test_setpoints():
    p = profile([{"quantity": "ev_current_setpoint_ma", "offset": 0, "type": "u16", "unit": "A", "scale": -1}],
                setpoints=[{"quantity": "ev_current_setpoint_ma", "fc": 6, "address": 261, "type": "u16",
                            "unit": "A", "scale": -1, "min": 0, "max": 16000},
                           {"quantity": "battery_charge_max_w", "fc": 16, "address": 10, "type": "s32",
                            "unit": "W", "min": -5000, "max": 5000}])
    assert p.setpoint("ev_current_setpoint_ma", 10000).pdu == pdu.write_single_register(261, 100).pdu
    assert p.setpoint("ev_current_setpoint_ma", 6049).pdu == pdu.write_single_register(261, 60).pdu
    assert p.setpoint("battery_charge_max_w", -2).pdu == pdu.write_multiple_registers(10, [0xFFFF, 0xFFFE]).pdu
    raises(ProfileError, p.setpoint, "ev_current_setpoint_ma", 16001)
    raises(ProfileError, p.setpoint, "ev_current_setpoint_ma", True)
    raises(ProfileError, p.setpoint, "power_w", 1)
    bad = {"schema": 1, "name": "b", "blocks": SDM["blocks"],
           "setpoints": [{"quantity": "power_w", "fc": 6, "address": 1, "type": "u32", "unit": "W",
                          "min": 0, "max": 1}]}
    assert "setpoints[0].type: fc 6 writes one register" in error_of(bad)


def test_fuzz_decode_random_registers():
    rng = Xorshift32(0xFACE)
    n = iterations(300)
    types = ("u16", "s16", "u32", "s32", "acc32", "u64", "s64", "f32", "f64")
    names = [q for q in quantities.names() if quantities.unit(q) != "state"]
    for i in range(n):
        values = []
        off = 0
        for j in range(1 + rng.below(6)):
            t = types[rng.below(len(types))]
            q = names[(i + j) % len(names)]
            if any(v["quantity"] == q for v in values):
                continue
            values.append({"quantity": q, "offset": off, "type": t, "unit": quantities.unit(q),
                           "scale": rng.below(7) - 3, "word_order": ("big", "little")[rng.below(2)]})
            off += meterprofile._TYPES[t] + rng.below(2)
        p = profile(values)
        r = p.reads()[0]
        regs = [rng.below(0x10000) for _ in range(r.count)]
        got = p.decode(r, regs)
        for q in got:
            assert isinstance(got[q], int), (q, got[q])
