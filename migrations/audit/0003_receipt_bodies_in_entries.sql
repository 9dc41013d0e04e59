-- Each receipt's body is already in its log entry (entries.entry, at
-- $.receipt.body): the receipts table keeps only what the reports search
-- by (envelope, purpose, signer) and the body is read from the entry.
ALTER TABLE receipts DROP COLUMN body;
