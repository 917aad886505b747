# The device config (/config.json) and its schema, without I/O.
#
# Every field has a type, a default and limits. A config is accepted
# field by field: a bad field is reported with its reason and keeps its
# default, so one typo does not stop the gateway or half-apply a value.
# Unknown fields are reported too (a misspelt name would otherwise be
# silently ignored).


class Field:
    def __init__(self, name, default, lo, hi, summary):
        self.name = name
        self.default = default
        self.lo = lo
        self.hi = hi
        self.summary = summary

    def check(self, value):
        # -> error text, or None when value is acceptable.
        if isinstance(value, bool) or not isinstance(value, int):
            return "%s must be a whole number" % self.name
        if not self.lo <= value <= self.hi:
            return "%s must be %d..%d, got %d" % (self.name, self.lo, self.hi, value)
        return None


SCHEMA = (
    Field("heartbeat_s", 10, 1, 3600, "seconds between heartbeat lines on the console"),
    Field("watchdog_ms", 8000, 1000, 60000, "hardware watchdog timeout; the app feeds it"),
    Field("safe_mode_after", 3, 1, 100, "consecutive unhealthy app starts before safe mode"),
    Field("healthy_after_s", 10, 1, 600, "seconds the app must run before it counts as healthy"),
)


def defaults():
    return {f.name: f.default for f in SCHEMA}


def validate(doc):
    # doc: a dict parsed from JSON. -> (values, errors)
    values = defaults()
    errors = []
    if not isinstance(doc, dict):
        return values, ["config must be a JSON object"]
    known = {}
    for f in SCHEMA:
        known[f.name] = f
    for name in sorted(doc):
        f = known.get(name)
        if f is None:
            errors.append("unknown field %r" % (name,))
            continue
        err = f.check(doc[name])
        if err:
            errors.append(err)
        else:
            values[name] = doc[name]
    return values, errors
