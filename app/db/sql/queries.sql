-- Every statement the job store runs. Worker writes are fenced: they match
-- only while the row is still `running` under the same attempt and lease
-- owner, so a worker that lost its lease changes nothing.

-- name: enqueue
-- A duplicate idempotency key inserts nothing; the caller then reads the winner.
INSERT INTO imap_jobs (job_type, payload, idempotency_key, approval_id, max_attempts, total_estimate)
VALUES (%(job_type)s, %(payload)s, %(idempotency_key)s, %(approval_id)s, %(max_attempts)s, %(total_estimate)s)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *;

-- name: get_by_idempotency_key
SELECT * FROM imap_jobs WHERE idempotency_key = %(idempotency_key)s;

-- name: get_job
SELECT * FROM imap_jobs WHERE job_id = %(job_id)s;

-- name: list_jobs
SELECT * FROM imap_jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s)
ORDER BY created_at DESC
LIMIT %(limit)s;

-- name: request_cancel
-- Pending jobs end at once; running ones are flagged and stop at the next batch.
WITH upd AS (
    UPDATE imap_jobs SET
        cancel_requested = true,
        status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,
        finished_at = CASE WHEN status = 'pending' THEN now() ELSE finished_at END,
        last_seq = last_seq + 1
    WHERE job_id = %(job_id)s AND status IN ('pending', 'running')
    RETURNING *
), ev AS (
    INSERT INTO imap_job_events (job_id, seq, level, message, data)
    SELECT job_id, last_seq, 'info',
           CASE WHEN status = 'cancelled' THEN 'cancelled before it started' ELSE 'cancel requested' END,
           jsonb_build_object('status', status)
    FROM upd
)
SELECT * FROM upd;

-- name: append_event_unfenced
-- For writers that hold no lease (web, CLI): the row lock orders seq.
WITH upd AS (
    UPDATE imap_jobs SET last_seq = last_seq + 1
    WHERE job_id = %(job_id)s
    RETURNING job_id, last_seq
)
INSERT INTO imap_job_events (job_id, seq, level, message, data)
SELECT job_id, last_seq, %(level)s, %(message)s, %(data)s FROM upd
RETURNING seq;

-- name: events_after
SELECT job_id, seq, created_at, level, message, data
FROM imap_job_events
WHERE job_id = %(job_id)s AND seq > %(after)s
ORDER BY seq
LIMIT %(limit)s;

-- name: claim
-- Oldest runnable jobs, one per free worker; each gets its worker's lease.
-- The same statement first writes what the executor's completer
-- (executor/completer.py) gathered from its workers (nothing, for the
-- producer's claims): progress events and completions, so a batch of them and
-- the next jobs for the freed workers cost one round trip and one commit.
--   * the writes of a job are fenced by its status, attempt and owner: when
--     its lease was lost they match nothing, change nothing, are not returned;
--   * each write appends one event (a completion last): a job's events take
--     the next seqs in the order the writes were made (`ord`), counters move
--     as the `progress` query moves them;
--   * a completion is `finish`'s to `completed`, or `cancelled` when a cancel
--     was requested;
--   * the rows written are locked in job_id order, as renew_leases locks them,
--     so an executor's completer and lease renewer never deadlock.
-- Rows come back with `outcome`: 'written' (the job's row after all its
-- writes) or 'claimed'.
-- Its plan does not depend on its parameters: every row of imap_jobs is
-- reached by its job_id (`= ANY`) or through the pending index's order, never
-- by a join the planner sizes from them. So one generic plan serves every
-- call (JobStore runs it on connections that keep it; planning this statement
-- cost about as much as running it), and a batch's writes come as one JSON
-- document (`writes`: JobWrite.as_json rows, in order).
WITH w AS (
    SELECT * FROM ROWS FROM (jsonb_to_recordset(%(writes)s::jsonb)
            AS (kind text, job_id uuid, attempt int, owner text, processed int,
                total_estimate int, level text, message text, data jsonb))
        WITH ORDINALITY
        AS w(kind, job_id, attempt, owner, processed, total_estimate, level, message, data, ord)
), per_job AS (
    SELECT job_id, min(attempt) AS attempt, min(owner) AS owner, count(*) AS events,
           bool_or(kind = 'complete') AS completes,
           max(processed) AS processed,
           (array_agg(total_estimate ORDER BY ord DESC)
               FILTER (WHERE total_estimate IS NOT NULL))[1] AS total_estimate
    FROM w GROUP BY job_id
), held AS (
    SELECT per_job.* FROM imap_jobs j JOIN per_job ON j.job_id = per_job.job_id
    WHERE j.job_id = ANY (ARRAY(SELECT job_id FROM per_job))
      AND j.status = 'running' AND j.attempt = per_job.attempt AND j.lease_owner = per_job.owner
    ORDER BY j.job_id
    FOR NO KEY UPDATE OF j
), written AS (
    UPDATE imap_jobs j SET
        status = CASE WHEN NOT held.completes THEN j.status
                      WHEN j.cancel_requested THEN 'cancelled' ELSE 'completed' END,
        processed = greatest(j.processed, coalesce(held.processed, j.processed)),
        total_estimate = coalesce(held.total_estimate, j.total_estimate),
        lease_owner = CASE WHEN NOT held.completes THEN j.lease_owner END,
        lease_expires_at = CASE WHEN NOT held.completes THEN j.lease_expires_at END,
        finished_at = CASE WHEN NOT held.completes THEN j.finished_at ELSE now() END,
        last_seq = j.last_seq + held.events
    FROM held
    WHERE j.job_id = held.job_id
    RETURNING j.*, held.events
), written_ev AS (
    INSERT INTO imap_job_events (job_id, seq, level, message, data)
    SELECT w.job_id,
           written.last_seq - written.events
               + row_number() OVER (PARTITION BY w.job_id ORDER BY w.ord),
           w.level,
           CASE WHEN w.kind = 'complete' AND written.status = 'cancelled'
                THEN 'cancelled (the cancel arrived as the work finished)'
                ELSE w.message END,
           CASE WHEN w.kind = 'complete'
                THEN w.data || jsonb_build_object('status', written.status)
                ELSE w.data END
    FROM w JOIN written ON written.job_id = w.job_id
), picked AS (
    SELECT array_agg(job_id ORDER BY created_at, job_id) AS ids
    FROM (
        SELECT job_id, created_at FROM imap_jobs
        WHERE status = 'pending' AND run_after <= now()
          AND (%(job_types)s::text[] IS NULL OR job_type = ANY (%(job_types)s::text[]))
        ORDER BY created_at, job_id
        LIMIT cardinality(%(owners)s::text[])
        FOR UPDATE SKIP LOCKED
    ) p
), upd AS (
    UPDATE imap_jobs j SET
        status = 'running',
        attempt = j.attempt + 1,
        lease_owner = (%(owners)s::text[])[array_position(picked.ids, j.job_id)],
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        started_at = coalesce(j.started_at, now()),
        last_seq = j.last_seq + 1
    FROM picked
    WHERE j.job_id = ANY (picked.ids)
    RETURNING j.*
), ev AS (
    INSERT INTO imap_job_events (job_id, seq, level, message, data)
    SELECT job_id, last_seq, 'info', 'claimed by ' || lease_owner,
           jsonb_build_object('attempt', attempt, 'worker', lease_owner)
    FROM upd
)
SELECT 'written' AS outcome, written.* FROM written
UNION ALL
SELECT 'claimed', upd.*, NULL FROM upd;

-- name: renew_leases
-- One query per process renews every lease it holds; rows not returned were lost.
-- Rows are locked in job_id order, as `complete_many` locks them: the renewer
-- and the completer of one executor can then never deadlock on each other.
WITH held AS (
    SELECT j.job_id
    FROM imap_jobs j
    JOIN unnest(%(job_ids)s::uuid[], %(attempts)s::int[], %(owners)s::text[]) AS l(job_id, attempt, owner)
      ON j.job_id = l.job_id
    WHERE j.status = 'running' AND j.attempt = l.attempt AND j.lease_owner = l.owner
    ORDER BY j.job_id
    FOR NO KEY UPDATE OF j
)
UPDATE imap_jobs j SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
FROM held
WHERE j.job_id = held.job_id
RETURNING j.job_id, j.cancel_requested;

-- name: lock_fenced
-- Opens a worker's fenced transaction: holds the row until commit.
SELECT job_id, cancel_requested FROM imap_jobs
WHERE job_id = %(job_id)s AND status = 'running'
  AND attempt = %(attempt)s AND lease_owner = %(owner)s
FOR NO KEY UPDATE;

-- name: progress
-- Counters and the event that reports them, in one statement: one seq per event.
WITH upd AS (
    UPDATE imap_jobs SET
        last_seq = last_seq + 1,
        processed = greatest(processed, coalesce(%(processed)s, processed)),
        total_estimate = coalesce(%(total_estimate)s, total_estimate)
    WHERE job_id = %(job_id)s AND status = 'running'
      AND attempt = %(attempt)s AND lease_owner = %(owner)s
    RETURNING job_id, last_seq, cancel_requested
), ev AS (
    INSERT INTO imap_job_events (job_id, seq, level, message, data)
    SELECT job_id, last_seq, %(level)s, %(message)s, %(data)s FROM upd
)
SELECT last_seq AS seq, cancel_requested FROM upd;

-- name: finish
-- completed / failed / cancelled, fenced. A job whose cancel was requested
-- never ends `completed`.
WITH upd AS (
    UPDATE imap_jobs SET
        status = CASE WHEN %(status)s = 'completed' AND cancel_requested THEN 'cancelled'
                      ELSE %(status)s END,
        error = coalesce(%(error)s, error),
        processed = greatest(processed, coalesce(%(processed)s, processed)),
        total_estimate = coalesce(%(total_estimate)s, total_estimate),
        lease_owner = NULL,
        lease_expires_at = NULL,
        finished_at = now(),
        last_seq = last_seq + 1
    WHERE job_id = %(job_id)s AND status = 'running'
      AND attempt = %(attempt)s AND lease_owner = %(owner)s
    RETURNING *
), ev AS (
    INSERT INTO imap_job_events (job_id, seq, level, message, data)
    SELECT job_id, last_seq,
           CASE WHEN status = 'failed' THEN 'error' ELSE 'info' END,
           CASE WHEN status = 'cancelled' AND %(status)s = 'completed'
                THEN 'cancelled (the cancel arrived as the work finished)'
                ELSE %(message)s END,
           %(data)s || jsonb_build_object('status', status)
    FROM upd
)
SELECT * FROM upd;

-- name: retry_later
-- A transient failure (connection dropped): back to pending after a backoff,
-- unless the attempts are used up.
WITH upd AS (
    UPDATE imap_jobs SET
        status = CASE WHEN attempt >= max_attempts THEN 'failed'
                      WHEN cancel_requested THEN 'cancelled' ELSE 'pending' END,
        error = %(error)s,
        run_after = now() + make_interval(secs => %(backoff_seconds)s),
        lease_owner = NULL,
        lease_expires_at = NULL,
        finished_at = CASE WHEN attempt >= max_attempts OR cancel_requested THEN now() END,
        last_seq = last_seq + 1
    WHERE job_id = %(job_id)s AND status = 'running'
      AND attempt = %(attempt)s AND lease_owner = %(owner)s
    RETURNING *
), ev AS (
    INSERT INTO imap_job_events (job_id, seq, level, message, data)
    SELECT job_id, last_seq, CASE WHEN status = 'pending' THEN 'warning' ELSE 'error' END,
           CASE WHEN status = 'pending' THEN 'will retry: ' ELSE 'gave up: ' END || %(error)s,
           jsonb_build_object('status', status, 'attempt', attempt)
    FROM upd
)
SELECT * FROM upd;

-- name: release
-- Graceful shutdown: hand the job back without spending an attempt.
WITH upd AS (
    UPDATE imap_jobs SET
        status = 'pending',
        attempt = attempt - 1,
        lease_owner = NULL,
        lease_expires_at = NULL,
        last_seq = last_seq + 1
    WHERE job_id = %(job_id)s AND status = 'running'
      AND attempt = %(attempt)s AND lease_owner = %(owner)s
    RETURNING *
), ev AS (
    INSERT INTO imap_job_events (job_id, seq, level, message, data)
    SELECT job_id, last_seq, 'warning', 'released by a stopping executor',
           jsonb_build_object('worker', %(owner)s)
    FROM upd
)
SELECT * FROM upd;

-- name: reap
-- Expired leases: back to pending (the attempt is spent), or failed when none are left.
WITH expired AS (
    SELECT job_id, lease_owner AS old_owner FROM imap_jobs
    WHERE status = 'running' AND lease_expires_at < now()
    ORDER BY job_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), upd AS (
    UPDATE imap_jobs j SET
        status = CASE WHEN j.cancel_requested THEN 'cancelled'
                      WHEN j.attempt >= j.max_attempts THEN 'failed' ELSE 'pending' END,
        error = CASE WHEN j.attempt >= j.max_attempts AND NOT j.cancel_requested
                     THEN 'lease expired ' || j.attempt || ' times (worker ' || expired.old_owner || ' stopped responding)'
                     ELSE j.error END,
        lease_owner = NULL,
        lease_expires_at = NULL,
        finished_at = CASE WHEN j.cancel_requested OR j.attempt >= j.max_attempts THEN now() END,
        last_seq = j.last_seq + 1
    FROM expired
    WHERE j.job_id = expired.job_id
    RETURNING j.*, expired.old_owner
), ev AS (
    INSERT INTO imap_job_events (job_id, seq, level, message, data)
    SELECT job_id, last_seq, 'warning',
           'lease of ' || old_owner || ' expired; job is now ' || status,
           jsonb_build_object('status', status, 'attempt', attempt, 'worker', old_owner)
    FROM upd
)
SELECT * FROM upd;

-- name: listen_pending_jobs
-- The executor's wake-up hint: the imap_jobs_notify trigger (001) sends on this
-- channel when a job becomes pending.
LISTEN imap_jobs_pending;

-- name: record_approval
INSERT INTO approvals (thread_id, interrupt_id, action, params, messages)
VALUES (%(thread_id)s, %(interrupt_id)s, %(action)s, %(params)s, %(messages)s)
ON CONFLICT (interrupt_id) DO NOTHING
RETURNING *;

-- name: get_approval_by_interrupt
SELECT * FROM approvals WHERE interrupt_id = %(interrupt_id)s;

-- name: get_approval
SELECT * FROM approvals WHERE approval_id = %(approval_id)s;

-- ---------------------------------------------------------------------------
-- The mailbox mirror. Written only by the executor, inside fenced transactions.

-- name: folder_cursors
SELECT * FROM mail_folders;

-- name: folder_cursor
SELECT * FROM mail_folders WHERE folder = %(folder)s;

-- name: reset_folder
-- A new UIDVALIDITY: the old UIDs mean nothing any more.
WITH gone AS (
    DELETE FROM emails WHERE folder = %(folder)s AND uidvalidity <> %(uidvalidity)s
)
INSERT INTO mail_folders (folder, uidvalidity, uidnext, highestmodseq, last_seen_uid, message_count, synced_at)
VALUES (%(folder)s, %(uidvalidity)s, NULL, NULL, 0, 0, now())
ON CONFLICT (folder) DO UPDATE SET
    uidvalidity = EXCLUDED.uidvalidity, uidnext = NULL, highestmodseq = NULL,
    last_seen_uid = 0, message_count = 0, synced_at = now();

-- name: advance_cursor
UPDATE mail_folders SET last_seen_uid = greatest(last_seen_uid, %(last_seen_uid)s), synced_at = now()
WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s;

-- name: finish_folder
UPDATE mail_folders SET
    uidnext = %(uidnext)s, highestmodseq = %(highestmodseq)s,
    message_count = (SELECT count(*) FROM emails WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s),
    synced_at = now()
WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s;

-- name: drop_folder
WITH gone AS (DELETE FROM emails WHERE folder = %(folder)s)
DELETE FROM mail_folders WHERE folder = %(folder)s;

-- name: upsert_emails
-- One statement per sync batch (`rows`: a JSON array of objects keyed by
-- column name, executor/mirror_writes.py), so the statement-level triggers
-- log and NOTIFY once per batch, not once per message; JSON rather than
-- unnest() because text[] columns (flags, labels, addresses) cannot be
-- unnested from a 2-D array. json_populate_recordset casts each key to the
-- column's own type; `json`, not `jsonb`: the rows are read once, and
-- building jsonb first cost Postgres ~8 us of CPU per row more (a third of
-- the statement's; bench/mirror_write.py). A batch names each uid once: ON
-- CONFLICT cannot touch a row twice in one statement. ORDER BY keeps ids in
-- batch order.
INSERT INTO emails (
    folder, uidvalidity, uid, message_id, in_reply_to, from_addr, from_name,
    to_addrs, cc_addrs, to_display, cc_display, reply_to, subject, date, internal_date,
    flags, labels, body_excerpt, list_unsubscribe, list_id, precedence, auto_submitted,
    has_attachments, size, modseq, mentions_you, mention_identity,
    triage_category, triage_confidence, triage_reasons, triage_zoom, clean_candidate,
    clean_confidence, clean_category, clean_signals, clean_excluded, clean_direct, scores_version,
    gm_msgid, gm_thrid, synced_at)
SELECT
    r.folder, r.uidvalidity, r.uid, r.message_id, r.in_reply_to, r.from_addr, r.from_name,
    r.to_addrs, r.cc_addrs, r.to_display, r.cc_display, r.reply_to, r.subject, r.date,
    r.internal_date, r.flags, r.labels, r.body_excerpt, r.list_unsubscribe, r.list_id,
    r.precedence, r.auto_submitted, r.has_attachments, r.size, r.modseq,
    r.mentions_you, r.mention_identity,
    r.triage_category, r.triage_confidence, r.triage_reasons, r.triage_zoom, r.clean_candidate,
    r.clean_confidence, r.clean_category, r.clean_signals, r.clean_excluded, r.clean_direct,
    r.scores_version, r.gm_msgid, r.gm_thrid, now()
FROM json_populate_recordset(NULL::emails, %(rows)s) WITH ORDINALITY AS r
ORDER BY r.ordinality
ON CONFLICT (folder, uidvalidity, uid) DO UPDATE SET
    message_id = EXCLUDED.message_id, in_reply_to = EXCLUDED.in_reply_to,
    from_addr = EXCLUDED.from_addr, from_name = EXCLUDED.from_name,
    to_addrs = EXCLUDED.to_addrs, cc_addrs = EXCLUDED.cc_addrs,
    to_display = EXCLUDED.to_display, cc_display = EXCLUDED.cc_display,
    reply_to = EXCLUDED.reply_to, subject = EXCLUDED.subject, date = EXCLUDED.date,
    internal_date = EXCLUDED.internal_date, flags = EXCLUDED.flags, labels = EXCLUDED.labels,
    body_excerpt = EXCLUDED.body_excerpt, list_unsubscribe = EXCLUDED.list_unsubscribe,
    list_id = EXCLUDED.list_id, precedence = EXCLUDED.precedence,
    auto_submitted = EXCLUDED.auto_submitted, has_attachments = EXCLUDED.has_attachments,
    size = EXCLUDED.size, modseq = EXCLUDED.modseq,
    mentions_you = EXCLUDED.mentions_you, mention_identity = EXCLUDED.mention_identity,
    triage_category = EXCLUDED.triage_category, triage_confidence = EXCLUDED.triage_confidence,
    triage_reasons = EXCLUDED.triage_reasons, triage_zoom = EXCLUDED.triage_zoom,
    clean_candidate = EXCLUDED.clean_candidate, clean_confidence = EXCLUDED.clean_confidence,
    clean_category = EXCLUDED.clean_category, clean_signals = EXCLUDED.clean_signals,
    clean_excluded = EXCLUDED.clean_excluded, clean_direct = EXCLUDED.clean_direct,
    scores_version = EXCLUDED.scores_version,
    gm_msgid = EXCLUDED.gm_msgid, gm_thrid = EXCLUDED.gm_thrid,
    synced_at = now();

-- name: folder_flags
SELECT uid, flags FROM emails WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s;

-- name: update_flags
-- \Flagged and \Answered change a message's scores (app/mail/scores.py): when
-- either changes, the stored scores become stale (never a /clean candidate)
-- until the rescore job recomputes them from the row.
-- A Gmail row (gm_msgid set) keeps its X-GM-LABELS unless new ones are given.
UPDATE emails SET flags = %(flags)s,
    labels = CASE WHEN %(gm_labels)s::text[] IS NOT NULL THEN %(gm_labels)s::text[]
                  WHEN gm_msgid IS NOT NULL THEN labels ELSE %(labels)s::text[] END,
    modseq = coalesce(%(modseq)s, modseq),
    scores_version = CASE
        WHEN ('\Flagged' = ANY (flags)) IS DISTINCT FROM ('\Flagged' = ANY (%(flags)s::text[]))
          OR ('\Answered' = ANY (flags)) IS DISTINCT FROM ('\Answered' = ANY (%(flags)s::text[]))
        THEN NULL ELSE scores_version END,
    clean_candidate = clean_candidate AND NOT ('\Flagged' = ANY (%(flags)s::text[])),
    synced_at = now()
WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s AND uid = %(uid)s;

-- name: delete_missing
-- Messages expunged on the server since the last sync.
DELETE FROM emails
WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s AND uid <= %(max_uid)s
  AND NOT (uid = ANY (%(present)s::bigint[]));

-- name: count_folder
SELECT count(*) AS n FROM emails WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s;

-- name: ensure_folder_known
-- A folder that received moved mail is mirrored at once; the next sync fills it in.
INSERT INTO mail_folders (folder, uidvalidity, last_seen_uid, message_count)
VALUES (%(folder)s, %(uidvalidity)s, 0, 0)
ON CONFLICT (folder) DO NOTHING;

-- name: move_email
-- Keep the mirror right after an approved move: the row follows the message.
WITH src AS (
    DELETE FROM emails
    WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s AND uid = %(uid)s
    RETURNING *
)
INSERT INTO emails (
    folder, uidvalidity, uid, message_id, in_reply_to, from_addr, from_name,
    to_addrs, cc_addrs, to_display, cc_display, reply_to, subject, date, internal_date,
    flags, labels, body_excerpt, list_unsubscribe, list_id, precedence, auto_submitted,
    has_attachments, size, modseq, mentions_you, mention_identity,
    triage_category, triage_confidence, triage_reasons, triage_zoom, clean_candidate,
    clean_confidence, clean_category, clean_signals, clean_excluded, clean_direct, scores_version,
    synced_at)
SELECT %(target)s, %(target_uidvalidity)s, %(target_uid)s, message_id, in_reply_to, from_addr, from_name,
    to_addrs, cc_addrs, to_display, cc_display, reply_to, subject, date, internal_date,
    %(flags)s, labels, body_excerpt, list_unsubscribe, list_id, precedence, auto_submitted,
    has_attachments, size, NULL, mentions_you, mention_identity,
    triage_category, triage_confidence, triage_reasons, triage_zoom, clean_candidate,
    clean_confidence, clean_category, clean_signals, clean_excluded, clean_direct, scores_version,
    now()
FROM src
WHERE %(target_uid)s::bigint IS NOT NULL AND %(target_uidvalidity)s::bigint IS NOT NULL
ON CONFLICT (folder, uidvalidity, uid) DO NOTHING;

-- The mirror fence (executor/folder_lock.py): a session-level advisory lock per
-- folder, held on one connection while a job reads that folder on IMAP and
-- writes its rows. Postgres drops it when the session ends (a killed worker).

-- name: mirror_fence_timeout
-- Transaction-local: one wait for the fence lasts at most this long.
SELECT set_config('lock_timeout', %(timeout)s, true);

-- name: mirror_fence_wait
SELECT pg_advisory_lock(hashtextextended('piper.mirror:' || %(folder)s, 0));

-- name: mirror_fence_release
SELECT pg_advisory_unlock(hashtextextended('piper.mirror:' || %(folder)s, 0)) AS released;

-- name: mirror_fence_release_all
SELECT pg_advisory_unlock_all();

-- name: mirror_fence_held
-- Whether some session holds the fence of a folder (tests and diagnostics).
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND database = (
        SELECT oid FROM pg_database WHERE datname = current_database())
      AND ((classid::bigint << 32) | objid::bigint)
          = hashtextextended('piper.mirror:' || %(folder)s, 0)
) AS held;

-- name: mirror_fence_waited
-- Whether a session waits for the fence of any of these folders: a long holder
-- (a first sync) yields only then (executor/folder_lock.py `look_for_waiters`).
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1 AND database = (
        SELECT oid FROM pg_database WHERE datname = current_database())
      AND ((classid::bigint << 32) | objid::bigint) = ANY (
          SELECT hashtextextended('piper.mirror:' || f, 0) FROM unnest(%(folders)s::text[]) AS f)
) AS waited;

-- name: mention_stale_summary
-- Rows whose "mentions you" verdict was not decided against the given identity
-- fingerprint (never checked, unreadable, or another identity). Written as IS NULL / < / >
-- so the emails_mention_identity index serves it (a b-tree cannot serve <>).
SELECT count(*) AS n, max(id) AS max_id,
       coalesce(array_agg(DISTINCT coalesce(mention_identity, '')), '{}') AS fingerprints
FROM emails
WHERE mention_identity IS NULL OR mention_identity < %(fingerprint)s
   OR mention_identity > %(fingerprint)s;

-- name: mention_stale_rows
-- The same rows, by folder, for the rescore job (current UIDVALIDITY only).
SELECT e.folder, e.uidvalidity, array_agg(e.uid ORDER BY e.uid) AS uids
FROM emails e
JOIN mail_folders f ON f.folder = e.folder AND f.uidvalidity = e.uidvalidity
WHERE e.mention_identity IS NULL OR e.mention_identity < %(fingerprint)s
   OR e.mention_identity > %(fingerprint)s
GROUP BY e.folder, e.uidvalidity
ORDER BY e.folder;

-- name: update_mentions
-- A re-decided verdict comes with the scores computed from the same fetch, and
-- the recipients read from it (a parser fix, such as addresses written with
-- comments or quotes, reaches the rows the scores are decided from).
UPDATE emails SET mentions_you = %(mentions_you)s, mention_identity = %(mention_identity)s,
    to_addrs = %(to_addrs)s, cc_addrs = %(cc_addrs)s,
    to_display = %(to_display)s, cc_display = %(cc_display)s,
    triage_category = %(triage_category)s, triage_confidence = %(triage_confidence)s,
    triage_reasons = %(triage_reasons)s, triage_zoom = %(triage_zoom)s,
    clean_candidate = %(clean_candidate)s, clean_confidence = %(clean_confidence)s,
    clean_category = %(clean_category)s, clean_signals = %(clean_signals)s,
    clean_excluded = %(clean_excluded)s, clean_direct = %(clean_direct)s,
    scores_version = %(scores_version)s
WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s AND uid = %(uid)s;

-- name: scores_stale_summary
-- Rows whose stored scores were computed under other rules (or never).
SELECT count(*) AS n, max(id) AS max_id
FROM emails
WHERE scores_version IS NULL OR scores_version < %(version)s OR scores_version > %(version)s;

-- name: scores_stale_batch
-- The next rows to score again from the mirror (the rescore job's second pass).
SELECT id, synced_at, folder, uidvalidity, uid, from_addr, from_name, to_addrs, cc_addrs,
       subject, date, flags, body_excerpt, list_unsubscribe, list_id, precedence,
       auto_submitted, mentions_you, mention_identity
FROM emails
WHERE (scores_version IS NULL OR scores_version < %(version)s OR scores_version > %(version)s)
  AND id > %(after)s
ORDER BY id
LIMIT %(limit)s;

-- name: update_scores
-- Only if the row was not rewritten since it was read (a sync's fresher scores win).
UPDATE emails SET
    triage_category = %(triage_category)s, triage_confidence = %(triage_confidence)s,
    triage_reasons = %(triage_reasons)s, triage_zoom = %(triage_zoom)s,
    clean_candidate = %(clean_candidate)s, clean_confidence = %(clean_confidence)s,
    clean_category = %(clean_category)s, clean_signals = %(clean_signals)s,
    clean_excluded = %(clean_excluded)s, clean_direct = %(clean_direct)s,
    scores_version = %(scores_version)s
WHERE id = %(id)s AND synced_at = %(synced_at)s;

-- name: active_rescore
-- A rescore job still to run or running: while there is one, no other is started
-- (the stale rows shrink as it works, which would otherwise look like new work).
SELECT job_id FROM imap_jobs
WHERE job_type = 'rescore' AND status IN ('pending', 'running')
ORDER BY created_at
LIMIT 1;

-- ---------------------------------------------------------------------------
-- Mirror reads (web and graph).

-- name: search_emails
-- Every word must appear in the sender, the subject or the list id. Substring
-- tests are strpos() on lower(), not ILIKE: a percent sign or underscore the
-- person typed is a character to find, never a wildcard.
SELECT folder, uidvalidity, uid, message_id, from_addr, from_name, to_addrs, cc_addrs,
       to_display, cc_display, subject, date, flags, labels, body_excerpt,
       list_unsubscribe, list_id, precedence, auto_submitted, mentions_you, mention_identity
FROM emails e
WHERE (%(folder)s::text IS NULL OR folder = %(folder)s)
  AND (%(unread)s::boolean IS NULL OR (NOT ('\Seen' = ANY (flags))) = %(unread)s)
  AND (%(from_contains)s::text IS NULL
       OR strpos(lower(coalesce(from_addr, '')), lower(%(from_contains)s::text)) > 0
       OR strpos(lower(coalesce(from_name, '')), lower(%(from_contains)s::text)) > 0)
  AND (%(subject_contains)s::text IS NULL
       OR strpos(lower(subject), lower(%(subject_contains)s::text)) > 0)
  AND NOT EXISTS (
      SELECT 1 FROM unnest(%(words)s::text[]) AS w(word)
      WHERE NOT (strpos(lower(coalesce(e.from_addr, '')), lower(w.word)) > 0
              OR strpos(lower(coalesce(e.from_name, '')), lower(w.word)) > 0
              OR strpos(lower(e.subject), lower(w.word)) > 0
              OR strpos(lower(coalesce(e.list_id, '')), lower(w.word)) > 0))
  AND EXISTS (SELECT 1 FROM mail_folders f WHERE f.folder = e.folder AND f.uidvalidity = e.uidvalidity)
ORDER BY date DESC NULLS LAST, uid DESC
LIMIT %(limit)s;

-- name: emails_by_identity
SELECT e.folder, e.uidvalidity, e.uid, e.message_id, e.from_addr, e.from_name, e.to_addrs, e.cc_addrs,
       e.to_display, e.cc_display, e.subject, e.date, e.flags, e.labels, e.body_excerpt,
       e.list_unsubscribe, e.list_id, e.precedence, e.auto_submitted, e.mentions_you,
       e.mention_identity, e.gm_msgid IS NOT NULL AS gmail
FROM emails e
JOIN unnest(%(folders)s::text[], %(uidvalidities)s::bigint[], %(uids)s::bigint[])
     WITH ORDINALITY AS k(folder, uidvalidity, uid, n)
  ON e.folder = k.folder AND e.uidvalidity = k.uidvalidity AND e.uid = k.uid
ORDER BY k.n;

-- name: folder_emails
-- Everything in one folder (current UIDVALIDITY), newest first, for scoring.
SELECT e.folder, e.uidvalidity, e.uid, e.message_id, e.from_addr, e.from_name, e.to_addrs, e.cc_addrs,
       e.to_display, e.cc_display, e.subject, e.date, e.flags, e.labels, e.body_excerpt,
       e.list_unsubscribe, e.list_id, e.precedence, e.auto_submitted, e.mentions_you,
       e.mention_identity
FROM emails e
JOIN mail_folders f ON f.folder = e.folder AND f.uidvalidity = e.uidvalidity
WHERE e.folder = %(folder)s
ORDER BY e.date DESC NULLS LAST, e.uid DESC
LIMIT %(limit)s;

-- Triage and /clean over the whole mirror, from the scores stored at ingest
-- (009_scores.sql). A row's scores count only when scores_version is the
-- code's and mention_identity the current identity's fingerprint.

-- The current UIDVALIDITY is one scalar subquery (an InitPlan): written as a
-- join it makes the planner expect few rows and sort the whole folder.

-- name: triage_top_category
-- top_by_confidence for one category; filters are WHERE clauses ("today" is
-- [day_start, day_end) computed in the configured zone; NULL: any day).
SELECT e.folder, e.uidvalidity, e.uid, e.date, e.from_addr, e.from_name, e.subject, e.flags,
       e.triage_category, e.triage_confidence, e.triage_reasons,
       coalesce(e.scores_version = %(version)s AND e.mention_identity = %(fingerprint)s, false) AS fresh
FROM emails e
WHERE e.folder = %(folder)s AND e.triage_category = %(category)s
  AND (%(day_start)s::timestamptz IS NULL OR (e.date >= %(day_start)s AND e.date < %(day_end)s))
  AND (NOT %(unread)s::boolean OR NOT ('\Seen' = ANY (e.flags)))
  AND (NOT %(zoom)s::boolean OR e.triage_zoom)
  AND e.uidvalidity = (SELECT f.uidvalidity FROM mail_folders f WHERE f.folder = %(folder)s)
ORDER BY e.triage_confidence DESC NULLS LAST, e.date DESC NULLS LAST, e.uid DESC
LIMIT %(limit)s;

-- name: triage_top_any
-- top_by_confidence over every category.
SELECT e.folder, e.uidvalidity, e.uid, e.date, e.from_addr, e.from_name, e.subject, e.flags,
       e.triage_category, e.triage_confidence, e.triage_reasons,
       coalesce(e.scores_version = %(version)s AND e.mention_identity = %(fingerprint)s, false) AS fresh
FROM emails e
WHERE e.folder = %(folder)s AND e.triage_confidence IS NOT NULL
  AND (%(day_start)s::timestamptz IS NULL OR (e.date >= %(day_start)s AND e.date < %(day_end)s))
  AND (NOT %(unread)s::boolean OR NOT ('\Seen' = ANY (e.flags)))
  AND (NOT %(zoom)s::boolean OR e.triage_zoom)
  AND e.uidvalidity = (SELECT f.uidvalidity FROM mail_folders f WHERE f.folder = %(folder)s)
ORDER BY e.triage_confidence DESC NULLS LAST, e.date DESC NULLS LAST, e.uid DESC
LIMIT %(limit)s;

-- name: triage_top_zoom
-- top_by_confidence with the zoom filter (any or one category), off the
-- partial index of Zoom mail.
SELECT e.folder, e.uidvalidity, e.uid, e.date, e.from_addr, e.from_name, e.subject, e.flags,
       e.triage_category, e.triage_confidence, e.triage_reasons,
       coalesce(e.scores_version = %(version)s AND e.mention_identity = %(fingerprint)s, false) AS fresh
FROM emails e
WHERE e.folder = %(folder)s AND e.triage_zoom
  AND (%(category)s::text IS NULL OR e.triage_category = %(category)s)
  AND (%(day_start)s::timestamptz IS NULL OR (e.date >= %(day_start)s AND e.date < %(day_end)s))
  AND (NOT %(unread)s::boolean OR NOT ('\Seen' = ANY (e.flags)))
  AND e.uidvalidity = (SELECT f.uidvalidity FROM mail_folders f WHERE f.folder = %(folder)s)
ORDER BY e.triage_confidence DESC NULLS LAST, e.date DESC NULLS LAST, e.uid DESC
LIMIT %(limit)s;

-- name: scores_stale_in_folder
-- How many of a folder's rows hold stale (or no) scores: triage says so.
-- Spelled as IS NULL / < / > so the two indexes serve it (a bitmap OR).
SELECT count(*) AS n
FROM emails e
WHERE e.folder = %(folder)s
  AND (e.scores_version IS NULL OR e.scores_version < %(version)s OR e.scores_version > %(version)s
       OR e.mention_identity IS NULL OR e.mention_identity < %(fingerprint)s
       OR e.mention_identity > %(fingerprint)s);

-- name: clean_candidates
-- /clean discovery: current, unflagged candidates, most confident first.
SELECT e.folder, e.uidvalidity, e.uid, e.date, e.from_addr, e.from_name, e.subject, e.flags,
       e.clean_confidence, e.clean_category, e.clean_signals
FROM emails e
WHERE e.folder = %(folder)s AND e.clean_candidate
  AND e.scores_version = %(version)s AND e.mention_identity = %(fingerprint)s
  AND NOT ('\Flagged' = ANY (e.flags))
  AND e.uidvalidity = (SELECT f.uidvalidity FROM mail_folders f WHERE f.folder = %(folder)s)
ORDER BY e.clean_confidence DESC, e.date DESC NULLS LAST, e.uid DESC
LIMIT %(limit)s;

-- name: clean_summary
-- What /clean looked at: every row of the folder; excluded because it involves
-- the person (or is flagged: a flagged row is clean_direct, a row flagged since
-- it was scored is stale), and not yet checked (stale: excluded as well).
-- Each count is served by an index (index-only where the map allows).
SELECT (SELECT count(*) FROM emails e WHERE e.folder = %(folder)s) AS scanned,
       (SELECT count(*) FROM emails e
        WHERE e.folder = %(folder)s
          AND (e.scores_version IS NULL OR e.scores_version < %(version)s
               OR e.scores_version > %(version)s OR e.mention_identity IS NULL
               OR e.mention_identity < %(fingerprint)s OR e.mention_identity > %(fingerprint)s)
       ) AS not_checked,
       (SELECT count(*) FROM emails e
        WHERE e.folder = %(folder)s AND e.clean_direct
          AND e.scores_version = %(version)s AND e.mention_identity = %(fingerprint)s) AS direct;

-- name: mirror_counts
SELECT folder, count(*) AS messages, count(*) FILTER (WHERE NOT ('\Seen' = ANY (flags))) AS unread
FROM emails GROUP BY folder ORDER BY folder;

-- name: job_heads
-- The SSE hub's polling fallback: one query for every watched job.
SELECT job_id, job_type, status, processed, total_estimate, error, cancel_requested, last_seq,
       created_at, started_at, finished_at, attempt
FROM imap_jobs WHERE job_id = ANY (%(job_ids)s::uuid[]);

-- name: events_after_many
-- The hub's batched read: new events of every changed job in one round trip.
SELECT e.job_id, e.seq, e.created_at, e.level, e.message, e.data
FROM imap_job_events e
JOIN unnest(%(job_ids)s::uuid[], %(afters)s::int[]) AS k(job_id, after)
  ON e.job_id = k.job_id AND e.seq > k.after
ORDER BY e.job_id, e.seq
LIMIT %(limit)s;

-- ---------------------------------------------------------------------------
-- Approval-bound mutation jobs and their change record (005). A mutation job
-- is made from its approval row by the database; `imap_job_changes` says,
-- message by message, what each attempt intended and what it applied.

-- name: enqueue_approved
-- Type, params and messages are copied from the approval by SQL, so no caller
-- can enqueue other work under it; a second call returns nothing (one job per approval).
INSERT INTO imap_jobs (job_type, payload, approval_id, max_attempts, total_estimate)
SELECT a.action,
       a.params || jsonb_build_object('messages', a.messages) || %(extra)s::jsonb,
       a.approval_id, %(max_attempts)s, jsonb_array_length(a.messages)
FROM approvals a
WHERE a.approval_id = %(approval_id)s
ON CONFLICT (approval_id) DO NOTHING
RETURNING *;

-- name: get_job_by_approval
SELECT * FROM imap_jobs WHERE approval_id = %(approval_id)s;

-- name: job_changes
SELECT * FROM imap_job_changes WHERE job_id = %(job_id)s ORDER BY folder, uidvalidity, uid;

-- name: change_intend
-- Write-ahead, before a batch touches IMAP. A row an earlier attempt wrote wins:
-- what it saw first (flags before) is what undo must restore.
INSERT INTO imap_job_changes (
    job_id, folder, uidvalidity, uid, message_id, subject, state, attempt,
    flags_before, flags_added, flags_removed, folder_after, uidvalidity_after, uid_floor,
    gm_msgid, labels_before, labels_added, labels_removed)
VALUES (
    %(job_id)s, %(folder)s, %(uidvalidity)s, %(uid)s, %(message_id)s, %(subject)s, 'intended',
    %(attempt)s, %(flags_before)s, %(flags_added)s, %(flags_removed)s, %(folder_after)s,
    %(uidvalidity_after)s, %(uid_floor)s,
    %(gm_msgid)s, %(labels_before)s, %(labels_added)s, %(labels_removed)s)
ON CONFLICT (job_id, folder, uidvalidity, uid) DO NOTHING;

-- name: change_settle
-- The outcome of one message the job touched: its 'intended' row becomes
-- applied / failed / skipped. Final rows never change.
UPDATE imap_job_changes SET
    state = %(state)s,
    flags_after = coalesce(%(flags_after)s, flags_after),
    folder_after = coalesce(%(folder_after)s, folder_after),
    uidvalidity_after = coalesce(%(uidvalidity_after)s, uidvalidity_after),
    uid_after = coalesce(%(uid_after)s, uid_after),
    labels_after = coalesce(%(labels_after)s, labels_after),
    reason = %(reason)s,
    updated_at = now()
WHERE job_id = %(job_id)s AND folder = %(folder)s AND uidvalidity = %(uidvalidity)s
  AND uid = %(uid)s AND state = 'intended';

-- name: change_skip
-- A message the job never touched (stale UIDVALIDITY, gone before the job...).
-- An existing row is left to change_settle.
INSERT INTO imap_job_changes (
    job_id, folder, uidvalidity, uid, message_id, subject, state, attempt, reason)
VALUES (
    %(job_id)s, %(folder)s, %(uidvalidity)s, %(uid)s, %(message_id)s, %(subject)s, 'skipped',
    %(attempt)s, %(reason)s)
ON CONFLICT (job_id, folder, uidvalidity, uid) DO NOTHING;

-- name: change_summaries
-- Finished cards read the record: per job, how many messages changed and which.
SELECT job_id,
       count(*) FILTER (WHERE state = 'applied') AS applied,
       count(*) FILTER (WHERE state = 'skipped') AS skipped,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       count(*) FILTER (WHERE state = 'intended') AS intended,
       coalesce(array_agg(uid ORDER BY folder, uid) FILTER (WHERE state = 'applied'), '{}') AS uids
FROM imap_job_changes
WHERE job_id = ANY (%(job_ids)s::uuid[])
GROUP BY job_id;

-- ---------------------------------------------------------------------------
-- The live mirror (007): deduplicated automatic syncs, the IDLE watcher's lease,
-- the per-account IMAP connection budget, and the mirror change log the page
-- follows. Every lease here runs on the database clock.

-- name: enqueue_pending_sync
-- An automatic sync: a pending job already holding the key wins (the caller
-- then reads it); the key frees itself when the job starts (trigger in 007).
INSERT INTO imap_jobs (job_type, payload, pending_key, max_attempts)
VALUES ('sync', %(payload)s, %(pending_key)s, %(max_attempts)s)
ON CONFLICT (pending_key) WHERE pending_key IS NOT NULL DO NOTHING
RETURNING *;

-- name: pending_sync_by_key
SELECT * FROM imap_jobs WHERE pending_key = %(pending_key)s;

-- name: enqueue_sweep_if_due
-- The interval sweep of every folder, in one statement: only once something
-- was mirrored, and only when no all-folder sync is pending or running and
-- none was made within the interval (a person's /sync counts too).
INSERT INTO imap_jobs (job_type, payload, pending_key, max_attempts)
SELECT 'sync', %(payload)s, %(pending_key)s, %(max_attempts)s
WHERE EXISTS (SELECT 1 FROM mail_folders)
  AND NOT EXISTS (SELECT 1 FROM imap_jobs j WHERE j.status = 'pending'
                  AND j.job_type = 'sync' AND NOT (j.payload ? 'folders'))
  AND NOT EXISTS (SELECT 1 FROM imap_jobs j WHERE j.status = 'running'
                  AND j.job_type = 'sync' AND NOT (j.payload ? 'folders'))
  AND NOT EXISTS (SELECT 1 FROM imap_jobs j
                  WHERE j.created_at > now() - make_interval(secs => %(interval)s)
                    AND j.job_type = 'sync' AND NOT (j.payload ? 'folders'))
ON CONFLICT (pending_key) WHERE pending_key IS NOT NULL DO NOTHING
RETURNING *;

-- name: folder_is_mirrored
SELECT EXISTS (SELECT 1 FROM mail_folders WHERE folder = %(folder)s) AS mirrored;

-- name: watcher_acquire
-- Take (or keep) the watch of one folder: granted when free, expired, or ours.
INSERT INTO imap_watchers AS w (account, folder, owner, lease_expires_at)
VALUES (%(account)s, %(folder)s, %(owner)s, now() + make_interval(secs => %(lease_seconds)s))
ON CONFLICT (account, folder) DO UPDATE SET
    owner = EXCLUDED.owner,
    lease_expires_at = EXCLUDED.lease_expires_at,
    acquired_at = CASE WHEN w.owner = EXCLUDED.owner THEN w.acquired_at ELSE now() END
WHERE w.owner = EXCLUDED.owner OR w.lease_expires_at <= now()
RETURNING owner, acquired_at;

-- name: watcher_renew
UPDATE imap_watchers SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
WHERE account = %(account)s AND folder = %(folder)s AND owner = %(owner)s
RETURNING owner;

-- name: watcher_release
DELETE FROM imap_watchers
WHERE account = %(account)s AND folder = %(folder)s AND owner = %(owner)s;

-- name: watcher_holder
-- Who watches now (expired leases count as nobody); tests and diagnostics.
SELECT owner, acquired_at, lease_expires_at FROM imap_watchers
WHERE account = %(account)s AND folder = %(folder)s AND lease_expires_at > now();

-- name: budget_acquire
-- The lowest free slot in [low, high]: missing, or its lease expired. Two
-- takers of the same slot: the second finds the fresh row and gets nothing.
WITH free AS (
    SELECT s FROM generate_series(%(low)s::int, %(high)s::int) AS s
    WHERE NOT EXISTS (
        SELECT 1 FROM imap_connection_slots c
        WHERE c.account = %(account)s AND c.slot = s AND c.lease_expires_at > now())
    ORDER BY s
    LIMIT 1
)
INSERT INTO imap_connection_slots AS c
    (account, slot, holder, process, purpose, token, lease_expires_at, acquired_at)
SELECT %(account)s, s, %(holder)s, %(process)s, %(purpose)s, gen_random_uuid(),
       now() + make_interval(secs => %(lease_seconds)s), now()
FROM free
ON CONFLICT (account, slot) DO UPDATE SET
    holder = EXCLUDED.holder, process = EXCLUDED.process, purpose = EXCLUDED.purpose,
    token = EXCLUDED.token, lease_expires_at = EXCLUDED.lease_expires_at,
    acquired_at = EXCLUDED.acquired_at
WHERE c.lease_expires_at <= now()
RETURNING slot, token;

-- name: budget_renew
-- One query per process renews every slot it holds; a slot missing from
-- `held` was taken over (its lease had expired). `waiting_elsewhere`: other
-- processes waiting for a slot, so idle connections here should be given back.
WITH renewed AS (
    UPDATE imap_connection_slots c
    SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
    FROM unnest(%(slots)s::int[], %(tokens)s::uuid[]) AS h(slot, token)
    WHERE c.account = %(account)s AND c.slot = h.slot AND c.token = h.token
    RETURNING c.slot
)
SELECT coalesce((SELECT array_agg(slot) FROM renewed), '{}') AS held,
       (SELECT count(*) FROM imap_connection_waits w
        WHERE w.account = %(account)s AND w.process <> %(process)s
          AND w.expires_at > now()) AS waiting_elsewhere;

-- name: budget_release
DELETE FROM imap_connection_slots
WHERE account = %(account)s AND slot = %(slot)s AND token = %(token)s;

-- name: budget_wait
INSERT INTO imap_connection_waits (account, waiter, process, expires_at)
VALUES (%(account)s, %(waiter)s, %(process)s, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (account, waiter) DO UPDATE SET expires_at = EXCLUDED.expires_at;

-- name: budget_unwait
DELETE FROM imap_connection_waits WHERE account = %(account)s AND waiter = %(waiter)s;

-- name: budget_in_use
-- Slots of an account held right now, with their holders (tests, diagnostics).
SELECT slot, holder, process, purpose, lease_expires_at FROM imap_connection_slots
WHERE account = %(account)s AND lease_expires_at > now()
ORDER BY slot;

-- name: mirror_changes_head
-- The web's polling fallback for missed NOTIFYs: any new (or late-committed,
-- or pruned) row changes one of the two numbers.
SELECT coalesce(max(id), 0) AS last_id, count(*) AS n FROM mirror_changes;

-- name: mirror_changes_prune
DELETE FROM mirror_changes WHERE changed_at < now() - make_interval(secs => %(keep_seconds)s);

-- name: mirror_folder_summary
-- One folder as the page's notice shows it (current UIDVALIDITY only).
-- `complete`: a pass over the folder finished (finish_folder sets uidnext;
-- reset_folder clears it), so rows from here on are arrivals, not a first sync.
SELECT count(*) AS messages,
       count(*) FILTER (WHERE NOT ('\Seen' = ANY (e.flags))) AS unread,
       coalesce(max(e.id), 0) AS last_id,
       max(f.synced_at) AS synced_at,
       max(f.uidnext) IS NOT NULL AS complete
FROM mail_folders f
LEFT JOIN emails e ON e.folder = f.folder AND e.uidvalidity = f.uidvalidity
WHERE f.folder = %(folder)s;

-- name: mirror_arrivals
-- Rows of a folder mirrored after row id `after`, newest first.
SELECT e.id, e.uid, e.from_addr, e.from_name, e.subject, e.date, e.flags
FROM emails e
JOIN mail_folders f ON f.folder = e.folder AND f.uidvalidity = e.uidvalidity
WHERE e.folder = %(folder)s AND e.id > %(after)s
ORDER BY e.id DESC
LIMIT %(limit)s;

-- ---------------------------------------------------------------------------
-- Bounded growth (008): a finished job's folded card state (app/web/progress.py)
-- and the cleaner (executor/cleaner.py). The cleaner deletes in statements of
-- at most `limit` rows that skip locked ones, so it never holds locks for long
-- and two executors' cleaners never wait for each other.

-- name: job_progress_many
SELECT job_id, progress FROM imap_jobs
WHERE job_id = ANY (%(job_ids)s::uuid[]) AND progress IS NOT NULL;

-- name: job_progress_save
-- A finished job's fold, stored once, and only ever moved forward.
UPDATE imap_jobs SET progress = %(progress)s
WHERE job_id = %(job_id)s AND status IN ('completed', 'failed', 'cancelled')
  AND (progress IS NULL OR jsonb_typeof(progress -> 'seq') IS DISTINCT FROM 'number'
       OR (progress ->> 'seq')::numeric < %(seq)s);

-- name: cleaner_prune_read_only_events
-- Events of read-only jobs (sync, rescore) that finished before the cutoff.
WITH doomed AS (
    SELECT e.job_id, e.seq
    FROM imap_jobs j
    JOIN imap_job_types t ON t.job_type = j.job_type AND NOT t.is_mutation
    JOIN imap_job_events e ON e.job_id = j.job_id
    WHERE j.status IN ('completed', 'failed', 'cancelled') AND j.events_pruned_at IS NULL
      AND coalesce(j.finished_at, j.created_at) < now() - make_interval(secs => %(keep_seconds)s)
      AND j.approval_id IS NULL
    LIMIT %(limit)s
    FOR UPDATE OF e SKIP LOCKED
)
DELETE FROM imap_job_events e USING doomed d
WHERE e.job_id = d.job_id AND e.seq = d.seq;

-- name: cleaner_delete_read_only_jobs
-- Then those jobs themselves, once none of their events is left. A job that
-- has an approval or a change record is never one of them.
WITH doomed AS (
    SELECT j.job_id FROM imap_jobs j
    JOIN imap_job_types t ON t.job_type = j.job_type AND NOT t.is_mutation
    WHERE j.status IN ('completed', 'failed', 'cancelled') AND j.events_pruned_at IS NULL
      AND coalesce(j.finished_at, j.created_at) < now() - make_interval(secs => %(keep_seconds)s)
      AND j.approval_id IS NULL
      AND NOT EXISTS (SELECT 1 FROM imap_job_events e WHERE e.job_id = j.job_id)
      AND NOT EXISTS (SELECT 1 FROM imap_job_changes c WHERE c.job_id = j.job_id)
    ORDER BY coalesce(j.finished_at, j.created_at)
    LIMIT %(limit)s
    FOR UPDATE OF j SKIP LOCKED
)
DELETE FROM imap_jobs j USING doomed d
WHERE j.job_id = d.job_id
RETURNING j.job_id;

-- name: cleaner_kept_jobs
-- Mutation jobs that finished before the cutoff and still have their events.
-- The job, its approval and its change record are kept for good (undo is
-- offered for every finished mutation); only the events go, once folded.
SELECT j.* FROM imap_jobs j
JOIN imap_job_types t ON t.job_type = j.job_type AND t.is_mutation
WHERE j.status IN ('completed', 'failed', 'cancelled') AND j.events_pruned_at IS NULL
  AND coalesce(j.finished_at, j.created_at) < now() - make_interval(secs => %(keep_seconds)s)
ORDER BY coalesce(j.finished_at, j.created_at)
LIMIT %(limit)s;

-- name: cleaner_lock_kept_job
-- Holds the row (every event append updates it first) while the cleaner folds
-- the job's events and deletes them; a row another cleaner holds is skipped.
SELECT job_id, last_seq, progress FROM imap_jobs
WHERE job_id = %(job_id)s AND events_pruned_at IS NULL
  AND status IN ('completed', 'failed', 'cancelled')
FOR NO KEY UPDATE SKIP LOCKED;

-- name: cleaner_prune_kept_job
-- In the transaction that holds the row: the fold stored, the events it was
-- folded from deleted, the job marked as cleaned.
WITH gone AS (
    DELETE FROM imap_job_events WHERE job_id = %(job_id)s AND seq <= %(seq)s
    RETURNING seq
)
UPDATE imap_jobs SET progress = %(progress)s, events_pruned_at = now()
WHERE job_id = %(job_id)s
RETURNING (SELECT count(*) FROM gone) AS events;

-- ---------------------------------------------------------------------------
-- Gmail mode (010): rows keep X-GM-MSGID / X-GM-THRID; labels are X-GM-LABELS.

-- name: folder_state
SELECT uid, flags, labels FROM emails WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s;

-- name: gmail_copies
-- Every mirrored copy of these Gmail messages: labels and flags belong to the
-- message, so each copy follows a change (through update_flags).
SELECT folder, uidvalidity, uid, gm_msgid FROM emails WHERE gm_msgid = ANY (%(gm_msgids)s::numeric[]);

-- name: gmail_drop_copies
-- The copies Gmail took away: the message lost the label that showed it in these folders.
DELETE FROM emails WHERE gm_msgid = %(gm_msgid)s AND folder = ANY (%(folders)s::text[]);

-- name: job_throttle_count
-- How often a job was handed back because the server said it was over a limit.
SELECT count(*) AS n FROM imap_job_events
WHERE job_id = %(job_id)s AND data ->> 'phase' = 'throttled';

-- name: throttle_release
-- The server refused for a limit (Gmail: too many connections, bandwidth): the
-- job goes back to pending after a backoff without spending an attempt, with
-- an event saying why (phase 'throttled', counted by job_throttle_count).
WITH upd AS (
    UPDATE imap_jobs SET
        status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'pending' END,
        attempt = CASE WHEN cancel_requested THEN attempt ELSE attempt - 1 END,
        run_after = now() + make_interval(secs => %(backoff_seconds)s),
        lease_owner = NULL,
        lease_expires_at = NULL,
        finished_at = CASE WHEN cancel_requested THEN now() END,
        last_seq = last_seq + 1
    WHERE job_id = %(job_id)s AND status = 'running'
      AND attempt = %(attempt)s AND lease_owner = %(owner)s
    RETURNING *
), ev AS (
    INSERT INTO imap_job_events (job_id, seq, level, message, data)
    SELECT job_id, last_seq, 'warning', %(message)s, %(data)s FROM upd
)
SELECT * FROM upd;

-- name: sync_ranges_load
-- Parallel first sync: the recorded UID ranges of a folder's first pass
-- (app/db/sql/015_sync_ranges.sql, executor/sync_parallel.py).
SELECT lo, hi, done_uid FROM mail_folder_ranges
WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s
ORDER BY lo;

-- name: sync_ranges_clear
-- Before recording a split: ranges of an older UIDVALIDITY mean nothing.
DELETE FROM mail_folder_ranges WHERE folder = %(folder)s;

-- name: sync_range_record
INSERT INTO mail_folder_ranges (folder, uidvalidity, lo, hi, done_uid)
VALUES (%(folder)s, %(uidvalidity)s, %(lo)s, %(hi)s, %(lo)s - 1);

-- name: sync_range_advance
-- Every UID of the range up to `done_uid` is mirrored (in this transaction).
UPDATE mail_folder_ranges SET done_uid = greatest(done_uid, %(done_uid)s)
WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s AND lo = %(lo)s;

-- name: sync_ranges_cursor
-- The folder's cursor from its ranges: the progress of the lowest range not
-- yet done (ranges are contiguous, so everything below it is in), or the top
-- of the last one when all are done. Set exactly, in the batch's transaction.
UPDATE mail_folders SET last_seen_uid = coalesce(
        (SELECT min(done_uid) FROM mail_folder_ranges
         WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s AND done_uid < hi),
        (SELECT max(hi) FROM mail_folder_ranges
         WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s),
        last_seen_uid),
    synced_at = now()
WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s
RETURNING last_seen_uid;

-- name: sync_ranges_drop_done
-- Once every range is done the cursor says it all: the ranges go.
DELETE FROM mail_folder_ranges r
WHERE r.folder = %(folder)s AND r.uidvalidity = %(uidvalidity)s
  AND NOT EXISTS (
    SELECT 1 FROM mail_folder_ranges o
    WHERE o.folder = r.folder AND o.uidvalidity = r.uidvalidity AND o.done_uid < o.hi);
