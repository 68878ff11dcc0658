-- The claim takes the oldest runnable jobs in (created_at, job_id) order. The
-- pending index of 001 holds created_at only, so with many jobs pending the
-- planner read all of them and sorted them to take a few (measured: 3,000
-- pending rows read per claim of 3, in bench/queue.py). An index in the
-- claim's exact order lets it stop after the rows it takes.
CREATE INDEX imap_jobs_pending_order ON imap_jobs (created_at, job_id) WHERE status = 'pending';
DROP INDEX imap_jobs_pending;
