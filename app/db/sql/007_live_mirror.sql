-- A mirror that keeps itself fresh (SPEC §5, §9): automatic syncs deduplicated
-- per account and folder, one IDLE watcher per account across every executor,
-- IMAP connections counted against one per-account budget, and a change log
-- the web reads to show new mail without a reload.

-- 1. At most one *pending* automatic sync per account and folder. The key is
--    set by app/jobs/sync_requests.py (`sync:pending:<account>:<folder>`) and
--    freed by the trigger below the moment the job leaves `pending`: a change
--    that arrives while the sync runs still gets one pending follow-up, and a
--    job that comes back to `pending` (retry, release, reap) never collides
--    with the follow-up that took its key.
ALTER TABLE imap_jobs ADD COLUMN pending_key text;
CREATE UNIQUE INDEX imap_jobs_one_pending_per_key ON imap_jobs (pending_key)
    WHERE pending_key IS NOT NULL;

CREATE FUNCTION imap_jobs_free_pending_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'pending' THEN
        NEW.pending_key := NULL;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER imap_jobs_free_pending_key BEFORE INSERT OR UPDATE OF status ON imap_jobs
    FOR EACH ROW WHEN (NEW.pending_key IS NOT NULL)
    EXECUTE FUNCTION imap_jobs_free_pending_key();

-- 2. The watcher lease: who holds IDLE on an account's folder. Taken over only
--    once it expired by the database clock; renewed by its holder well before.
CREATE TABLE imap_watchers (
    account           text NOT NULL,
    folder            text NOT NULL,
    owner             text NOT NULL,
    lease_expires_at  timestamptz NOT NULL,
    acquired_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, folder)
);

-- 3. The connection budget: slot n of an account is held by one IMAP
--    connection (or one about to open) at a time. A slot is taken when its row
--    is missing or its lease has expired (a killed executor's slots come back
--    after one lease); `token` fences renewals and releases to one holding.
CREATE TABLE imap_connection_slots (
    account           text NOT NULL,
    slot              int NOT NULL CHECK (slot >= 1),
    holder            text NOT NULL,
    process           text NOT NULL,
    purpose           text NOT NULL,
    token             uuid NOT NULL DEFAULT gen_random_uuid(),
    lease_expires_at  timestamptz NOT NULL,
    acquired_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, slot)
);

-- Who is waiting for a slot, so other processes give back connections they
-- are not using instead of keeping them until they idle out.
CREATE TABLE imap_connection_waits (
    account     text NOT NULL,
    waiter      text NOT NULL,
    process     text NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (account, waiter)
);

-- 4. Mirror changes, for the page's "new mail" notice: one row per statement
--    and folder that changed `emails`, plus a NOTIFY (a hint; the web polls the
--    log too). Statement-level, so a batch of 200 rows costs one row here.
--    The executor's sweeper prunes rows older than an hour.
CREATE TABLE mirror_changes (
    id          bigserial PRIMARY KEY,
    folder      text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('added', 'updated', 'removed', 'folder')),
    n           int NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mirror_changes_changed_at ON mirror_changes (changed_at);

CREATE FUNCTION emails_log_added() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    f text;
BEGIN
    FOR f IN
        INSERT INTO mirror_changes (folder, kind, n)
        SELECT folder, 'added', count(*) FROM new_rows GROUP BY folder
        RETURNING folder
    LOOP
        PERFORM pg_notify('mirror_changes', f);
    END LOOP;
    RETURN NULL;
END $$;

CREATE FUNCTION emails_log_updated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    f text;
BEGIN
    FOR f IN
        INSERT INTO mirror_changes (folder, kind, n)
        SELECT folder, 'updated', count(*) FROM new_rows GROUP BY folder
        RETURNING folder
    LOOP
        PERFORM pg_notify('mirror_changes', f);
    END LOOP;
    RETURN NULL;
END $$;

CREATE FUNCTION emails_log_removed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    f text;
BEGIN
    FOR f IN
        INSERT INTO mirror_changes (folder, kind, n)
        SELECT folder, 'removed', count(*) FROM old_rows GROUP BY folder
        RETURNING folder
    LOOP
        PERFORM pg_notify('mirror_changes', f);
    END LOOP;
    RETURN NULL;
END $$;

-- A folder's own row: created, dropped, reset (new UIDVALIDITY) or finished a
-- pass that saw new mail (UIDNEXT moved). The page says "syncing" until a
-- folder's first pass finished, so that moment must reach it even when the
-- pass's last statement touched no message.
CREATE FUNCTION mail_folders_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    f text := CASE WHEN TG_OP = 'DELETE' THEN OLD.folder ELSE NEW.folder END;
BEGIN
    INSERT INTO mirror_changes (folder, kind, n) VALUES (f, 'folder', 1);
    PERFORM pg_notify('mirror_changes', f);
    RETURN NULL;
END $$;

CREATE TRIGGER mail_folders_log_change AFTER INSERT OR DELETE ON mail_folders
    FOR EACH ROW EXECUTE FUNCTION mail_folders_log_change();
CREATE TRIGGER mail_folders_log_cursor AFTER UPDATE OF uidvalidity, uidnext ON mail_folders
    FOR EACH ROW WHEN ((OLD.uidvalidity, OLD.uidnext) IS DISTINCT FROM (NEW.uidvalidity, NEW.uidnext))
    EXECUTE FUNCTION mail_folders_log_change();

CREATE TRIGGER emails_log_added AFTER INSERT ON emails
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION emails_log_added();
CREATE TRIGGER emails_log_updated AFTER UPDATE ON emails
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION emails_log_updated();
CREATE TRIGGER emails_log_removed AFTER DELETE ON emails
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION emails_log_removed();
