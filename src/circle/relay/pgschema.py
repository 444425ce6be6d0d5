"""The relay's PostgreSQL schema, as an append-only list of migrations.

`migrate()` brings a database up to the newest version under an advisory
lock, so relay processes that start together do not race; a database newer
than this code is refused (StoreCorrupt) rather than used. Each migration is
one transaction. The rules the schema serves are described in pgstore.py.
"""

from __future__ import annotations

from typing import Any

import psycopg

from circle.errors import StoreCorrupt

#: Arbitrary constants for pg_advisory_lock: schema migration, expiry.
LOCK_MIGRATE = 0x63697263_6C650001
LOCK_EXPIRE = 0x63697263_6C650002

# Each entry: (version, SQL). Append only; never edit an applied one.
MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE relay_meta (key text PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE relay_mailboxes (
    id bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    token_hash bytea NOT NULL,
    last_seen bigint NOT NULL,
    count bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    -- cursors are counted per mailbox: a client learns nothing of other circles
    next_cursor bigint NOT NULL DEFAULT 1
);
-- the least recently used empty mailbox (eviction when full, expiry of empty ones)
CREATE INDEX relay_mailboxes_empty ON relay_mailboxes (count, last_seen);
CREATE TABLE relay_envelopes (
    mailbox bytea NOT NULL,
    cursor bigint NOT NULL,
    eid bytea NOT NULL,
    stored_at bigint NOT NULL,
    size integer NOT NULL,
    data bytea NOT NULL,
    -- "everything in mailbox M after cursor C" is a range scan of this key
    PRIMARY KEY (mailbox, cursor),
    UNIQUE (mailbox, eid)
);
-- ciphertext does not compress: store large values out of line, as they are
ALTER TABLE relay_envelopes ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE INDEX relay_envelopes_by_time ON relay_envelopes (stored_at);
CREATE TABLE relay_usage (
    shard smallint PRIMARY KEY,
    count bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0
);
-- one row per running relay process: counts only (see relay/stats.py)
CREATE TABLE relay_processes (
    id bytea PRIMARY KEY,
    started_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    counters jsonb NOT NULL
);

-- One put, one round trip. Returns the cursor, whether it was a duplicate,
-- and why it was refused (NULL when stored).
CREATE FUNCTION relay_put(p_mailbox bytea, p_eid bytea, p_t bigint, p_data bytea,
                          p_shard smallint, p_max_count bigint, p_max_bytes bigint,
                          p_total_bytes bigint,
                          OUT o_cursor bigint, OUT o_duplicate boolean, OUT o_refused text)
LANGUAGE plpgsql AS $$
DECLARE
    b_count bigint;
    b_bytes bigint;
    b_next bigint;
    n bigint := octet_length(p_data);
    total bigint;
BEGIN
    o_cursor := 0;
    o_duplicate := false;
    o_refused := NULL;
    -- the row lock orders this mailbox's cursors by commit (see pgstore.py)
    SELECT m.count, m.bytes, m.next_cursor INTO b_count, b_bytes, b_next
      FROM relay_mailboxes m WHERE m.id = p_mailbox FOR UPDATE;
    IF NOT FOUND THEN
        o_refused := 'unregistered';
        RETURN;
    END IF;
    SELECT e.cursor INTO o_cursor FROM relay_envelopes e
     WHERE e.mailbox = p_mailbox AND e.eid = p_eid;
    IF FOUND THEN
        o_duplicate := true;
        RETURN;
    END IF;
    o_cursor := 0;
    IF b_count + 1 > p_max_count OR b_bytes + n > p_max_bytes THEN
        o_refused := 'mailbox';
        RETURN;
    END IF;
    SELECT COALESCE(SUM(u.bytes), 0) INTO total FROM relay_usage u;
    IF total + n > p_total_bytes THEN
        o_refused := 'total';
        RETURN;
    END IF;
    o_cursor := b_next;
    INSERT INTO relay_envelopes (mailbox, cursor, eid, stored_at, size, data)
         VALUES (p_mailbox, o_cursor, p_eid, p_t, n, p_data);
    UPDATE relay_mailboxes SET count = count + 1, bytes = bytes + n, last_seen = p_t,
                               next_cursor = b_next + 1
     WHERE id = p_mailbox;
    INSERT INTO relay_usage AS u (shard, count, bytes) VALUES (p_shard, 1, n)
        ON CONFLICT (shard) DO UPDATE SET count = u.count + 1, bytes = u.bytes + n;
END $$;
"""),
]


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Bring the schema up to date; returns the version. Safe to call from
    several processes at once (an advisory lock serializes them)."""
    newest = MIGRATIONS[-1][0]
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_MIGRATE,))
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS relay_schema (version integer PRIMARY KEY,"
                     " applied_at timestamptz NOT NULL DEFAULT now())")
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM relay_schema").fetchone()
        current = int(row[0]) if row else 0
        if current > newest:
            raise StoreCorrupt(f"the relay database has schema version {current}, newer than this "
                               f"relay ({newest}): upgrade circle")
        for version, sql in MIGRATIONS:
            if version <= current:
                continue
            with conn.transaction():
                conn.execute(sql)  # our own constant text: no parameters, several statements
                conn.execute("INSERT INTO relay_schema (version) VALUES (%s)", (version,))
            current = version
        return current
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_MIGRATE,))
