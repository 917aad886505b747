# Stand-in for MicroPython's `network` module on the virtual board.
#
# The virtual board's "WiFi" is the host's loopback: the access point
# accepts any credentials, and the host can take the link down through
# the supervisor (`wifi down`) to rehearse outages.
import vboard_link as _link
import machine

STA_IF = 0
AP_IF = 1

STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202

_hostname = "pgw-" + machine.unique_id()[-3:].hex()


def hostname(name=None):
    global _hostname
    if name is None:
        return _hostname
    _hostname = name


class WLAN:
    def __init__(self, interface=STA_IF):
        self._active = False
        self._ssid = None

    def active(self, flag=None):
        if flag is None:
            return self._active
        self._active = bool(flag)
        if not self._active:
            self._ssid = None

    def connect(self, ssid=None, key=None, bssid=None):
        if not self._active:
            raise OSError("WLAN not active")
        self._ssid = ssid

    def disconnect(self):
        self._ssid = None

    def isconnected(self):
        _link.poll()
        return self._active and self._ssid is not None and _link.wifi_up

    def status(self, param=None):
        if param == "rssi":
            return -55
        if not self._active or self._ssid is None:
            return STAT_IDLE
        return STAT_GOT_IP if self.isconnected() else STAT_CONNECTING

    def ifconfig(self, config=None):
        if self.isconnected():
            return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def config(self, *args, **kw):
        if args == ("mac",):
            return machine.unique_id()[:6]
        if args == ("ssid",):
            return self._ssid or ""
        if args:
            raise ValueError("unknown config param")

    def scan(self):
        return [(b"vboard", machine.unique_id()[:6], 1, -55, 3, False)]
