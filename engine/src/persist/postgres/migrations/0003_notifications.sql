-- Caseflow store, PostgreSQL schema version 3: the notification outbox, shared by every
-- engine process (it was a pair of JSON-lines files per process before).
CREATE SEQUENCE notification_seqs;
CREATE TABLE notifications (
    id           text   PRIMARY KEY,
    seq          bigint NOT NULL UNIQUE DEFAULT nextval('notification_seqs'),  -- push order
    notification json   NOT NULL
);

-- One row per (notification, channel) that is owed a delivery or was tried: `owed` when the
-- notification was queued for the channel, `settled` once it was delivered or rejected,
-- `delivery` the latest attempt's record (latest wins). `claimed_by` is the engine process
-- delivering it right now (engine_processes.id); a claim of a process that is gone is free.
CREATE TABLE notification_channels (
    id            text    NOT NULL,
    channel       text    NOT NULL,
    seq           bigint  NOT NULL,  -- the notification's seq (0 for a record without one)
    owed          boolean NOT NULL DEFAULT false,
    settled       boolean NOT NULL DEFAULT false,
    delivery      json,
    not_before_ms bigint,
    claimed_by    text,
    PRIMARY KEY (id, channel)
);
CREATE INDEX notification_channels_owed ON notification_channels (seq, channel)
    WHERE owed AND NOT settled;
