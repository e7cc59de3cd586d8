//! The scheduling decision as a pure function: given each step's status, what happens next.
//!
//! Join rules (documented in `docs/playbook-format.md`):
//! - A step waits until every step it depends on is finished.
//! - A step whose dependencies were *all* skipped (or cancelled, or failed into a handler)
//!   is skipped too; one dependency that ran is enough for it to be considered. That is what
//!   makes "update OR create, then escalate" run the escalation exactly once.
//! - A considered step is started when its `if` is true and skipped otherwise (the executor
//!   evaluates the condition; this function only says the step may be considered).
//! - A failure with `on_error: fail` fails the run: nothing new starts, pending steps are
//!   cancelled. `continue` counts as finished. A handler runs when a step routed to it
//!   failed, and is skipped once no step routed to it can fail any more.

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Running,
    Succeeded,
    Skipped,
    Failed,
    Cancelled,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Pending | Status::Running)
    }
}

/// What a step does on failure, as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    FailRun,
    Continue,
    Handler(usize),
}

/// The shape of a plan the decision needs: plain data, no templates, no tokio.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub deps: Vec<Vec<usize>>,
    pub on_error: Vec<Failure>,
    pub is_handler: Vec<bool>,
}

/// The next thing to do with a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Evaluate the step's `if` and run it (or skip it when false).
    Consider(usize),
    Skip(usize, &'static str),
    Cancel(usize),
}

/// Did this finished step "run" for the purpose of the join rule?
fn ran(shape: &Shape, status: &[Status], i: usize) -> bool {
    match status[i] {
        Status::Succeeded => true,
        Status::Failed => matches!(shape.on_error[i], Failure::Continue),
        _ => false,
    }
}

/// Has the run failed (a failure that is neither continued nor handled)?
pub fn run_failed(shape: &Shape, status: &[Status]) -> bool {
    status.iter().enumerate().any(|(i, s)| {
        *s == Status::Failed
            && match shape.on_error[i] {
                Failure::FailRun => true,
                Failure::Continue => false,
                // A handler that is itself failed or cancelled leaves the failure unhandled.
                Failure::Handler(h) => matches!(status[h], Status::Failed | Status::Cancelled),
            }
    })
}

/// Decide what happens next for every pending step.
pub fn next_actions(shape: &Shape, status: &[Status]) -> Vec<Action> {
    let failed = run_failed(shape, status);
    let mut out = Vec::new();
    for (i, s) in status.iter().enumerate() {
        if *s != Status::Pending {
            continue;
        }
        if failed {
            out.push(Action::Cancel(i));
            continue;
        }
        if shape.is_handler[i] {
            let routed: Vec<usize> = (0..status.len())
                .filter(|j| shape.on_error[*j] == Failure::Handler(i))
                .collect();
            if routed.iter().any(|j| status[*j] == Status::Failed) {
                out.push(Action::Consider(i));
            } else if routed.iter().all(|j| status[*j].is_terminal()) {
                out.push(Action::Skip(i, "no failure to handle"));
            }
            continue;
        }
        let deps = &shape.deps[i];
        if !deps.iter().all(|d| status[*d].is_terminal()) {
            continue;
        }
        if !deps.is_empty() && !deps.iter().any(|d| ran(shape, status, *d)) {
            out.push(Action::Skip(i, "every step it depends on was skipped"));
        } else {
            out.push(Action::Consider(i));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    fn shape(deps: Vec<Vec<usize>>) -> Shape {
        let n = deps.len();
        Shape {
            deps,
            on_error: vec![Failure::FailRun; n],
            is_handler: vec![false; n],
        }
    }

    #[test]
    fn roots_are_considered_first() {
        let s = shape(vec![vec![], vec![0], vec![]]);
        assert_eq!(
            next_actions(&s, &[Pending, Pending, Pending]),
            vec![Action::Consider(0), Action::Consider(2)]
        );
    }

    #[test]
    fn a_step_waits_for_all_dependencies() {
        let s = shape(vec![vec![], vec![], vec![0, 1]]);
        assert_eq!(next_actions(&s, &[Succeeded, Running, Pending]), vec![]);
        assert_eq!(
            next_actions(&s, &[Succeeded, Succeeded, Pending]),
            vec![Action::Consider(2)]
        );
    }

    #[test]
    fn join_after_exclusive_branches_runs_once() {
        // existing -> update | create -> escalate
        let s = shape(vec![vec![], vec![0], vec![0], vec![1, 2]]);
        let update_ran = [Succeeded, Succeeded, Skipped, Pending];
        assert_eq!(next_actions(&s, &update_ran), vec![Action::Consider(3)]);
        let create_ran = [Succeeded, Skipped, Succeeded, Pending];
        assert_eq!(next_actions(&s, &create_ran), vec![Action::Consider(3)]);
    }

    #[test]
    fn skips_propagate_when_every_dependency_skipped() {
        let s = shape(vec![vec![], vec![0], vec![1]]);
        assert_eq!(
            next_actions(&s, &[Skipped, Pending, Pending]),
            vec![Action::Skip(1, "every step it depends on was skipped")]
        );
        assert_eq!(
            next_actions(&s, &[Skipped, Skipped, Pending]),
            vec![Action::Skip(2, "every step it depends on was skipped")]
        );
    }

    #[test]
    fn a_failure_cancels_what_has_not_started() {
        let s = shape(vec![vec![], vec![0], vec![]]);
        assert_eq!(
            next_actions(&s, &[Failed, Pending, Running]),
            vec![Action::Cancel(1)]
        );
        assert!(run_failed(&s, &[Failed, Cancelled, Succeeded]));
    }

    #[test]
    fn continue_counts_as_finished() {
        let mut s = shape(vec![vec![], vec![0]]);
        s.on_error[0] = Failure::Continue;
        assert_eq!(
            next_actions(&s, &[Failed, Pending]),
            vec![Action::Consider(1)]
        );
        assert!(!run_failed(&s, &[Failed, Succeeded]));
    }

    #[test]
    fn handlers_run_on_failure_and_skip_otherwise() {
        // 0 routes failures to handler 2; 1 depends on 0.
        let s = Shape {
            deps: vec![vec![], vec![0], vec![]],
            on_error: vec![Failure::Handler(2), Failure::FailRun, Failure::FailRun],
            is_handler: vec![false, false, true],
        };
        assert_eq!(next_actions(&s, &[Running, Pending, Pending]), vec![]);
        let after_failure = next_actions(&s, &[Failed, Pending, Pending]);
        assert!(after_failure.contains(&Action::Consider(2)));
        assert!(after_failure.contains(&Action::Skip(1, "every step it depends on was skipped")));
        assert!(!run_failed(&s, &[Failed, Skipped, Succeeded]));
        assert!(run_failed(&s, &[Failed, Skipped, Failed]));
        assert_eq!(
            next_actions(&s, &[Succeeded, Succeeded, Pending]),
            vec![Action::Skip(2, "no failure to handle")]
        );
    }
}
