#!/usr/bin/env python3
"""Benchmark: the relay's daily quota check, with and without `size` in the
sender index (migrations/*/0006_quota_index.sql).

The check (`Store::sender_usage`) runs on every upload when quotas are on:
COUNT(*), SUM(size) and MIN(accepted_at) over one facility's envelopes of
the last 24 hours. This builds the relay's `envelopes` table in SQLite
(Python's sqlite3 module) with ENVELOPES rows over 30 days from 100
facilities plus one busy facility sending a quarter of them, then times the
check for the busy facility RUNS times against each index.

    bench/quota-query.py [ENVELOPES (200000)] [RUNS (200)]
"""
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time

ENVELOPES = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
NOW = 1_800_000_000
DAY = 86_400
QUERY = ("SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT), MIN(accepted_at) "
         "FROM envelopes WHERE sender = ? AND accepted_at >= ?")
INDEXES = {
    "before (sender, accepted_at)": "CREATE INDEX envelopes_sender ON envelopes (sender, accepted_at)",
    "after (sender, accepted_at, size)":
        "CREATE INDEX envelopes_sender_size ON envelopes (sender, accepted_at, size)",
}

rng = random.Random(13)
rows = []
for i in range(ENVELOPES):
    sender = "busy" if i % 4 == 0 else f"f{rng.randrange(100):03d}"
    rows.append(("%064x" % rng.getrandbits(256), sender, 65_536 + rng.randrange(4096),
                 NOW - rng.randrange(30 * DAY)))

medians = {}
with tempfile.TemporaryDirectory() as tmp:
    for name, index in INDEXES.items():
        path = os.path.join(tmp, "relay.db")
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE envelopes (envelope_id TEXT PRIMARY KEY, sender TEXT NOT NULL, "
                   "size BIGINT NOT NULL, accepted_at BIGINT NOT NULL, "
                   "blob_deleted BIGINT NOT NULL DEFAULT 0, expires_at BIGINT)")
        db.execute(index)
        db.executemany("INSERT INTO envelopes (envelope_id, sender, size, accepted_at) "
                       "VALUES (?, ?, ?, ?)", rows)
        db.commit()
        db.close()
        db = sqlite3.connect(path)
        plan = db.execute("EXPLAIN QUERY PLAN " + QUERY, ("busy", NOW - DAY)).fetchall()[0][-1]
        times = []
        for _ in range(RUNS):
            t = time.perf_counter()
            count, total, _oldest = db.execute(QUERY, ("busy", NOW - DAY)).fetchone()
            times.append(time.perf_counter() - t)
        db.close()
        os.remove(path)
        medians[name] = statistics.median(times)
        print(f"{name}: median {1000 * medians[name]:.3f} ms per check over {RUNS} runs "
              f"({count} envelopes of the busy facility in the day, {total} bytes); plan: {plan}")
before, after = medians.values()
print(f"before/after = {before / after:.1f}")
