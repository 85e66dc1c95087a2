import os
from pathlib import Path

import pytest

from mailveil.keyfiles import KeyFileError, read_secret, write_secret


def test_written_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "k.key"
    write_secret(path, b"secret")
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_secret(path) == b"secret"


def test_never_overwrites_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_secret(path, b"one")
    with pytest.raises(KeyFileError, match="already exists"):
        write_secret(path, b"two")
    assert read_secret(path) == b"one"
    write_secret(path, b"two", overwrite=True)
    assert read_secret(path) == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]  # no temp files left behind


def test_refuses_group_readable_key(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_secret(path, b"x")
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match="readable by others"):
        read_secret(path)


def test_missing_key_points_at_the_existing_keys_not_at_minting_new_ones(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="keys directory this database was initialised with"):
        read_secret(tmp_path / "absent.key")
