"""ibflow.db migrations against a real PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path

import asyncpg
import pytest

from ibflow.db import (
    LOCK_KEY,
    Migration,
    MigrationChecksumError,
    MigrationError,
    apply_migrations,
    create_pool,
    discover,
    discover_dir,
)

pytestmark = pytest.mark.integration

PKG = "test_pkg"


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql, encoding="utf-8")
    return directory


async def records(url: str) -> list[tuple[str, str, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT package, name, checksum FROM ibflow_schema_migrations ORDER BY applied_at, name"
        )
    finally:
        await conn.close()
    return [(r["package"], r["name"], r["checksum"]) for r in rows]


async def table_exists(url: str, table: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table))
    finally:
        await conn.close()


async def test_two_migration_runners_started_together_apply_each_file_once(
    database_url: str, tmp_path: Path
) -> None:
    # Neither file is idempotent: running one twice fails with "already exists".
    folder = write(
        tmp_path / "m",
        {
            "0001_slow.sql": "SELECT pg_sleep(0.5); CREATE TABLE first_t (id int PRIMARY KEY);",
            "0002_second.sql": "CREATE TABLE second_t (id int REFERENCES first_t (id));",
        },
    )
    migrations = discover_dir(PKG, folder)
    conn_a = await asyncpg.connect(database_url)
    conn_b = await asyncpg.connect(database_url)
    observer = await asyncpg.connect(database_url)
    try:
        runs = asyncio.gather(
            apply_migrations(conn_a, migrations), apply_migrations(conn_b, migrations)
        )
        waiting_seen = 0
        while not runs.done():
            waiting_seen = max(
                waiting_seen,
                await observer.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                ),
            )
            await asyncio.sleep(0.02)
        results = await runs
    finally:
        for conn in (conn_a, conn_b, observer):
            await conn.close()

    assert waiting_seen == 1, "the second runner should have waited on the advisory lock"
    assert sorted(results) == [[], [f"{PKG}/0001_slow.sql", f"{PKG}/0002_second.sql"]]
    assert [(p, n) for p, n, _ in await records(database_url)] == [
        (PKG, "0001_slow.sql"),
        (PKG, "0002_second.sql"),
    ]


async def test_changed_applied_migration_is_refused(database_url: str, tmp_path: Path) -> None:
    folder = write(
        tmp_path / "m",
        {
            "0001_a.sql": "CREATE TABLE a (id int);",
            "0002_b.sql": "CREATE TABLE b (id int);",
        },
    )
    assert await apply_migrations(database_url, discover_dir(PKG, folder)) == [
        f"{PKG}/0001_a.sql",
        f"{PKG}/0002_b.sql",
    ]
    before = await records(database_url)

    # An edited old file plus a new one: the new one must not be applied either.
    write(folder, {"0002_b.sql": "CREATE TABLE b (id bigint);", "0003_c.sql": "CREATE TABLE c ();"})
    with pytest.raises(MigrationChecksumError, match=rf"{PKG}/0002_b\.sql") as info:
        await apply_migrations(database_url, discover_dir(PKG, folder))

    assert "0001_a.sql" not in str(info.value)
    assert not await table_exists(database_url, "c")
    assert await records(database_url) == before


async def test_failing_migration_rolls_back_whole_file(database_url: str, tmp_path: Path) -> None:
    folder = write(
        tmp_path / "m",
        {
            "0001_ok.sql": "CREATE TABLE ok_t (id int);",
            "0002_bad.sql": (
                "CREATE TABLE half_t (id int);\nINSERT INTO ok_t VALUES (1);\nSELECT 1 / 0;\n"
            ),
            "0003_later.sql": "CREATE TABLE later_t (id int);",
        },
    )
    with pytest.raises(MigrationError) as info:
        await apply_migrations(database_url, discover_dir(PKG, folder))

    message = str(info.value)
    assert not isinstance(info.value, MigrationChecksumError)
    assert f"{PKG}/0002_bad.sql" in message
    assert "division by zero" in message
    assert "SQLSTATE 22012" in message
    assert isinstance(info.value.__cause__, asyncpg.DivisionByZeroError)
    # Earlier files stay applied; nothing of the failing file or after it remains.
    assert [n for _, n, _ in await records(database_url)] == ["0001_ok.sql"]
    assert await table_exists(database_url, "ok_t")
    assert not await table_exists(database_url, "half_t")
    assert not await table_exists(database_url, "later_t")
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM ok_t") == 0
    finally:
        await conn.close()

    # Once the file is fixed (it was never applied, so editing it is fine), the run resumes.
    write(folder, {"0002_bad.sql": "CREATE TABLE half_t (id int);"})
    assert await apply_migrations(database_url, discover_dir(PKG, folder)) == [
        f"{PKG}/0002_bad.sql",
        f"{PKG}/0003_later.sql",
    ]

    # A syntax error is reported with its line in the file.
    write(
        folder, {"0004_typo.sql": "-- comment\nCREATE TABLE typo_t (id int);\nCREAT TABLE x ();\n"}
    )
    with pytest.raises(MigrationError, match=r"0004_typo\.sql.*syntax error.*line 3"):
        await apply_migrations(database_url, discover_dir(PKG, folder))
    assert not await table_exists(database_url, "typo_t")


async def test_migrations_apply_in_name_order_and_skip_applied(
    database_url: str, tmp_path: Path
) -> None:
    # Written in reverse order; each file depends on the one before it.
    folder = tmp_path / "m"
    write(folder, {"0010_c.sql": "INSERT INTO log_t VALUES ('c');"})
    write(folder, {"0002_b.sql": "INSERT INTO log_t VALUES ('b');"})
    write(folder, {"0001_a.sql": "CREATE TABLE log_t (step text, seq serial);"})
    write(folder, {"README.md": "not a migration", "notes.txt": "ignored"})
    write(folder, {"0003_nothing.sql": "-- intentionally empty\n"})

    first = await apply_migrations(database_url, discover_dir(PKG, folder))
    assert first == [
        f"{PKG}/0001_a.sql",
        f"{PKG}/0002_b.sql",
        f"{PKG}/0003_nothing.sql",
        f"{PKG}/0010_c.sql",
    ]
    assert await apply_migrations(database_url, discover_dir(PKG, folder)) == []

    write(folder, {"0011_d.sql": "INSERT INTO log_t VALUES ('d');"})
    assert await apply_migrations(database_url, discover_dir(PKG, folder)) == [f"{PKG}/0011_d.sql"]

    conn = await asyncpg.connect(database_url)
    try:
        steps = await conn.fetch("SELECT step FROM log_t ORDER BY seq")
    finally:
        await conn.close()
    assert [r["step"] for r in steps] == ["b", "c", "d"]
    stored = await records(database_url)
    assert [n for _, n, _ in stored] == [
        "0001_a.sql",
        "0002_b.sql",
        "0003_nothing.sql",
        "0010_c.sql",
        "0011_d.sql",
    ]
    expected = hashlib.sha256((folder / "0002_b.sql").read_bytes()).hexdigest()
    assert stored[1][2] == expected


async def test_new_migration_numbered_below_an_applied_one_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    folder = write(tmp_path / "m", {"0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 1;"})
    await apply_migrations(database_url, discover_dir(PKG, folder))
    write(folder, {"0002_b.sql": "CREATE TABLE b ();"})

    with pytest.raises(MigrationError, match=rf"{PKG}/0002_b\.sql") as info:
        await apply_migrations(database_url, discover_dir(PKG, folder))

    assert not isinstance(info.value, MigrationChecksumError)
    assert not await table_exists(database_url, "b")


async def test_packages_are_tracked_separately_and_applied_in_the_order_given(
    database_url: str, tmp_path: Path
) -> None:
    lib = write(tmp_path / "lib", {"0001_base.sql": "CREATE TABLE base_t (id int PRIMARY KEY);"})
    svc = write(
        tmp_path / "svc", {"0001_base.sql": "CREATE TABLE svc_t (id int REFERENCES base_t);"}
    )
    applied = await apply_migrations(
        database_url, discover_dir("lib", lib), discover_dir("svc", svc)
    )
    assert applied == ["lib/0001_base.sql", "svc/0001_base.sql"]
    assert [(p, n) for p, n, _ in await records(database_url)] == [
        ("lib", "0001_base.sql"),
        ("svc", "0001_base.sql"),
    ]


async def test_apply_migrations_accepts_url_pool_and_connection(
    database_url: str, tmp_path: Path
) -> None:
    folder = write(tmp_path / "m", {"0001_a.sql": "CREATE TABLE a ();"})
    one = discover_dir(PKG, folder)
    assert await apply_migrations(database_url, one) == [f"{PKG}/0001_a.sql"]

    write(folder, {"0002_b.sql": "CREATE TABLE b ();"})
    pool = await create_pool(database_url, max_size=2)
    try:
        assert await apply_migrations(pool, discover_dir(PKG, folder)) == [f"{PKG}/0002_b.sql"]
        # The advisory lock went back with the pooled connection.
        assert await pool.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
    finally:
        await pool.close()

    write(folder, {"0003_c.sql": "CREATE TABLE c ();"})
    conn = await asyncpg.connect(database_url)
    try:
        assert await apply_migrations(conn, discover_dir(PKG, folder)) == [f"{PKG}/0003_c.sql"]
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
    finally:
        await conn.close()


async def test_connection_inside_a_transaction_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    folder = write(tmp_path / "m", {"0001_a.sql": "CREATE TABLE a ();"})
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            with pytest.raises(MigrationError, match="outside any transaction"):
                await apply_migrations(conn, discover_dir(PKG, folder))
    finally:
        await conn.close()
    assert not await table_exists(database_url, "a")


async def test_migration_that_commits_by_itself_is_reported(
    database_url: str, tmp_path: Path
) -> None:
    folder = write(tmp_path / "m", {"0001_tx.sql": "COMMIT; CREATE TABLE a ();"})
    with pytest.raises(MigrationError, match=r"0001_tx\.sql.*BEGIN/COMMIT"):
        await apply_migrations(database_url, discover_dir(PKG, folder))
    assert await records(database_url) == []


async def test_library_migrations_are_discovered_from_the_ibflow_db_package(
    database_url: str,
) -> None:
    shipped = discover("ibflow.db")
    assert [m.name for m in shipped] == [
        "0001_inbox.sql",
        "0002_outbox.sql",
        "0003_outbox_relay_after.sql",
    ]
    assert all(isinstance(m, Migration) and m.package == "ibflow.db" for m in shipped)

    assert await apply_migrations(database_url, "ibflow.db") == [
        "ibflow.db/0001_inbox.sql",
        "ibflow.db/0002_outbox.sql",
        "ibflow.db/0003_outbox_relay_after.sql",
    ]
    assert await apply_migrations(database_url, "ibflow.db") == []
    conn = await asyncpg.connect(database_url)
    try:
        columns = await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'ibflow_inbox' ORDER BY ordinal_position"
        )
    finally:
        await conn.close()
    assert [(c["column_name"], c["data_type"]) for c in columns] == [
        ("consumer", "text"),
        ("msg_id", "text"),
        ("received_at", "timestamp with time zone"),
    ]


async def run_cli(*args: str) -> tuple[int, str, str]:
    env = {**os.environ}
    env.pop("IBFLOW_DATABASE_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "error",
        "-m",
        "ibflow.db.migrations",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_applies_package_migrations_once(database_url: str) -> None:
    code, out, err = await run_cli("--database-url", database_url, "ibflow.db")
    assert (code, out.strip()) == (0, "3 migration(s) applied"), err
    assert "applied migration ibflow.db/0001_inbox.sql" in err
    assert "applied migration ibflow.db/0002_outbox.sql" in err
    assert "applied migration ibflow.db/0003_outbox_relay_after.sql" in err
    assert "Warning" not in err

    code, out, err = await run_cli("--database-url", database_url, "ibflow.db")
    assert (code, out.strip()) == (0, "nothing to apply"), err

    code, _, err = await run_cli("--database-url", database_url, "no_such_package_xyz")
    assert code == 1
    assert "no_such_package_xyz" in err

    code, _, err = await run_cli("ibflow.db")
    assert code == 2
    assert "--database-url is required" in err
