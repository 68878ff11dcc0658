-- Retries wait out a backoff before they can be claimed again.
-- (An early 001 carried this line itself; IF NOT EXISTS keeps such databases working.)
ALTER TABLE imap_jobs ADD COLUMN IF NOT EXISTS run_after timestamptz NOT NULL DEFAULT now();
