# MQTT topic layout of the trade protocol (docs/protocol.md, "Topics").
#
#   pgw/1/<community>/dev/<kid>/reading|order|witness   device -> hub
#   pgw/1/<community>/dev/<kid>/key                     device's COSE_Key, retained
#   pgw/1/<community>/dev/<kid>/status                  "online"/"offline" (last will), retained
#   pgw/1/<community>/dev/<kid>/in                      hub -> that device (trade,
#                                                       settlement, command, ack)
#   pgw/1/<community>/dev/<kid>/otaget                  device -> hub: OTA chunks wanted
#   pgw/1/<community>/dev/<kid>/ota/<n>                 hub -> that device: chunk n of a bundle
#   pgw/1/<community>/hub/block|ota                     hub -> everyone
#   pgw/1/<community>/hub/key                           hub's COSE_Key, retained
#
# <community>: 1-32 of [a-z0-9-]; <kid>: 16 lowercase hex digits. A receiver
# checks that the kid in the topic is the message's signer.

from compat import const

_PREFIX = const("pgw/1/")
_DEVICE_OUT = const(("reading", "order", "witness"))
_DEVICE_OTHER = const(("key", "in", "status", "otaget", "ota"))
_HUB_OUT = const(("block", "ota"))


class TopicError(ValueError):
    pass


def _community(c):
    if not 1 <= len(c) <= 32 or any(ch not in "abcdefghijklmnopqrstuvwxyz0123456789-" for ch in c):
        raise TopicError("community must be 1-32 of a-z 0-9 -, got %r" % (c,))
    return c


def kid_hex(kid):
    if not isinstance(kid, bytes) or len(kid) != 8:
        raise TopicError("kid must be 8 bytes")
    return kid.hex()


def device(community, kid, leaf):
    """Topic of a device: leaf one of _DEVICE_OUT, "key" or "in"."""
    if leaf not in _DEVICE_OUT and leaf not in _DEVICE_OTHER:
        raise TopicError("no device topic %r" % (leaf,))
    return "%s%s/dev/%s/%s" % (_PREFIX, _community(community), kid_hex(kid), leaf)


def hub(community, leaf):
    if leaf not in _HUB_OUT and leaf != "key":
        raise TopicError("no hub topic %r" % (leaf,))
    return "%s%s/hub/%s" % (_PREFIX, _community(community), leaf)


def parse(topic):
    """-> (community, kid bytes or None for the hub, leaf)."""
    if isinstance(topic, (bytes, bytearray)):
        topic = bytes(topic).decode()
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != "pgw" or parts[1] != "1":
        raise TopicError("not a pgw/1 topic: %r" % (topic,))
    community = _community(parts[2])
    if parts[3] == "hub" and len(parts) == 5 and (parts[4] in _HUB_OUT or parts[4] == "key"):
        return community, None, parts[4]
    if parts[3] == "dev" and len(parts) == 6:
        k = parts[4]
        if len(k) != 16 or any(ch not in "0123456789abcdef" for ch in k):
            raise TopicError("kid must be 16 lowercase hex digits: %r" % (k,))
        leaf = parts[5]
        if leaf in _DEVICE_OUT or leaf in _DEVICE_OTHER:
            return community, bytes(int(k[i:i + 2], 16) for i in range(0, 16, 2)), leaf
    raise TopicError("unknown topic %r" % (topic,))
