//! The history checker.
//!
//! The clients' traffic keeps the model exact (see [`crate::model`]): two
//! clients mutate each group, values are unique across clients, and every
//! answer carries the log index it reflects, which orders operations:
//!
//! * log order respects real time: an operation that completed before another
//!   began has the lower index (a read may share the index of what it reads);
//! * every read is linearizable: the model of the store replayed up to the
//!   read's index (acknowledged mutations in index order, those sharing one
//!   entry in any order) must allow what the read showed, group by group: a
//!   lost or stale push, a value nobody pushed or a half-applied group fails;
//! * no acknowledged mutation is lost: the final scrapes after the faults are
//!   reads like any other;
//! * no acknowledged mutation takes effect twice: a copy applied again (a
//!   follower re-sends a forwarded push whose answer it lost) would undo the
//!   other client's mutation of that group, or a wipe, that came in between,
//!   and the reads after it would show a state the model does not allow;
//! * replicas converge: the final scrapes of all members, two seconds after
//!   the last client stopped, reflect the same log index and show the same
//!   pushed series;
//! * election safety: no two nodes claim leadership of the same term;
//! * liveness: once faults stop, a push succeeds within a bound.
//!
//! A mutation whose answer never came (or was a 5xx) may or may not have
//! happened, anywhere after everything that completed before it began; it
//! only widens what a read may show.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::cluster::{Op, Report, Request};
use crate::model::{groups_in_api, groups_in_text, Group, GroupState, Mutation};

/// The run's trace, hashed: the ordered client history (request, node,
/// simulated times, status, log index and the pushed lines of every answer),
/// which includes each node's final state; the leadership claims seen; the
/// operator's actions; and each member's digest of the entries it applied.
/// Two runs of one seed must agree.
pub fn trace_hash(report: &Report) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same on every run and machine.
    let mut h = std::hash::DefaultHasher::new();
    for op in &report.history {
        op.to_string().hash(&mut h);
        if let Ok(a) = &op.answer {
            pushed_lines(&a.body).hash(&mut h);
        }
    }
    report.leaders.hash(&mut h);
    report.live.hash(&mut h);
    report.operations.hash(&mut h);
    report.applied.hash(&mut h);
    h.finish()
}

/// The pushed lines of a scrape (the simulation's own series and the groups'
/// push times), without the node's self metrics.
fn pushed_lines(body: &str) -> Vec<&str> {
    body.lines()
        .filter(|l| {
            l.starts_with("sim_value")
                || l.starts_with("sim_post")
                || l.starts_with("push_time_seconds")
                || l.starts_with("push_failure_time_seconds")
        })
        .collect()
}

/// What the history says about a mutation's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Applied at this index: acknowledged (200 for PUT/POST, 202 for DELETE
    /// and wipe), or rejected by apply (400 for a push with a timestamp, which
    /// records the group's failure time).
    Applied(u64),
    /// Refused with a 4xx: it changed nothing.
    Refused,
    /// No answer, or a 5xx: it may or may not have happened, at any index
    /// after everything that completed before it began.
    Unknown,
}

fn outcome(op: &Op) -> Outcome {
    match &op.answer {
        Ok(a) if Some(a.status) == op.request.applied_status() => {
            a.log_index.map_or(Outcome::Unknown, Outcome::Applied)
        }
        Ok(a) if (400..500).contains(&a.status) => Outcome::Refused,
        _ => Outcome::Unknown,
    }
}

/// The groups a successful read showed, and the log index it reflects.
fn observed(op: &Op) -> Option<(u64, BTreeMap<usize, Group>)> {
    let answer = op.answer.as_ref().ok().filter(|a| a.status == 200)?;
    let index = answer.log_index?;
    let groups = match op.request {
        Request::ApiScrape => groups_in_api(&answer.body)?,
        _ => groups_in_text(&answer.body),
    };
    Some((index, groups))
}

/// Every operation whose log index the history tells: acknowledged
/// mutations and successful reads.
fn indexed(history: &[Op]) -> Vec<(&Op, u64)> {
    history
        .iter()
        .filter_map(|op| match op.request.mutation() {
            Some(_) => match outcome(op) {
                Outcome::Applied(i) => Some((op, i)),
                _ => None,
            },
            None => observed(op).map(|(i, _)| (op, i)),
        })
        .collect()
}

/// Every mutation's place in the log, as far as the history tells it.
struct Timeline<'a> {
    /// Acknowledged mutations by log index (one entry can hold several).
    applied: Vec<(u64, Mutation, &'a Op)>,
    /// Mutations of unknown outcome, each with the highest index of anything
    /// that completed before it began: it can only have happened after that.
    unknown: Vec<(u64, Mutation)>,
}

impl<'a> Timeline<'a> {
    fn new(history: &'a [Op], indexed: &[(&Op, u64)]) -> Timeline<'a> {
        let mut applied = Vec::new();
        let mut unknown = Vec::new();
        for op in history {
            let Some(m) = op.request.mutation() else { continue };
            match outcome(op) {
                Outcome::Applied(i) => applied.push((i, m, op)),
                Outcome::Refused => {}
                Outcome::Unknown => {
                    let after = indexed
                        .iter()
                        .filter(|(other, _)| other.end < op.start)
                        .map(|(_, i)| *i)
                        .max()
                        .unwrap_or(0);
                    unknown.push((after, m));
                }
            }
        }
        applied.sort_by_key(|(i, _, _)| *i);
        Timeline { applied, unknown }
    }

    /// Every state `group` can be in at log index `index`: acknowledged
    /// mutations up to it in index order (those sharing an entry in any
    /// order), and any mutation of unknown outcome anywhere it may fall.
    fn possible(&self, group: usize, index: u64) -> BTreeSet<GroupState> {
        let mut states: BTreeSet<GroupState> = [None].into();
        let mut known = self
            .applied
            .iter()
            .filter(|(i, m, _)| *i <= index && m.touches(group))
            .peekable();
        while let Some(&&(at, _, _)) = known.peek() {
            let mut batch = Vec::new();
            while let Some(&&(i, m, _)) = known.peek() {
                if i != at {
                    break;
                }
                batch.push(m);
                known.next();
            }
            self.close_over_unknown(&mut states, group, at);
            states = states.into_iter().flat_map(|s| every_order(s, &batch)).collect();
        }
        self.close_over_unknown(&mut states, group, index + 1);
        states
    }

    /// Adds to `states` what mutations of unknown outcome that may fall
    /// before index `before` make of them (any of them, any number of times:
    /// every mutation is a "set", so repeating one changes nothing).
    fn close_over_unknown(&self, states: &mut BTreeSet<GroupState>, group: usize, before: u64) {
        let candidates: Vec<Mutation> = self
            .unknown
            .iter()
            .filter(|(after, m)| *after < before && m.touches(group))
            .map(|(_, m)| *m)
            .collect();
        loop {
            let next: Vec<GroupState> = states
                .iter()
                .flat_map(|s| candidates.iter().map(move |m| m.apply(*s)))
                .filter(|s| !states.contains(s))
                .collect();
            if next.is_empty() {
                return;
            }
            states.extend(next);
        }
    }
}

/// The states `batch` (mutations of one log entry) can leave `state` in.
///
/// A group's entry holds at most the mutations of its two clients and a
/// wipe, since each client waits for one answer before it sends the next. A
/// larger batch means mutations that did not overlap in time share an index,
/// which the real-time check reports; it is then applied in history order only, so a
/// broken history cannot make the checker try every permutation.
fn every_order(state: GroupState, batch: &[Mutation]) -> Vec<GroupState> {
    const MAX_PERMUTED: usize = 4;
    if batch.len() > MAX_PERMUTED {
        return vec![batch.iter().fold(state, |s, m| m.apply(s))];
    }
    if batch.is_empty() {
        return vec![state];
    }
    (0..batch.len())
        .flat_map(|first| {
            let mut rest = batch.to_vec();
            let m = rest.remove(first);
            every_order(m.apply(state), &rest)
        })
        .collect()
}

/// Every violation in `report`, as one line each.
pub fn check(report: &Report) -> Vec<String> {
    let mut violations = Vec::new();
    let history = &report.history;
    for op in history {
        if let Err(e) = &op.answer {
            if e.starts_with("simulation error") {
                violations.push(e.clone());
            }
        }
    }
    // Every operation's log index, read once for both checks below.
    let indexed = indexed(history);
    check_real_time(&indexed, &mut violations);

    // Every read against the model replayed up to its index.
    let timeline = Timeline::new(history, &indexed);
    let groups: BTreeSet<usize> = history
        .iter()
        .filter_map(|op| match op.request.mutation() {
            Some(
                Mutation::Put { group, .. }
                | Mutation::Post { group, .. }
                | Mutation::Delete { group }
                | Mutation::Reject { group },
            ) => Some(group),
            _ => None,
        })
        .collect();
    for read in history.iter().filter(|op| op.request.is_read()) {
        let Some((index, seen)) = observed(read) else {
            if read.request == Request::ApiScrape && read.answer.as_ref().is_ok_and(|a| a.status == 200) {
                violations.push(format!("unreadable: {read} is not the JSON /api/v1/metrics promises"));
            }
            continue;
        };
        for client in seen.keys().filter(|c| !groups.contains(c)) {
            violations.push(format!(
                "phantom: {read} shows a group for client {client}, which never pushed"
            ));
        }
        for group in &groups {
            let shown = seen.get(group).copied();
            let possible = timeline.possible(*group, index);
            if !possible.contains(&shown) {
                violations.push(format!(
                    "wrong state: {read} shows client {group} as {}, but at index {index} it can only be {}",
                    describe(shown),
                    possible.iter().map(|s| describe(*s)).collect::<Vec<_>>().join(" or ")
                ));
            }
        }
    }

    check_convergence(history, &mut violations);
    // Election safety: at most one leader per term.
    let mut leader_of_term: BTreeMap<u64, u64> = BTreeMap::new();
    for claim in &report.leaders {
        match leader_of_term.insert(claim.term, claim.node_id) {
            Some(other) if other != claim.node_id => violations.push(format!(
                "two leaders in term {}: nodes {other} and {}",
                claim.term, claim.node_id
            )),
            _ => {}
        }
    }
    if let Some(windows) = &report.graceful {
        check_no_refusal(history, windows, &mut violations);
    }
    if !report.live {
        violations.push("liveness: no push succeeded within the bound after faults stopped".into());
    }
    violations
}

/// Where nodes are only stopped gracefully and started again: an answer
/// with a 5xx from a node outside its own stop window (see
/// `Report::graceful`) is a violation. Requests to a stopping node may fail
/// (it closes its port); every other node waits for the next leader.
fn check_no_refusal(history: &[Op], windows: &[(&str, Duration, Duration)], violations: &mut Vec<String>) {
    for op in history {
        let Ok(answer) = &op.answer else { continue };
        if answer.status < 500 {
            continue;
        }
        let stopping = windows
            .iter()
            .any(|(host, from, to)| *host == op.node && op.end >= *from && op.start <= *to);
        if !stopping {
            violations.push(format!("refused during a rolling restart: {op}"));
        }
    }
}

fn describe(state: GroupState) -> String {
    match state {
        None => "absent".into(),
        Some(Group { value, post, failed }) => {
            let v = value.map_or("-".into(), |v| v.to_string());
            let p = post.map_or("-".into(), |p| p.to_string());
            let last = if failed { "failed" } else { "ok" };
            format!("value={v} post={p} last-push={last}")
        }
    }
}

/// Log order respects real time: an operation that completed before another
/// began has the lower index (a read may share its index with the mutations
/// before it; a mutation comes strictly after everything before it).
fn check_real_time(indexed: &[(&Op, u64)], violations: &mut Vec<String>) {
    for (later, later_index) in indexed {
        // The highest index of what completed before this began.
        let Some((earlier, earlier_index)) = indexed
            .iter()
            .filter(|(earlier, _)| earlier.end < later.start)
            .max_by_key(|(_, i)| *i)
        else {
            continue;
        };
        let strict = later.request.mutation().is_some();
        let behind = if strict {
            later_index <= earlier_index
        } else {
            later_index < earlier_index
        };
        if behind {
            let kind = if strict { "out of order" } else { "stale read" };
            violations.push(format!(
                "{kind}: {later} is at index {later_index}, but {earlier} (index {earlier_index}) completed before it began"
            ));
        }
    }
}

/// After faults heal, every replica converges: the final scrapes (taken two
/// seconds after the last client stopped, with no mutation since) all
/// reflect the same log index and show the same pushed series.
fn check_convergence(history: &[Op], violations: &mut Vec<String>) {
    let mut reference: Option<(&Op, u64, Vec<&str>)> = None;
    for op in history.iter().filter(|op| op.request == Request::FinalScrape) {
        match &op.answer {
            Ok(a) if a.status == 200 => {
                let lines = pushed_lines(&a.body);
                let index = a.log_index.unwrap_or(0);
                match &reference {
                    None => reference = Some((op, index, lines)),
                    Some((first, first_index, first_lines)) => {
                        if *first_index != index {
                            violations.push(format!(
                                "no convergence: {first} is at index {first_index}, {op} at index {index}"
                            ));
                        } else if *first_lines != lines {
                            violations.push(format!("diverged: {first} and {op} differ at index {index}"));
                        }
                    }
                }
            }
            _ => violations.push(format!("no convergence: final scrape {op} failed after faults healed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::net::Answer;

    fn op(request: Request, start: u64, end: u64, status: u16, index: u64, body: &str) -> Op {
        Op {
            client: 0,
            node: "n1",
            request,
            start: Duration::from_millis(start),
            end: Duration::from_millis(end),
            answer: Ok(Answer {
                status,
                log_index: Some(index),
                body: body.to_string(),
            }),
        }
    }

    fn scrape(value: u64) -> String {
        format!("sim_value{{client=\"0\",instance=\"\",job=\"sim\"}} {value}\n")
    }

    fn post(value: u64) -> String {
        format!("sim_post{{client=\"0\",instance=\"\",job=\"sim\"}} {value}\n")
    }

    fn api(value: Option<u64>, post: Option<u64>) -> String {
        let family = |v: Option<u64>| {
            v.map_or(
                serde_json::Value::Null,
                |v| serde_json::json!({"metrics": [{"value": v.to_string()}]}),
            )
        };
        serde_json::json!({"status": "success", "data": [
            {"labels": {"client": "0", "job": "sim"}, "sim_value": family(value), "sim_post": family(post)}
        ]})
        .to_string()
    }

    fn report(history: Vec<Op>) -> Report {
        Report {
            faults: 0,
            history,
            leaders: Vec::new(),
            live: true,
            operations: Vec::new(),
            applied: Vec::new(),
            graceful: None,
        }
    }

    fn put(value: u64, start: u64, end: u64, index: u64) -> Op {
        op(Request::Put { group: 0, value }, start, end, 200, index, "")
    }

    fn unanswered(request: Request, start: u64, end: u64) -> Op {
        let mut o = op(request, start, end, 0, 0, "");
        o.answer = Err("connection reset".into());
        o
    }

    fn violations(h: Vec<Op>) -> Vec<String> {
        check(&report(h))
    }

    fn has(v: &[String], prefix: &str) -> bool {
        v.iter().any(|v| v.starts_with(prefix))
    }

    #[test]
    fn accepts_a_consistent_history() {
        let h = vec![
            put(1, 0, 10, 5),
            op(Request::Scrape, 20, 30, 200, 5, &scrape(1)),
            op(Request::Post { group: 0, value: 2 }, 31, 35, 200, 6, ""),
            op(Request::ApiScrape, 40, 45, 200, 6, &api(Some(1), Some(2))),
            op(Request::FinalScrape, 50, 60, 200, 6, &(scrape(1) + &post(2))),
        ];
        assert_eq!(violations(h), Vec::<String>::new());
    }

    #[test]
    fn catches_an_acknowledged_push_that_is_gone() {
        let h = vec![
            put(1, 0, 10, 5),
            put(2, 20, 30, 6),
            op(Request::FinalScrape, 40, 50, 200, 6, &scrape(1)),
        ];
        assert!(has(&violations(h), "wrong state"));
    }

    #[test]
    fn catches_a_read_behind_an_acknowledged_push() {
        let h = vec![
            put(1, 0, 10, 5),
            op(Request::Scrape, 20, 30, 200, 4, ""),
            op(Request::FinalScrape, 40, 50, 200, 5, &scrape(1)),
        ];
        assert!(has(&violations(h), "stale read"));
    }

    #[test]
    fn catches_a_read_older_than_an_earlier_read() {
        let h = vec![
            put(1, 0, 10, 5),
            op(Request::Scrape, 20, 30, 200, 7, &scrape(1)),
            op(Request::Scrape, 40, 50, 200, 6, &scrape(1)),
        ];
        assert!(has(&violations(h), "stale read"));
    }

    #[test]
    fn catches_mutations_out_of_real_time_order() {
        let h = vec![put(1, 0, 10, 6), put(2, 20, 30, 5)];
        assert!(has(&violations(h), "out of order"));
    }

    #[test]
    fn catches_a_value_nobody_pushed() {
        let h = vec![put(1, 0, 10, 5), op(Request::FinalScrape, 40, 50, 200, 5, &scrape(7))];
        assert!(has(&violations(h), "wrong state"));
    }

    #[test]
    fn catches_a_group_that_survived_its_delete_or_a_wipe() {
        for mutation in [Request::Delete { group: 0 }, Request::Wipe] {
            let h = vec![
                put(1, 0, 10, 5),
                op(mutation, 20, 30, 202, 6, ""),
                op(Request::Scrape, 40, 50, 200, 6, &scrape(1)),
            ];
            assert!(has(&violations(h), "wrong state"));
        }
    }

    #[test]
    fn catches_a_post_that_dropped_the_put_family() {
        let h = vec![
            put(1, 0, 10, 5),
            op(Request::Post { group: 0, value: 2 }, 20, 30, 200, 6, ""),
            op(Request::Scrape, 40, 50, 200, 6, &post(2)),
        ];
        assert!(has(&violations(h), "wrong state"));
    }

    #[test]
    fn an_unanswered_push_may_or_may_not_appear() {
        for seen in [1, 2] {
            let h = vec![
                put(1, 0, 10, 5),
                unanswered(Request::Put { group: 0, value: 2 }, 20, 30),
                op(Request::FinalScrape, 40, 50, 200, 6, &scrape(seen)),
            ];
            assert_eq!(violations(h), Vec::<String>::new());
        }
    }

    #[test]
    fn an_unanswered_push_may_land_after_a_later_one() {
        // Its answer was lost; it may still be applied after the client's
        // next push, whose value it then hides.
        let h = vec![
            unanswered(Request::Put { group: 0, value: 1 }, 0, 10),
            put(2, 20, 30, 5),
            op(Request::FinalScrape, 40, 50, 200, 6, &scrape(1)),
        ];
        assert_eq!(violations(h), Vec::<String>::new());
    }

    #[test]
    fn an_unanswered_push_cannot_land_before_what_preceded_it() {
        // Put 2 completed before the unanswered put 1 began: put 1 may hide
        // put 2, but a read cannot show a state from before put 2.
        let h = vec![
            put(2, 0, 10, 5),
            unanswered(Request::Put { group: 0, value: 1 }, 20, 30),
            op(Request::Delete { group: 0 }, 31, 35, 202, 7, ""),
            op(Request::FinalScrape, 40, 50, 200, 7, &scrape(2)),
        ];
        assert!(has(&violations(h), "wrong state"));
    }

    #[test]
    fn mutations_of_one_entry_apply_in_any_order() {
        for seen in ["", &scrape(1)] {
            let h = vec![
                op(Request::Put { group: 0, value: 1 }, 0, 10, 200, 5, ""),
                op(Request::Wipe, 0, 10, 202, 5, ""),
                op(Request::Scrape, 20, 30, 200, 5, seen),
            ];
            assert_eq!(violations(h), Vec::<String>::new());
        }
    }

    #[test]
    fn catches_two_leaders_in_one_term() {
        use crate::cluster::LeaderClaim;
        let mut r = report(vec![]);
        r.leaders = vec![LeaderClaim { term: 3, node_id: 1 }, LeaderClaim { term: 3, node_id: 2 }];
        let v = check(&r);
        assert!(v.iter().any(|v| v.starts_with("two leaders in term 3")), "{v:?}");
    }
}
