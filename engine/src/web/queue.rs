//! `GET /`: the case queue. Open cases by default, most severe first, then the SLA due
//! soonest (no SLA last), then oldest; filters for state, severity, assignee (or
//! `unassigned`) and tag come from the query string, as the filter form sends them. The
//! table is a live section: the page script refreshes it every few seconds.

use std::collections::BTreeSet;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Value};

use super::auth::Session;
use super::page::{self, WebError};
use super::{view, WebState};
use crate::cases::{Case, CaseState, Severity, Timestamp};
use crate::persist::{CaseQuery, CaseSort};

/// The assignee filter value that means "nobody".
pub const UNASSIGNED: &str = "unassigned";

/// The queue's filters, as the form sends them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// `open` (default), `all`, or one state's name.
    pub state: String,
    pub severity: Option<Severity>,
    pub assignee: Option<String>,
    pub tag: Option<String>,
}

impl Filters {
    pub fn parse(raw: Option<&str>) -> Result<Self, WebError> {
        let bad = |m: String| WebError::new(StatusCode::BAD_REQUEST, m);
        let mut f = Filters {
            state: "open".into(),
            ..Default::default()
        };
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            match k.as_ref() {
                "state" => {
                    if v != "open" && v != "all" {
                        v.parse::<CaseState>().map_err(|e| bad(e.to_string()))?;
                    }
                    f.state = v.to_string();
                }
                "severity" => {
                    f.severity = Some(
                        v.parse()
                            .map_err(|e: crate::cases::UnknownName| bad(e.to_string()))?,
                    )
                }
                "assignee" => f.assignee = Some(v.to_string()),
                "tag" => f.tag = Some(v.to_string()),
                // The refresh script and old bookmarks may add others; they filter nothing.
                _ => {}
            }
        }
        Ok(f)
    }

    /// The store query (the `unassigned` filter is applied afterwards: no index has it).
    pub fn query(&self, limit: usize) -> CaseQuery {
        let states = match self.state.as_str() {
            "all" => Vec::new(),
            "open" => CaseQuery::open().states,
            s => s.parse().map(|s| vec![s]).unwrap_or_default(),
        };
        CaseQuery {
            states,
            severity: self.severity,
            assignee: self.assignee.clone().filter(|a| a != UNASSIGNED),
            tag: self.tag.clone(),
            sort: CaseSort::SeverityDesc,
            limit,
            ..CaseQuery::default()
        }
    }
}

/// Queue order: severity (most severe first), SLA due (soonest first, none last), then
/// created (oldest first).
pub fn sort(cases: &mut [Case]) {
    cases.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| match (a.sla.due_at, b.sla.due_at) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
            .then_with(|| a.created_at.cmp(&b.created_at))
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// Everyone in the config's `teams`, for the assignee suggestions.
pub fn team_members(config: &Value) -> BTreeSet<String> {
    config
        .get("teams")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|t| t.values())
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// `GET /`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let filters = Filters::parse(raw.as_deref())?;
    let q = filters.query(state.options.queue_limit);
    let store = &state.store;
    let mut cases = store.query(&q).await?;
    let mut total = store.count(&q).await?;
    if filters.assignee.as_deref() == Some(UNASSIGNED) {
        cases.retain(|c| c.assignee.is_none());
        total = cases.len() as u64;
    }
    sort(&mut cases);
    let now = Timestamp::now();
    let mut people = team_members(&state.engine.services().config);
    people.extend(cases.iter().filter_map(|c| c.assignee.clone()));
    let tags: BTreeSet<&String> = cases.iter().flat_map(|c| c.tags.iter()).collect();
    let rows: Vec<view::CaseRow> = cases.iter().map(|c| view::case_row(c, now)).collect();
    let breached = rows.iter().filter(|r| r.sla.breached).count();
    page::render(
        &state,
        &session,
        "queue.html",
        "queue",
        true,
        StatusCode::OK,
        json!({
            "rows": rows,
            "shown": rows.len(),
            "total": total,
            "breached": breached,
            "filters": {
                "state": filters.state,
                "severity": filters.severity.map(Severity::as_str),
                "assignee": filters.assignee,
                "tag": filters.tag,
            },
            "states": CaseState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "severities": Severity::ALL.iter().rev().map(|s| s.as_str()).collect::<Vec<_>>(),
            "people": people,
            "tags": tags,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_refuse_nonsense() {
        let f = Filters::parse(Some("state=all&severity=high&assignee=dana&tag=vip&x=1")).unwrap();
        assert_eq!(f.state, "all");
        assert_eq!(f.severity, Some(Severity::High));
        let q = f.query(10);
        assert!(q.states.is_empty());
        assert_eq!(q.assignee.as_deref(), Some("dana"));
        assert_eq!(q.tag.as_deref(), Some("vip"));
        let f = Filters::parse(None).unwrap();
        assert_eq!(f.query(10).states, CaseQuery::open().states);
        let f = Filters::parse(Some("state=resolved&assignee=unassigned&severity=")).unwrap();
        assert_eq!(f.query(10).states, vec![CaseState::Resolved]);
        assert_eq!(f.query(10).assignee, None);
        assert_eq!(f.severity, None);
        assert!(Filters::parse(Some("state=nope")).is_err());
        assert!(Filters::parse(Some("severity=urgent")).is_err());
    }
}
