-- Bounded growth (issue 10, item 5): the executor's cleaner (executor/cleaner.py)
-- deletes finished read-only jobs (sync, rescore) with their events once they
-- are older than SECRETARY_RETENTION_DAYS, and of a finished mutation job only
-- its events: the job row, its approval and its change record stay as long as
-- undo is offered (that is, for good).

-- 1. What a finished job's card shows, folded from its events by the one fold
--    (app/web/progress.py): `{"v", "seq", "iterations", "last", "last_message"}`.
--    Written once the job is finished, by the web when it first folds it and by
--    the cleaner before it deletes the events it was folded from, so a card
--    renders the same before and after its events are gone. NULL: not folded yet.
ALTER TABLE imap_jobs ADD COLUMN progress jsonb;

-- 2. When the cleaner deleted a kept (mutation) job's events; a job with it set
--    is done with, so the cleaner's candidates stay few however old the queue.
ALTER TABLE imap_jobs ADD COLUMN events_pruned_at timestamptz;

-- The cleaner's scan: finished jobs not yet cleaned, oldest first.
CREATE INDEX imap_jobs_retention ON imap_jobs ((coalesce(finished_at, created_at)))
    WHERE status IN ('completed', 'failed', 'cancelled') AND events_pruned_at IS NULL;
