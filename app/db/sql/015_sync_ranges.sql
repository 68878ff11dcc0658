-- A parallel first sync (executor/sync_parallel.py): a big folder's first pass
-- is split into UID ranges fetched over several IMAP connections of the
-- account. The split is recorded once, before any range is fetched, and each
-- range's progress (`done_uid`: every UID of the range up to it is mirrored)
-- commits in the same fenced transaction as the rows it covers. A retry, or
-- the next sync of the folder, continues the recorded ranges and never splits
-- again; the folder's cursor (`mail_folders.last_seen_uid`) only moves as far
-- as every range below it is done. The rows go when the last range is done.
CREATE TABLE mail_folder_ranges (
    folder       text NOT NULL REFERENCES mail_folders (folder) ON DELETE CASCADE,
    uidvalidity  bigint NOT NULL,
    lo           bigint NOT NULL,
    hi           bigint NOT NULL,
    done_uid     bigint NOT NULL,
    PRIMARY KEY (folder, uidvalidity, lo),
    CHECK (lo <= hi),
    CHECK (done_uid BETWEEN lo - 1 AND hi)
);
