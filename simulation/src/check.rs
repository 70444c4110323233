//! The history checker.
//!
//! Each client writes only its own group, with values 1, 2, 3, ... in order,
//! so a group's value names the push that wrote it. Every answer carries the
//! log index it reflects, which orders operations:
//!
//! * no acknowledged push is lost: every final scrape shows, for every
//!   client, a value at least that of its last acknowledged push;
//! * no phantom: a value seen was pushed by someone (acknowledged or not);
//! * reads respect real time: a scrape that began after a push was
//!   acknowledged reflects a log index at least the push's, and shows a value
//!   at least the push's;
//! * replicas converge: the final scrapes of all nodes show the same pushed
//!   series at the same log index;
//! * election safety: no two nodes claim leadership of the same term;
//! * liveness: once faults stop, a push succeeds within a bound.
//!
//! An operation whose answer never came (or was a 503) may or may not have
//! happened; it only widens what a read may show.

use std::collections::BTreeMap;

use crate::cluster::{Op, Report, Request};

/// The run's trace, hashed: the ordered client history (request, node,
/// simulated times, status, log index and the pushed lines of every answer),
/// which includes each node's final state, and the leadership claims seen.
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
    h.finish()
}

/// The pushed lines of a scrape (the simulation's own series and the groups'
/// push times), without the node's self metrics.
fn pushed_lines(body: &str) -> Vec<&str> {
    body.lines()
        .filter(|l| {
            l.starts_with("sim_value")
                || l.starts_with("push_time_seconds")
                || l.starts_with("push_failure_time_seconds")
        })
        .collect()
}

/// `client -> value` of `sim_value` in a scrape.
fn values(body: &str) -> BTreeMap<usize, u64> {
    let mut out = BTreeMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("sim_value{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let client = labels
            .split(',')
            .find_map(|l| l.strip_prefix("client=\""))
            .and_then(|v| v.trim_end_matches('"').parse().ok());
        if let (Some(c), Ok(v)) = (client, value.trim().parse::<f64>()) {
            out.insert(c, v as u64);
        }
    }
    out
}

fn acknowledged(op: &Op) -> Option<(usize, u64, u64)> {
    match (&op.request, &op.answer) {
        (Request::Put { group, value }, Ok(a)) if a.status == 200 => Some((*group, *value, a.log_index.unwrap_or(0))),
        _ => None,
    }
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
    // Highest value attempted per client (anything at or below may appear).
    let mut attempted: BTreeMap<usize, u64> = BTreeMap::new();
    for op in history {
        if let Request::Put { group, value } = op.request {
            let e = attempted.entry(group).or_default();
            *e = (*e).max(value);
        }
    }
    let acks: Vec<(&Op, usize, u64, u64)> = history
        .iter()
        .filter_map(|op| acknowledged(op).map(|(g, v, i)| (op, g, v, i)))
        .collect();

    for read in history
        .iter()
        .filter(|op| matches!(op.request, Request::Scrape | Request::FinalScrape))
    {
        let Ok(answer) = &read.answer else { continue };
        if answer.status != 200 {
            continue;
        }
        let index = answer.log_index.unwrap_or(0);
        let seen = values(&answer.body);
        for (client, value) in &seen {
            if *value > attempted.get(client).copied().unwrap_or(0) {
                violations.push(format!("phantom: {read} shows client {client} = {value}, never pushed"));
            }
        }
        for (push, group, value, push_index) in &acks {
            if push.end > read.start {
                continue;
            }
            if index < *push_index {
                violations.push(format!(
                    "stale read: {read} reflects index {index}, but {push} was acknowledged at index {push_index} before it began"
                ));
            }
            let shown = seen.get(group).copied().unwrap_or(0);
            if shown < *value {
                violations.push(format!(
                    "lost or stale: {read} shows client {group} = {shown}, but {push} (value {value}) was acknowledged before it began"
                ));
            }
        }
    }

    // Convergence of the final scrapes.
    let finals: Vec<&Op> = history
        .iter()
        .filter(|op| matches!(op.request, Request::FinalScrape))
        .collect();
    let mut reference: Option<(&Op, u64, Vec<&str>)> = None;
    for op in &finals {
        match &op.answer {
            Ok(a) if a.status == 200 => {
                let lines = pushed_lines(&a.body);
                let index = a.log_index.unwrap_or(0);
                match &reference {
                    None => reference = Some((op, index, lines)),
                    Some((first, first_index, first_lines)) => {
                        if *first_index == index && *first_lines != lines {
                            violations.push(format!("diverged: {first} and {op} differ at index {index}"));
                        }
                    }
                }
            }
            _ => violations.push(format!("no convergence: final scrape {op} failed after faults healed")),
        }
    }
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
    if !report.live {
        violations.push("liveness: no push succeeded within the bound after faults stopped".into());
    }
    violations
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

    fn report(history: Vec<Op>) -> Report {
        Report {
            faults: 0,
            history,
            leaders: Vec::new(),
            live: true,
        }
    }

    #[test]
    fn accepts_a_consistent_history() {
        let h = vec![
            op(Request::Put { group: 0, value: 1 }, 0, 10, 200, 5, ""),
            op(Request::Scrape, 20, 30, 200, 5, &scrape(1)),
            op(Request::FinalScrape, 40, 50, 200, 5, &scrape(1)),
        ];
        assert!(check(&report(h)).is_empty());
    }

    #[test]
    fn catches_an_acknowledged_push_that_is_gone() {
        let h = vec![
            op(Request::Put { group: 0, value: 1 }, 0, 10, 200, 5, ""),
            op(Request::Put { group: 0, value: 2 }, 20, 30, 200, 6, ""),
            op(Request::FinalScrape, 40, 50, 200, 6, &scrape(1)),
        ];
        let v = check(&report(h));
        assert!(v.iter().any(|v| v.starts_with("lost or stale")), "{v:?}");
    }

    #[test]
    fn catches_a_read_behind_an_acknowledged_push() {
        let h = vec![
            op(Request::Put { group: 0, value: 1 }, 0, 10, 200, 5, ""),
            op(Request::Scrape, 20, 30, 200, 4, ""),
            op(Request::FinalScrape, 40, 50, 200, 5, &scrape(1)),
        ];
        let v = check(&report(h));
        assert!(v.iter().any(|v| v.starts_with("stale read")), "{v:?}");
    }

    #[test]
    fn catches_a_value_nobody_pushed() {
        let h = vec![
            op(Request::Put { group: 0, value: 1 }, 0, 10, 200, 5, ""),
            op(Request::FinalScrape, 40, 50, 200, 5, &scrape(7)),
        ];
        let v = check(&report(h));
        assert!(v.iter().any(|v| v.starts_with("phantom")), "{v:?}");
    }

    #[test]
    fn catches_two_leaders_in_one_term() {
        use crate::cluster::LeaderClaim;
        let mut r = report(vec![]);
        r.leaders = vec![LeaderClaim { term: 3, node_id: 1 }, LeaderClaim { term: 3, node_id: 2 }];
        let v = check(&r);
        assert!(v.iter().any(|v| v.starts_with("two leaders in term 3")), "{v:?}");
    }

    #[test]
    fn an_unanswered_push_may_or_may_not_appear() {
        let mut unknown = op(Request::Put { group: 0, value: 2 }, 20, 30, 0, 0, "");
        unknown.answer = Err("connection reset".into());
        for seen in [1, 2] {
            let h = vec![
                op(Request::Put { group: 0, value: 1 }, 0, 10, 200, 5, ""),
                unknown.clone(),
                op(Request::FinalScrape, 40, 50, 200, 6, &scrape(seen)),
            ];
            assert!(check(&report(h)).is_empty());
        }
    }

    #[test]
    fn reads_values_per_client() {
        let body = "# TYPE sim_value gauge\nsim_value{client=\"0\",instance=\"\",job=\"sim\"} 3\nsim_value{client=\"2\",instance=\"\",job=\"sim\"} 14\n";
        let v = values(body);
        assert_eq!(v.get(&0), Some(&3));
        assert_eq!(v.get(&2), Some(&14));
    }
}
