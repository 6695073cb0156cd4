"""Keeps secrets out of events, logs and error messages."""
from __future__ import annotations

import hashlib
import re

_SECRET_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{6,}|sk_[A-Za-z0-9_\-]{6,}|AKIA[0-9A-Z]{12,}|AIza[0-9A-Za-z_\-]{20,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}|(?i:api[_-]?key)[\"'=:\s]+[A-Za-z0-9._\-]{8,})"
)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Masks anything shaped like a credential, and every known secret given."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[REDACTED]")
    return _SECRET_PATTERNS.sub("[REDACTED]", text)


def key_hash(api_key: str) -> str:
    """The identity under which a key appears in the ledger (LiteLLM stores sha256 hex too)."""
    return hashlib.sha256(api_key.encode()).hexdigest()
