-- Caseflow store, PostgreSQL schema version 1.
-- Times are unix milliseconds (bigint), as in the sled store. Records are `json` (not
-- `jsonb`) so they read back byte for byte as written, key order included.

-- Counters that must not have gaps: case numbers are shown to people (CASE-000123).
CREATE TABLE caseflow_counters (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);
INSERT INTO caseflow_counters (name, value) VALUES ('next_case_id', 1);

-- One row per case. The columns are what queries filter and sort on; `record` is the
-- case without its timeline (which is in case_timeline).
CREATE TABLE cases (
    id          bigint PRIMARY KEY,
    state       text     NOT NULL,
    is_open     boolean  NOT NULL,
    severity    smallint NOT NULL,  -- 0 informational .. 4 critical
    assignee    text,
    dedup_key   text,
    created_at  bigint   NOT NULL,
    updated_at  bigint   NOT NULL,
    sla_due_at  bigint,             -- set while the case is open and its SLA not breached
    record      json     NOT NULL
);
CREATE INDEX cases_created_at ON cases (created_at, id);
CREATE INDEX cases_updated_at ON cases (updated_at, id);
CREATE INDEX cases_state      ON cases (state, created_at, id);
CREATE INDEX cases_severity   ON cases (severity, created_at, id);
CREATE INDEX cases_assignee   ON cases (assignee, created_at, id) WHERE assignee IS NOT NULL;
CREATE INDEX cases_dedup_open ON cases (dedup_key, id) WHERE dedup_key IS NOT NULL AND is_open;
CREATE INDEX cases_sla_due    ON cases (sla_due_at, id) WHERE sla_due_at IS NOT NULL;

CREATE TABLE case_observables (
    case_id    bigint NOT NULL REFERENCES cases (id),
    kind       text   NOT NULL,
    value      text   NOT NULL,     -- normalised
    created_at bigint NOT NULL,     -- the case's
    PRIMARY KEY (case_id, kind, value)
);
CREATE INDEX case_observables_lookup ON case_observables (kind, value, created_at, case_id);

CREATE TABLE case_tags (
    case_id    bigint NOT NULL REFERENCES cases (id),
    tag        text   NOT NULL,
    created_at bigint NOT NULL,     -- the case's
    PRIMARY KEY (case_id, tag)
);
CREATE INDEX case_tags_lookup ON case_tags (tag, created_at, case_id);

-- Every change to a case, oldest first: appended, never rewritten.
CREATE TABLE case_timeline (
    case_id bigint  NOT NULL REFERENCES cases (id),
    seq     integer NOT NULL,
    entry   json    NOT NULL,
    PRIMARY KEY (case_id, seq)
);

-- The case-event outbox: undelivered events, written in the transaction of the change.
-- `claimed_by` is the engine process working on it (engine_processes.id).
CREATE SEQUENCE case_event_ids;
CREATE TABLE case_events (
    id         bigint PRIMARY KEY,
    case_id    bigint NOT NULL REFERENCES cases (id),
    event      json   NOT NULL,
    claimed_by text
);

-- Playbooks started for a pending case event (removed with the event's acknowledgement).
CREATE TABLE case_event_deliveries (
    event_id bigint NOT NULL,
    playbook text   NOT NULL,
    run_id   text   NOT NULL,
    PRIMARY KEY (event_id, playbook)
);

-- What a (run, step) changed, so a retried step does not change it twice.
CREATE TABLE idempotency (
    run_id  text   NOT NULL,
    step_id text   NOT NULL,
    case_id bigint NOT NULL,
    result  json   NOT NULL,
    PRIMARY KEY (run_id, step_id)
);

-- Keys of incoming events (`okta:<uuid>`): a second delivery of a key is a duplicate.
CREATE TABLE incoming_keys (
    key         text   PRIMARY KEY,
    received_at bigint NOT NULL
);

-- The inbox queue: accepted incoming events until a process takes them.
CREATE SEQUENCE inbox_seqs;
CREATE TABLE inbox (
    seq         bigint PRIMARY KEY,
    source      text   NOT NULL,
    key         text,
    event       json   NOT NULL,
    received_at bigint NOT NULL,
    claimed_by  text
);

-- Runs each taken inbox entry started.
CREATE TABLE inbox_runs (
    seq    bigint NOT NULL,
    run_id text   NOT NULL,
    PRIMARY KEY (seq, run_id)
);

-- The run journal. `owner` is the process running an unfinished run (NULL: parked,
-- free for any process to resume).
CREATE TABLE runs (
    run_id     text    PRIMARY KEY,
    playbook   text    NOT NULL,
    status     text    NOT NULL,
    unfinished boolean NOT NULL,
    owner      text,
    record     json    NOT NULL    -- summary, input, output (steps are in run_steps)
);
CREATE INDEX runs_playbook   ON runs (playbook, run_id);
CREATE INDEX runs_status     ON runs (status, run_id);
CREATE INDEX runs_unfinished ON runs (run_id) WHERE unfinished;

-- One entry per finished step (`engine store check` reports entries without a run).
CREATE TABLE run_steps (
    run_id  text    NOT NULL,
    step_id text    NOT NULL,
    seq     integer NOT NULL,
    entry   json    NOT NULL,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE cursors (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- Engine processes sharing this store. A process holds a session advisory lock
-- (caseflow namespace, lock_key) for as long as it lives and refreshes heartbeat_at; a
-- process without its lock, or whose heartbeat is older than the lease, is removed by
-- the others, and what it had claimed is free again.
CREATE TABLE engine_processes (
    id           text        PRIMARY KEY,
    lock_key     integer     NOT NULL,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Concurrency keys held across processes: one run at a time per key.
CREATE TABLE concurrency_keys (
    key         text        PRIMARY KEY,
    run_id      text        NOT NULL,
    owner       text        NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now()
);
