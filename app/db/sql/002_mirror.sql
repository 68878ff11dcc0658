-- The mailbox mirror, written only by the executor.

CREATE TABLE mail_folders (
    folder          text PRIMARY KEY,
    uidvalidity     bigint NOT NULL,
    uidnext         bigint,
    highestmodseq   bigint,
    last_seen_uid   bigint NOT NULL DEFAULT 0,
    message_count   int NOT NULL DEFAULT 0,
    synced_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE emails (
    id                bigserial PRIMARY KEY,
    folder            text NOT NULL,
    uidvalidity       bigint NOT NULL,
    uid               bigint NOT NULL,
    message_id        text,
    in_reply_to       text,
    from_addr         text,
    from_name         text,
    to_addrs          text[] NOT NULL DEFAULT '{}',
    cc_addrs          text[] NOT NULL DEFAULT '{}',
    to_display        text NOT NULL DEFAULT '',
    cc_display        text NOT NULL DEFAULT '',
    reply_to          text,
    subject           text NOT NULL DEFAULT '',
    date              timestamptz,
    internal_date     timestamptz,
    flags             text[] NOT NULL DEFAULT '{}',
    labels            text[] NOT NULL DEFAULT '{}',
    body_excerpt      text NOT NULL DEFAULT '',
    list_unsubscribe  text,
    list_id           text,
    precedence        text,
    auto_submitted    text,
    has_attachments   boolean NOT NULL DEFAULT false,
    size              int,
    modseq            bigint,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT emails_identity UNIQUE (folder, uidvalidity, uid)
);

CREATE INDEX emails_date ON emails (date DESC);
CREATE INDEX emails_message_id ON emails (message_id);
CREATE INDEX emails_from ON emails (from_addr);
