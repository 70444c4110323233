//! The model of the store the checker replays, and what a read showed of it.
//!
//! The clients' traffic is shaped so that the model stays small and exact:
//! group `g` is `{job="sim", client="g"}`, mutated by client `g` and by its
//! neighbour `g - 1`, with two families: `sim_value` (written by PUT, which
//! replaces the group) and `sim_post` (written by POST, which replaces only
//! that family). Values are unique across clients (each client counts in its
//! own residue class), so a value names the push that wrote it. DELETE
//! removes the group; wipe removes every group. A push with a timestamp is
//! rejected by apply (400) and records the group's failure time, creating
//! the group if needed, so the model follows whether the last push to a group
//! failed.
//!
//! Every mutation is a "set": applying it twice, with anything in between,
//! leaves the same state as applying it only the second time. The checker
//! relies on this to let an operation of unknown outcome happen at any point
//! of its window without tracking how often it happened.

use std::collections::BTreeMap;

/// One group's pushed content, as far as the model follows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Group {
    /// `sim_value` (from the last PUT), if present.
    pub value: Option<u64>,
    /// `sim_post` (from a POST since the last PUT), if present.
    pub post: Option<u64>,
    /// Whether the last push failed (`push_failure_time_seconds` is later
    /// than `push_time_seconds`).
    pub failed: bool,
}

/// A group: absent, or present with its content.
pub type GroupState = Option<Group>;

/// A change to the store, as a client issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    Put {
        group: usize,
        value: u64,
    },
    Post {
        group: usize,
        value: u64,
    },
    Delete {
        group: usize,
    },
    /// A push the store must reject (its sample has a timestamp).
    Reject {
        group: usize,
    },
    Wipe,
}

impl Mutation {
    /// Whether this mutation changes `group`.
    pub fn touches(self, group: usize) -> bool {
        match self {
            Mutation::Put { group: g, .. }
            | Mutation::Post { group: g, .. }
            | Mutation::Delete { group: g }
            | Mutation::Reject { group: g } => g == group,
            Mutation::Wipe => true,
        }
    }

    /// `state` of a group this mutation touches, after it.
    pub fn apply(self, state: GroupState) -> GroupState {
        match self {
            Mutation::Put { value, .. } => Some(Group {
                value: Some(value),
                post: None,
                failed: false,
            }),
            Mutation::Post { value, .. } => Some(Group {
                value: state.and_then(|g| g.value),
                post: Some(value),
                failed: false,
            }),
            Mutation::Reject { .. } => Some(Group {
                failed: true,
                ..state.unwrap_or_default()
            }),
            Mutation::Delete { .. } | Mutation::Wipe => None,
        }
    }
}

/// The groups a `/metrics` scrape shows, by client. A group exists when its
/// `push_time_seconds` series does.
pub fn groups_in_text(body: &str) -> BTreeMap<usize, Group> {
    // client -> (group, push time, failure time)
    let mut seen: BTreeMap<usize, (Group, f64, f64)> = BTreeMap::new();
    for line in body.lines() {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        if !matches!(
            name,
            "sim_value" | "sim_post" | "push_time_seconds" | "push_failure_time_seconds"
        ) {
            continue;
        }
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let client = labels
            .split(',')
            .find_map(|l| l.strip_prefix("client=\""))
            .and_then(|v| v.trim_end_matches('"').parse::<usize>().ok());
        let (Some(client), Ok(value)) = (client, value.trim().parse::<f64>()) else {
            continue;
        };
        let (group, pushed, failed) = seen.entry(client).or_default();
        match name {
            "sim_value" => group.value = Some(value as u64),
            "sim_post" => group.post = Some(value as u64),
            "push_time_seconds" => *pushed = value,
            _ => *failed = value,
        }
    }
    seen.into_iter()
        .map(|(client, (mut group, pushed, failed))| {
            group.failed = failed > pushed;
            (client, group)
        })
        .collect()
}

/// The groups an `/api/v1/metrics` answer shows, by client; `None` if the
/// body is not the JSON the API promises.
pub fn groups_in_api(body: &str) -> Option<BTreeMap<usize, Group>> {
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    let mut out = BTreeMap::new();
    for entry in json.get("data")?.as_array()? {
        let Some(client) = entry["labels"]["client"].as_str().and_then(|c| c.parse::<usize>().ok()) else {
            continue;
        };
        let value_of = |family: &str| {
            entry[family]["metrics"][0]["value"]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| v as u64)
        };
        out.insert(
            client,
            Group {
                value: value_of("sim_value"),
                post: value_of("sim_post"),
                failed: entry["last_push_successful"].as_bool() == Some(false),
            },
        );
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_keeps_the_put_family_and_put_drops_the_post_family() {
        let s = Mutation::Put { group: 0, value: 1 }.apply(None);
        let s = Mutation::Post { group: 0, value: 2 }.apply(s);
        assert_eq!(
            s,
            Some(Group {
                value: Some(1),
                post: Some(2),
                failed: false
            })
        );
        let s = Mutation::Put { group: 0, value: 3 }.apply(s);
        assert_eq!(
            s,
            Some(Group {
                value: Some(3),
                post: None,
                failed: false
            })
        );
        assert_eq!(
            Mutation::Post { group: 0, value: 4 }.apply(None),
            Some(Group {
                value: None,
                post: Some(4),
                failed: false
            })
        );
        assert_eq!(Mutation::Delete { group: 0 }.apply(s), None);
    }

    #[test]
    fn a_rejected_push_keeps_the_group_and_marks_it_failed() {
        let s = Mutation::Put { group: 0, value: 1 }.apply(None);
        let s = Mutation::Reject { group: 0 }.apply(s);
        assert_eq!(
            s,
            Some(Group {
                value: Some(1),
                post: None,
                failed: true
            })
        );
        assert_eq!(
            Mutation::Post { group: 0, value: 2 }.apply(s).map(|g| g.failed),
            Some(false)
        );
        assert_eq!(
            Mutation::Reject { group: 0 }.apply(None),
            Some(Group {
                failed: true,
                ..Group::default()
            })
        );
    }

    #[test]
    fn text_and_api_readings_agree() {
        let text = "# TYPE sim_post untyped\nsim_post{client=\"0\",instance=\"\",job=\"sim\"} 5\n\
                    push_time_seconds{client=\"0\",instance=\"\",job=\"sim\"} 1.7e+09\n\
                    push_failure_time_seconds{client=\"0\",instance=\"\",job=\"sim\"} 1.8e+09\n\
                    push_time_seconds{client=\"2\",instance=\"\",job=\"sim\"} 1.7e+09\n\
                    sim_value{client=\"2\",instance=\"\",job=\"sim\"} 14\n";
        let api = r#"{"status":"success","data":[
            {"labels":{"client":"0","job":"sim"},"last_push_successful":false,"sim_post":{"metrics":[{"labels":{},"value":"5"}]},
             "push_time_seconds":{"metrics":[{"value":"1.7e+09"}]}},
            {"labels":{"client":"2","job":"sim"},"sim_value":{"metrics":[{"value":"14"}]}}]}"#;
        let want: BTreeMap<usize, Group> = [
            (
                0,
                Group {
                    value: None,
                    post: Some(5),
                    failed: true,
                },
            ),
            (
                2,
                Group {
                    value: Some(14),
                    post: None,
                    failed: false,
                },
            ),
        ]
        .into();
        assert_eq!(groups_in_text(text), want);
        assert_eq!(groups_in_api(api), Some(want));
        assert_eq!(groups_in_api("not json"), None);
    }
}
