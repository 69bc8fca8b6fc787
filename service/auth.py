"""Who may call what: the admin/write key (`CIR_API_KEY`) and the optional read key (`CIR_READ_API_KEY`).

Keys come in `X-API-Key` or `Authorization: Bearer` and are compared in constant time. A setting
may hold several keys separated by commas: to rotate, add the new key, move clients to it, then
remove the old one (docs/api.md). Admin and
write routes need the admin key always: with none configured they answer 403 and say how to turn
them on. Read routes are open unless a read key is configured; then the read key or the admin key
opens them.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the service's API key")
_bearer = HTTPBearer(auto_error=False, description="the service's API key as a bearer token")
WRITES_OFF = ("this route needs an API key and none is configured: start the server with CIR_API_KEY set "
              "(a long random string) and send it as X-API-Key or Authorization: Bearer")


def _given(key: str | None, bearer: HTTPAuthorizationCredentials | None) -> str:
    return key or (bearer.credentials if bearer else "")


def keys_of(secret: SecretStr | None) -> list[str]:
    """The keys of one setting: a comma-separated list, so a new key can be added before the old one goes."""
    return [k.strip() for k in secret.get_secret_value().split(",") if k.strip()] if secret is not None else []


def matches(given: str, *expected: SecretStr | None) -> bool:
    """True when `given` equals one of the configured keys (constant time per key)."""
    ok = False
    for key in (k for secret in expected for k in keys_of(secret)):
        # no short-circuit: every configured key is compared
        ok |= hmac.compare_digest(given.encode("utf-8", "surrogatepass"), key.encode("utf-8", "surrogatepass"))
    return ok


def _unauthorized() -> HTTPException:
    return HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})


def require_admin_key(request: Request, key: str | None = Depends(_key_header),
                      bearer: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """403 when no admin key is configured; 401 unless the request carries it."""
    expected = request.app.state.settings.api_key
    if expected is None:
        raise HTTPException(403, WRITES_OFF)
    if not matches(_given(key, bearer), expected):
        raise _unauthorized()


def require_read_key(request: Request, key: str | None = Depends(_key_header),
                     bearer: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """Open unless a read key is configured; then 401 unless the request carries the read or admin key."""
    settings = request.app.state.settings
    expected = getattr(settings, "read_api_key", None)
    if expected is None:
        return
    if not matches(_given(key, bearer), expected, settings.api_key):
        raise _unauthorized()


def access_summary(settings) -> str:
    """The start-up log line that says which routes are open."""
    reads = "need CIR_READ_API_KEY" if getattr(settings, "read_api_key", None) else "open to anyone"
    writes = "need CIR_API_KEY" if settings.api_key is not None else "off (403): set CIR_API_KEY to turn them on"
    return f"access: search, images, facets, info and metrics {reads}; admin and write routes {writes}"
