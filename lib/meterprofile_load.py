# The checks of lib/meterprofile.py: a parsed JSON profile -> Profile, or
# ProfileError naming the profile and the field. meterprofile.load() imports
# this module on use; a gateway drops it once its profiles are loaded.
from compat import const
from meterprofile import _TYPES, SCHEMA, Profile, ProfileError, Setpoint, _ss
import quantities as _q

_SF = const(10)  # meterprofile's value tuple: offset of the scale-factor register


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



_PROFILE_KEYS = ("schema", "name", "title", "notes", "type", "word_order", "byte_order",
                 "max_registers", "max_gap", "blocks", "values", "models", "setpoints")
_BLOCK_KEYS = ("fc", "start", "count", "values", "optional", "notes")
_VALUE_KEYS = ("quantity", "offset", "type", "unit", "scale", "sign", "word_order", "byte_order",
               "invalid", "map", "sf", "id", "notes")
_SUNSPEC_KEYS = ("quantity", "model", "point", "module", "sign", "map", "notes")
_SETPOINT_KEYS = ("quantity", "fc", "address", "type", "unit", "scale", "min", "max", "notes")


def load(doc):
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
