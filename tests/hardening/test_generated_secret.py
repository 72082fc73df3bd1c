"""The secret key generated under the data directory when none is configured. Several
processes start together (`plumbline serve --workers N`): one creates the file, and another may
open it before the first has written the key into it. That reader must wait for the key, never
take the empty file as the key: sessions signed with an empty secret can be forged by anyone,
for any project."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from app.core import crypto
from app.core.settings import Settings


def test_a_process_that_finds_the_key_file_still_empty_waits_for_the_key(
    tmp_path: Path,
) -> None:
    settings = Settings(secret_key=None, data_dir=tmp_path)
    path = tmp_path / crypto.SECRET_KEY_FILE
    path.touch(mode=0o600)  # created by another process, not yet written

    def write_later() -> None:
        time.sleep(0.2)
        path.write_text("the-key-the-other-process-generated")

    writer = threading.Thread(target=write_later)
    writer.start()
    try:
        assert crypto.server_secret(settings) == "the-key-the-other-process-generated"
    finally:
        writer.join()


def test_a_key_file_that_stays_empty_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crypto, "SECRET_KEY_WAIT_S", 0.1)
    (tmp_path / crypto.SECRET_KEY_FILE).touch(mode=0o600)
    with pytest.raises(RuntimeError, match="empty"):
        crypto.server_secret(Settings(secret_key=None, data_dir=tmp_path))
