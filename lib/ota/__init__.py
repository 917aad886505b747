# Signed OTA bundles (docs/ota.md): ota.manifest (the signed manifest and
# the device's acceptance policy), ota.bundle (the streaming reader).
