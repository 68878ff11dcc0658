-- One home for the job types: `app.jobs.models.JobType`. The migration runner
-- writes its members into this table on every start, and the database takes
-- its rules (which types change the mailbox, which can be undone) from here.

CREATE TABLE imap_job_types (
    job_type     text PRIMARY KEY,
    is_mutation  boolean NOT NULL,
    is_undoable  boolean NOT NULL
);

INSERT INTO imap_job_types (job_type, is_mutation, is_undoable) VALUES
    ('sync', false, false), ('clean', true, true), ('mark_read', true, true),
    ('mark_unread', true, true), ('move', true, true), ('label', true, true),
    ('undo', true, false);

ALTER TABLE imap_jobs DROP CONSTRAINT imap_jobs_job_type_check;
ALTER TABLE imap_jobs ADD CONSTRAINT imap_jobs_job_type_known
    FOREIGN KEY (job_type) REFERENCES imap_job_types (job_type);

-- Safety rule: no mailbox change without a recorded approval. A CHECK cannot
-- read imap_job_types, so the rule is a trigger; it keeps the constraint's name
-- and raises check_violation like the CHECK it replaces.
ALTER TABLE imap_jobs DROP CONSTRAINT imap_jobs_mutation_needs_approval;

CREATE FUNCTION imap_jobs_mutation_needs_approval() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.approval_id IS NULL
       AND NOT EXISTS (SELECT 1 FROM imap_job_types t
                       WHERE t.job_type = NEW.job_type AND NOT t.is_mutation) THEN
        RAISE EXCEPTION 'a % job needs an approval', NEW.job_type
            USING ERRCODE = 'check_violation', CONSTRAINT = 'imap_jobs_mutation_needs_approval';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER imap_jobs_mutation_needs_approval
    BEFORE INSERT OR UPDATE OF job_type, approval_id ON imap_jobs
    FOR EACH ROW EXECUTE FUNCTION imap_jobs_mutation_needs_approval();
