# Reads /config.json through lib/deviceconfig's schema. A missing file
# means defaults; a bad field keeps its default and its reason is kept in
# `errors` for the console to show.
import json

import deviceconfig

PATH = "/config.json"


def load(path=PATH):
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError:
        return deviceconfig.defaults(), []
    except ValueError:
        return deviceconfig.defaults(), ["%s is not valid JSON; using defaults" % path]
    return deviceconfig.validate(doc)
