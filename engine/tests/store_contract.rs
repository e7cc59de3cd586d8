//! The store contract, run against every backend: each `check_*` function takes a
//! `&dyn Store` and is called once per backend by the `backends!` macro below (memory,
//! sled in a temp dir, PostgreSQL in a fresh schema: see `support/pg.rs`).

mod support {
    pub mod pg;
}

use engine::cases::{
    Actor, CaseChange, CaseEventKind, CaseId, CaseState, NewCase, NewObservable, ObservableType,
    Severity, Timestamp,
};
use engine::notify::{Delivery, DeliveryStatus, Notification};
use engine::persist::{
    CaseQuery, CaseSort, DeliveryCounts, Durability, InboxEntry, MemoryStore, NewIncoming,
    PendingEvent, RunFilter, RunInputRecord, RunOrigin, RunRecord, RunState, RunSummary, SledStore,
    Store, StoreError, WriteMeta,
};
use engine::report::StepReport;
use engine::schedule::ready::Status;
use serde_json::json;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_700_000_000_000 + ms).unwrap()
}

fn person(name: &str) -> Actor {
    Actor::Person { name: name.into() }
}

fn meta(ms: i64) -> WriteMeta {
    WriteMeta::new(person("ana"), t(ms))
}

fn playbook_meta(ms: i64, run: &str, step: &str) -> WriteMeta {
    WriteMeta::new(
        Actor::Playbook {
            run_id: run.into(),
            playbook: "phishing".into(),
            step: step.into(),
        },
        t(ms),
    )
    .with_key(run, step)
}

fn new_case(title: &str, severity: Severity) -> NewCase {
    NewCase::new(title, severity)
}

fn ids(cases: &[engine::cases::Case]) -> Vec<u64> {
    cases.iter().map(|c| c.id.0).collect()
}

async fn check_create_and_get(s: &dyn Store) {
    let mut n = new_case("Impossible travel", Severity::High);
    n.observables = vec![NewObservable::new(ObservableType::User, " Alice ")];
    let out = s.create(n, &meta(0)).await.unwrap();
    assert!(out.created && !out.replayed);
    assert_eq!(out.case.id, CaseId(1));
    assert_eq!(out.case.id.to_string(), "CASE-000001");
    assert_eq!(out.case.observables[0].value, "alice");
    let second = s
        .create(new_case("b", Severity::Low), &meta(1))
        .await
        .unwrap();
    assert_eq!(second.case.id, CaseId(2));
    let got = s.get(CaseId(1)).await.unwrap().unwrap();
    assert_eq!(got, out.case);
    assert_eq!(s.get(CaseId(99)).await.unwrap(), None);
    let e = s
        .update(
            CaseId(99),
            vec![CaseChange::AddComment("x".into())],
            &meta(2),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound(CaseId(99))), "{e}");
    assert_eq!(e.to_string(), "CASE-000099 not found");
    assert_eq!(s.count(&CaseQuery::all()).await.unwrap(), 2);
    assert!(s.check().await.unwrap().is_empty());
}

async fn check_events_in_the_outbox(s: &dyn Store) {
    let created = s
        .create(new_case("phish", Severity::Medium), &meta(0))
        .await
        .unwrap();
    let id = created.case.id;
    let pending = s.pending_events(100).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].kind, CaseEventKind::Created);
    assert_eq!(pending[0].case, created.case);
    assert_eq!(pending[0].before, None);
    assert_eq!(created.event_ids, [pending[0].id]);

    let to_progress = s
        .update(
            id,
            vec![CaseChange::SetState {
                to: CaseState::InProgress,
                reason: None,
            }],
            &meta(10),
        )
        .await
        .unwrap();
    assert_eq!(to_progress.events.len(), 1);
    let ev = &to_progress.events[0];
    assert_eq!(ev.kind, CaseEventKind::StateChanged);
    assert_eq!(
        (ev.from.as_deref(), ev.to.as_deref()),
        (Some("new"), Some("in_progress"))
    );
    assert_eq!(ev.before.as_ref().unwrap().state, CaseState::New);
    assert_eq!(ev.case.state, CaseState::InProgress);
    let payload = ev.to_payload();
    assert_eq!(payload["type"], json!("case.state_changed"));
    assert_eq!(payload["from"], json!("new"));
    assert_eq!(payload["to"], json!("in_progress"));
    assert_eq!(payload["case"]["id"], json!("CASE-000001"));
    assert_eq!(payload["before"]["state"], json!("new"));
    assert_eq!(payload["actor"], json!({"type": "person", "name": "ana"}));

    // One update with several changes commits one event per kind, together.
    let out = s
        .update(
            id,
            vec![
                CaseChange::Assign(Some("bob".into())),
                CaseChange::SetSeverity(Severity::Critical),
                CaseChange::AddComment("escalating".into()),
                CaseChange::AddObservables(vec![NewObservable::new(
                    ObservableType::Ip,
                    "10.0.0.1",
                )]),
            ],
            &meta(20),
        )
        .await
        .unwrap();
    let kinds: Vec<_> = out.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            CaseEventKind::Assigned,
            CaseEventKind::SeverityChanged,
            CaseEventKind::Updated
        ]
    );
    assert_eq!(
        (out.events[0].from.as_deref(), out.events[0].to.as_deref()),
        (None, Some("bob"))
    );
    assert_eq!(
        (out.events[1].from.as_deref(), out.events[1].to.as_deref()),
        (Some("medium"), Some("critical"))
    );
    let pending = s.pending_events(100).await.unwrap();
    assert_eq!(pending.len(), 5);
    let ids: Vec<u64> = pending.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(pending[2..], out.events[..]);

    // A no-op emits nothing and does not touch updated_at.
    let noop = s
        .update(id, vec![CaseChange::Assign(Some("bob".into()))], &meta(30))
        .await
        .unwrap();
    assert!(noop.events.is_empty());
    assert_eq!(noop.case.updated_at, t(20));
    assert_eq!(s.pending_events(100).await.unwrap().len(), 5);

    // Delivered events leave the outbox.
    assert!(s.ack_event(pending[0].id).await.unwrap());
    assert!(!s.ack_event(pending[0].id).await.unwrap());
    let rest = s.pending_events(100).await.unwrap();
    assert_eq!(rest.len(), 4);
    assert_eq!(rest[0].id, pending[1].id);
    assert_eq!(s.pending_events(2).await.unwrap().len(), 2);
    assert!(s.check().await.unwrap().is_empty());
}

async fn check_pending_events_for_the_dispatcher(s: &dyn Store) {
    let id = s
        .create(new_case("phish", Severity::Medium), &meta(0))
        .await
        .unwrap()
        .case
        .id;
    s.update(
        id,
        vec![
            CaseChange::AddComment("looking".into()),
            CaseChange::SetState {
                to: CaseState::InProgress,
                reason: None,
            },
        ],
        &meta(10),
    )
    .await
    .unwrap();
    s.update(id, vec![CaseChange::Assign(Some("bob".into()))], &meta(20))
        .await
        .unwrap();
    let all = s.pending_events(100).await.unwrap();
    let kinds: Vec<_> = all.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            CaseEventKind::Created,
            CaseEventKind::Updated,
            CaseEventKind::StateChanged,
            CaseEventKind::Assigned
        ]
    );
    // The wanted kinds come whole, the others as their id and kind, in outbox order.
    let wanted = [CaseEventKind::StateChanged, CaseEventKind::Created];
    let taken = s.pending_events_for(100, &wanted).await.unwrap();
    assert_eq!(
        taken,
        [
            PendingEvent::Full(Box::new(all[0].clone())),
            PendingEvent::Unwanted {
                id: all[1].id,
                kind: CaseEventKind::Updated
            },
            PendingEvent::Full(Box::new(all[2].clone())),
            PendingEvent::Unwanted {
                id: all[3].id,
                kind: CaseEventKind::Assigned
            },
        ]
    );
    assert_eq!(
        s.pending_events_for(2, &[]).await.unwrap(),
        [
            PendingEvent::Unwanted {
                id: all[0].id,
                kind: CaseEventKind::Created
            },
            PendingEvent::Unwanted {
                id: all[1].id,
                kind: CaseEventKind::Updated
            },
        ]
    );
    // Reading is not consuming.
    assert_eq!(s.pending_events(100).await.unwrap(), all);
}

async fn check_rejected_changes_change_nothing(s: &dyn Store) {
    let id = s
        .create(new_case("x", Severity::Low), &meta(0))
        .await
        .unwrap()
        .case
        .id;
    let before = s.get(id).await.unwrap().unwrap();
    let events_before = s.pending_events(100).await.unwrap();
    let e = s
        .update(
            id,
            vec![
                CaseChange::AddComment("first".into()),
                CaseChange::SetState {
                    to: CaseState::Resolved,
                    reason: Some("fp".into()),
                },
                CaseChange::SetState {
                    to: CaseState::OnHold,
                    reason: None,
                },
            ],
            &meta(1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::InvalidTransition {
                from: CaseState::Resolved,
                to: CaseState::OnHold,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("cannot move CASE-000001 from `resolved` to `on_hold`"),
        "{e}"
    );
    let e = s
        .update(
            id,
            vec![CaseChange::SetState {
                to: CaseState::Closed,
                reason: None,
            }],
            &meta(1),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "moving CASE-000001 to `closed` needs a resolution reason"
    );
    let e = s
        .update(
            id,
            vec![CaseChange::AddObservables(vec![NewObservable::new(
                ObservableType::Ip,
                "1.2.3.4.5",
            )])],
            &meta(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    assert_eq!(s.get(id).await.unwrap().unwrap(), before);
    assert_eq!(s.pending_events(100).await.unwrap(), events_before);
    let e = s
        .query(&CaseQuery::by_observable(ObservableType::Ip, "nope", 1))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("invalid ip observable `nope`"),
        "{e}"
    );
}

/// Severity, assignee, tags, observables.
type Spec = (
    Severity,
    Option<&'static str>,
    &'static [&'static str],
    &'static [(ObservableType, &'static str)],
);

/// Eight cases created 10 ms apart with varied attributes.
async fn seed(s: &dyn Store) {
    let specs: [Spec; 8] = [
        (
            Severity::Low,
            Some("bob"),
            &["okta"],
            &[(ObservableType::Ip, "10.0.0.1")],
        ),
        (
            Severity::High,
            None,
            &["okta", "vip"],
            &[(ObservableType::Ip, "2001:db8::1")],
        ),
        (
            Severity::Critical,
            Some("bob"),
            &[],
            &[(ObservableType::User, "alice")],
        ),
        (
            Severity::Medium,
            Some("eve"),
            &["vip"],
            &[(ObservableType::Ip, "10.0.0.1")],
        ),
        (
            Severity::High,
            Some("bob"),
            &["okta"],
            &[(ObservableType::Ip, "2001:DB8:0::1")],
        ),
        (Severity::Informational, None, &[], &[]),
        (
            Severity::Critical,
            None,
            &["vip"],
            &[(ObservableType::Domain, "evil.com")],
        ),
        (
            Severity::Low,
            Some("eve"),
            &["okta"],
            &[(ObservableType::Ip, "2001:db8::1")],
        ),
    ];
    for (i, (sev, who, tags, obs)) in specs.iter().enumerate() {
        let mut n = new_case(&format!("case {i}"), *sev);
        n.assignee = who.map(str::to_string);
        n.tags = tags.iter().map(|t| t.to_string()).collect();
        n.observables = obs
            .iter()
            .map(|(k, v)| NewObservable::new(*k, *v))
            .collect();
        s.create(n, &meta(i as i64 * 10)).await.unwrap();
    }
    // Case 2 in progress, case 4 on hold, case 6 resolved; case 1 updated last.
    let set = |to| CaseChange::SetState {
        to,
        reason: Some("done".into()),
    };
    s.update(CaseId(2), vec![set(CaseState::InProgress)], &meta(100))
        .await
        .unwrap();
    s.update(CaseId(4), vec![set(CaseState::OnHold)], &meta(110))
        .await
        .unwrap();
    s.update(CaseId(6), vec![set(CaseState::Resolved)], &meta(120))
        .await
        .unwrap();
    s.update(
        CaseId(1),
        vec![CaseChange::AddComment("late".into())],
        &meta(130),
    )
    .await
    .unwrap();
}

async fn check_queries(s: &dyn Store) {
    seed(s).await;
    let q = |f: fn(&mut CaseQuery)| {
        let mut q = CaseQuery::all();
        f(&mut q);
        q
    };
    let run = |q: CaseQuery| async move { ids(&s.query(&q).await.unwrap()) };

    // By observable, normalised, newest first by default.
    assert_eq!(
        run(q(
            |q| q.observable = Some((ObservableType::Ip, "2001:DB8::1".into()))
        ))
        .await,
        [8, 5, 2]
    );
    assert_eq!(
        run(CaseQuery::by_observable(
            ObservableType::Ip,
            "[2001:db8::1]",
            1
        ))
        .await,
        [8]
    );
    assert_eq!(
        run(q(|q| {
            q.observable = Some((ObservableType::Ip, "2001:db8::1".into()));
            q.sort = CaseSort::CreatedAtAsc;
            q.limit = 2;
        }))
        .await,
        [2, 5]
    );
    assert_eq!(
        run(q(
            |q| q.observable = Some((ObservableType::User, "ALICE".into()))
        ))
        .await,
        [3]
    );
    assert_eq!(
        run(q(
            |q| q.observable = Some((ObservableType::Ip, "10.9.9.9".into()))
        ))
        .await,
        Vec::<u64>::new()
    );
    // By assignee, tag, state(s), severity.
    assert_eq!(run(q(|q| q.assignee = Some("bob".into()))).await, [5, 3, 1]);
    assert_eq!(run(q(|q| q.tag = Some("vip".into()))).await, [7, 4, 2]);
    assert_eq!(
        run(q(|q| q.states = vec![CaseState::New])).await,
        [8, 7, 5, 3, 1]
    );
    assert_eq!(
        run(q(
            |q| q.states = vec![CaseState::OnHold, CaseState::InProgress]
        ))
        .await,
        [4, 2]
    );
    assert_eq!(
        run(q(|q| {
            q.states = vec![CaseState::New, CaseState::Resolved, CaseState::InProgress];
            q.sort = CaseSort::CreatedAtAsc;
        }))
        .await,
        [1, 2, 3, 5, 6, 7, 8]
    );
    assert_eq!(run(CaseQuery::open()).await, [8, 7, 5, 4, 3, 2, 1]);
    assert_eq!(
        run(q(|q| q.severity = Some(Severity::Critical))).await,
        [7, 3]
    );
    // Combined criteria are filtered after the most selective index.
    assert_eq!(
        run(q(|q| {
            q.assignee = Some("bob".into());
            q.tag = Some("okta".into());
            q.severity = Some(Severity::High);
        }))
        .await,
        [5]
    );
    assert_eq!(
        run(q(|q| {
            q.tag = Some("okta".into());
            q.states = vec![CaseState::New];
        }))
        .await,
        [8, 5, 1]
    );
    // Time range: after inclusive, before exclusive.
    assert_eq!(
        run(q(|q| {
            q.created_after = Some(t(20));
            q.created_before = Some(t(50));
        }))
        .await,
        [5, 4, 3]
    );
    assert_eq!(
        run(q(|q| {
            q.tag = Some("okta".into());
            q.created_after = Some(t(10));
            q.created_before = Some(t(70));
            q.sort = CaseSort::CreatedAtAsc;
        }))
        .await,
        [2, 5]
    );
    assert_eq!(
        run(q(|q| {
            q.created_after = Some(t(50));
            q.created_before = Some(t(10));
        }))
        .await,
        Vec::<u64>::new()
    );
    // Sorts and limits.
    assert_eq!(run(q(|q| q.limit = 3)).await, [8, 7, 6]);
    assert_eq!(
        run(q(|q| {
            q.sort = CaseSort::CreatedAtAsc;
            q.limit = 2;
        }))
        .await,
        [1, 2]
    );
    assert_eq!(
        run(q(|q| q.sort = CaseSort::UpdatedAtDesc)).await,
        [1, 6, 4, 2, 8, 7, 5, 3]
    );
    assert_eq!(
        run(q(|q| {
            q.sort = CaseSort::UpdatedAtAsc;
            q.limit = 2;
        }))
        .await,
        [3, 5]
    );
    assert_eq!(
        run(q(|q| q.sort = CaseSort::SeverityDesc)).await,
        [7, 3, 5, 2, 4, 8, 1, 6]
    );
    assert_eq!(
        run(q(|q| q.sort = CaseSort::SeverityAsc)).await,
        [6, 1, 8, 4, 2, 5, 3, 7]
    );
    assert_eq!(
        run(q(|q| {
            q.tag = Some("okta".into());
            q.sort = CaseSort::SeverityDesc;
        }))
        .await,
        [5, 2, 8, 1]
    );
    assert_eq!(
        run(q(|q| {
            q.assignee = Some("bob".into());
            q.sort = CaseSort::UpdatedAtDesc;
            q.limit = 1;
        }))
        .await,
        [1]
    );
    assert_eq!(
        run(q(|q| {
            q.severity = Some(Severity::High);
            q.sort = CaseSort::SeverityAsc;
        }))
        .await,
        [2, 5]
    );
    assert_eq!(run(q(|q| q.limit = 0)).await, Vec::<u64>::new());
    assert_eq!(
        s.count(&q(|q| {
            q.tag = Some("okta".into());
            q.limit = 1;
        }))
        .await
        .unwrap(),
        4
    );
    // Reassigning moves index entries.
    s.update(
        CaseId(3),
        vec![CaseChange::Assign(Some("eve".into()))],
        &meta(200),
    )
    .await
    .unwrap();
    assert_eq!(run(q(|q| q.assignee = Some("bob".into()))).await, [5, 1]);
    assert_eq!(run(q(|q| q.assignee = Some("eve".into()))).await, [8, 4, 3]);
    assert!(s.check().await.unwrap().is_empty());
}

async fn check_dedup_key(s: &dyn Store) {
    let mut n = new_case("brute force on alice", Severity::Medium);
    n.dedup_key = Some("bruteforce:alice".into());
    let first = s.create(n.clone(), &meta(0)).await.unwrap();
    assert!(first.created);
    let again = s.create(n.clone(), &meta(1)).await.unwrap();
    assert!(!again.created && !again.replayed);
    assert_eq!(again.case.id, first.case.id);
    assert!(again.events.is_empty());
    assert_eq!(s.pending_events(100).await.unwrap().len(), 1);
    // Another key is another case.
    let mut other = n.clone();
    other.dedup_key = Some("bruteforce:bob".into());
    assert!(s.create(other, &meta(2)).await.unwrap().created);
    // Once the case is resolved, the key opens a new case.
    s.update(
        first.case.id,
        vec![CaseChange::SetState {
            to: CaseState::Resolved,
            reason: Some("blocked".into()),
        }],
        &meta(3),
    )
    .await
    .unwrap();
    let third = s.create(n.clone(), &meta(4)).await.unwrap();
    assert!(third.created);
    assert_ne!(third.case.id, first.case.id);
    assert_eq!(s.create(n, &meta(5)).await.unwrap().case.id, third.case.id);
    assert!(s.check().await.unwrap().is_empty());
}

async fn check_idempotency_key(s: &dyn Store) {
    let first = s
        .create(
            new_case("from a step", Severity::Low),
            &playbook_meta(0, "run-1", "open_case"),
        )
        .await
        .unwrap();
    assert!(first.created && !first.replayed);
    let again = s
        .create(
            new_case("from a step", Severity::Low),
            &playbook_meta(5, "run-1", "open_case"),
        )
        .await
        .unwrap();
    assert!(again.replayed);
    assert!(again.created, "the replay reports what the first call did");
    assert_eq!(again.case, first.case);
    assert_eq!(again.event_ids, first.event_ids);
    assert_eq!(s.count(&CaseQuery::all()).await.unwrap(), 1);

    let id = first.case.id;
    let change = || vec![CaseChange::AddComment("enriched".into())];
    let u1 = s
        .update(id, change(), &playbook_meta(10, "run-1", "comment"))
        .await
        .unwrap();
    let u2 = s
        .update(id, change(), &playbook_meta(11, "run-1", "comment"))
        .await
        .unwrap();
    assert!(!u1.replayed && u2.replayed);
    assert_eq!(u2.case, u1.case);
    assert_eq!(s.get(id).await.unwrap().unwrap().comments.len(), 1);
    assert_eq!(s.pending_events(100).await.unwrap().len(), 2);
    // Another step of the same run is a different key.
    let u3 = s
        .update(id, change(), &playbook_meta(12, "run-1", "comment2"))
        .await
        .unwrap();
    assert!(!u3.replayed);
    assert_eq!(u3.case.comments.len(), 2);
    // Reusing a key for another case is refused.
    let other = s
        .create(new_case("other", Severity::Low), &meta(13))
        .await
        .unwrap()
        .case
        .id;
    let e = s
        .update(other, change(), &playbook_meta(14, "run-1", "comment"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::IdempotencyConflict { .. }), "{e}");
    // A failed change records nothing: the retry can succeed.
    let bad = s
        .update(
            id,
            vec![CaseChange::SetState {
                to: CaseState::Resolved,
                reason: None,
            }],
            &playbook_meta(15, "run-1", "resolve"),
        )
        .await;
    assert!(bad.is_err());
    let ok = s
        .update(
            id,
            vec![CaseChange::SetState {
                to: CaseState::Resolved,
                reason: Some("fp".into()),
            }],
            &playbook_meta(16, "run-1", "resolve"),
        )
        .await
        .unwrap();
    assert!(!ok.replayed);
    assert!(s.check().await.unwrap().is_empty());
}

async fn check_sla_due(s: &dyn Store) {
    let mut due = new_case("due", Severity::High);
    due.sla_policy = Some("p1".into());
    due.sla_due_at = Some(t(100));
    let a = s.create(due.clone(), &meta(0)).await.unwrap().case.id;
    due.sla_due_at = Some(t(50));
    let b = s.create(due.clone(), &meta(1)).await.unwrap().case.id;
    due.sla_due_at = Some(t(1000));
    s.create(due, &meta(2)).await.unwrap();
    s.create(new_case("no sla", Severity::Low), &meta(3))
        .await
        .unwrap();
    assert_eq!(ids(&s.sla_due(t(100), 10).await.unwrap()), [b.0, a.0]);
    assert_eq!(ids(&s.sla_due(t(99), 10).await.unwrap()), [b.0]);
    let out = s
        .update(b, vec![CaseChange::MarkSlaBreached], &meta(101))
        .await
        .unwrap();
    assert_eq!(out.events[0].kind, CaseEventKind::SlaBreached);
    s.update(
        a,
        vec![CaseChange::SetState {
            to: CaseState::Closed,
            reason: Some("dup".into()),
        }],
        &meta(102),
    )
    .await
    .unwrap();
    assert!(s.sla_due(t(500), 10).await.unwrap().is_empty());
    assert!(s.check().await.unwrap().is_empty());
}

fn incoming(key: Option<&str>, n: u64) -> NewIncoming {
    NewIncoming {
        source: "okta".into(),
        key: key.map(str::to_string),
        event: json!({"n": n, "nested": {"b": 1, "a": [1, 2]}}),
        received_at: t(n as i64),
    }
}

fn run_record(id: &str, playbook: &str) -> RunRecord {
    RunRecord {
        summary: RunSummary {
            run_id: id.into(),
            playbook: playbook.into(),
            trigger: "okta".into(),
            status: RunState::Running,
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: None,
            duration_ms: None,
            event_key: Some("okta:a".into()),
            inbox_seq: None,
            case_event: None,
            error: None,
        },
        input: RunInputRecord {
            event: json!({"z": 1, "a": 2}),
            case: None,
            depth: 1,
            seed: Some(7),
        },
        output: None,
        steps: Vec::new(),
    }
}

fn step(id: &str, n: u64) -> StepReport {
    StepReport {
        id: id.into(),
        uses: "test.step".into(),
        status: Status::Succeeded,
        attempts: 1,
        duration_ms: 1.5,
        output: Some(json!({"n": n})),
        error: None,
        reason: None,
    }
}

async fn check_inbox_queue(s: &dyn Store) {
    let out = s
        .enqueue_incoming(vec![
            incoming(Some("okta:a"), 1),
            incoming(Some("okta:a"), 2),
            incoming(None, 3),
            incoming(Some("okta:b"), 4),
        ])
        .await
        .unwrap();
    let seqs: Vec<Option<u64>> = out.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [Some(1), None, Some(2), Some(3)]);
    assert!(out[1].duplicate && !out[0].duplicate);
    let again = s
        .enqueue_incoming(vec![incoming(Some("okta:b"), 5)])
        .await
        .unwrap();
    assert!(again[0].duplicate && again[0].seq.is_none());
    assert!(!s.record_incoming("okta:a", t(6)).await.unwrap());
    assert!(s.record_incoming("okta:c", t(6)).await.unwrap());
    assert!(!s.record_incoming("okta:c", t(7)).await.unwrap());
    assert_eq!(s.inbox_depth().await.unwrap(), 3);
    let pending = s.pending_incoming(10).await.unwrap();
    assert_eq!(pending.iter().map(|i| i.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(pending[0].event, incoming(None, 1).event);
    assert_eq!(
        serde_json::to_string(&pending[0].event).unwrap(),
        serde_json::to_string(&incoming(None, 1).event).unwrap(),
        "bodies come back as they went in, key order included"
    );
    assert_eq!(pending[0].key.as_deref(), Some("okta:a"));
    assert_eq!(pending[1].key, None);
    assert_eq!(pending[2].received_at, t(4));
    assert_eq!(s.pending_incoming(1).await.unwrap().len(), 1);
    let started = s
        .start_runs(
            RunOrigin::Inbox(1),
            &[run_record("r1", "pb"), run_record("r2", "pb2")],
        )
        .await
        .unwrap();
    assert_eq!(started, [true, true]);
    let twice = s
        .start_runs(RunOrigin::Inbox(1), &[run_record("r3", "pb")])
        .await
        .unwrap();
    assert_eq!(twice, [false], "an inbox entry starts its runs once");
    assert!(s.run_record("r3").await.unwrap().is_none());
    assert_eq!(
        s.inbox_entry(1).await.unwrap(),
        InboxEntry::Dispatched(vec!["r1".into(), "r2".into()])
    );
    assert_eq!(s.inbox_entry(2).await.unwrap(), InboxEntry::Queued);
    assert_eq!(s.inbox_entry(99).await.unwrap(), InboxEntry::Unknown);
    assert_eq!(s.inbox_entry(0).await.unwrap(), InboxEntry::Unknown);
    s.start_runs(RunOrigin::Inbox(2), &[]).await.unwrap();
    assert_eq!(
        s.inbox_entry(2).await.unwrap(),
        InboxEntry::Dispatched(vec![])
    );
    assert_eq!(
        s.pending_incoming(10)
            .await
            .unwrap()
            .iter()
            .map(|i| i.seq)
            .collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(s.inbox_depth().await.unwrap(), 1);
    assert!(s.check().await.unwrap().is_empty());
}

/// Several inbox entries taken at once: each consumed with its own runs, an entry not
/// queued starts nothing, and the rest of the queue stays.
async fn check_start_runs_many(s: &dyn Store) {
    let q = s
        .enqueue_incoming(vec![
            incoming(Some("okta:m1"), 1),
            incoming(Some("okta:m2"), 2),
            incoming(Some("okta:m3"), 3),
        ])
        .await
        .unwrap();
    let seqs: Vec<u64> = q.iter().filter_map(|e| e.seq).collect();
    assert_eq!(seqs.len(), 3);
    let a = run_record("2026-m-a", "first");
    let b = run_record("2026-m-b", "second");
    let c = run_record("2026-m-c", "third");
    let started = s
        .start_runs_many(&[
            (RunOrigin::Inbox(seqs[0]), vec![a.clone(), b.clone()]),
            (RunOrigin::Inbox(seqs[1]), vec![]),
            (RunOrigin::Inbox(999), vec![c.clone()]),
        ])
        .await
        .unwrap();
    assert_eq!(started, vec![vec![true, true], vec![], vec![false]]);
    match s.inbox_entry(seqs[0]).await.unwrap() {
        InboxEntry::Dispatched(mut runs) => {
            runs.sort();
            assert_eq!(runs, ["2026-m-a", "2026-m-b"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.inbox_entry(seqs[1]).await.unwrap(),
        InboxEntry::Dispatched(vec![])
    );
    assert_eq!(s.inbox_entry(seqs[2]).await.unwrap(), InboxEntry::Queued);
    let pending: Vec<u64> = s
        .pending_incoming(10)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.seq)
        .collect();
    assert_eq!(pending, [seqs[2]]);
    let mut unfinished: Vec<String> = s
        .unfinished_runs()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.summary.run_id)
        .collect();
    unfinished.sort();
    assert_eq!(unfinished, ["2026-m-a", "2026-m-b"]);
    // Taken once: a second take of the same entries starts nothing.
    let again = s
        .start_runs_many(&[(RunOrigin::Inbox(seqs[0]), vec![c])])
        .await
        .unwrap();
    assert_eq!(again, vec![vec![false]]);
}

async fn check_run_journal(s: &dyn Store) {
    let mut a = run_record("2026-a", "first");
    let b = run_record("2026-b", "second");
    assert_eq!(
        s.start_runs(RunOrigin::Direct, &[a.clone(), b.clone()])
            .await
            .unwrap(),
        [true, true]
    );
    let (s0, s1) = (step("one", 0), step("two", 1));
    s.record_steps(&a.summary.run_id, &[(0, &s0)])
        .await
        .unwrap();
    s.record_steps(&a.summary.run_id, &[(1, &s1)])
        .await
        .unwrap();
    s.sync().await.unwrap();
    let got = s.get_run("2026-a").await.unwrap().unwrap();
    assert_eq!(got.steps, [s0.clone(), s1.clone()]);
    assert_eq!(got.input, a.input);
    assert!(s
        .run_record("2026-a")
        .await
        .unwrap()
        .unwrap()
        .steps
        .is_empty());
    let unfinished = s.unfinished_runs().await.unwrap();
    assert_eq!(
        unfinished
            .iter()
            .map(|r| r.summary.run_id.as_str())
            .collect::<Vec<_>>(),
        ["2026-a", "2026-b"]
    );
    assert_eq!(unfinished[0].steps.len(), 2);
    // Finishing writes the steps the journal does not have, numbered after the others.
    let s2 = step("cancelled", 2);
    a.summary.status = RunState::Failed;
    a.summary.error = Some("boom".into());
    a.output = Some(json!({"out": true}));
    a.steps = vec![s0.clone(), s1.clone(), s2.clone()];
    s.finish_run(&a).await.unwrap();
    let got = s.get_run("2026-a").await.unwrap().unwrap();
    assert_eq!(got.steps, [s0, s1, s2]);
    assert_eq!(got.summary.status, RunState::Failed);
    assert_eq!(got.output, Some(json!({"out": true})));
    s.park_runs(&["2026-b".into(), "2026-a".into()])
        .await
        .unwrap();
    let left = s.unfinished_runs().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].summary.status, RunState::Parked);
    assert_eq!(
        s.get_run("2026-a").await.unwrap().unwrap().summary.status,
        RunState::Failed,
        "a finished run is not parked"
    );
    let all = s.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
        ["2026-b", "2026-a"],
        "newest first"
    );
    let parked = s
        .list_runs(&RunFilter {
            status: Some(RunState::Parked),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(parked.len(), 1);
    let first = s
        .list_runs(&RunFilter {
            playbook: Some("first".into()),
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first[0].run_id, "2026-a");
    assert!(s
        .list_runs(&RunFilter {
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());
    assert!(s.get_run("nope").await.unwrap().is_none());
    assert!(s.check().await.unwrap().is_empty());
}

async fn check_case_event_deliveries(s: &dyn Store) {
    let out = s
        .create(new_case("c", Severity::Low), &meta(0))
        .await
        .unwrap();
    let ev = out.event_ids[0];
    assert_eq!(s.pending_events(10).await.unwrap()[0].id, ev);
    let started = s
        .start_runs(
            RunOrigin::CaseEvent {
                event_id: ev,
                ack: false,
            },
            &[run_record("r-a", "pa"), run_record("r-b", "pb")],
        )
        .await
        .unwrap();
    assert_eq!(started, [true, true]);
    let again = s
        .start_runs(
            RunOrigin::CaseEvent {
                event_id: ev,
                ack: true,
            },
            &[run_record("r-a2", "pa"), run_record("r-c", "pc")],
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        [false, true],
        "a playbook already started is not started again"
    );
    assert!(
        s.pending_events(10).await.unwrap().is_empty(),
        "acknowledged"
    );
    assert!(s.deliveries(ev).await.unwrap().is_empty());
    let late = s
        .start_runs(
            RunOrigin::CaseEvent {
                event_id: ev,
                ack: true,
            },
            &[run_record("r-d", "pd")],
        )
        .await
        .unwrap();
    assert_eq!(
        late,
        [false],
        "nothing starts for an event no longer pending"
    );
    // start_delivery / deliveries / ack_event.
    let out = s
        .create(new_case("d", Severity::Low), &meta(1))
        .await
        .unwrap();
    let ev = out.event_ids[0];
    assert!(s.start_delivery(ev, "zeta", "run-1").await.unwrap());
    assert!(!s.start_delivery(ev, "zeta", "run-2").await.unwrap());
    assert!(s.start_delivery(ev, "alpha", "run-3").await.unwrap());
    let d = s.deliveries(ev).await.unwrap();
    assert_eq!(
        d.iter()
            .map(|d| (d.playbook.as_str(), d.run_id.as_str()))
            .collect::<Vec<_>>(),
        [("alpha", "run-3"), ("zeta", "run-1")]
    );
    assert!(s.check().await.unwrap().is_empty());
    assert!(s.ack_event(ev).await.unwrap());
    assert!(!s.ack_event(ev).await.unwrap());
    assert!(s.deliveries(ev).await.unwrap().is_empty());
    assert!(s.check().await.unwrap().is_empty());
}

async fn check_cursors(s: &dyn Store) {
    assert_eq!(s.get_cursor("okta").await.unwrap(), None);
    s.put_cursor("okta", "2026-01-01T00:00:00Z").await.unwrap();
    s.put_cursor("okta", "2026-01-02T00:00:00Z").await.unwrap();
    s.put_cursor("other", "x").await.unwrap();
    assert_eq!(
        s.get_cursor("okta").await.unwrap().as_deref(),
        Some("2026-01-02T00:00:00Z")
    );
    s.flush().await.unwrap();
}

async fn check_concurrent_updates_of_one_case(s: &dyn Store) {
    let id = s
        .create(new_case("busy", Severity::Low), &meta(0))
        .await
        .unwrap()
        .case
        .id;
    let metas: Vec<WriteMeta> = (0..12).map(|i| meta(1 + i)).collect();
    let updates = metas.iter().enumerate().map(|(i, m)| {
        s.update(
            id,
            vec![
                CaseChange::AddComment(format!("c{i}")),
                CaseChange::AddTags(vec![format!("t{}", i % 3)]),
            ],
            m,
        )
    });
    for r in futures_util::future::join_all(updates).await {
        r.unwrap();
    }
    let c = s.get(id).await.unwrap().unwrap();
    assert_eq!(c.comments.len(), 12);
    assert_eq!(c.tags.len(), 3);
    assert_eq!(
        c.timeline.len(),
        1 + 12 + 3,
        "created, 12 comments, 3 new tags"
    );
    assert!(s.check().await.unwrap().is_empty());
}

fn notification(id: &str, channels: &[&str]) -> Notification {
    Notification {
        id: id.into(),
        at: "2026-01-01T00:00:00Z".into(),
        to: vec!["a@example.com".into()],
        subject: format!("subject of {id}"),
        message: "m".into(),
        channels: channels.iter().map(|c| c.to_string()).collect(),
        case: Some("CASE-000001".into()),
        run_id: "run-1".into(),
        playbook: "p".into(),
        step: id.into(),
    }
}

fn attempt(
    id: &str,
    channel: &str,
    status: DeliveryStatus,
    not_before_ms: Option<i64>,
) -> Delivery {
    Delivery {
        id: id.into(),
        channel: channel.into(),
        status,
        at: "2026-01-01T00:00:01Z".into(),
        attempts: 1,
        error: (status != DeliveryStatus::Delivered).then(|| "HTTP 503".to_string()),
        not_before_ms,
    }
}

fn owed(channels: &[&str]) -> Vec<String> {
    channels.iter().map(|c| c.to_string()).collect()
}

/// (id, channel) of each pending entry.
fn pairs(p: &[engine::notify::Pending]) -> Vec<(String, String)> {
    p.iter()
        .map(|p| (p.notification.id.clone(), p.channel.clone()))
        .collect()
}

async fn check_notification_outbox(s: &dyn Store) {
    let n1 = notification("n1", &["console", "slack", "webhook"]);
    assert!(s
        .notification_push(&n1, &owed(&["slack", "webhook"]))
        .await
        .unwrap());
    assert!(
        !s.notification_push(&notification("n1", &["email"]), &owed(&["email"]))
            .await
            .unwrap(),
        "a second push of an id changes nothing"
    );
    let n2 = notification("n2", &["slack"]);
    assert!(s.notification_push(&n2, &owed(&["slack"])).await.unwrap());
    let n3 = notification("n3", &["console"]);
    assert!(s.notification_push(&n3, &[]).await.unwrap());
    assert_eq!(
        s.notifications_all().await.unwrap(),
        [n1.clone(), n2.clone(), n3]
    );
    let p = s.notifications_pending(None, 100).await.unwrap();
    assert_eq!(
        pairs(&p),
        [
            ("n1".to_string(), "slack".to_string()),
            ("n1".into(), "webhook".into()),
            ("n2".into(), "slack".into())
        ],
        "oldest first, only owed channels"
    );
    assert_eq!(p[0].notification, n1);
    assert!(p.iter().all(|p| p.last.is_none()));
    assert_eq!(s.notifications_pending(None, 2).await.unwrap().len(), 2);

    // The latest record per (id, channel) wins; delivered and rejected settle.
    let now = 1_700_000_000_000;
    s.notification_record(&attempt("n1", "slack", DeliveryStatus::Failed, None))
        .await
        .unwrap();
    s.notification_record(&attempt("n1", "slack", DeliveryStatus::Delivered, None))
        .await
        .unwrap();
    s.notification_record(&attempt("n1", "webhook", DeliveryStatus::Rejected, None))
        .await
        .unwrap();
    s.notification_record(&attempt(
        "n2",
        "slack",
        DeliveryStatus::Failed,
        Some(now + 60_000),
    ))
    .await
    .unwrap();
    let p = s.notifications_pending(None, 100).await.unwrap();
    assert_eq!(pairs(&p), [("n2".to_string(), "slack".to_string())]);
    assert_eq!(
        p[0].last,
        Some(attempt(
            "n2",
            "slack",
            DeliveryStatus::Failed,
            Some(now + 60_000)
        ))
    );
    // A 429's Retry-After is respected when the caller says what time it is.
    assert!(s
        .notifications_pending(Some(now), 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.notifications_pending(Some(now + 60_000), 100)
            .await
            .unwrap()
            .len(),
        1
    );
    let all = s.notification_deliveries(None).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|d| (d.id.as_str(), d.channel.as_str(), d.status))
            .collect::<Vec<_>>(),
        [
            ("n1", "slack", DeliveryStatus::Delivered),
            ("n1", "webhook", DeliveryStatus::Rejected),
            ("n2", "slack", DeliveryStatus::Failed),
        ]
    );
    assert_eq!(
        s.notification_deliveries(Some("n2")).await.unwrap().len(),
        1
    );
    assert!(s
        .notification_deliveries(Some("n"))
        .await
        .unwrap()
        .is_empty());
    // A failed record after a delivered one makes the channel owed again (latest wins).
    s.notification_record(&attempt("n1", "slack", DeliveryStatus::Failed, None))
        .await
        .unwrap();
    assert_eq!(s.notifications_pending(None, 100).await.unwrap().len(), 2);
    // A record made before its notification was pushed (an import) still decides.
    s.notification_record(&attempt("n4", "slack", DeliveryStatus::Delivered, None))
        .await
        .unwrap();
    assert!(s
        .notification_push(&notification("n4", &["slack"]), &owed(&["slack"]))
        .await
        .unwrap());
    assert_eq!(s.notifications_pending(None, 100).await.unwrap().len(), 2);
    // The counts for /metrics follow every change of status: n1/slack delivered then failed
    // again, n1/webhook rejected, n2/slack failed, n4/slack delivered.
    let counts = s.notification_counts().await.unwrap();
    assert_eq!(
        (counts.delivered, counts.failed, counts.rejected),
        (1, 2, 1),
        "{counts:?}"
    );
    let mut by_status = DeliveryCounts::default();
    for d in s.notification_deliveries(None).await.unwrap() {
        match d.status {
            DeliveryStatus::Delivered => by_status.delivered += 1,
            DeliveryStatus::Failed => by_status.failed += 1,
            DeliveryStatus::Rejected => by_status.rejected += 1,
        }
    }
    assert_eq!(counts, by_status);
    // Recording the same status again changes no count.
    s.notification_record(&attempt("n2", "slack", DeliveryStatus::Failed, None))
        .await
        .unwrap();
    assert_eq!(s.notification_counts().await.unwrap(), counts);
    assert!(s.check().await.unwrap().is_empty());
}

async fn check_notification_claims(s: &dyn Store) {
    s.notification_push(&notification("n1", &["slack"]), &owed(&["slack"]))
        .await
        .unwrap();
    assert!(s.notification_claim("n1", "slack").await.unwrap());
    // The same process may claim again (its own claim); other processes may not (PostgreSQL
    // tests) and the outbox keeps two tasks of one process apart.
    assert!(s.notification_claim("n1", "slack").await.unwrap());
    s.notification_record(&attempt("n1", "slack", DeliveryStatus::Failed, None))
        .await
        .unwrap();
    assert!(
        s.notification_claim("n1", "slack").await.unwrap(),
        "failed: claimable"
    );
    s.notification_release("n1", "slack").await.unwrap();
    s.notification_record(&attempt("n1", "slack", DeliveryStatus::Delivered, None))
        .await
        .unwrap();
    assert!(
        !s.notification_claim("n1", "slack").await.unwrap(),
        "a delivered notification is never claimed again"
    );
    s.notification_release("n1", "slack").await.unwrap();
}

macro_rules! backends {
    ($($check:ident),+ $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    let s = MemoryStore::new();
                    super::$check(&s).await;
                }
            )+
        }
        mod sled {
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    let s = SledStore::open_with(dir.path(), Durability::Strict).unwrap();
                    super::$check(&s).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    let s = super::support::pg::fresh().await;
                    super::$check(&*s).await;
                }
            )+
        }
    };
}

backends!(
    check_create_and_get,
    check_events_in_the_outbox,
    check_pending_events_for_the_dispatcher,
    check_rejected_changes_change_nothing,
    check_queries,
    check_dedup_key,
    check_idempotency_key,
    check_sla_due,
    check_inbox_queue,
    check_run_journal,
    check_start_runs_many,
    check_case_event_deliveries,
    check_cursors,
    check_concurrent_updates_of_one_case,
    check_notification_outbox,
    check_notification_claims,
);
