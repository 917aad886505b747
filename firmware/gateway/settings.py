# The console's `config get` and `config set` (docs/console.md).
#
# The config is read once per boot (boot.py), so `get` shows the values in
# effect, and `set` checks the new value with lib/deviceconfig against
# /config.json and writes the file (a new file, then a rename) only when
# accepted: it applies at the next reboot. Until then `show` gives the saved
# value beside the one in effect. deviceconfig (with meterconfig, envelope
# or cose when the check needs them) is imported for one command and every
# module it brought is dropped after it: several KB that must not stay.
import json
import os
import sys

from compat import const
from gateway import boot
from techconsole import ConsoleError

PATH = "/config.json"
_MAX_FILE = const(16384)  # a bigger /config.json is not read here



def show(path=None):
    # -> answer lines "path value"; secrets show ***
    before = list(sys.modules)
    import deviceconfig as dc

    try:
        text = dc.get(boot.config, path or "")
    except dc.ConfigError as e:
        raise ConsoleError(str(e))
    finally:
        dc = None  # no reference left, so forget_modules() frees it
        boot.forget_modules(boot.modules_since(before))
    lines = text.split("\n")
    if boot.config_saved:
        for i in range(len(lines)):
            later = boot.config_saved.get(lines[i].partition(" ")[0])
            if later is not None and later != lines[i]:
                lines[i] += "  (next boot: %s)" % later.partition(" ")[2]
    return lines


def save(path, text):
    # -> the field's "path value" line as saved. Raises ConsoleError with
    # deviceconfig's reason when refused; the file is then not touched.
    doc = _read()
    before = list(sys.modules)
    import deviceconfig as dc

    try:
        new, values = dc.set(doc, path, text)
        line = dc.get(values, path)
    except dc.ConfigError as e:
        raise ConsoleError(str(e))
    finally:
        dc = doc = values = None
        boot.forget_modules(boot.modules_since(before))
    _write(new)
    boot.config_saved[path] = line
    return line


def _read():
    try:
        size = os.stat(PATH)[6]
    except OSError:
        return {}  # no file: every field at its default
    if size > _MAX_FILE:
        raise ConsoleError("%s is %d bytes, more than %d: edit it on the host" % (PATH, size, _MAX_FILE))
    try:
        with open(PATH) as f:
            return json.load(f)
    except ValueError:
        raise ConsoleError("%s is not valid JSON: fix it on the host first" % PATH)


def _write(doc):
    # Keys sorted, one top-level field a line: the same config gives the same
    # bytes, whatever order the dict holds its keys in.
    tmp = PATH + ".new"
    try:
        with open(tmp, "w") as f:
            f.write("{")
            sep = "\n"
            for k in sorted(doc):
                f.write(sep + "  " + json.dumps(k) + ": ")
                _dump(f, doc[k])
                sep = ",\n"
            f.write("\n}\n")
        os.rename(tmp, PATH)
    except OSError as e:  # a full or failing flash: the old file stays
        raise ConsoleError("%s not written (%s): nothing changed" % (PATH, e))


def _dump(f, v):
    if isinstance(v, dict):
        f.write("{")
        sep = ""
        for k in sorted(v):
            f.write(sep + json.dumps(k) + ": ")
            _dump(f, v[k])
            sep = ", "
        f.write("}")
    elif isinstance(v, list):
        f.write("[")
        sep = ""
        for item in v:
            f.write(sep)
            _dump(f, item)
            sep = ", "
        f.write("]")
    else:
        f.write(json.dumps(v))
