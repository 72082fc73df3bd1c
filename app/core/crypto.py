"""Symmetric encryption for secrets the service must read back (webhook signing secrets).

Signing needs the secret itself, so it cannot be hashed like an API key; it is stored as a
Fernet token whose key is derived from `settings.secret_key`. Without a configured key one is
generated once into `data_dir/secret_key` (mode 0600), so a restart can still decrypt."""

from __future__ import annotations

import base64
import os
import secrets
import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.core.settings import Settings

SECRET_KEY_FILE = "secret_key"
SECRET_KEY_WAIT_S = 5.0
"""How long a process that finds the generated key file still empty waits for its writer."""
_PURPOSE = b"plumbline webhook secrets v1"


class SecretUnreadable(RuntimeError):
    """The stored secret was encrypted under another key (secret_key changed or lost)."""


def server_secret(settings: Settings) -> str:
    """The configured secret key, or the one generated (once) under the data directory."""
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.data_dir) / SECRET_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process generated it first: use theirs
            return _read_generated(path)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return _read_generated(path)


def _read_generated(path: Path) -> str:
    """The generated key, waiting while the file is empty: the process that created it may
    not have written the key yet (processes starting together). An empty secret is never
    used: anyone could sign sessions with it."""
    deadline = time.monotonic() + SECRET_KEY_WAIT_S
    while not (secret := path.read_text().strip()):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{path} is empty: delete it to generate a new key, or set PLUMBLINE_SECRET_KEY"
            )
        time.sleep(0.01)
    return secret


def _fernet(settings: Settings) -> Fernet:
    # HKDF separates this use of the server secret from its others (dashboard sessions).
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE).derive(
        server_secret(settings).encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(settings: Settings, plaintext: str) -> str:
    return _fernet(settings).encrypt(plaintext.encode()).decode("ascii")


def decrypt(settings: Settings, token: str) -> str:
    try:
        return _fernet(settings).decrypt(token.encode("ascii")).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("secret was encrypted under a different server key") from exc
