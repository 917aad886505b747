# Name tables of dlms.apdu, dlms.acse, dlms.obis and dlms.cosem, loaded only
# when a name is asked for (error texts, display): not in RAM otherwise.

# dlms.apdu
# Names: codes as bytes, names as one string, same order (cheap in RAM).
DAR_CODES = b"\x00\x01\x02\x03\x04\x09\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\xfa"
DAR_NAMES = ("success hardware-fault temporary-failure read-write-denied object-undefined"
              " object-class-inconsistent object-unavailable type-unmatched"
              " scope-of-access-violated data-block-unavailable long-get-aborted"
              " no-long-get-in-progress long-set-aborted no-long-set-in-progress"
              " data-block-number-invalid other-reason")
ACTION_CODES = b"\x00\x01\x02\x03\x04\x09\x0b\x0c\x0d\x0e\x0f\x10\xfa"
ACTION_NAMES = ("success hardware-fault temporary-failure read-write-denied object-undefined"
                 " object-class-inconsistent object-unavailable type-unmatched"
                 " scope-of-access-violated data-block-unavailable long-action-aborted"
                 " no-long-action-in-progress other-reason")
STATE_NAMES = "- service-not-allowed service-unknown"
SERVICE_NAMES = ("- operation-not-possible service-not-supported other-reason pdu-too-long"
                  " deciphering-error invocation-counter-error")
# confirmed-service-error: the service (CHOICE tag), the ServiceError class and,
# for the classes a client meets, the values (Green Book 9.5 xDLMS ASN.1)
CSE_SERVICES = "- initiateError getStatus getNameList getVariableAttribute read write"
CSE_CLASSES = ("application-reference hardware-resource vde-state-error service definition"
                " access initiate load-data-set change-scope task other")
CSE_VALUES = (
    None, None, None,
    "other pdu-size service-unsupported",
    "other object-undefined object-class-inconsistent object-attribute-inconsistent",
    "other scope-of-access-violated object-access-violated hardware-fault object-unavailable",
    "other dlms-version-too-low incompatible-conformance pdu-size-too-short refused-by-the-VDE-Handler",
)

# dlms.acse
RESULTS = "accepted rejected-permanent rejected-transient"
USER_DIAGS = (
    "null no-reason-given application-context-name-not-supported"
    " calling-AP-title-not-recognized calling-AP-invocation-identifier-not-recognized"
    " calling-AE-qualifier-not-recognized calling-AE-invocation-identifier-not-recognized"
    " called-AP-title-not-recognized called-AP-invocation-identifier-not-recognized"
    " called-AE-qualifier-not-recognized called-AE-invocation-identifier-not-recognized"
    " authentication-mechanism-name-not-recognised authentication-mechanism-name-required"
    " authentication-failure authentication-required")
PROVIDER_DIAGS = "null no-reason-given no-common-acse-version"

# dlms.obis
# Readable names: 6-octet keys in one bytes object, names in one string, same
# order (34 entries: 204 + 747 = 951 octets of data; no per-entry objects).
OBIS_KEYS = (
    b"\x01\x00\x01\x08\x00\xff" b"\x01\x00\x01\x08\x01\xff" b"\x01\x00\x01\x08\x02\xff"
    b"\x01\x00\x02\x08\x00\xff" b"\x01\x00\x02\x08\x01\xff" b"\x01\x00\x02\x08\x02\xff"
    b"\x01\x00\x03\x08\x00\xff" b"\x01\x00\x04\x08\x00\xff"
    b"\x01\x00\x01\x07\x00\xff" b"\x01\x00\x02\x07\x00\xff" b"\x01\x00\x10\x07\x00\xff"
    b"\x01\x00\x03\x07\x00\xff" b"\x01\x00\x04\x07\x00\xff"
    b"\x01\x00\x15\x07\x00\xff" b"\x01\x00\x29\x07\x00\xff" b"\x01\x00\x3d\x07\x00\xff"
    b"\x01\x00\x16\x07\x00\xff" b"\x01\x00\x2a\x07\x00\xff" b"\x01\x00\x3e\x07\x00\xff"
    b"\x01\x00\x20\x07\x00\xff" b"\x01\x00\x34\x07\x00\xff" b"\x01\x00\x48\x07\x00\xff"
    b"\x01\x00\x1f\x07\x00\xff" b"\x01\x00\x33\x07\x00\xff" b"\x01\x00\x47\x07\x00\xff"
    b"\x01\x00\x0e\x07\x00\xff" b"\x01\x00\x0d\x07\x00\xff"
    b"\x00\x00\x01\x00\x00\xff" b"\x00\x00\x2a\x00\x00\xff" b"\x01\x00\x63\x01\x00\xff"
    b"\x01\x00\x63\x02\x00\xff" b"\x00\x00\x60\x01\x00\xff" b"\x00\x00\x60\x03\x0a\xff"
    b"\x00\x00\x60\x0e\x00\xff"
)
OBIS_NAMES = (
    "Active energy import (+A) total\n"
    "Active energy import (+A) tariff 1\n"
    "Active energy import (+A) tariff 2\n"
    "Active energy export (-A) total\n"
    "Active energy export (-A) tariff 1\n"
    "Active energy export (-A) tariff 2\n"
    "Reactive energy import (+R) total\n"
    "Reactive energy export (-R) total\n"
    "Active power import (+P)\n"
    "Active power export (-P)\n"
    "Active power net (+P - -P)\n"
    "Reactive power import (+Q)\n"
    "Reactive power export (-Q)\n"
    "Active power import L1\n"
    "Active power import L2\n"
    "Active power import L3\n"
    "Active power export L1\n"
    "Active power export L2\n"
    "Active power export L3\n"
    "Voltage L1\n"
    "Voltage L2\n"
    "Voltage L3\n"
    "Current L1\n"
    "Current L2\n"
    "Current L3\n"
    "Frequency\n"
    "Power factor\n"
    "Clock\n"
    "Logical device name\n"
    "Load profile 1\n"
    "Load profile 2\n"
    "Serial number (device ID 1)\n"
    "Disconnect control\n"
    "Current tariff"
)

# dlms.cosem
# DLMS unit enumeration (Blue Book 4.3.2, unit ::= enum): codes in one bytes
# object, symbols in one string, same order.
UNIT_CODES = bytes(list(range(1, 58)) + list(range(60, 68)) + [70, 71, 72, 254, 255])
UNIT_NAMES = (
    "a|mo|wk|d|h|min|s|°|°C|currency|m|m/s|m³|m³ (corrected)|m³/h|m³/h (corrected)"
    "|m³/d|m³/d (corrected)|l|kg|N|Nm|Pa|bar|J|J/h|W|VA|var|Wh|VAh|varh|A|C|V|V/m|F|Ω"
    "|Ωm²/m|Wb|T|A/m|H|Hz|1/(Wh)|1/(varh)|1/(VAh)|V²h|A²h|kg/s|S|K|1/(V²h)|1/(A²h)"
    "|1/m³|%|Ah|Wh/m³|J/m³|Mol %|g/m³|Pa s|J/kg|g/cm²|atm|dBm|dBµV|dB|other|count"
)
