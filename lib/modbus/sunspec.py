# SunSpec over Modbus (sans-I/O): discovery of the model chain and decoding of models.
"""SunSpec Information Model Specification 1.x, holding registers (fc 3).

Register map::

    base+0  'S' 'u'   0x5375      base is 0, 40000 or 50000 (protocol addresses)
    base+1  'n' 'S'   0x6e53
    base+2  model ID  (1 = common)          a model: [ID][L][L data registers]
    base+3  L                               next model at  this ID address + 2 + L
    ...
            0xFFFF, 0                       end model

Discovery is a state machine: next_read() says which registers to read,
answer(registers) or failed(error) takes the outcome, until next_read() is
None.  The same object runs over RTU or TCP because it never does I/O.

Values: integer points come as (raw, sf) meaning raw * 10**sf exactly (sf from
the model's scale-factor point), plain ints (enums, bitfields, counters),
str, or a float for the float models 111-113; a point whose register holds
the "not implemented" pattern (0xFFFF, 0x8000, 0x80000000, acc 0, NaN ...)
is None, and so is a scaled point whose scale factor is not implemented or
outside -10..10.  point_scaled() gives an exact int in any power-of-ten unit.
"""
from compat import const
from modbus import ModbusError
from quantities import float_bits_scaled, scale_int

_MARKER = const((0x5375, 0x6E53))  # "SunS"
_BASES = const((40000, 0, 50000))  # 40000 first: most devices use it, saving a round trip
_END_ID = const(0xFFFF)
_MAX_MODELS = const(40)


class SunSpecError(ModbusError):
    pass


class Discovery:
    """Finds the SunS marker and walks the model chain.

    next_read() -> (address, count) of holding registers to read, None when done
    answer(registers)   the registers that read returned
    failed(error)       that read failed (exception response, timeout)
    .done, .error (None or SunSpecError), .base, .models: list of
    (model_id, address of its ID register, length L)
    """

    def __init__(self, bases=_BASES, max_models=_MAX_MODELS):
        self.bases = tuple(bases)
        self.max_models = max_models
        self.base = None
        self.models = []
        self.done = False
        self.error = None
        self.end_missing = False  # chain ended by a failed read, not by 0xFFFF
        self._i = 0  # index into bases while searching
        self._next = 0  # address of the next model header while walking

    def next_read(self):
        if self.done:
            return None
        if self.base is None:
            return (self.bases[self._i], 4)  # marker + first model header
        return (self._next, 2)

    def _finish(self, error=None):
        self.done = True
        self.error = error

    def failed(self, error=None):
        if self.done:
            return
        if self.base is None:
            self._next_base()
        elif self.models:
            # Many devices answer "illegal address" past the last model instead
            # of providing the end model: the models found so far stand.
            self.end_missing = True
            self._finish()
        else:
            self._finish(SunSpecError("reading the first model header failed: %s" % (error,)))

    def _next_base(self):
        self._i += 1
        if self._i >= len(self.bases):
            self._finish(SunSpecError("no SunS marker at %s" % (", ".join(str(b) for b in self.bases),)))

    def answer(self, registers):
        if self.done:
            return
        want = self.next_read()[1]
        if len(registers) != want:
            self.failed("%d registers, asked %d" % (len(registers), want))
            return
        if self.base is None:
            if registers[0] != _MARKER[0] or registers[1] != _MARKER[1]:
                self._next_base()
                return
            self.base = self.bases[self._i]
            self._header(self.base + 2, registers[2], registers[3])
        else:
            self._header(self._next, registers[0], registers[1])

    def _header(self, address, model_id, length):
        if model_id == _END_ID or (model_id == 0 and length == 0):
            self._finish()
            return
        if len(self.models) >= self.max_models:
            self._finish(SunSpecError("more than %d models" % self.max_models))
            return
        nxt = address + 2 + length
        if nxt + 2 > 0x10000:
            self._finish(SunSpecError("model %d at %d (L=%d) runs past the register space"
                                      % (model_id, address, length)))
            return
        self.models.append((model_id, address, length))
        self._next = nxt

    def find(self, model_ids):
        # -> the first (model_id, address, length) whose id is in model_ids (an int or a sequence)
        if isinstance(model_ids, int):
            model_ids = (model_ids,)
        for entry in self.models:
            if entry[0] in model_ids:
                return entry
        return None


def block_reads(address, count, max_count=125):
    # Split a register range into reads of at most max_count registers.
    out = []
    while count > 0:
        n = min(count, max_count)
        out.append((address, n))
        address += n
        count -= n
    return out


def model_reads(entry, max_count=125):
    # Reads covering a whole model (ID and L included) found by Discovery.
    return block_reads(entry[1], entry[2] + 2, max_count)


# Model layouts: "name:type[:scale factor point[:unit]]", in register order.
# Types and sizes: u16 s16 e16 (enum) b16 (bitfield) sf (sunssf) pad = 1,
# u32 s32 a32 (acc32) b32 f32 = 2, a64 u64 = 4, strN = N registers.
# Checked against the SunSpec model JSON definitions (github sunspec/models, json/model_N.json).
_COMMON = const("Mn:str16 Md:str16 Opt:str8 Vr:str8 SN:str16 DA:u16 Pad:pad")

_INVERTER = const(
    "A:u16:A_SF:A AphA:u16:A_SF:A AphB:u16:A_SF:A AphC:u16:A_SF:A A_SF:sf "
    "PPVphAB:u16:V_SF:V PPVphBC:u16:V_SF:V PPVphCA:u16:V_SF:V "
    "PhVphA:u16:V_SF:V PhVphB:u16:V_SF:V PhVphC:u16:V_SF:V V_SF:sf "
    "W:s16:W_SF:W W_SF:sf Hz:u16:Hz_SF:Hz Hz_SF:sf VA:s16:VA_SF:VA VA_SF:sf "
    "VAr:s16:VAr_SF:var VAr_SF:sf PF:s16:PF_SF:% PF_SF:sf WH:a32:WH_SF:Wh WH_SF:sf "
    "DCA:u16:DCA_SF:A DCA_SF:sf DCV:u16:DCV_SF:V DCV_SF:sf DCW:s16:DCW_SF:W DCW_SF:sf "
    "TmpCab:s16:Tmp_SF:C TmpSnk:s16:Tmp_SF:C TmpTrns:s16:Tmp_SF:C TmpOt:s16:Tmp_SF:C Tmp_SF:sf "
    "St:e16 StVnd:e16 Evt1:b32 Evt2:b32 EvtVnd1:b32 EvtVnd2:b32 EvtVnd3:b32 EvtVnd4:b32"
)

_INVERTER_FLOAT = const(
    "A:f32::A AphA:f32::A AphB:f32::A AphC:f32::A "
    "PPVphAB:f32::V PPVphBC:f32::V PPVphCA:f32::V PhVphA:f32::V PhVphB:f32::V PhVphC:f32::V "
    "W:f32::W Hz:f32::Hz VA:f32::VA VAr:f32::var PF:f32::% WH:f32::Wh "
    "DCA:f32::A DCV:f32::V DCW:f32::W "
    "TmpCab:f32::C TmpSnk:f32::C TmpTrns:f32::C TmpOt:f32::C "
    "St:e16 StVnd:e16 Evt1:b32 Evt2:b32 EvtVnd1:b32 EvtVnd2:b32 EvtVnd3:b32 EvtVnd4:b32"
)

_NAMEPLATE = const(
    "DERTyp:e16 WRtg:u16:WRtg_SF:W WRtg_SF:sf VARtg:u16:VARtg_SF:VA VARtg_SF:sf "
    "VArRtgQ1:s16:VArRtg_SF:var VArRtgQ2:s16:VArRtg_SF:var VArRtgQ3:s16:VArRtg_SF:var "
    "VArRtgQ4:s16:VArRtg_SF:var VArRtg_SF:sf ARtg:u16:ARtg_SF:A ARtg_SF:sf "
    "PFRtgQ1:s16:PFRtg_SF:1 PFRtgQ2:s16:PFRtg_SF:1 PFRtgQ3:s16:PFRtg_SF:1 PFRtgQ4:s16:PFRtg_SF:1 "
    "PFRtg_SF:sf WHRtg:u16:WHRtg_SF:Wh WHRtg_SF:sf AhrRtg:u16:AhrRtg_SF:Ah AhrRtg_SF:sf "
    "MaxChaRte:u16:MaxChaRte_SF:W MaxChaRte_SF:sf MaxDisChaRte:u16:MaxDisChaRte_SF:W "
    "MaxDisChaRte_SF:sf Pad:pad"
)

_SETTINGS = const(
    "WMax:u16:WMax_SF:W VRef:u16:VRef_SF:V VRefOfs:s16:VRefOfs_SF:V "
    "VMax:u16:VMinMax_SF:V VMin:u16:VMinMax_SF:V VAMax:u16:VAMax_SF:VA "
    "VArMaxQ1:s16:VArMax_SF:var VArMaxQ2:s16:VArMax_SF:var VArMaxQ3:s16:VArMax_SF:var "
    "VArMaxQ4:s16:VArMax_SF:var WGra:u16:WGra_SF:% "
    "PFMinQ1:s16:PFMin_SF:1 PFMinQ2:s16:PFMin_SF:1 PFMinQ3:s16:PFMin_SF:1 PFMinQ4:s16:PFMin_SF:1 "
    "VArAct:e16 ClcTotVA:e16 MaxRmpRte:u16:MaxRmpRte_SF:% ECPNomHz:u16:ECPNomHz_SF:Hz ConnPh:e16 "
    "WMax_SF:sf VRef_SF:sf VRefOfs_SF:sf VMinMax_SF:sf VAMax_SF:sf VArMax_SF:sf "
    "WGra_SF:sf PFMin_SF:sf MaxRmpRte_SF:sf ECPNomHz_SF:sf"
)

_STATUS = const(
    "PVConn:b16 StorConn:b16 ECPConn:b16 ActWh:a64::Wh ActVAh:a64::VAh "
    "ActVArhQ1:a64::varh ActVArhQ2:a64::varh ActVArhQ3:a64::varh ActVArhQ4:a64::varh "
    "VArAval:s16:VArAval_SF:var VArAval_SF:sf WAval:u16:WAval_SF:W WAval_SF:sf "
    "StSetLimMsk:b32 StActCtl:b32 TmSrc:str4 Tms:u32::s RtSt:b16 Ris:u16:Ris_SF:ohm Ris_SF:sf"
)

_CONTROLS = const(
    "Conn_WinTms:u16::s Conn_RvrtTms:u16::s Conn:e16 WMaxLimPct:u16:WMaxLimPct_SF:% "
    "WMaxLimPct_WinTms:u16::s WMaxLimPct_RvrtTms:u16::s WMaxLimPct_RmpTms:u16::s WMaxLim_Ena:e16 "
    "OutPFSet:s16:OutPFSet_SF:1 OutPFSet_WinTms:u16::s OutPFSet_RvrtTms:u16::s "
    "OutPFSet_RmpTms:u16::s OutPFSet_Ena:e16 VArWMaxPct:s16:VArPct_SF:% "
    "VArMaxPct:s16:VArPct_SF:% VArAvalPct:s16:VArPct_SF:% VArPct_WinTms:u16::s "
    "VArPct_RvrtTms:u16::s VArPct_RmpTms:u16::s VArPct_Mod:e16 VArPct_Ena:e16 "
    "WMaxLimPct_SF:sf OutPFSet_SF:sf VArPct_SF:sf"
)

_STORAGE = const(
    "WChaMax:u16:WChaMax_SF:W WChaGra:u16:WChaDisChaGra_SF:% WDisChaGra:u16:WChaDisChaGra_SF:% "
    "StorCtl_Mod:b16 VAChaMax:u16:VAChaMax_SF:VA MinRsvPct:u16:MinRsvPct_SF:% "
    "ChaState:u16:ChaState_SF:% StorAval:u16:StorAval_SF:Ah InBatV:u16:InBatV_SF:V ChaSt:e16 "
    "OutWRte:s16:InOutWRte_SF:% InWRte:s16:InOutWRte_SF:% InOutWRte_WinTms:u16::s "
    "InOutWRte_RvrtTms:u16::s InOutWRte_RmpTms:u16::s ChaGriSet:e16 "
    "WChaMax_SF:sf WChaDisChaGra_SF:sf VAChaMax_SF:sf MinRsvPct_SF:sf ChaState_SF:sf "
    "StorAval_SF:sf InBatV_SF:sf InOutWRte_SF:sf"
)

_MPPT = const("DCA_SF:sf DCV_SF:sf DCW_SF:sf DCWH_SF:sf Evt:b32 N:u16 TmsPer:u16")
_MPPT_MODULE = const(
    "ID:u16 IDStr:str8 DCA:u16:DCA_SF:A DCV:u16:DCV_SF:V DCW:u16:DCW_SF:W "
    "DCWH:a32:DCWH_SF:Wh Tms:u32::s Tmp:s16::C DCSt:e16 DCEvt:b32"
)

_METER = const(
    "A:s16:A_SF:A AphA:s16:A_SF:A AphB:s16:A_SF:A AphC:s16:A_SF:A A_SF:sf "
    "PhV:s16:V_SF:V PhVphA:s16:V_SF:V PhVphB:s16:V_SF:V PhVphC:s16:V_SF:V "
    "PPV:s16:V_SF:V PhVphAB:s16:V_SF:V PhVphBC:s16:V_SF:V PhVphCA:s16:V_SF:V V_SF:sf "
    "Hz:s16:Hz_SF:Hz Hz_SF:sf "
    "W:s16:W_SF:W WphA:s16:W_SF:W WphB:s16:W_SF:W WphC:s16:W_SF:W W_SF:sf "
    "VA:s16:VA_SF:VA VAphA:s16:VA_SF:VA VAphB:s16:VA_SF:VA VAphC:s16:VA_SF:VA VA_SF:sf "
    "VAR:s16:VAR_SF:var VARphA:s16:VAR_SF:var VARphB:s16:VAR_SF:var VARphC:s16:VAR_SF:var VAR_SF:sf "
    "PF:s16:PF_SF:% PFphA:s16:PF_SF:% PFphB:s16:PF_SF:% PFphC:s16:PF_SF:% PF_SF:sf "
    "TotWhExp:a32:TotWh_SF:Wh TotWhExpPhA:a32:TotWh_SF:Wh TotWhExpPhB:a32:TotWh_SF:Wh "
    "TotWhExpPhC:a32:TotWh_SF:Wh TotWhImp:a32:TotWh_SF:Wh TotWhImpPhA:a32:TotWh_SF:Wh "
    "TotWhImpPhB:a32:TotWh_SF:Wh TotWhImpPhC:a32:TotWh_SF:Wh TotWh_SF:sf "
    "TotVAhExp:a32:TotVAh_SF:VAh TotVAhExpPhA:a32:TotVAh_SF:VAh TotVAhExpPhB:a32:TotVAh_SF:VAh "
    "TotVAhExpPhC:a32:TotVAh_SF:VAh TotVAhImp:a32:TotVAh_SF:VAh TotVAhImpPhA:a32:TotVAh_SF:VAh "
    "TotVAhImpPhB:a32:TotVAh_SF:VAh TotVAhImpPhC:a32:TotVAh_SF:VAh TotVAh_SF:sf "
    "TotVArhImpQ1:a32:TotVArh_SF:varh TotVArhImpQ1PhA:a32:TotVArh_SF:varh "
    "TotVArhImpQ1PhB:a32:TotVArh_SF:varh TotVArhImpQ1PhC:a32:TotVArh_SF:varh "
    "TotVArhImpQ2:a32:TotVArh_SF:varh TotVArhImpQ2PhA:a32:TotVArh_SF:varh "
    "TotVArhImpQ2PhB:a32:TotVArh_SF:varh TotVArhImpQ2PhC:a32:TotVArh_SF:varh "
    "TotVArhExpQ3:a32:TotVArh_SF:varh TotVArhExpQ3PhA:a32:TotVArh_SF:varh "
    "TotVArhExpQ3PhB:a32:TotVArh_SF:varh TotVArhExpQ3PhC:a32:TotVArh_SF:varh "
    "TotVArhExpQ4:a32:TotVArh_SF:varh TotVArhExpQ4PhA:a32:TotVArh_SF:varh "
    "TotVArhExpQ4PhB:a32:TotVArh_SF:varh TotVArhExpQ4PhC:a32:TotVArh_SF:varh TotVArh_SF:sf "
    "Evt:b32"
)

_BATTERY = const(
    "AHRtg:u16:AHRtg_SF:Ah WHRtg:u16:WHRtg_SF:Wh WChaRteMax:u16:WChaDisChaMax_SF:W "
    "WDisChaRteMax:u16:WChaDisChaMax_SF:W DisChaRte:u16:DisChaRte_SF:% "
    "SoCMax:u16:SoC_SF:% SoCMin:u16:SoC_SF:% SoCRsvMax:u16:SoC_SF:% SoCRsvMin:u16:SoC_SF:% "
    "SoC:u16:SoC_SF:% DoD:u16:DoD_SF:% SoH:u16:SoH_SF:% NCyc:u32 ChaSt:e16 LocRemCtl:e16 "
    "Hb:u16 CtrlHb:u16 AlmRst:u16 Typ:e16 State:e16 StateVnd:e16 WarrDt:u32 "
    "Evt1:b32 Evt2:b32 EvtVnd1:b32 EvtVnd2:b32 V:u16:V_SF:V VMax:u16:V_SF:V VMin:u16:V_SF:V "
    "CellVMax:u16:CellV_SF:V CellVMaxStr:u16 CellVMaxMod:u16 CellVMin:u16:CellV_SF:V "
    "CellVMinStr:u16 CellVMinMod:u16 CellVAvg:u16:CellV_SF:V A:s16:A_SF:A "
    "AChaMax:u16:AMax_SF:A ADisChaMax:u16:AMax_SF:A W:s16:W_SF:W ReqInvState:e16 "
    "ReqW:s16:W_SF:W SetOp:e16 SetInvState:e16 AHRtg_SF:sf WHRtg_SF:sf WChaDisChaMax_SF:sf "
    "DisChaRte_SF:sf SoC_SF:sf DoD_SF:sf SoH_SF:sf V_SF:sf CellV_SF:sf A_SF:sf AMax_SF:sf W_SF:sf"
)

# model id -> (name, fixed layout, repeating layout or None, fixed length L)
_MODELS = {
    1: ("common", _COMMON, None, 66),
    101: ("inverter single phase", _INVERTER, None, 50),
    102: ("inverter split phase", _INVERTER, None, 50),
    103: ("inverter three phase", _INVERTER, None, 50),
    111: ("inverter single phase, float", _INVERTER_FLOAT, None, 60),
    112: ("inverter split phase, float", _INVERTER_FLOAT, None, 60),
    113: ("inverter three phase, float", _INVERTER_FLOAT, None, 60),
    120: ("nameplate", _NAMEPLATE, None, 26),
    121: ("basic settings", _SETTINGS, None, 30),
    122: ("measurements and status", _STATUS, None, 44),
    123: ("immediate controls", _CONTROLS, None, 24),
    124: ("storage", _STORAGE, None, 24),
    160: ("multiple MPPT", _MPPT, _MPPT_MODULE, 8),
    201: ("meter single phase", _METER, None, 105),
    202: ("meter split phase", _METER, None, 105),
    203: ("meter three phase wye", _METER, None, 105),
    204: ("meter three phase delta", _METER, None, 105),
    802: ("battery base", _BATTERY, None, 62),
}

_SIZES = {"u16": 1, "s16": 1, "e16": 1, "b16": 1, "sf": 1, "pad": 1,
          "u32": 2, "s32": 2, "a32": 2, "b32": 2, "f32": 2, "a64": 4, "u64": 4}

# Layouts are scanned when needed rather than parsed into dicts and kept: a
# parsed model costs several KB of heap, a scan only short-lived strings.  A
# profile resolves its few points once (point_spec) and decodes from those.


def _points(layout):
    # Yields (name, offset, type, size, scale factor name or None, unit or None).
    offset = 0
    for spec in layout.split():
        parts = spec.split(":")
        typ = parts[1]
        size = int(typ[3:]) if typ[:3] == "str" else _SIZES[typ]
        yield (parts[0], offset, typ, size, parts[2] if len(parts) > 2 and parts[2] else None,
               parts[3] if len(parts) > 3 else None)
        offset += size


def _size(layout):
    n = 0
    for p in _points(layout):
        n += p[3]
    return n


def model_ids():
    return sorted(_MODELS)


def model_name(model_id):
    m = _MODELS.get(model_id)
    return m[0] if m else None


def model_length(model_id):
    # L of the fixed part (a model with a repeating group adds 20 per module for 160).
    return _MODELS[model_id][3]


def point_names(model_id):
    # Names of the fixed part's value points (scale factors and pads left out).
    return [p[0] for p in _points(_MODELS[model_id][1]) if p[2] != "sf" and p[2] != "pad"]


def point_spec(model_id, name):
    """-> (offset, type, size, scale-factor offset or -1, unit, repeating) for
    a point; offsets count from the first data register (after ID and L), a
    repeating point's from the start of its module.  None if there is none."""
    m = _MODELS.get(model_id)
    if m is None:
        return None
    for layout, rep in ((m[1], False), (m[2], True)):
        if layout is None:
            continue
        for p in _points(layout):
            if p[0] == name and p[2] != "sf" and p[2] != "pad":
                sf = -1
                if p[4] is not None:
                    for q in _points(m[1]):  # scale factors live in the fixed part
                        if q[0] == p[4]:
                            sf = q[1]
                return (p[1], p[2], p[3], sf, p[5], rep)
    return None


def has_point(model_id, name):
    return point_spec(model_id, name) is not None


def point_unit(model_id, name):
    # -> the unit of a point ("W", "%", ...), None for unitless points; KeyError if unknown.
    spec = point_spec(model_id, name)
    if spec is None:
        raise KeyError(name)
    return spec[4]


def _raw(regs, pos, typ, size):
    # One point's value without scaling; None for "not implemented".
    if typ[:3] == "str":
        chars = bytearray()
        for i in range(size):
            r = regs[pos + i]
            chars.append(r >> 8)
            chars.append(r & 0xFF)
        end = len(chars)
        while end and chars[end - 1] in (0, 0x20):
            end -= 1
        if not end:
            return None
        return "".join(chr(c) if 0x20 <= c < 0x7F else "?" for c in chars[:end])
    v = 0
    for i in range(size):
        v = (v << 16) | regs[pos + i]
    if typ == "u16" or typ == "e16" or typ == "b16":
        return None if v == 0xFFFF else v
    if typ == "s16" or typ == "sf":
        if v == 0x8000:
            return None
        return v - 0x10000 if v & 0x8000 else v
    if typ == "a32" or typ == "a64":
        return v or None  # an accumulator of 0 means "not accumulated"
    if typ == "u32" or typ == "b32":
        return None if v == 0xFFFFFFFF else v
    if typ == "s32":
        if v == 0x80000000:
            return None
        return v - 0x100000000 if v & 0x80000000 else v
    if typ == "u64":
        return None if v == 0xFFFFFFFFFFFFFFFF else v
    if typ == "f32":
        return v  # the bits; the callers turn them into numbers
    return None  # pad


def _check(model_id, regs):
    m = _MODELS.get(model_id)
    if m is None:
        raise SunSpecError("model %d is not known" % model_id)
    if len(regs) < 2 or regs[0] != model_id:
        raise SunSpecError("registers do not start with model id %d" % model_id)
    length = regs[1]
    if len(regs) < length + 2:
        raise SunSpecError("model %d: %d registers for L=%d" % (model_id, len(regs), length))
    return m, length


def _modules(m, length):
    # Number of repeating blocks that fit in L.
    if not m[2]:
        return 0
    return max(0, (length - m[3]) // _size(m[2]))


def _at(regs, end, base, spec, exp10):
    # The value of a resolved point whose block starts at regs[base]:
    # exp10 None -> natural value ((raw, sf), int, str, float); an int ->
    # exact int in 10**exp10 units.
    off, typ, size, sf_off, _, _ = spec
    pos = base + off
    if pos + size > end:
        return None  # beyond this device's (shorter, older) model
    raw = _raw(regs, pos, typ, size)
    if raw is None:
        return None
    if typ == "f32":
        if exp10 is None:
            q = float_bits_scaled(raw, False, 6)
            return None if q is None else q / 1000000
        return float_bits_scaled(raw, False, -exp10)
    if sf_off < 0:
        if exp10 is None or isinstance(raw, str):
            return raw
        return scale_int(raw, -exp10)
    sf = _raw(regs, 2 + sf_off, "sf", 1) if 2 + sf_off < end else None
    if sf is None or not -10 <= sf <= 10:
        return None
    if exp10 is None:
        return (raw, sf)
    return scale_int(raw, sf - exp10)


def value_at(model_id, regs, spec, exp10=0, module=None):
    """A point resolved by point_spec, as an exact int in units of 10**exp10 of
    the point's unit (exp10=-3: milli-units), rounded half away from zero;
    None if not implemented.  module: for a repeating point, the module index
    or "sum" to add it over all modules (None if any of them lacks it)."""
    m, length = _check(model_id, regs)
    end = length + 2
    if not spec[5]:
        return _at(regs, end, 2, spec, exp10)
    n = _modules(m, length)
    rep = _size(m[2])
    indices = range(n) if module == "sum" else (module,)
    total = 0
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
            raise SunSpecError("model %d: no module %r" % (model_id, i))
        v = _at(regs, end, 2 + m[3] + i * rep, spec, exp10)
        if v is None:
            return None
        total += v
    return total


def point_scaled(model_id, regs, name, exp10=0, module=None):
    # value_at() for a point named by its SunSpec name.
    spec = point_spec(model_id, name)
    if spec is None:
        raise SunSpecError("model %d has no point %r" % (model_id, name))
    return value_at(model_id, regs, spec, exp10, module)


def _decode_block(regs, end, base, pts, sfs):
    out = {}
    for p in pts:
        if p[2] != "sf" and p[2] != "pad":
            sf_off = sfs.get(p[4], -1) if p[4] else -1
            out[p[0]] = _at(regs, end, base, (p[1], p[2], p[3], sf_off, p[5], False), None)
    return out


def decode_model(model_id, regs):
    """regs: the model's registers from its ID register on (ID, L, data).

    -> dict point name -> value (see the module docstring); for a model with a
    repeating group (160) the key "modules" holds a list of such dicts.
    Raises SunSpecError if the registers do not hold this model."""
    m, length = _check(model_id, regs)
    end = length + 2
    pts = list(_points(m[1]))  # for this call only
    sfs = {}
    for p in pts:
        if p[2] == "sf":
            sfs[p[0]] = p[1]
    out = _decode_block(regs, end, 2, pts, sfs)
    if m[2]:
        rep_pts = list(_points(m[2]))
        rep = _size(m[2])
        out["modules"] = [_decode_block(regs, end, 2 + m[3] + i * rep, rep_pts, sfs)
                          for i in range(_modules(m, length))]
    return out


def common_info(regs):
    # Model 1 as a small dict: manufacturer, model, options, version, serial, device address.
    v = decode_model(1, regs)
    return {"manufacturer": v["Mn"], "model": v["Md"], "options": v["Opt"],
            "version": v["Vr"], "serial": v["SN"], "device_address": v["DA"]}
