# lib/modbus/sunspec.py: discovery state machine and model decoding.
# Register maps are built here from the SunSpec model definitions (sunspec/models,
# json/model_N.json: point order, sizes and scale factors); the values are ours.
import struct

from fuzzing import Xorshift32, iterations
from mpcompat import raises

import modbus
from modbus import sunspec

NI16 = 0xFFFF  # "not implemented" uint16 / enum16
NI_S16 = 0x8000  # "not implemented" int16 / sunssf


def s16(v):
    return v & 0xFFFF


def u32(v):
    return [(v >> 16) & 0xFFFF, v & 0xFFFF]


def f32(x):
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [hi, lo]


def text(s, regs):
    b = s.encode() + bytes(2 * regs - len(s))
    return [(b[2 * i] << 8) | b[2 * i + 1] for i in range(regs)]


def model(model_id, data):
    return [model_id, len(data)] + data


COMMON = model(1, text("ACME Power", 16) + text("Hybrid 10", 16) + text("", 8) + text("1.2.3", 8)
               + text("SN-0042", 16) + [1, NI16])

INVERTER = model(103, [
    123, 41, 41, 41, s16(-1),                      # A, AphA..C, A_SF: 12.3 A
    NI16, NI16, NI16, 2301, 2302, NI16, s16(-1),   # PPV.., PhVphA..C, V_SF: 230.1 V, 230.2 V, -
    s16(4321), 0,                                  # W, W_SF
    5001, s16(-2),                                 # Hz: 50.01
    s16(4400), 0, NI_S16, 0, s16(-95), s16(-2),   # VA, VAr (not implemented), PF -0.95
    ] + u32(123456789) + [0,                       # WH (acc32), WH_SF
    NI16, NI_S16, NI16, NI_S16,                   # DCA, DCV not implemented
    s16(4500), 0,                                  # DCW, DCW_SF
    355, NI_S16, NI_S16, NI_S16, s16(-1),         # TmpCab 35.5 C, others not implemented
    4, NI16] + u32(0) * 6)                         # St MPPT, StVnd, events

NAMEPLATE = model(120, [82, 10000, 0, 10000, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0,
                        1000, 1, NI16, NI_S16, 5000, 0, 5000, 0, 0])

STORAGE = model(124, [5000, 100, 100, NI16, NI16, 10, 655, NI16, 4801, 3, NI_S16, NI_S16,
                      NI16, NI16, NI16, NI16, 0, 0, NI_S16, 0, s16(-1), NI_S16, s16(-1), 0])


def mppt_module(ident, dcw, dcwh):
    return [ident] + text("PV%d" % ident, 8) + [1234, 3456, dcw] + u32(dcwh) + u32(0) + [NI_S16, 4] + u32(0)


MPPT = model(160, [s16(-2), s16(-1), 0, 0] + u32(0) + [2, 60] + mppt_module(1, 2000, 1000) + mppt_module(2, 2500, 0))

METER = model(203, [
    s16(-60), s16(-20), s16(-20), s16(-20), s16(-1),          # A
    2300, 2300, 2301, 2299, 3984, 3984, 3985, 3983, s16(-1),  # V
    5000, s16(-2),                                            # Hz
    s16(-1500), s16(-500), s16(-500), s16(-500), 0,           # W
    ] + [0] * 15 + u32(2000) + u32(0) * 3 + u32(1000) + u32(0) * 3 + [3]
    + [0] * 16 + [0] + [0] * 32 + [0] + u32(0))

END = [0xFFFF, 0]


def device(base, *models):
    # -> {address: value} for a device whose SunSpec map starts at base.
    regs = [0x5375, 0x6E53]
    for m in models:
        regs += m
    regs += END
    return {base + i: regs[i] for i in range(len(regs))}


def serve(disc, mem, limit=100):
    reads = []
    while True:
        r = disc.next_read()
        if r is None:
            return reads
        reads.append(r)
        addr, n = r
        if all(a in mem for a in range(addr, addr + n)):
            disc.answer([mem[a] for a in range(addr, addr + n)])
        else:
            disc.failed(modbus.ModbusException(3, 2))
        assert len(reads) < limit, reads


def registers(mem, entry):
    return [mem[a] for a in range(entry[1], entry[1] + entry[2] + 2)]


def test_model_lengths_match_the_definitions():
    want = {1: 66, 101: 50, 102: 50, 103: 50, 111: 60, 112: 60, 113: 60, 120: 26, 121: 30,
            122: 44, 123: 24, 124: 24, 160: 8, 201: 105, 202: 105, 203: 105, 204: 105, 802: 62}
    for mid in want:
        got = sunspec._size(sunspec._MODELS[mid][1])
        assert got == want[mid] == sunspec.model_length(mid), (mid, got)
    assert sunspec._size(sunspec._MODELS[160][2]) == 20  # a module of the MPPT model
    for m in (COMMON, INVERTER, NAMEPLATE, STORAGE, METER):
        assert len(m) == want[m[0]] + 2, (m[0], len(m))


def test_discovery_walks_the_chain():
    mem = device(40000, COMMON, INVERTER, NAMEPLATE, STORAGE, MPPT, METER)
    d = sunspec.Discovery()
    reads = serve(d, mem)
    assert d.done and d.error is None and not d.end_missing, d.error
    assert d.base == 40000
    ids = [m[0] for m in d.models]
    assert ids == [1, 103, 120, 124, 160, 203], ids
    assert d.models[0] == (1, 40002, 66), d.models[0]
    assert d.models[1] == (103, 40070, 50), d.models[1]
    # one read for marker + first header, then one per further header and the end
    assert reads[0] == (40000, 4) and len(reads) == 7, reads
    assert d.find((101, 102, 103)) == d.models[1]
    assert d.find(999) is None
    assert d.next_read() is None


def test_discovery_tries_the_other_bases():
    mem = device(0, COMMON, INVERTER)
    d = sunspec.Discovery()
    reads = serve(d, mem)
    assert d.base == 0 and [m[0] for m in d.models] == [1, 103], (d.base, d.models)
    assert reads[0] == (40000, 4) and reads[1] == (0, 4), reads
    mem = device(50000, COMMON)
    mem.update({40000 + i: 0 for i in range(4)})  # readable, but no marker
    d = sunspec.Discovery()
    serve(d, mem)
    assert d.base == 50000 and d.error is None, (d.base, d.error)
    d = sunspec.Discovery(bases=(0,))
    serve(d, {0: 1, 1: 2, 2: 3, 3: 4})
    assert d.done and isinstance(d.error, sunspec.SunSpecError) and not d.models, d.error


def test_discovery_without_end_model():
    mem = device(40000, COMMON, INVERTER)
    for a in (40000 + 2 + 68 + 52, 40000 + 2 + 68 + 52 + 1):
        del mem[a]  # no end model: the read past the last model fails
    d = sunspec.Discovery()
    serve(d, mem)
    assert d.done and d.error is None and d.end_missing and len(d.models) == 2, (d.error, d.models)


def test_discovery_guards():
    # A model running past 65535, too many models, a short answer.
    d = sunspec.Discovery(bases=(65000,))
    serve(d, {65000: 0x5375, 65001: 0x6E53, 65002: 1, 65003: 600})
    assert isinstance(d.error, sunspec.SunSpecError) and "past" in str(d.error), d.error
    d = sunspec.Discovery(bases=(0,), max_models=5)
    mem = {0: 0x5375, 1: 0x6E53}
    for a in range(2, 40, 2):
        mem[a] = 64000
        mem[a + 1] = 0
    serve(d, mem)
    assert isinstance(d.error, sunspec.SunSpecError) and len(d.models) == 5, (d.error, d.models)
    d = sunspec.Discovery(bases=(0,))
    d.answer([0x5375, 0x6E53])  # 2 registers for a 4-register read
    assert d.done and d.error, d.error
    d = sunspec.Discovery(bases=(0,))
    d.answer([0x5375, 0x6E53, 1, 66])
    d.failed("timeout")  # the first header read was fine, the next one failed
    assert d.done and d.error is None and d.end_missing


def test_common_model():
    info = sunspec.common_info(COMMON)
    want = {"manufacturer": "ACME Power", "model": "Hybrid 10", "options": None,
            "version": "1.2.3", "serial": "SN-0042", "device_address": 1}
    assert info == want, info


def test_inverter_scale_factors_and_not_implemented():
    v = sunspec.decode_model(103, INVERTER)
    assert v["A"] == (123, -1) and v["PhVphA"] == (2301, -1), (v["A"], v["PhVphA"])
    assert v["PhVphC"] is None and v["PPVphAB"] is None and v["VAr"] is None, v["PhVphC"]
    assert v["W"] == (4321, 0) and v["Hz"] == (5001, -2) and v["PF"] == (-95, -2)
    assert v["WH"] == (123456789, 0) and v["St"] == 4 and v["StVnd"] is None
    assert v["DCA"] is None and v["DCV"] is None and v["TmpSnk"] is None
    assert v["Evt1"] == 0, v["Evt1"]
    assert "A_SF" not in v
    cases = (("PhVphA", -3, 230100), ("Hz", -3, 50010), ("W", 0, 4321), ("A", -3, 12300),
             ("WH", 0, 123456789), ("TmpCab", -3, 35500), ("PF", -3, -950), ("PhVphC", -3, None),
             ("A", 0, 12), ("PhVphB", 0, 230), ("St", 0, 4))
    for name, exp, want in cases:
        got = sunspec.point_scaled(103, INVERTER, name, exp)
        assert got == want, (name, exp, got, want)


def test_scale_factor_out_of_range_or_missing_gives_none():
    regs = list(INVERTER)
    regs[2 + 13] = s16(11)  # W_SF = 11 is outside -10..10
    assert sunspec.point_scaled(103, regs, "W") is None
    regs[2 + 13] = NI_S16
    assert sunspec.decode_model(103, regs)["W"] is None


def test_storage_nameplate_meter_mppt():
    st = sunspec.decode_model(124, STORAGE)
    assert st["ChaState"] == (655, -1) and st["WChaMax"] == (5000, 0) and st["ChaSt"] == 3, st
    assert st["InBatV"] == (4801, -1) and st["MinRsvPct"] == (10, 0) and st["OutWRte"] is None, st
    assert sunspec.point_scaled(124, STORAGE, "ChaState", -1) == 655
    np = sunspec.decode_model(120, NAMEPLATE)
    assert np["DERTyp"] == 82 and np["WRtg"] == (10000, 0) and np["WHRtg"] == (1000, 1), np
    assert np["AhrRtg"] is None
    m = sunspec.decode_model(203, METER)
    assert m["W"] == (-1500, 0) and m["AphA"] == (-20, -1) and m["Hz"] == (5000, -2), m["W"]
    assert m["TotWhExp"] == (2000, 3) and m["TotWhImp"] == (1000, 3) and m["TotWhExpPhA"] is None
    assert sunspec.point_scaled(203, METER, "TotWhImp") == 1000000
    mp = sunspec.decode_model(160, MPPT)
    assert mp["N"] == 2 and len(mp["modules"]) == 2, mp
    mod = mp["modules"][1]
    assert mod["IDStr"] == "PV2" and mod["DCA"] == (1234, -2) and mod["DCV"] == (3456, -1), mod
    assert mod["DCWH"] is None and mod["Tmp"] is None and mod["DCSt"] == 4, mod
    assert sunspec.point_scaled(160, MPPT, "DCW", 0, "sum") == 4500
    assert sunspec.point_scaled(160, MPPT, "DCW", 0, 0) == 2000
    assert sunspec.point_scaled(160, MPPT, "DCWH", 0, "sum") is None
    raises(sunspec.SunSpecError, sunspec.point_scaled, 160, MPPT, "DCW", 0, 2)
    raises(sunspec.SunSpecError, sunspec.point_scaled, 160, MPPT, "Nope")


def test_battery_base_model():
    data = [200, 1000, 5000, 5000, NI16, 9500, 500, NI16, 1000, 6543, NI16, 98] + u32(321) \
        + [4, 0, 17, 0, 0, 4, 3, NI16] + u32(0xFFFFFFFF) + u32(0) * 4 \
        + [5123, NI16, NI16, 3301, 1, 2, 3290, 1, 3, 3295, s16(-123), 500, 500, s16(-2500), 0, s16(-2500), 1, 3] \
        + [0, 1, 0, NI_S16, s16(-2), NI_S16, 0, s16(-1), s16(-3), s16(-1), s16(-1), 0]
    regs = model(802, data)
    v = sunspec.decode_model(802, regs)
    assert v["SoC"] == (6543, -2) and v["WHRtg"] == (1000, 1) and v["SoH"] == (98, 0), v
    assert v["NCyc"] == 321 and v["WarrDt"] is None and v["State"] == 3 and v["DisChaRte"] is None, v
    assert v["V"] == (5123, -1) and v["A"] == (-123, -1) and v["W"] == (-2500, 0), v
    assert sunspec.point_scaled(802, regs, "SoC", -1) == 654  # 65.43 % -> 654 permille
    assert sunspec.point_scaled(802, regs, "CellVMax", -3) == 3301
    assert sunspec.point_scaled(802, regs, "WHRtg") == 10000


def test_float_inverter_model():
    data = []
    values = {"A": 12.5, "AphA": 4.25, "PhVphA": 230.1, "W": -1234.5, "Hz": 49.98, "WH": 98765432.0}
    names = ("A AphA AphB AphC PPVphAB PPVphBC PPVphCA PhVphA PhVphB PhVphC W Hz VA VAr PF WH "
             "DCA DCV DCW TmpCab TmpSnk TmpTrns TmpOt").split()
    for name in names:
        data += f32(values[name]) if name in values else [0x7FC0, 0]  # NaN: not implemented
    data += [4, NI16] + u32(0) * 6
    regs = model(113, data)
    v = sunspec.decode_model(113, regs)
    assert v["A"] == 12.5 and v["W"] == -1234.5 and v["AphB"] is None, v
    assert abs(v["PhVphA"] - 230.1) < 1e-4, v["PhVphA"]
    assert sunspec.point_scaled(113, regs, "PhVphA", -3) == 230100
    assert sunspec.point_scaled(113, regs, "Hz", -3) == 49980
    assert sunspec.point_scaled(113, regs, "WH") == 98765432
    assert sunspec.point_scaled(113, regs, "W") == -1235  # -1234.5 rounds away from zero
    assert sunspec.point_scaled(113, regs, "VA") is None


def test_wrong_or_short_registers_are_errors():
    raises(sunspec.SunSpecError, sunspec.decode_model, 103, COMMON)
    raises(sunspec.SunSpecError, sunspec.decode_model, 103, INVERTER[:40])
    raises(sunspec.SunSpecError, sunspec.decode_model, 999, [999, 0])
    raises(sunspec.SunSpecError, sunspec.decode_model, 103, [])
    # An older, shorter model: the points beyond L are None, not an error.
    short = [103, 20] + INVERTER[2:22]
    v = sunspec.decode_model(103, short)
    assert v["A"] == (123, -1) and v["WH"] is None and v["St"] is None, v


def test_reads_cover_models_in_chunks():
    assert sunspec.model_reads((203, 40226, 105)) == [(40226, 107)]
    assert sunspec.model_reads((160, 100, 208)) == [(100, 125), (225, 85)]
    assert sunspec.block_reads(0, 250, 100) == [(0, 100), (100, 100), (200, 50)]


def test_fuzz_decoding_random_registers():
    rng = Xorshift32(0x5C5C)
    n = iterations(300)
    ids = sunspec.model_ids()
    specs = {}  # a sample of points resolved once, as a profile does (all would cost ~25 KB)
    for mid in ids:
        names = [n for n in sunspec.point_names(mid) if sunspec.point_spec(mid, n)[1][:3] != "str"]
        specs[mid] = [sunspec.point_spec(mid, names[rng.below(len(names))]) for _ in range(6)]
    specs[160].append(sunspec.point_spec(160, "DCW"))  # a repeating point
    for _ in range(n):
        mid = ids[rng.below(len(ids))]
        length = rng.below(120)
        regs = [mid, length] + [rng.below(0x10000) if rng.below(3) else NI16 for _ in range(length + rng.below(3))]
        try:
            v = sunspec.decode_model(mid, regs)
        except sunspec.SunSpecError:
            continue
        assert isinstance(v, dict)
        for _ in range(4):  # a few points per round keeps the long run short
            spec = specs[mid][rng.below(len(specs[mid]))]
            x = sunspec.value_at(mid, regs, spec, -3, "sum" if spec[5] else None)
            assert x is None or isinstance(x, int), (mid, spec, x)


def test_fuzz_discovery_terminates():
    rng = Xorshift32(0xD15C)
    n = iterations(300)
    for _ in range(n):
        d = sunspec.Discovery(max_models=8)
        steps = 0
        while d.next_read() is not None:
            addr, count = d.next_read()
            assert 0 <= addr and addr + count <= 0x10000, (addr, count)
            k = rng.below(6)
            if k == 0:
                d.failed("timeout")
            elif k == 1:
                d.answer([0x5375, 0x6E53, rng.below(0x10000), rng.below(0x10000)][:count])
            else:
                d.answer([rng.below(0x10000) if rng.below(2) else rng.below(300) for _ in range(count - rng.below(2))])
            steps += 1
            assert steps < 20, steps
        assert d.done
