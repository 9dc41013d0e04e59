#!/usr/bin/env python3
"""Benchmark: the relay's daily quota check, with and without `size` in the
sender index (migrations/*/0006_quota_index.sql).

The check (`SENDER_USAGE` in src/relay/store.rs, read from there) runs on every
upload when quotas are on: COUNT(*), SUM(size) and MIN(accepted_at) over one
facility's envelopes of the last 24 hours. This builds the relay's SQLite
schema (Python's sqlite3 module) by running the relay's own migrations,
"before" up to 0005 and "after" up to 0006, fills `envelopes` with
ENVELOPES rows over 30 days from 100 facilities plus one busy facility
sending a quarter of them, then times the check for the busy facility RUNS
times against each schema.

    bench/quota-query.py [ENVELOPES (200000)] [RUNS (200)]
"""
import glob
import os
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time

ENVELOPES = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
NOW = 1_800_000_000
DAY = 86_400
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
with open(os.path.join(ROOT, "src/relay/store.rs"), encoding="utf-8") as f:
    QUERY = re.search(r'const SENDER_USAGE: &str = "([^"]+)";', f.read()).group(1)
# sqlx numbers its parameters ($1); Python's sqlite3 takes them as ?1.
QUERY = re.sub(r"\$(\d)", r"?\1", QUERY)
MIGRATIONS = sorted(glob.glob(os.path.join(ROOT, "migrations/sqlite/*.sql")))
SCHEMAS = {
    "before (sender, accepted_at)": [m for m in MIGRATIONS if os.path.basename(m) < "0006"],
    "after (sender, accepted_at, size)": [m for m in MIGRATIONS if os.path.basename(m) < "0007"],
}

rng = random.Random(13)
rows = []
for i in range(ENVELOPES):
    sender = "busy" if i % 4 == 0 else f"f{rng.randrange(100):03d}"
    rows.append(("%064x" % rng.getrandbits(256), sender, 65_536 + rng.randrange(4096),
                 NOW - rng.randrange(30 * DAY)))

medians = {}
with tempfile.TemporaryDirectory() as tmp:
    for name, migrations in SCHEMAS.items():
        path = os.path.join(tmp, "relay.db")
        db = sqlite3.connect(path)
        for m in migrations:
            with open(m, encoding="utf-8") as f:
                db.executescript(f.read())
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
