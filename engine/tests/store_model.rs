//! Property test: random operations against both backends and a simple in-memory model.
//! After every run, each case's indexed attributes equal the model's, every random query
//! returns what filtering and sorting the model gives, and `check()` finds no index entry
//! out of line with the cases.

use std::collections::{BTreeMap, BTreeSet};

use engine::cases::{
    Actor, Case, CaseChange, CaseId, CaseState, NewCase, NewObservable, ObservableType, Severity,
    Timestamp,
};
use engine::persist::{CaseQuery, CaseSort, Durability, MemoryStore, SledStore, Store, WriteMeta};
use proptest::prelude::*;

mod support {
    pub mod pg;
}

const USERS: [&str; 3] = ["alice", "bob", "eve"];
const TAGS: [&str; 3] = ["okta", "vip", "edr"];
const IPS: [&str; 4] = ["10.0.0.1", "2001:db8::1", "10.0.0.2", "::ffff:10.0.0.1"];
/// Spellings that normalise to `IPS`.
const IP_SPELLINGS: [&str; 4] = ["10.0.0.1", "2001:DB8:0::1", " 10.0.0.2", "::FFFF:10.0.0.1"];

#[derive(Clone, Debug)]
enum Op {
    Create {
        sev: usize,
        who: Option<usize>,
        tags: Vec<usize>,
        ips: Vec<usize>,
        dedup: Option<usize>,
    },
    State {
        case: usize,
        to: usize,
        reason: bool,
    },
    Assign {
        case: usize,
        who: Option<usize>,
    },
    Severity {
        case: usize,
        sev: usize,
    },
    AddTag {
        case: usize,
        tag: usize,
    },
    RemoveTag {
        case: usize,
        tag: usize,
    },
    AddIp {
        case: usize,
        ip: usize,
    },
    Comment {
        case: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..5usize, proptest::option::of(0..3usize), proptest::collection::vec(0..3usize, 0..3),
              proptest::collection::vec(0..4usize, 0..3), proptest::option::weighted(0.3, 0..2usize))
            .prop_map(|(sev, who, tags, ips, dedup)| Op::Create { sev, who, tags, ips, dedup }),
        3 => (0..20usize, 0..5usize, any::<bool>()).prop_map(|(case, to, reason)| Op::State { case, to, reason }),
        2 => (0..20usize, proptest::option::of(0..3usize)).prop_map(|(case, who)| Op::Assign { case, who }),
        1 => (0..20usize, 0..5usize).prop_map(|(case, sev)| Op::Severity { case, sev }),
        1 => (0..20usize, 0..3usize).prop_map(|(case, tag)| Op::AddTag { case, tag }),
        1 => (0..20usize, 0..3usize).prop_map(|(case, tag)| Op::RemoveTag { case, tag }),
        1 => (0..20usize, 0..4usize).prop_map(|(case, ip)| Op::AddIp { case, ip }),
        1 => (0..20usize).prop_map(|case| Op::Comment { case }),
    ]
}

#[derive(Clone, Debug)]
struct Query {
    ip: Option<usize>,
    states: Vec<usize>,
    sev: Option<usize>,
    who: Option<usize>,
    tag: Option<usize>,
    range: Option<(i64, i64)>,
    sort: usize,
    limit: usize,
}

fn query() -> impl Strategy<Value = Query> {
    (
        proptest::option::weighted(0.3, 0..4usize),
        proptest::collection::vec(0..5usize, 0..3),
        proptest::option::weighted(0.3, 0..5usize),
        proptest::option::weighted(0.3, 0..3usize),
        proptest::option::weighted(0.3, 0..3usize),
        proptest::option::weighted(0.3, (0..60i64, 0..60i64)),
        0..6usize,
        prop_oneof![1..4usize, Just(usize::MAX)],
    )
        .prop_map(|(ip, states, sev, who, tag, range, sort, limit)| Query {
            ip,
            states,
            sev,
            who,
            tag,
            range,
            sort,
            limit,
        })
}

/// What the model keeps per case: only what indexes and sorts depend on.
#[derive(Clone, Debug, PartialEq)]
struct M {
    id: u64,
    sev: Severity,
    state: CaseState,
    who: Option<String>,
    tags: BTreeSet<String>,
    ips: BTreeSet<String>,
    created: i64,
    updated: i64,
    dedup: Option<String>,
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_700_000_000_000 + ms).unwrap()
}

fn sort_of(i: usize) -> CaseSort {
    [
        CaseSort::CreatedAtAsc,
        CaseSort::CreatedAtDesc,
        CaseSort::UpdatedAtAsc,
        CaseSort::UpdatedAtDesc,
        CaseSort::SeverityAsc,
        CaseSort::SeverityDesc,
    ][i]
}

fn model_of(c: &Case) -> M {
    M {
        id: c.id.0,
        sev: c.severity,
        state: c.state,
        who: c.assignee.clone(),
        tags: c.tags.clone(),
        ips: c.observables.iter().map(|o| o.value.clone()).collect(),
        created: c.created_at.unix_millis() - 1_700_000_000_000,
        updated: c.updated_at.unix_millis() - 1_700_000_000_000,
        dedup: c.dedup_key.clone(),
    }
}

async fn run(s: &dyn Store, ops: &[Op], queries: &[Query]) -> Result<(), TestCaseError> {
    let mut model: BTreeMap<u64, M> = BTreeMap::new();
    let mut now = 0i64;
    let meta = |now| WriteMeta::new(Actor::System, ts(now));
    for (i, op) in ops.iter().enumerate() {
        now += (i % 3) as i64; // ties in time happen, ids break them
        let pick = |case: usize| model.keys().nth(case % model.len().max(1)).copied();
        match op {
            Op::Create {
                sev,
                who,
                tags,
                ips,
                dedup,
            } => {
                let mut n = NewCase::new("c", Severity::ALL[*sev]);
                n.assignee = who.map(|w| USERS[w].to_string());
                n.tags = tags.iter().map(|t| TAGS[*t].to_string()).collect();
                n.observables = ips
                    .iter()
                    .map(|ip| NewObservable::new(ObservableType::Ip, IP_SPELLINGS[*ip]))
                    .collect();
                n.dedup_key = dedup.map(|d| format!("key{d}"));
                // Reopening a case can leave two open cases with one key: the newest wins.
                let open_dup = n.dedup_key.as_ref().and_then(|k| {
                    model
                        .values()
                        .rfind(|m| m.dedup.as_ref() == Some(k) && m.state.is_open())
                        .map(|m| m.id)
                });
                let out = s.create(n.clone(), &meta(now)).await.unwrap();
                match open_dup {
                    Some(id) => {
                        prop_assert!(!out.created);
                        prop_assert_eq!(out.case.id.0, id);
                    }
                    None => {
                        prop_assert!(out.created);
                        let id = model.keys().next_back().map_or(1, |l| l + 1);
                        prop_assert_eq!(out.case.id.0, id);
                        model.insert(
                            id,
                            M {
                                id,
                                sev: n.severity,
                                state: CaseState::New,
                                who: n.assignee.clone(),
                                tags: n.tags.clone(),
                                ips: ips.iter().map(|ip| IPS[*ip].to_string()).collect(),
                                created: now,
                                updated: now,
                                dedup: n.dedup_key.clone(),
                            },
                        );
                    }
                }
            }
            op => {
                let Some(id) = pick(match op {
                    Op::State { case, .. }
                    | Op::Assign { case, .. }
                    | Op::Severity { case, .. }
                    | Op::AddTag { case, .. }
                    | Op::RemoveTag { case, .. }
                    | Op::AddIp { case, .. }
                    | Op::Comment { case } => *case,
                    Op::Create { .. } => 0,
                }) else {
                    continue;
                };
                let m = model.get(&id).cloned().unwrap();
                let mut next = m.clone();
                let (change, ok) = match op {
                    Op::State { to, reason, .. } => {
                        let to = CaseState::ALL[*to];
                        next.state = to;
                        let allowed = to == m.state
                            || (CaseState::can_transition(m.state, to)
                                && (!to.needs_resolution()
                                    || *reason
                                    || (m.state == CaseState::Resolved
                                        && to == CaseState::Closed)));
                        (
                            CaseChange::SetState {
                                to,
                                reason: reason.then(|| "r".to_string()),
                            },
                            allowed,
                        )
                    }
                    Op::Assign { who, .. } => {
                        next.who = who.map(|w| USERS[w].to_string());
                        (CaseChange::Assign(next.who.clone()), true)
                    }
                    Op::Severity { sev, .. } => {
                        next.sev = Severity::ALL[*sev];
                        (CaseChange::SetSeverity(next.sev), true)
                    }
                    Op::AddTag { tag, .. } => {
                        next.tags.insert(TAGS[*tag].to_string());
                        (CaseChange::AddTags(vec![TAGS[*tag].to_string()]), true)
                    }
                    Op::RemoveTag { tag, .. } => {
                        next.tags.remove(TAGS[*tag]);
                        (CaseChange::RemoveTags(vec![TAGS[*tag].to_string()]), true)
                    }
                    Op::AddIp { ip, .. } => {
                        next.ips.insert(IPS[*ip].to_string());
                        (
                            CaseChange::AddObservables(vec![NewObservable::new(
                                ObservableType::Ip,
                                IP_SPELLINGS[*ip],
                            )]),
                            true,
                        )
                    }
                    Op::Comment { .. } => (CaseChange::AddComment("hi".into()), true),
                    Op::Create { .. } => unreachable!(),
                };
                let changed = next != m || matches!(op, Op::Comment { .. });
                if changed {
                    next.updated = now;
                }
                let result = s.update(CaseId(id), vec![change], &meta(now)).await;
                prop_assert_eq!(
                    result.is_ok(),
                    ok,
                    "{:?} on {:?}: {:?}",
                    op,
                    m,
                    result.as_ref().err()
                );
                if ok {
                    model.insert(id, next);
                }
            }
        }
    }
    // Cases agree with the model.
    for m in model.values() {
        let c = s.get(CaseId(m.id)).await.unwrap().unwrap();
        prop_assert_eq!(&model_of(&c), m);
    }
    let problems = s.check().await.unwrap();
    prop_assert!(problems.is_empty(), "{:?}", problems);
    // Queries agree with filtering and sorting the model.
    for q in queries {
        let cq = CaseQuery {
            observable: q
                .ip
                .map(|i| (ObservableType::Ip, IP_SPELLINGS[i].to_string())),
            states: q.states.iter().map(|s| CaseState::ALL[*s]).collect(),
            severity: q.sev.map(|s| Severity::ALL[s]),
            assignee: q.who.map(|w| USERS[w].to_string()),
            tag: q.tag.map(|t| TAGS[t].to_string()),
            created_after: q.range.map(|r| ts(r.0)),
            created_before: q.range.map(|r| ts(r.1)),
            sort: sort_of(q.sort),
            limit: q.limit,
        };
        let mut want: Vec<&M> = model
            .values()
            .filter(|m| {
                q.ip.is_none_or(|i| m.ips.contains(IPS[i]))
                    && (cq.states.is_empty() || cq.states.contains(&m.state))
                    && cq.severity.is_none_or(|s| s == m.sev)
                    && cq
                        .assignee
                        .as_ref()
                        .is_none_or(|a| m.who.as_ref() == Some(a))
                    && cq.tag.as_ref().is_none_or(|t| m.tags.contains(t))
                    && q.range.is_none_or(|(a, b)| m.created >= a && m.created < b)
            })
            .collect();
        match cq.sort {
            CaseSort::CreatedAtAsc => want.sort_by_key(|m| (m.created, m.id)),
            CaseSort::CreatedAtDesc => want.sort_by_key(|m| std::cmp::Reverse((m.created, m.id))),
            CaseSort::UpdatedAtAsc => want.sort_by_key(|m| (m.updated, m.id)),
            CaseSort::UpdatedAtDesc => want.sort_by_key(|m| std::cmp::Reverse((m.updated, m.id))),
            CaseSort::SeverityAsc => want.sort_by_key(|m| (m.sev, m.created, m.id)),
            CaseSort::SeverityDesc => {
                want.sort_by_key(|m| std::cmp::Reverse((m.sev, m.created, m.id)))
            }
        }
        let count = want.len() as u64;
        want.truncate(q.limit);
        let want: Vec<u64> = want.iter().map(|m| m.id).collect();
        let got: Vec<u64> = s.query(&cq).await.unwrap().iter().map(|c| c.id.0).collect();
        prop_assert_eq!(got, want, "query {:?}", cq);
        prop_assert_eq!(s.count(&cq).await.unwrap(), count);
    }
    Ok(())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn memory_store_indexes_agree_with_the_model(
        ops in proptest::collection::vec(op(), 1..60),
        queries in proptest::collection::vec(query(), 1..20),
    ) {
        block_on(run(&MemoryStore::new(), &ops, &queries))?;
    }

    #[test]
    fn sled_store_indexes_agree_with_the_model(
        ops in proptest::collection::vec(op(), 1..60),
        queries in proptest::collection::vec(query(), 1..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open_with(dir.path(), Durability::Relaxed).unwrap();
        block_on(run(&s, &ops, &queries))?;
    }
}

proptest! {
    // Fewer cases: each opens a fresh schema (migrations included).
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn postgres_store_indexes_agree_with_the_model(
        ops in proptest::collection::vec(op(), 1..60),
        queries in proptest::collection::vec(query(), 1..20),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let s = support::pg::fresh_with(Durability::Relaxed).await;
            run(&*s, &ops, &queries).await
        })?;
    }
}
