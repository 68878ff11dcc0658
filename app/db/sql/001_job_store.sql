-- The job store: approvals, jobs, and their append-only event log.

CREATE TABLE approvals (
    approval_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    thread_id     text NOT NULL,
    interrupt_id  text NOT NULL,
    action        text NOT NULL,
    params        jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- the exact messages approved: [{folder, uidvalidity, uid, message_id, subject}, ...]
    messages      jsonb NOT NULL DEFAULT '[]'::jsonb,
    approved_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT approvals_one_per_interrupt UNIQUE (interrupt_id)
);

CREATE TABLE imap_jobs (
    job_id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_type          text NOT NULL
        CHECK (job_type IN ('sync', 'clean', 'mark_read', 'mark_unread', 'move', 'label', 'undo')),
    status            text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    payload           jsonb NOT NULL DEFAULT '{}'::jsonb,
    processed         int NOT NULL DEFAULT 0,
    total_estimate    int,
    cancel_requested  boolean NOT NULL DEFAULT false,
    error             text,
    attempt           int NOT NULL DEFAULT 0,
    max_attempts      int NOT NULL DEFAULT 3,
    lease_owner       text,
    lease_expires_at  timestamptz,
    last_seq          int NOT NULL DEFAULT 0,
    idempotency_key   text,
    approval_id       uuid REFERENCES approvals (approval_id),
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    -- Safety rule: no mailbox change without a recorded approval.
    CONSTRAINT imap_jobs_mutation_needs_approval
        CHECK (job_type = 'sync' OR approval_id IS NOT NULL),
    CONSTRAINT imap_jobs_running_has_lease
        CHECK (status <> 'running' OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

CREATE UNIQUE INDEX imap_jobs_idempotency_key ON imap_jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The producer's claim scans pending jobs oldest first.
CREATE INDEX imap_jobs_pending ON imap_jobs (created_at) WHERE status = 'pending';
-- The reaper scans running jobs; lease_expires_at is deliberately not indexed
-- (it changes on every heartbeat, and an index on it would churn).
CREATE INDEX imap_jobs_running ON imap_jobs (job_id) WHERE status = 'running';
CREATE INDEX imap_jobs_created ON imap_jobs (created_at DESC);

CREATE TABLE imap_job_events (
    job_id      uuid NOT NULL REFERENCES imap_jobs (job_id) ON DELETE CASCADE,
    seq         int NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    level       text NOT NULL DEFAULT 'info' CHECK (level IN ('debug', 'info', 'warning', 'error')),
    message     text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (job_id, seq)
);

-- Status transitions are enforced here so every client (web, executor, CLI,
-- psql) obeys the same lifecycle: pending -> running -> completed|failed|cancelled,
-- running -> pending only when a lease is lost, and terminal states never change.
CREATE FUNCTION imap_jobs_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = OLD.status THEN
        IF OLD.status IN ('completed', 'failed', 'cancelled')
           AND (NEW.processed, NEW.total_estimate, NEW.error, NEW.cancel_requested)
               IS DISTINCT FROM (OLD.processed, OLD.total_estimate, OLD.error, OLD.cancel_requested) THEN
            RAISE EXCEPTION 'job % is % and can no longer change', OLD.job_id, OLD.status
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF (OLD.status, NEW.status) IN (
        ('pending', 'running'), ('pending', 'cancelled'), ('pending', 'failed'),
        ('running', 'pending'), ('running', 'completed'), ('running', 'failed'),
        ('running', 'cancelled')) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'job % cannot go from % to %', OLD.job_id, OLD.status, NEW.status
        USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER imap_jobs_transition BEFORE UPDATE OF status ON imap_jobs
    FOR EACH ROW EXECUTE FUNCTION imap_jobs_check_transition();

-- Wake-up hints. Listeners must still poll: a NOTIFY can be missed on reconnect.
CREATE FUNCTION imap_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.status = 'pending' THEN
        PERFORM pg_notify('imap_jobs_pending', NEW.job_type);
    ELSIF TG_OP = 'UPDATE' AND NEW.status = 'pending' AND OLD.status <> 'pending' THEN
        PERFORM pg_notify('imap_jobs_pending', NEW.job_type);
    END IF;
    IF TG_OP = 'INSERT'
       OR (NEW.status, NEW.processed, NEW.total_estimate, NEW.error, NEW.cancel_requested, NEW.last_seq)
          IS DISTINCT FROM (OLD.status, OLD.processed, OLD.total_estimate, OLD.error, OLD.cancel_requested, OLD.last_seq) THEN
        PERFORM pg_notify('imap_job_updates', NEW.job_id::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER imap_jobs_notify AFTER INSERT OR UPDATE ON imap_jobs
    FOR EACH ROW EXECUTE FUNCTION imap_jobs_notify();
