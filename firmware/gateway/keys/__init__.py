# Signing keys for meter readings (ES256). A key provider has
# public_key() -> (x, y) ints, sign_digest(digest32) -> r||s (64 bytes) and
# describe() -> str; atecc608.Atecc608Key keeps its key in the secure
# element. Providers are imported by name where chosen, so a gateway
# without a secure element never loads its driver.

KEY_FILE = "/state/device.key"


class KeyProviderError(Exception):
    pass


def load(path=KEY_FILE):
    """The device's software key, or None before provisioning."""
    import os

    try:
        os.stat(path)
    except OSError:
        return None
    from gateway.keys.software import SoftwareKey

    return SoftwareKey(path)


def provision(path=KEY_FILE):
    """Generate the device's key on the device (refused if one exists)."""
    from gateway.keys.software import provision

    return provision(path)
