-- Scores computed at ingest (issue 10, item 1): the executor stores each
-- message's triage and /clean verdict on its mirror row (app/mail/scores.py),
-- so the web ranks the whole mirror with indexed SQL instead of scoring rows in
-- a Python loop. A row's scores are current only when scores_version is the
-- code's SCORES_VERSION and mention_identity is the current identity's
-- fingerprint; otherwise they are stale: never a /clean candidate, shown as
-- stale by triage, and recomputed by the `rescore` job.
-- Existing rows start unscored (scores_version NULL): the first sync after
-- this migration starts a rescore job that scores them from the mirror.

ALTER TABLE emails
    ADD COLUMN triage_category   text,
    ADD COLUMN triage_confidence real,
    ADD COLUMN triage_reasons    text[],
    ADD COLUMN triage_zoom       boolean,
    ADD COLUMN clean_candidate   boolean NOT NULL DEFAULT false,
    ADD COLUMN clean_confidence  real,
    ADD COLUMN clean_category    text,
    ADD COLUMN clean_signals     text[],
    ADD COLUMN clean_excluded    text,
    ADD COLUMN clean_direct      boolean NOT NULL DEFAULT true,
    ADD COLUMN scores_version    int;

-- top_by_confidence with a category: newest-first among equal confidences.
CREATE INDEX emails_triage_category
    ON emails (folder, triage_category, triage_confidence DESC NULLS LAST, date DESC NULLS LAST, uid DESC);
-- top_by_confidence for any category.
CREATE INDEX emails_triage_any
    ON emails (folder, triage_confidence DESC NULLS LAST, date DESC NULLS LAST, uid DESC);
-- top_by_confidence with the zoom filter: Zoom mail is rare and often ranks
-- low, so walking the indexes above would skip most of the folder.
CREATE INDEX emails_triage_zoom
    ON emails (folder, triage_confidence DESC NULLS LAST, date DESC NULLS LAST, uid DESC) WHERE triage_zoom;
-- /clean discovery: only candidates are indexed.
CREATE INDEX emails_clean_candidates
    ON emails (folder, clean_confidence DESC, date DESC NULLS LAST, uid DESC) WHERE clean_candidate;
-- /clean's count of rows excluded because they involve the person (index-only).
CREATE INDEX emails_clean_direct ON emails (folder, scores_version, mention_identity) WHERE clean_direct;
-- The rescore job's scan for rows scored under other rules (IS NULL / < / >).
CREATE INDEX emails_scores_version ON emails (scores_version);
