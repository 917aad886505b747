# The meter service: meters described in /config.json, polled (or, for
# push meters, listened to), readings normalised to {quantity: int} in the
# vocabulary of lib/quantities.py. service.py runs them and keeps their
# health; bus.py and tcp.py own the lines; one driver module per protocol
# family (modbus_meter.py; the DLMS drivers plug in the same way).


class MeterError(Exception):
    # A failure with the word its health counter is keyed by: "timeout",
    # "crc", "frame", "exc2" (Modbus exception code 2), "conn", "sunspec",
    # "config" (the meter cannot run as configured).
    def __init__(self, kind, detail=""):
        super().__init__(detail or kind)
        self.kind = kind
