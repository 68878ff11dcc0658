-- Approvals bind mutation jobs, and what each mutation changed is recorded as
-- it changes (SPEC §8). The rules live here, so every writer (web, executor,
-- CLI, psql) obeys them; each refusal is a check_violation with a reason.

-- 1. An approval is the record of what the person approved: at least one exact
--    message identity (folder, UIDVALIDITY, UID), for a mutation job type, and
--    once written it never changes. (NOT VALID: rows written before this rule
--    stay readable; every new or updated row is checked.)
ALTER TABLE approvals ADD CONSTRAINT approvals_names_messages
    CHECK (jsonb_typeof(messages) = 'array' AND jsonb_array_length(messages) > 0) NOT VALID;
ALTER TABLE approvals ADD CONSTRAINT approvals_params_object
    CHECK (jsonb_typeof(params) = 'object') NOT VALID;
ALTER TABLE approvals ADD CONSTRAINT approvals_action_known
    FOREIGN KEY (action) REFERENCES imap_job_types (job_type) NOT VALID;

-- 2. What a mutation job changed, message by message, written by its worker in
--    the fenced transactions of its batches: 'intended' (with the flags the
--    server showed) before a batch touches IMAP, then 'applied' (with where the
--    message went, COPYUID's new UID) in the same transaction as the mirror
--    update and the progress event. A retry continues from these rows; undo
--    reads only them. An undo job records its own progress here too.
CREATE TABLE imap_job_changes (
    job_id             uuid NOT NULL REFERENCES imap_jobs (job_id) ON DELETE CASCADE,
    -- the message as the approval names it (for an undo: as the undone job's record names it)
    folder             text NOT NULL,
    uidvalidity        bigint NOT NULL,
    uid                bigint NOT NULL,
    message_id         text,               -- normalised (no angle brackets), from the server
    subject            text NOT NULL DEFAULT '',
    state              text NOT NULL
        CHECK (state IN ('intended', 'applied', 'skipped', 'failed')),
    attempt            int NOT NULL,       -- the attempt that first wrote the row
    flags_before       text[],             -- as the server showed them before the job touched it
    flags_added        text[] NOT NULL DEFAULT '{}',   -- flags the job sets that were not there
    flags_removed      text[] NOT NULL DEFAULT '{}',   -- flags the job clears that were there
    flags_after        text[],
    folder_after       text,               -- where the job puts it (planned while 'intended')
    uidvalidity_after  bigint,
    uid_after          bigint,             -- from COPYUID, or found by exact Message-ID
    uid_floor          bigint,             -- folder_after's UIDNEXT before the move: a moved copy has uid >= this
    reason             text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, folder, uidvalidity, uid),
    CONSTRAINT imap_job_changes_touched_has_before
        CHECK (state = 'skipped' OR flags_before IS NOT NULL)
);

-- A row only moves forward (intended -> applied | skipped | failed), and what an
-- earlier attempt saw first (flags before, e.g. \Seen set before a MOVE failed)
-- is never rewritten by a later one.
CREATE FUNCTION imap_job_changes_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state <> 'intended' THEN
        RAISE EXCEPTION 'the recorded change of job % to %/%/% is % and final',
            OLD.job_id, OLD.folder, OLD.uidvalidity, OLD.uid, OLD.state
            USING ERRCODE = 'check_violation';
    END IF;
    IF (NEW.job_id, NEW.folder, NEW.uidvalidity, NEW.uid, NEW.attempt, NEW.flags_before,
        NEW.flags_added, NEW.flags_removed, NEW.message_id, NEW.uid_floor, NEW.created_at)
       IS DISTINCT FROM
       (OLD.job_id, OLD.folder, OLD.uidvalidity, OLD.uid, OLD.attempt, OLD.flags_before,
        OLD.flags_added, OLD.flags_removed, OLD.message_id, OLD.uid_floor, OLD.created_at) THEN
        RAISE EXCEPTION 'what job % first recorded about %/%/% is never rewritten',
            OLD.job_id, OLD.folder, OLD.uidvalidity, OLD.uid
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER imap_job_changes_forward_only BEFORE UPDATE ON imap_job_changes
    FOR EACH ROW EXECUTE FUNCTION imap_job_changes_forward_only();

-- 3. Approval rows: well-formed identities, a mutation action, an undo that names
--    an undoable job and only messages that job's record lists; then immutable.
CREATE FUNCTION approvals_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    undone imap_jobs%ROWTYPE;
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'approval % is a record and is never deleted', OLD.approval_id
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW IS DISTINCT FROM OLD THEN
            RAISE EXCEPTION 'approval % is a record of what was approved and never changes',
                OLD.approval_id USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM imap_job_types t WHERE t.job_type = NEW.action AND t.is_mutation) THEN
        RAISE EXCEPTION 'an approval is for a mailbox change; % is not one', NEW.action
            USING ERRCODE = 'check_violation';
    END IF;
    IF jsonb_typeof(NEW.messages) IS DISTINCT FROM 'array' OR jsonb_array_length(NEW.messages) = 0 THEN
        RAISE EXCEPTION 'an approval names at least one message; an empty one approves nothing'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'approvals_names_messages';
    END IF;
    IF EXISTS (
        SELECT 1 FROM jsonb_array_elements(NEW.messages) m
        WHERE jsonb_typeof(m) IS DISTINCT FROM 'object'
           OR jsonb_typeof(m -> 'folder') IS DISTINCT FROM 'string'
           OR jsonb_typeof(m -> 'uidvalidity') IS DISTINCT FROM 'number'
           OR jsonb_typeof(m -> 'uid') IS DISTINCT FROM 'number'
           OR (m ->> 'uidvalidity') !~ '^[0-9]{1,18}$'
           OR (m ->> 'uid') !~ '^[0-9]{1,18}$') THEN
        RAISE EXCEPTION 'every approved message needs folder (text), uidvalidity and uid (integers)'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.action = 'undo' THEN
        IF coalesce(NEW.params ->> 'undo_of', '') !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
            RAISE EXCEPTION 'an undo approval names the job it undoes (params.undo_of)'
                USING ERRCODE = 'check_violation';
        END IF;
        SELECT * INTO undone FROM imap_jobs WHERE job_id = (NEW.params ->> 'undo_of')::uuid;
        IF NOT FOUND OR NOT EXISTS (SELECT 1 FROM imap_job_types t
                                    WHERE t.job_type = undone.job_type AND t.is_undoable) THEN
            RAISE EXCEPTION 'job % is not a change that can be undone', NEW.params ->> 'undo_of'
                USING ERRCODE = 'check_violation';
        END IF;
        IF EXISTS (
            SELECT 1 FROM jsonb_array_elements(NEW.messages) m
            WHERE NOT EXISTS (
                SELECT 1 FROM imap_job_changes c
                WHERE c.job_id = undone.job_id AND c.state <> 'skipped'
                  AND c.folder = m ->> 'folder'
                  AND c.uidvalidity = (m ->> 'uidvalidity')::bigint
                  AND c.uid = (m ->> 'uid')::bigint)) THEN
            RAISE EXCEPTION 'an undo approval lists only messages job % recorded changing', undone.job_id
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER approvals_check BEFORE INSERT OR UPDATE OR DELETE ON approvals
    FOR EACH ROW EXECUTE FUNCTION approvals_check();

-- 4. One job per approval, and the job is what was approved: its type is the
--    approved action, its params are the approved params, and the messages it
--    names (if it names any) are approved ones. A job for an approval that names
--    no message cannot exist. (imap_jobs_mutation_needs_approval, from 004,
--    still refuses a mutation job without an approval.)
CREATE UNIQUE INDEX imap_jobs_one_per_approval ON imap_jobs (approval_id);

CREATE FUNCTION imap_jobs_bound_to_approval() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    a approvals%ROWTYPE;
BEGIN
    IF NEW.approval_id IS NULL THEN
        RETURN NEW;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM imap_job_types t WHERE t.job_type = NEW.job_type AND t.is_mutation) THEN
        RAISE EXCEPTION 'a % job does not change the mailbox and takes no approval', NEW.job_type
            USING ERRCODE = 'check_violation', CONSTRAINT = 'imap_jobs_bound_to_approval';
    END IF;
    SELECT * INTO a FROM approvals WHERE approval_id = NEW.approval_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'approval % does not exist', NEW.approval_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'imap_jobs_bound_to_approval';
    END IF;
    IF a.action IS DISTINCT FROM NEW.job_type THEN
        RAISE EXCEPTION 'approval % approved %, not %', a.approval_id, a.action, NEW.job_type
            USING ERRCODE = 'check_violation', CONSTRAINT = 'imap_jobs_bound_to_approval';
    END IF;
    IF jsonb_typeof(a.messages) IS DISTINCT FROM 'array' OR jsonb_array_length(a.messages) = 0 THEN
        RAISE EXCEPTION 'approval % names no message, so it can start no job', a.approval_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'imap_jobs_bound_to_approval';
    END IF;
    IF jsonb_typeof(NEW.payload) IS DISTINCT FROM 'object'
       OR (NEW.payload - 'messages' - 'batch_size') IS DISTINCT FROM a.params THEN
        RAISE EXCEPTION 'the job''s parameters differ from what approval % approved', a.approval_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'imap_jobs_bound_to_approval';
    END IF;
    IF NEW.payload ? 'messages' THEN
        IF jsonb_typeof(NEW.payload -> 'messages') IS DISTINCT FROM 'array'
           OR jsonb_array_length(NEW.payload -> 'messages') = 0 THEN
            RAISE EXCEPTION 'payload.messages lists the approved messages; an empty list never means all'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'imap_jobs_bound_to_approval';
        END IF;
        IF EXISTS (
            SELECT m -> 'folder', m -> 'uidvalidity', m -> 'uid'
            FROM jsonb_array_elements(NEW.payload -> 'messages') m
            EXCEPT
            SELECT m -> 'folder', m -> 'uidvalidity', m -> 'uid'
            FROM jsonb_array_elements(a.messages) m) THEN
            RAISE EXCEPTION 'the job names messages approval % does not list', a.approval_id
                USING ERRCODE = 'check_violation', CONSTRAINT = 'imap_jobs_bound_to_approval';
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER imap_jobs_bound_to_approval
    BEFORE INSERT OR UPDATE OF job_type, approval_id, payload ON imap_jobs
    FOR EACH ROW EXECUTE FUNCTION imap_jobs_bound_to_approval();
