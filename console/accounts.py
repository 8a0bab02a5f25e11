"""Named operator accounts for the password login: each operator's own password, kept as a
scrypt hash in the console's secrets, so the name the audit log records is one that logged in.

```toml
[console.operators]
"Priya Raman" = "scrypt$16384$8$1$<salt>$<hash>"   # ai-broker console hash-password
```
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

SCHEME = "scrypt"
# OWASP's scrypt floor (N=2^14, r=8, p=1): about 50 ms and 16 MiB per check on this machine, so
# a stolen secrets file costs an attacker that much per guess.
_N, _R, _P = 2**14, 8, 1
MIN_PASSWORD_CHARS = 12
_SALT_BYTES = 16
_KEY_BYTES = 32
_MAX_MEMORY = 64 * 1024 * 1024


class AccountsError(ValueError):
    """The `[console.operators]` secrets are not a table of names to password hashes."""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, _N, _R, _P)
    return "$".join((SCHEME, str(_N), str(_R), str(_P), _b64(salt), _b64(key)))


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches `encoded` (from `hash_password`); False for a malformed one."""
    try:
        scheme, n, r, p, salt, key = encoded.split("$")
        if scheme != SCHEME:
            return False
        expected = base64.b64decode(key, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def canonical_name(name: str) -> str:
    """How names are matched: case and runs of spaces do not matter."""
    return " ".join(name.split()).casefold()


@dataclass(frozen=True)
class OperatorAccounts:
    """Operator name → password hash, as configured."""

    hashes: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_secrets(cls, table: object) -> OperatorAccounts:
        if table is None:
            return cls()
        if not isinstance(table, Mapping):
            raise AccountsError("[console.operators] must be a table of name = password hash")
        hashes: dict[str, str] = {}
        for name, encoded in table.items():
            if not isinstance(encoded, str) or not encoded.startswith(f"{SCHEME}$"):
                raise AccountsError(
                    f"[console.operators] {name!r}: not a password hash; make one with "
                    "`ai-broker console hash-password`"
                )
            if not canonical_name(str(name)):
                raise AccountsError("[console.operators] has an empty operator name")
            hashes[" ".join(str(name).split())] = encoded
        return cls(hashes)

    def __bool__(self) -> bool:
        return bool(self.hashes)

    def authenticate(self, name: str, password: str) -> str | None:
        """The configured spelling of the operator's name, or None.

        An unknown name costs the same hash as a known one, so the time taken does not tell
        which names exist.
        """
        wanted = canonical_name(name)
        match = next((n for n in self.hashes if canonical_name(n) == wanted), None)
        if match is None:
            verify_password(password, _decoy())
            return None
        return match if verify_password(password, self.hashes[match]) else None


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEMORY, dklen=_KEY_BYTES
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@cache
def _decoy() -> str:
    return hash_password(secrets.token_urlsafe(16))
