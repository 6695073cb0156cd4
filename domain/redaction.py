"""Keeps secrets out of events, logs and error messages."""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

# Config fields whose values are credentials, wherever they appear (litellm_params, settings).
SECRET_FIELDS = frozenset({
    "api_key", "master_key", "aws_secret_access_key", "aws_session_token", "client_secret", "azure_ad_token",
    "vertex_credentials", "redis_password", "password", "database_url", "redis_url", "private_key",
    "private_key_id", "refresh_token", "access_token", "token", "secret", "webhook_secret", "lago_api_key",
})
_AWS_SECRET = r"(?<![A-Za-z0-9/+])(?=[A-Za-z0-9/+]*[A-Z])(?=[A-Za-z0-9/+]*[a-z])(?=[A-Za-z0-9/+]*[0-9])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
_SECRET_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{6,}|sk_[A-Za-z0-9_\-]{6,}|AKIA[0-9A-Z]{12,}|AIza[0-9A-Za-z_\-]{20,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}|(?i:api[_-]?key)[\"'=:\s]+[A-Za-z0-9._\-]{8,}"
    r"|(?i:secret[_-]?access[_-]?key)[\"'=:\s]+[A-Za-z0-9/+=]{16,}|" + _AWS_SECRET + ")"
)
_MIN_SECRET_LENGTH = 4


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Masks anything shaped like a credential, and every known secret given, in any letter case."""
    known = _known_secrets(secrets)
    if known is not None:
        text = known.sub("[REDACTED]", text)
    return _SECRET_PATTERNS.sub("[REDACTED]", text)


@lru_cache(maxsize=64)
def _known_secrets(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    usable = sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, usable)), re.IGNORECASE) if usable else None


def secrets_in(settings: Mapping[str, Any]) -> list[str]:
    """The credential values among a config mapping's fields (nested mappings included): whole
    values, and the password of a URL."""
    found: list[str] = []
    for name, value in settings.items():
        if isinstance(value, Mapping):
            found += secrets_in(value) if name not in SECRET_FIELDS else _strings(value.values())
        elif name in SECRET_FIELDS and isinstance(value, str) and value:
            found.append(value)
            password = url_password(value)
            if password:
                found.append(password)
    return found


def url_password(value: str) -> str | None:
    if "://" not in value:
        return None
    try:
        return urlsplit(value).password
    except ValueError:
        return None


def _strings(values: Iterable[Any]) -> list[str]:
    return [v for v in values if isinstance(v, str) and v]


def key_hash(api_key: str) -> str:
    """The identity under which a key appears in the ledger (LiteLLM stores sha256 hex too)."""
    return hashlib.sha256(api_key.encode()).hexdigest()
