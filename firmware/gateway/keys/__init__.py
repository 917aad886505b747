# Signing keys for meter readings (ES256). A key provider has
# public_key() -> (x, y) ints, sign_digest(digest32) -> r||s (64 bytes) and
# describe() -> str; atecc608.Atecc608Key keeps its key in the secure
# element. Providers are imported by name where chosen, so a gateway
# without a secure element never loads its driver.
