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


class _Ctx:
    # Builds error messages that name the profile and the field.
    def __init__(self, name):
        self.name = name

    def fail(self, where, msg):
        raise ProfileError("profile %s: %s: %s" % (self.name, where, msg))


def _int(ctx, where, obj, key, lo, hi, default=None):
    v = obj.get(key, default)
    if v is None:
        ctx.fail(where, "missing %r" % key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        ctx.fail(where + "." + key, "must be a whole number %d..%d, got %r" % (lo, hi, v))
    return v


def _choice(ctx, where, obj, key, choices, default):
    # -> the matching element of choices (a constant, not a copy from the JSON text)
    v = obj.get(key, default)
    for c in choices:
        if v == c and type(v) is type(c):
            return c
    ctx.fail(where + "." + key, "must be one of %s, got %r" % ("/".join(str(c) for c in choices), v))


def _list(ctx, where, obj, key):
    v = obj.get(key)
    if not isinstance(v, list) or not v:
        ctx.fail(where, "%r must be a non-empty list" % key)
    return v


def _keys(ctx, where, obj, allowed):
    if not isinstance(obj, dict):
        ctx.fail(where, "must be an object")
    for k in sorted(obj):
        if k not in allowed:
            ctx.fail(where, "unknown field %r" % (k,))


def _quantity(ctx, where, v):
    q = v.get("quantity")
    row = _q.QUANTITIES.get(q) if isinstance(q, str) else None
    if row is None:
        ctx.fail(where + ".quantity", "not in the vocabulary: %r" % (q,))
    return row[0]  # the vocabulary's own string: profiles share it instead of copies


def _map(ctx, where, v, quantity):
    m = v.get("map")
    if m is None:
        return None
    if not isinstance(m, dict):
        ctx.fail(where + ".map", "must be an object")
    out = {}
    for k in sorted(m):
        try:
            raw = int(k)
        except ValueError:
            ctx.fail(where + ".map", "key %r is not a whole number" % (k,))
        val = m[k]
        if isinstance(val, bool) or not isinstance(val, int):
            ctx.fail(where + ".map", "value for %r must be a whole number" % (k,))
        out[raw] = val
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


_PROFILE_KEYS = ("schema", "name", "title", "notes", "type", "word_order", "byte_order",
                 "max_registers", "max_gap", "blocks", "values", "models", "setpoints")
_BLOCK_KEYS = ("fc", "start", "count", "values", "optional", "notes")
_VALUE_KEYS = ("quantity", "offset", "type", "unit", "scale", "sign", "word_order", "byte_order",
               "invalid", "map", "sf", "id", "notes")
_SUNSPEC_KEYS = ("quantity", "model", "point", "module", "sign", "map", "notes")
_SETPOINT_KEYS = ("quantity", "fc", "address", "type", "unit", "scale", "min", "max", "notes")


def load(doc):
    """doc: a parsed JSON profile. -> Profile; ProfileError naming the profile
    and the field on anything wrong."""
    name = doc.get("name") if isinstance(doc, dict) else None
    ctx = _Ctx(name if isinstance(name, str) else "?")
    _keys(ctx, "profile", doc, _PROFILE_KEYS)
    if not isinstance(name, str) or not name or not all(c in "abcdefghijklmnopqrstuvwxyz0123456789_" for c in name):
        ctx.fail("name", "must be [a-z0-9_]+, got %r" % (name,))
    if doc.get("schema") != SCHEMA:
        ctx.fail("schema", "must be %d, got %r" % (SCHEMA, doc.get("schema")))
    kind = _choice(ctx, "profile", doc, "type", ("registers", "sunspec"), "registers")
    p = Profile(name, kind)
    title = doc.get("title", "")
    if not isinstance(title, str):
        ctx.fail("title", "must be text")
    p.title = title
    p.max_registers = _int(ctx, "profile", doc, "max_registers", 1, 125, 125)
    p.max_gap = _int(ctx, "profile", doc, "max_gap", 0, 125, 0)
    words = _choice(ctx, "profile", doc, "word_order", ("big", "little"), "big")
    order = _choice(ctx, "profile", doc, "byte_order", ("big", "little"), "big")
    models = doc.get("models", [])
    if models and (not isinstance(models, list) or not all(isinstance(m, int) and _ss().model_name(m) for m in models)):
        ctx.fail("models", "must list known SunSpec model ids, got %r" % (models,))
    seen = {}
    if kind == "registers":
        if "values" in doc or models:
            ctx.fail("profile", "'values'/'models' belong to sunspec profiles; use 'blocks'")
        for bi, b in enumerate(_list(ctx, "profile", doc, "blocks")):
            p.blocks.append(_load_block(ctx, "blocks[%d]" % bi, b, words, order, p.max_registers, seen))
    else:
        if "blocks" in doc:
            ctx.fail("profile", "'blocks' belong to registers profiles; use 'values'")
        for vi, v in enumerate(_list(ctx, "profile", doc, "values")):
            p.values.append(_load_sunspec_value(ctx, "values[%d]" % vi, v, seen))
    for si, s in enumerate(doc.get("setpoints") or []):
        sp = _load_setpoint(ctx, "setpoints[%d]" % si, s)
        if sp.quantity in p.setpoints:
            ctx.fail("setpoints[%d]" % si, "%s given twice" % sp.quantity)
        p.setpoints[sp.quantity] = sp
    return p


def _exp(ctx, where, unit, quantity, scale):
    try:
        return _q.exponent(unit, quantity) + scale
    except ValueError as exc:
        ctx.fail(where + ".unit", str(exc))


def _load_block(ctx, where, b, words, order, max_registers, seen):
    _keys(ctx, where, b, _BLOCK_KEYS)
    fc = _int(ctx, where, b, "fc", 3, 4)
    start = _int(ctx, where, b, "start", 0, 0xFFFF)
    values = []
    ids = {}
    sf_refs = []
    end = 0
    for vi, raw in enumerate(_list(ctx, where, b, "values")):
        w = "%s.values[%d]" % (where, vi)
        _keys(ctx, w, raw, _VALUE_KEYS)
        typ = _choice(ctx, w, raw, "type", tuple(sorted(_TYPES)), None)
        size = _TYPES[typ]
        offset = _int(ctx, w, raw, "offset", 0, 124)
        end = max(end, offset + size)
        wle = _choice(ctx, w, raw, "word_order", ("big", "little"), words) == "little"
        ble = _choice(ctx, w, raw, "byte_order", ("big", "little"), order) == "little"
        if typ == "sunssf":
            if "quantity" in raw:
                ctx.fail(w, "a sunssf register carries no quantity")
            sid = raw.get("id")
            if not isinstance(sid, str) or not sid or sid in ids:
                ctx.fail(w + ".id", "a sunssf register needs a unique id, got %r" % (sid,))
            ids[sid] = offset
            continue
        q = _quantity(ctx, w, raw)
        if q in seen:
            ctx.fail(w + ".quantity", "%s already comes from %s" % (q, seen[q]))
        seen[q] = w
        sign = _choice(ctx, w, raw, "sign", (1, -1), 1)
        scale = _int(ctx, w, raw, "scale", -12, 12, 0)
        unit = raw.get("unit")
        exp = _exp(ctx, w, unit, q, scale)
        vmap = _map(ctx, w, raw, q)
        if (vmap is not None or unit == "state") and (exp or typ[0] == "f"):
            ctx.fail(w, "an enumeration takes an integer type and no scaling")
        inv = raw.get("invalid")
        if inv is not None and (isinstance(inv, bool) or not isinstance(inv, int) or not 0 <= inv < 1 << (16 * size)):
            ctx.fail(w + ".invalid", "must be a raw %s value" % typ)
        if "sf" in raw:
            if typ[0] == "f":
                ctx.fail(w + ".sf", "scale factors apply to integer types")
            sf_refs.append((len(values), w, raw["sf"]))  # resolved once every id is known
        values.append([q, offset, typ, size, exp, sign, wle, ble, inv, vmap, -1])
    for i, w, sid in sf_refs:
        if not isinstance(sid, str) or sid not in ids:
            ctx.fail(w + ".sf", "no sunssf register with id %r in this block" % (sid,))
        values[i][_SF] = ids[sid]
    count = _int(ctx, where, b, "count", 1, 125, end)
    if count < end:
        ctx.fail(where + ".count", "%d registers do not reach the last value (%d)" % (count, end))
    if count > max_registers:
        ctx.fail(where + ".count", "%d registers exceed max_registers %d: split the block" % (count, max_registers))
    if start + count > 0x10000:
        ctx.fail(where, "runs past register 65535")
    if not values:
        ctx.fail(where, "holds no quantity")
    optional = _choice(ctx, where, b, "optional", (False, True), False)
    return (fc, start, count, [tuple(v) for v in values], optional)


def _load_sunspec_value(ctx, where, raw, seen):
    _keys(ctx, where, raw, _SUNSPEC_KEYS)
    q = _quantity(ctx, where, raw)  # may repeat: the first entry whose model is present wins
    models = raw.get("model")
    if isinstance(models, int) and not isinstance(models, bool):
        models = [models]
    if not isinstance(models, list) or not models:
        ctx.fail(where + ".model", "must be a model id or a list of them")
    point = raw.get("point")
    unit = None
    specs = {}
    _sunspec = _ss()
    for m in models:
        if isinstance(m, bool) or not isinstance(m, int) or _sunspec.model_name(m) is None:
            ctx.fail(where + ".model", "SunSpec model %r is not known" % (m,))
        spec = _sunspec.point_spec(m, point) if isinstance(point, str) else None
        if spec is None:
            ctx.fail(where + ".point", "model %d has no point %r" % (m, point))
        if spec[1][:3] == "str":
            ctx.fail(where + ".point", "%s is text, not a quantity" % point)
        u = spec[4] or "state"
        if unit is not None and u != unit:
            ctx.fail(where + ".point", "%s has unit %s in one model and %s in another" % (point, unit, u))
        unit = u
        specs[m] = spec
    exp = _exp(ctx, where, unit, q, 0)
    sign = _choice(ctx, where, raw, "sign", (1, -1), 1)
    vmap = _map(ctx, where, raw, q)
    mod = raw.get("module")
    if mod is not None and mod != "sum" and (isinstance(mod, bool) or not isinstance(mod, int) or mod < 0):
        ctx.fail(where + ".module", "must be a module index or \"sum\"")
    if any(specs[m][5] for m in specs) != (mod is not None):
        ctx.fail(where + ".module", "needed exactly for points of a repeating group (model 160)")
    return (q, models, specs, exp, sign, vmap, mod)


def _load_setpoint(ctx, where, raw):
    _keys(ctx, where, raw, _SETPOINT_KEYS)
    q = _quantity(ctx, where, raw)
    fc = _choice(ctx, where, raw, "fc", (6, 16), None)
    typ = _choice(ctx, where, raw, "type", ("u16", "s16", "u32", "s32"), "u16")
    if fc == 6 and _TYPES[typ] != 1:
        ctx.fail(where + ".type", "fc 6 writes one register")
    address = _int(ctx, where, raw, "address", 0, 0xFFFF)
    scale = _int(ctx, where, raw, "scale", -12, 12, 0)
    exp = _exp(ctx, where, raw.get("unit"), q, scale)
    lo = _int(ctx, where, raw, "min", -(1 << 62), 1 << 62)
    hi = _int(ctx, where, raw, "max", lo, 1 << 62)
    return Setpoint(q, fc, address, typ, exp, lo, hi)
