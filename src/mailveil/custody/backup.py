"""`mailveil backup` / `restore`: a consistent online snapshot of the database, the keys
exported apart and wrapped, and a restore that checks one against the other.

SQLite is copied with its online backup API (one step, under a read transaction, so writers
carry on and the copy is one consistent state); PostgreSQL with ``pg_dump`` in its custom
format (one REPEATABLE READ snapshot), restored with ``pg_restore``. The keys never go beside
the data: the key export must be written outside the snapshot's directory, under a passphrase.

A restore unwraps the keys into a private scratch directory first, restores the data into an
empty target, checks the keys against it (the recorded fingerprints and the data itself),
installs the keys only if they match, then verifies the whole ledger.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from mailveil.config import Settings
from mailveil.custody.binding import (
    KeyMismatch,
    check_against_data,
    check_recorded,
    present_key_set,
    present_keys,
)
from mailveil.custody.keyfile_export import (
    install_keys,
    read_keys_dir,
    unwrap_keys,
    wrap_keys,
)
from mailveil.db.session import make_engine, make_session_factory, session_scope
from mailveil.keyfiles import write_secret
from mailveil.ledger.verify import VerifyReport


class BackupError(RuntimeError):
    """A snapshot or a restore cannot be made (tool missing or failing, target not empty)."""


@dataclass
class BackupReport:
    data_file: Path
    manifest_file: Path
    keys_file: Path
    backend: str
    data_bytes: int
    keys: int
    seconds: float


@dataclass
class RestoreReport:
    keys_installed: list[str] = field(default_factory=list)
    data_restored: bool = False
    ledger: VerifyReport | None = None
    seconds: float = 0.0


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pg_target(db_url: str) -> tuple[str, dict[str, str], str | None]:
    """(libpq URI without the password, environment carrying it, schema in search_path)."""
    url = make_url(db_url)
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    schema = None
    options = url.query.get("options")
    for opt in (options,) if isinstance(options, str) else (options or ()):
        text = unquote(opt)
        for part in text.split():
            if part.startswith("-csearch_path="):
                schema = part.split("=", 1)[1].split(",")[0].strip('"') or None
    uri = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return uri, env, schema


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    if shutil.which(argv[0]) is None:
        raise BackupError(f"{argv[0]} is not installed (Debian: postgresql-client)")
    # argv is pg_dump/pg_restore and options built here, never a shell string.
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise BackupError(f"{argv[0]} failed: {lines[0] if lines else done.returncode}")


def _sqlite_path(db_url: str) -> Path:
    database = make_url(db_url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def sqlite_snapshot(source: Path, target: Path) -> None:
    """One consistent copy through SQLite's online backup API (all pages in one step)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=-1)
        finally:
            dst.close()
    finally:
        src.close()
    os.chmod(target, 0o600)


def take_backup(
    settings: Settings, out_dir: Path, keys_file: Path, passphrase: str
) -> BackupReport:
    """Snapshot the database into ``out_dir`` and export the keys, wrapped, to ``keys_file``
    (which must not be inside ``out_dir``). The service keeps running."""
    started = time.perf_counter()
    if _inside(keys_file, out_dir):
        raise BackupError(
            f"the key export {keys_file} would be beside the data in {out_dir}: write it "
            "somewhere else (another disk, host or vault); whoever holds both holds every address"
        )
    files = read_keys_dir(settings.keys_dir)
    wrapped = wrap_keys(files, passphrase)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    backend = make_url(settings.db_url).get_backend_name()
    if backend == "sqlite":
        data_file = out_dir / f"mailveil-{stamp}.sqlite"
        sqlite_snapshot(_sqlite_path(settings.db_url), data_file)
    elif backend == "postgresql":
        data_file = out_dir / f"mailveil-{stamp}.pgdump"
        uri, env, schema = _pg_target(settings.db_url)
        argv = ["pg_dump", "--format=custom", "--no-owner", f"--file={data_file}"]
        argv += [f"--schema={schema}"] if schema else []
        _run([*argv, f"--dbname={uri}"], env)
        os.chmod(data_file, 0o600)
    else:
        raise BackupError(f"backups of {backend} databases are not supported")
    manifest = {
        "format": "mailveil-backup/v1",
        "created": stamp,
        "backend": backend,
        "data_file": data_file.name,
        "sha256": _sha256(data_file),
        # Which keys open this snapshot (fingerprints only): say so before a restore starts.
        "key_fingerprints": {
            f"{purpose}/{name}": fp
            for (purpose, name), fp in present_keys(settings.keys_dir).items()
        },
    }
    manifest_file = data_file.with_suffix(".json")
    manifest_file.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    keys_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_secret(keys_file, wrapped)
    return BackupReport(
        data_file=data_file,
        manifest_file=manifest_file,
        keys_file=keys_file,
        backend=backend,
        data_bytes=data_file.stat().st_size,
        keys=len(files),
        seconds=time.perf_counter() - started,
    )


def _check_target_empty(settings: Settings) -> None:
    backend = make_url(settings.db_url).get_backend_name()
    if backend == "sqlite":
        path = _sqlite_path(settings.db_url)
        if path.exists() and path.stat().st_size > 0:
            raise BackupError(f"{path} already exists: restore into an empty data directory")
        return
    engine = make_engine(settings)
    try:
        if inspect(engine).get_table_names():
            raise BackupError("the target database is not empty: restore into a new database")
    finally:
        engine.dispose()


def _restore_data(settings: Settings, data_file: Path) -> None:
    backend = make_url(settings.db_url).get_backend_name()
    if backend == "sqlite" and data_file.suffix == ".sqlite":
        target = _sqlite_path(settings.db_url)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        sqlite_snapshot(data_file, target)
    elif backend == "postgresql" and data_file.suffix == ".pgdump":
        uri, env, _ = _pg_target(settings.db_url)
        _run(
            [
                "pg_restore",
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                f"--dbname={uri}",
                str(data_file),
            ],
            env,
        )
    else:
        raise BackupError(f"{data_file.name} is not a {backend} snapshot")


def _check_manifest(data_file: Path) -> None:
    manifest_file = data_file.with_suffix(".json")
    if not manifest_file.is_file():
        return
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    if manifest.get("sha256") != _sha256(data_file):
        raise BackupError(f"{data_file.name} does not match the checksum in {manifest_file.name}")


def restore(
    settings: Settings,
    keys_file: Path,
    passphrase: str,
    data_file: Path | None = None,
    *,
    verify: bool = True,
) -> RestoreReport:
    """Restore the keys (and, given ``data_file``, the database) for ``settings``; the keys
    are installed only if they open the data. Then the ledger is verified."""
    from mailveil.custody.ledger_rotation import ledger_keys
    from mailveil.ledger.signing import CheckpointSigner
    from mailveil.ledger.verify import verify_ledger

    started = time.perf_counter()
    report = RestoreReport()
    files = unwrap_keys(keys_file.read_bytes(), passphrase)
    if data_file is not None:
        _check_manifest(data_file)
        _check_target_empty(settings)
    # Unwrapped keys are staged beside where they will live (never in a shared /tmp).
    settings.keys_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=settings.keys_dir.parent) as scratch:
        staged = Path(scratch) / "keys"
        install_keys(files, staged)
        if data_file is not None:
            _restore_data(settings, data_file)
            report.data_restored = True
        check = settings.with_overrides(keys_path=str(staged))
        engine = make_engine(settings)
        try:
            with session_scope(make_session_factory(engine)) as session:
                problems, _ = check_recorded(session, check, present_key_set(check))
                problems += check_against_data(session, check)
            if problems:
                raise KeyMismatch(
                    f"the key export {keys_file.name} does not open this data "
                    f"({'; '.join(problems[:4])}); no key was installed"
                )
            report.keys_installed = install_keys(files, settings.keys_dir)
            if verify:
                signer = CheckpointSigner.load(settings)
                keys = ledger_keys(settings, signer.public_key)
                report.ledger = verify_ledger(engine, settings, keys, split=False)
        finally:
            engine.dispose()
    report.seconds = time.perf_counter() - started
    return report


__all__ = [
    "BackupError",
    "BackupReport",
    "RestoreReport",
    "restore",
    "sqlite_snapshot",
    "take_backup",
]
