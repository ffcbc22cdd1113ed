"""Discovering migration files (no database needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import ibflow.db
from ibflow.db import LOCK_KEY, Migration, MigrationError, discover, discover_dir
from ibflow.db.migrations import _has_statements


def write(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def test_discover_dir_sorts_by_name_and_reads_sql_and_checksum(tmp_path: Path) -> None:
    folder = write(
        tmp_path,
        {
            "0010_j.sql": b"SELECT 10;",
            "0002_b.sql": "SELECT 'é';".encode(),
            "0001_a.sql": b"SELECT 1;",
            "README.md": b"docs",
            "__init__.py": b"",
        },
    )
    (folder / "0003_dir.sql").mkdir()  # a directory is not a migration

    found = discover_dir("pkg", folder)

    assert [m.name for m in found] == ["0001_a.sql", "0002_b.sql", "0010_j.sql"]
    assert found[1] == Migration(
        package="pkg",
        name="0002_b.sql",
        sql="SELECT 'é';",
        checksum=hashlib.sha256("SELECT 'é';".encode()).hexdigest(),
    )
    assert found[1].qualified_name == "pkg/0002_b.sql"
    assert "SELECT" not in repr(found[1])


def test_checksum_covers_the_exact_bytes(tmp_path: Path) -> None:
    first = discover_dir("pkg", write(tmp_path / "a", {"0001_a.sql": b"SELECT 1;\n"}))
    second = discover_dir("pkg", write(tmp_path / "b", {"0001_a.sql": b"SELECT 1; \n"}))
    assert first[0].checksum != second[0].checksum


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"init.sql": b""}, r"pkg/init\.sql: name must look like 0001_description\.sql"),
        ({"0001-a.sql": b""}, r"pkg/0001-a\.sql: name must look like"),
        ({"0001_a.sql": b"", "0001_b.sql": b""}, r"pkg/0001_a\.sql and pkg/0001_b\.sql share"),
        ({"9_a.sql": b"", "10_b.sql": b""}, r"pkg/9_a\.sql sorts after pkg/10_b\.sql"),
        ({"0001_a.sql": b"\xff\xfe"}, r"pkg/0001_a\.sql is not UTF-8"),
    ],
)
def test_badly_named_or_encoded_files_are_refused(
    tmp_path: Path, files: dict[str, bytes], message: str
) -> None:
    with pytest.raises(MigrationError, match=message):
        discover_dir("pkg", write(tmp_path, files))


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        discover_dir("pkg", tmp_path / "nope")


def test_discover_reads_the_shipped_ibflow_db_migrations() -> None:
    shipped = discover("ibflow.db")
    assert [m.name for m in shipped] == [
        "0001_inbox.sql",
        "0002_outbox.sql",
        "0003_outbox_relay_after.sql",
    ]
    assert "CREATE TABLE ibflow_inbox" in shipped[0].sql
    assert "CREATE TABLE ibflow_outbox" in shipped[1].sql
    assert "ADD COLUMN relay_after" in shipped[2].sql
    for migration in shipped:
        source = Path(ibflow.db.__file__).parent / "migrations" / migration.name
        assert migration.checksum == hashlib.sha256(source.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("package", "message"),
    [
        ("no_such_package_xyz", "no_such_package_xyz"),
        ("ibflow.settings", "ibflow.settings"),  # a module, not a package
        ("ibflow.testing", "has no 'migrations' directory"),
    ],
)
def test_discover_names_the_package_it_cannot_use(package: str, message: str) -> None:
    with pytest.raises(MigrationError, match=message):
        discover(package)


def test_lock_key_is_a_fixed_signed_bigint() -> None:
    expected = int.from_bytes(hashlib.sha256(b"ibflow.migrations").digest()[:8], "big", signed=True)
    assert expected == LOCK_KEY
    assert -(2**63) <= LOCK_KEY < 2**63


def test_package_exports_resolve_and_unknown_names_raise() -> None:
    for name in ibflow.db.__all__:
        assert getattr(ibflow.db, name) is not None
    missing = "no_such_name"
    with pytest.raises(AttributeError, match=missing):
        getattr(ibflow.db, missing)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("", False),
        ("  \n;\n", False),
        ("-- only a comment\n/* and a\nblock */ ;", False),
        ("SELECT 1", True),
        ("-- header\nCREATE TABLE t ();", True),
        ("SELECT '--' AS dashes", True),
        ("/* a */ SELECT '/*'", True),
    ],
)
def test_files_without_statements_are_recognised(sql: str, expected: bool) -> None:
    assert _has_statements(sql) is expected
