-- The daily quota check (`Store::sender_usage`) counts and sums a
-- facility's envelopes of the last 24 hours on every upload. With `size`
-- in the index it reads the index alone instead of one table row per
-- envelope (SQLite, 1,650 envelopes in the day: 2.5 ms -> 0.15 ms per
-- check, bench/quota-query.py).
CREATE INDEX envelopes_sender_size ON envelopes (sender, accepted_at, size);
-- Built under a write lock on `envelopes`: on a large table the upgrade
-- that runs this holds submissions back until the index is built.
DROP INDEX envelopes_sender;
