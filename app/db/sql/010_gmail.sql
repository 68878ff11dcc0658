-- Gmail mode (SPEC §9). On a server offering X-GM-EXT-1 every mirror row also
-- keeps the message's X-GM-MSGID and X-GM-THRID (unsigned 64-bit numbers, so
-- numeric rather than bigint), and `labels` holds its X-GM-LABELS. A message
-- has one X-GM-MSGID whichever folder (label) shows it: that is how undo and
-- the mirror find it after a label change took it out of INBOX.

ALTER TABLE emails
    ADD COLUMN gm_msgid numeric(20, 0),
    ADD COLUMN gm_thrid numeric(20, 0);

CREATE INDEX emails_gm_msgid ON emails (gm_msgid) WHERE gm_msgid IS NOT NULL;

-- A Gmail label change is recorded like a flag change: the labels the server
-- showed first (write-ahead, never rewritten), the ones the job adds and
-- removes, the ones it left; and the X-GM-MSGID it is found by again.
ALTER TABLE imap_job_changes
    ADD COLUMN gm_msgid        numeric(20, 0),
    ADD COLUMN labels_before   text[],
    ADD COLUMN labels_added    text[] NOT NULL DEFAULT '{}',
    ADD COLUMN labels_removed  text[] NOT NULL DEFAULT '{}',
    ADD COLUMN labels_after    text[];

-- What an earlier attempt first recorded stays as it was: now including the
-- labels before, the label changes and the X-GM-MSGID.
CREATE OR REPLACE FUNCTION imap_job_changes_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state <> 'intended' THEN
        RAISE EXCEPTION 'the recorded change of job % to %/%/% is % and final',
            OLD.job_id, OLD.folder, OLD.uidvalidity, OLD.uid, OLD.state
            USING ERRCODE = 'check_violation';
    END IF;
    IF (NEW.job_id, NEW.folder, NEW.uidvalidity, NEW.uid, NEW.attempt, NEW.flags_before,
        NEW.flags_added, NEW.flags_removed, NEW.message_id, NEW.uid_floor, NEW.created_at,
        NEW.gm_msgid, NEW.labels_before, NEW.labels_added, NEW.labels_removed)
       IS DISTINCT FROM
       (OLD.job_id, OLD.folder, OLD.uidvalidity, OLD.uid, OLD.attempt, OLD.flags_before,
        OLD.flags_added, OLD.flags_removed, OLD.message_id, OLD.uid_floor, OLD.created_at,
        OLD.gm_msgid, OLD.labels_before, OLD.labels_added, OLD.labels_removed) THEN
        RAISE EXCEPTION 'what job % first recorded about %/%/% is never rewritten',
            OLD.job_id, OLD.folder, OLD.uidvalidity, OLD.uid
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
