-- Whether a message mentions the person, decided by the executor over the
-- whole message at ingest (SPEC §8: not only the part the mirror keeps), and
-- the fingerprint of the identity it was decided against.
--   mention_identity NULL, or another identity's: not checked against the
--     current identity; /clean excludes the row until a `rescore` job has
--     re-evaluated it.
--   mentions_you NULL under the current identity: checked, but the message
--     could not be read in full (and the server could not say); excluded too.

ALTER TABLE emails
    ADD COLUMN mentions_you boolean,
    ADD COLUMN mention_identity text;

-- Finds rows not checked against the current identity without a full scan
-- (`mention_identity IS NULL OR < fp OR > fp`: a b-tree cannot serve `<>`).
CREATE INDEX emails_mention_identity ON emails (mention_identity);
