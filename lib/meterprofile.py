# Device profiles as data: load and check a JSON profile, plan its Modbus reads, decode them into quantities.
#
# A profile is a JSON object (parsed with the json module; see lib/meterprofiles/):
#
#   schema         1 (required)
#   name           [a-z0-9_]+ (required); title, notes: free text
#   type           "registers" (default): fixed register map
#                  "sunspec": values come from SunSpec models found by discovery
#   word_order     "big" (default: high word first) or "little", for 32/64-bit values
#   byte_order     "big" (default) or "little" (bytes swapped inside each register)
#   max_registers  1..125, the device's limit per read (default 125)
#   max_gap        0..125 unused registers a read may span to join two blocks (default 0)
#   blocks         (type "registers") list of register blocks:
#     fc           3 (holding) or 4 (input registers)
#     start        first register, protocol address 0..65535 (not 30001-style)
#     count        registers in the block (optional: else up to the last value)
#     optional     true: some variants lack these registers; the block is read
#                  on its own (never grouped with others) so its exception
#                  response spoils nothing else (Read.optional tells the poller)
#     values       list of values:
#       quantity   a name from quantities.py (the normalised vocabulary)
#       offset     register offset inside the block
#       type       u16 s16 u32 s32 u64 s64 acc32 (a u32 counter) f32 f64, or
#                  sunssf: a SunSpec-style scale-factor register, named by "id"
#                  and used by other values of the block through "sf": id
#       unit       the device's unit (quantities.UNITS: "V", "kWh", "%", "state" ...)
#       scale      power of ten applied to the raw value (0.1 A steps: unit "A", scale -1)
#       sign       1 (default) or -1, to turn the device's convention into ours
#       word_order, byte_order   override the profile's
#       invalid    raw value meaning "not available" (e.g. 65535); NaN always is
#       map        {"raw": normalised} for enumerations ("state" quantities)
#   values         (type "sunspec") list of:
#     quantity, model (id or list of ids, the first one present is used),
#     point (SunSpec point name), module (model 160: index or "sum"), sign, map;
#     a quantity may be listed again with other models and points: the first
#     entry whose model the device has is used (124 ChaState, else 802 SoC)
#   setpoints      optional writes: quantity, fc (6 or 16), address, type (u16,
#                  s16, u32, s32), unit, scale, min, max (in the quantity's unit)
#
# Readings are {quantity: int} in the quantity's unit (quantities.py), converted
# exactly with integer arithmetic (floats from their IEEE bits); a value the
# device marks as not available is left out.
#
# load() checks a profile with meterprofile_load, imported on use: a gateway
# drops that module once its meters' profiles are loaded.
from compat import const
from modbus import pdu as _pdu
import quantities as _q

SCHEMA = 1
_TYPES = {"u16": 1, "s16": 1, "u32": 2, "s32": 2, "acc32": 2, "u64": 4, "s64": 4,
          "f32": 2, "f64": 4, "sunssf": 1}


class ProfileError(ValueError):
    pass


def _ss():
    # SunSpec costs ~10 KB of heap: imported only by sunspec profiles.
    from modbus import sunspec

    return sunspec


def _block_reads(address, count, max_count):
    out = []
    while count > 0:
        n = min(count, max_count)
        out.append((address, n))
        address += n
        count -= n
    return out


# A register value is a tuple (no per-object dict: a profile's values cost
# ~60 bytes each, not ~300): quantity (None for a sunssf register), offset in
# its Read, type, size in registers, exponent (scale + unit conversion), sign,
# words little-endian, bytes little-endian, invalid raw value, map, offset of
# its scale-factor register in the Read (or -1).
_Q = const(0)
_OFF = const(1)
_TYPE = const(2)
_SIZE = const(3)
_EXP = const(4)
_SIGN = const(5)
_WLE = const(6)
_BLE = const(7)
_INV = const(8)
_MAP = const(9)
_SF = const(10)
# A sunspec value: quantity, model ids, {model id: point_spec}, exponent, sign, map, module.
_SMODELS = const(1)
_SSPECS = const(2)
_SEXP = const(3)
_SSIGN = const(4)
_SMAP = const(5)
_SMOD = const(6)


class Read:
    # One planned read: function code, start, count and the values it carries.
    # requests() gives the pdu.Requests (several when count > 125: a SunSpec model).
    def __init__(self, fc, start, count, values, model=None, optional=False):
        self.fc = fc
        self.start = start
        self.count = count
        self.values = values
        self.model = model
        self.optional = optional

    def requests(self, max_count=125):
        return [_pdu.read_registers(self.fc, a, n) for a, n in _block_reads(self.start, self.count, max_count)]

    def __repr__(self):
        return "Read(fc=%d, start=%d, count=%d, %d values)" % (self.fc, self.start, self.count, len(self.values))


class Setpoint:
    def __init__(self, quantity, fc, address, typ, exp, lo, hi):
        self.quantity = quantity
        self.fc = fc
        self.address = address
        self.type = typ
        self.exp = exp
        self.min = lo
        self.max = hi


class Profile:
    def __init__(self, name, kind):
        self.name = name
        self.type = kind
        self.title = ""
        self.max_registers = 125
        self.max_gap = 0
        self.blocks = []  # registers: (fc, start, count, [value tuples], optional)
        self.values = []  # sunspec: [Value]
        self.setpoints = {}

    def quantities(self):
        out = []
        for b in self.blocks:
            for v in b[3]:
                if v[_Q]:
                    out.append(v[_Q])
        for v in self.values:
            out.append(v[_Q])
        return sorted(out)

    def reads(self, models=None):
        """The reads that fetch every value, adjacent blocks grouped.
        models: for a sunspec profile, Discovery.models (values whose model
        is absent are skipped; see missing())."""
        if self.type == "sunspec":
            return self._sunspec_reads(models or [])
        return _plan(self.blocks, self.max_registers, self.max_gap)

    def missing(self, models):
        # Quantities of a sunspec profile that these discovered models cannot supply.
        ids = [m[0] for m in models]
        have = [v[_Q] for v in self.values if any(i in ids for i in v[_SMODELS])]
        return sorted(set(v[_Q] for v in self.values if v[_Q] not in have))

    def _sunspec_reads(self, models):
        # Each quantity from the first of its entries whose model the device has.
        chosen = {}
        for v in self.values:
            if v[_Q] not in chosen:
                entry = _first(v[_SMODELS], models)
                if entry is not None:
                    chosen[v[_Q]] = (entry, v)
        out = []
        for entry in models:
            vals = [chosen[q][1] for q in sorted(chosen) if chosen[q][0] is entry]
            if vals:
                out.append(Read(3, entry[1], entry[2] + 2, vals, entry[0]))
        return out

    def decode(self, read, registers):
        """registers: what the read's requests returned, concatenated.
        -> {quantity: int}; values the device marks unavailable are left out."""
        if len(registers) != read.count:
            raise ProfileError("profile %s: %d registers for %r" % (self.name, len(registers), read))
        out = {}
        if read.model is not None:
            _sunspec = _ss()
            for v in read.values:
                try:
                    x = _sunspec.value_at(read.model, registers, v[_SSPECS][read.model], -v[_SEXP], v[_SMOD])
                except _sunspec.SunSpecError:
                    x = None  # registers that do not hold the model: nothing to report
                if x is not None and v[_SMAP] is not None:
                    x = v[_SMAP].get(x)
                elif x is not None:
                    x *= v[_SSIGN]
                if x is not None:
                    out[v[_Q]] = x
            return out
        for v in read.values:
            if v[_Q] is None:
                continue
            x = _decode_value(v, registers)
            if x is not None:
                out[v[_Q]] = x
        return out

    def setpoint(self, quantity, value):
        """-> pdu.Request writing `value` (in the quantity's unit); ProfileError
        if the profile has no such setpoint or value is outside its min..max."""
        sp = self.setpoints.get(quantity)
        if sp is None:
            raise ProfileError("profile %s: no setpoint %r" % (self.name, quantity))
        if isinstance(value, bool) or not isinstance(value, int) or not sp.min <= value <= sp.max:
            raise ProfileError("profile %s: %s must be %d..%d, got %r" % (self.name, quantity, sp.min, sp.max, value))
        raw = _q.scale_int(value, -sp.exp)
        size = _TYPES[sp.type]
        if sp.type[0] == "s":
            raw &= (1 << (16 * size)) - 1
        elif raw >= 1 << (16 * size) or raw < 0:
            raise ProfileError("profile %s: %s=%d does not fit %s" % (self.name, quantity, value, sp.type))
        if sp.fc == 6:
            return _pdu.write_single_register(sp.address, raw)
        words = [(raw >> (16 * (size - 1 - i))) & 0xFFFF for i in range(size)]
        return _pdu.write_multiple_registers(sp.address, words)


def _first(ids, models):
    for i in ids:
        for m in models:
            if m[0] == i:
                return m
    return None


def _decode_value(v, regs):
    n = v[_SIZE]
    off = v[_OFF]
    raw = 0
    for i in range(n):
        w = regs[off + (n - 1 - i if v[_WLE] else i)]
        if v[_BLE]:
            w = ((w & 0xFF) << 8) | (w >> 8)
        raw = (raw << 16) | w
    if v[_INV] is not None and raw == v[_INV]:
        return None
    t = v[_TYPE]
    if t == "f32" or t == "f64":
        x = _q.float_bits_scaled(raw, t == "f64", v[_EXP])
        return None if x is None else x * v[_SIGN]
    if t[0] == "s" and raw >> (16 * n - 1):
        raw -= 1 << (16 * n)
    if v[_MAP] is not None:
        return v[_MAP].get(raw)
    exp = v[_EXP]
    if v[_SF] >= 0:
        sf = regs[v[_SF]]
        if sf == 0x8000:
            return None
        sf = sf - 0x10000 if sf & 0x8000 else sf
        if not -10 <= sf <= 10:
            return None
        exp += sf
    return _q.scale_int(raw, exp) * v[_SIGN]


def _plan(blocks, max_registers, max_gap):
    order = sorted(range(len(blocks)), key=lambda i: (blocks[i][0], blocks[i][1]))
    out = []
    cur = None
    for i in order:
        fc, start, count, values, optional = blocks[i]
        if cur is not None and cur.fc == fc and not optional and not cur.optional \
                and start - (cur.start + cur.count) <= max_gap \
                and max(cur.start + cur.count, start + count) - cur.start <= max_registers:
            shift = start - cur.start
            for v in values:
                cur.values.append(_shifted(v, shift))
            cur.count = max(cur.count, start + count - cur.start)
            continue
        cur = Read(fc, start, count, [_shifted(v, 0) for v in values], None, optional)
        out.append(cur)
    return out


def _shifted(v, shift):
    if not shift:
        return v
    v = list(v)
    v[_OFF] += shift
    if v[_SF] >= 0:
        v[_SF] += shift
    return tuple(v)


def load(doc):
    """doc: a parsed JSON profile. -> Profile; ProfileError naming the profile
    and the field on anything wrong."""
    from meterprofile_load import load as check

    return check(doc)
