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
WITH picked AS (
    SELECT job_id, row_number() OVER (ORDER BY created_at, job_id) AS n
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
        lease_owner = (%(owners)s::text[])[picked.n],
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        started_at = coalesce(j.started_at, now()),
        last_seq = j.last_seq + 1
    FROM picked
    WHERE j.job_id = picked.job_id
    RETURNING j.*
), ev AS (
    INSERT INTO imap_job_events (job_id, seq, level, message, data)
    SELECT job_id, last_seq, 'info', 'claimed by ' || lease_owner,
           jsonb_build_object('attempt', attempt, 'worker', lease_owner)
    FROM upd
)
SELECT * FROM upd;

-- name: renew_leases
-- One query per process renews every lease it holds; rows not returned were lost.
UPDATE imap_jobs j SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
FROM unnest(%(job_ids)s::uuid[], %(attempts)s::int[], %(owners)s::text[]) AS l(job_id, attempt, owner)
WHERE j.job_id = l.job_id AND j.status = 'running'
  AND j.attempt = l.attempt AND j.lease_owner = l.owner
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

-- name: upsert_email
INSERT INTO emails (
    folder, uidvalidity, uid, message_id, in_reply_to, from_addr, from_name,
    to_addrs, cc_addrs, to_display, cc_display, reply_to, subject, date, internal_date,
    flags, labels, body_excerpt, list_unsubscribe, list_id, precedence, auto_submitted,
    has_attachments, size, modseq, synced_at)
VALUES (
    %(folder)s, %(uidvalidity)s, %(uid)s, %(message_id)s, %(in_reply_to)s, %(from_addr)s, %(from_name)s,
    %(to_addrs)s, %(cc_addrs)s, %(to_display)s, %(cc_display)s, %(reply_to)s, %(subject)s, %(date)s,
    %(internal_date)s, %(flags)s, %(labels)s, %(body_excerpt)s, %(list_unsubscribe)s, %(list_id)s,
    %(precedence)s, %(auto_submitted)s, %(has_attachments)s, %(size)s, %(modseq)s, now())
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
    size = EXCLUDED.size, modseq = EXCLUDED.modseq, synced_at = now();

-- name: folder_flags
SELECT uid, flags FROM emails WHERE folder = %(folder)s AND uidvalidity = %(uidvalidity)s;

-- name: update_flags
UPDATE emails SET flags = %(flags)s, labels = %(labels)s, modseq = coalesce(%(modseq)s, modseq), synced_at = now()
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
    has_attachments, size, modseq, synced_at)
SELECT %(target)s, %(target_uidvalidity)s, %(target_uid)s, message_id, in_reply_to, from_addr, from_name,
    to_addrs, cc_addrs, to_display, cc_display, reply_to, subject, date, internal_date,
    %(flags)s, labels, body_excerpt, list_unsubscribe, list_id, precedence, auto_submitted,
    has_attachments, size, NULL, now()
FROM src
WHERE %(target_uid)s::bigint IS NOT NULL AND %(target_uidvalidity)s::bigint IS NOT NULL
ON CONFLICT (folder, uidvalidity, uid) DO NOTHING;

-- ---------------------------------------------------------------------------
-- Mirror reads (web and graph).

-- name: search_emails
-- Every word must appear in the sender, the subject or the excerpt.
SELECT folder, uidvalidity, uid, message_id, from_addr, from_name, to_addrs, cc_addrs,
       to_display, cc_display, subject, date, flags, labels, body_excerpt,
       list_unsubscribe, list_id, precedence, auto_submitted
FROM emails e
WHERE (%(folder)s::text IS NULL OR folder = %(folder)s)
  AND (%(unread)s::boolean IS NULL OR (NOT ('\Seen' = ANY (flags))) = %(unread)s)
  AND (%(from_contains)s::text IS NULL
       OR from_addr ILIKE '%%' || %(from_contains)s || '%%' OR from_name ILIKE '%%' || %(from_contains)s || '%%')
  AND (%(subject_contains)s::text IS NULL OR subject ILIKE '%%' || %(subject_contains)s || '%%')
  AND NOT EXISTS (
      SELECT 1 FROM unnest(%(words)s::text[]) AS w(word)
      WHERE NOT (coalesce(e.from_addr, '') ILIKE '%%' || w.word || '%%'
              OR coalesce(e.from_name, '') ILIKE '%%' || w.word || '%%'
              OR e.subject ILIKE '%%' || w.word || '%%'
              OR coalesce(e.list_id, '') ILIKE '%%' || w.word || '%%'))
  AND EXISTS (SELECT 1 FROM mail_folders f WHERE f.folder = e.folder AND f.uidvalidity = e.uidvalidity)
ORDER BY date DESC NULLS LAST, uid DESC
LIMIT %(limit)s;

-- name: emails_by_identity
SELECT e.folder, e.uidvalidity, e.uid, e.message_id, e.from_addr, e.from_name, e.to_addrs, e.cc_addrs,
       e.to_display, e.cc_display, e.subject, e.date, e.flags, e.labels, e.body_excerpt,
       e.list_unsubscribe, e.list_id, e.precedence, e.auto_submitted
FROM emails e
JOIN unnest(%(folders)s::text[], %(uidvalidities)s::bigint[], %(uids)s::bigint[])
     WITH ORDINALITY AS k(folder, uidvalidity, uid, n)
  ON e.folder = k.folder AND e.uidvalidity = k.uidvalidity AND e.uid = k.uid
ORDER BY k.n;

-- name: folder_emails
-- Everything in one folder (current UIDVALIDITY), newest first, for scoring.
SELECT e.folder, e.uidvalidity, e.uid, e.message_id, e.from_addr, e.from_name, e.to_addrs, e.cc_addrs,
       e.to_display, e.cc_display, e.subject, e.date, e.flags, e.labels, e.body_excerpt,
       e.list_unsubscribe, e.list_id, e.precedence, e.auto_submitted
FROM emails e
JOIN mail_folders f ON f.folder = e.folder AND f.uidvalidity = e.uidvalidity
WHERE e.folder = %(folder)s
ORDER BY e.date DESC NULLS LAST, e.uid DESC
LIMIT %(limit)s;

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
