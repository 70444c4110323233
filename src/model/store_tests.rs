//! Unit tests of the store's apply semantics and rendering.

use prost::Message;

use super::store::{key_to_pb, ApplyRules, Outcome, Store};
use super::text_parse::parse_text;
use super::GroupingKey;
use crate::pb::io::prometheus::client as pm;
use crate::pb::pushgate::v1 as pb;

const T1: i64 = 1_700_000_000_000_000_000;

fn key(labels: &[(&str, &str)]) -> GroupingKey {
    GroupingKey::from_labels(labels.iter().map(|(n, v)| (n.to_string(), v.to_string()))).unwrap()
}

fn push_families(
    store: &mut Store,
    t: i64,
    k: &GroupingKey,
    replace: bool,
    families: Vec<pm::MetricFamily>,
) -> Outcome {
    let m = pb::Mutation {
        op: Some(pb::mutation::Op::Push(pb::Push {
            grouping_key: key_to_pb(k),
            replace,
            families,
            consistency_check: true,
        })),
        request: None,
    };
    store.apply_batch(t, ApplyRules::NEWEST, &[m]).remove(0)
}

fn push(store: &mut Store, t: i64, k: &GroupingKey, replace: bool, body: &str) -> Outcome {
    push_families(store, t, k, replace, parse_text(body.as_bytes()).unwrap())
}

fn delete(store: &mut Store, t: i64, k: &GroupingKey) -> Outcome {
    let m = pb::Mutation {
        op: Some(pb::mutation::Op::Delete(pb::Delete {
            grouping_key: key_to_pb(k),
        })),
        request: None,
    };
    store.apply_batch(t, ApplyRules::NEWEST, &[m]).remove(0)
}

fn render(store: &Store) -> String {
    let mut out = Vec::new();
    store.render_text(&mut out, &[], |_, _| {});
    String::from_utf8(out).unwrap()
}

/// A family declared a gauge whose one series carries a counter value.
fn gauge_with_a_counter_value(name: &str) -> pm::MetricFamily {
    pm::MetricFamily {
        name: Some(name.into()),
        r#type: Some(pm::MetricType::Gauge as i32),
        metric: vec![pm::Metric {
            counter: Some(pm::Counter {
                value: Some(1.0),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn rejected(o: &Outcome) -> bool {
    matches!(o, Outcome::Rejected { .. })
}

#[test]
fn readme_example_renders_like_the_reference() {
    let mut s = Store::new();
    let k = key(&[("job", "some_job"), ("instance", "some_instance")]);
    let body = "# TYPE some_metric counter\nsome_metric{label=\"val1\"} 42\n# TYPE another_metric gauge\n# HELP another_metric Just an example.\nanother_metric 2398.283\n";
    assert_eq!(push(&mut s, 1_795_305_656_909_103_600, &k, true, body), Outcome::Pushed);
    assert_eq!(
        render(&s),
        "# HELP another_metric Just an example.\n# TYPE another_metric gauge\n\
another_metric{instance=\"some_instance\",job=\"some_job\"} 2398.283\n\
# HELP push_failure_time_seconds Last Unix time when changing this group in the Pushgateway failed.\n\
# TYPE push_failure_time_seconds gauge\n\
push_failure_time_seconds{instance=\"some_instance\",job=\"some_job\"} 0\n\
# HELP push_time_seconds Last Unix time when changing this group in the Pushgateway succeeded.\n\
# TYPE push_time_seconds gauge\n\
push_time_seconds{instance=\"some_instance\",job=\"some_job\"} 1.7953056569091036e+09\n\
# TYPE some_metric counter\n\
some_metric{instance=\"some_instance\",job=\"some_job\",label=\"val1\"} 42\n"
    );
}

#[test]
fn put_replaces_post_merges_by_name() {
    let mut s = Store::new();
    let k = key(&[("job", "j")]);
    push(&mut s, T1, &k, true, "a 1\nb 2\n");
    push(&mut s, T1 + 1, &k, false, "b 3\nc 4\n");
    let names: Vec<String> = s.group(&k).unwrap().families.keys().map(|n| n.to_string()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    push(&mut s, T1 + 2, &k, true, "only 1\n");
    let names: Vec<String> = s.group(&k).unwrap().families.keys().map(|n| n.to_string()).collect();
    assert_eq!(names, ["only"]);
    assert_eq!(s.series_count(), 1);
}

#[test]
fn empty_put_keeps_group_and_bumps_push_time() {
    let mut s = Store::new();
    let k = key(&[("job", "j")]);
    push(&mut s, T1, &k, true, "a 1\n");
    push(&mut s, T1 + 5_000, &k, true, "");
    let g = s.group(&k).unwrap();
    assert!(g.families.is_empty());
    assert_eq!(g.push_time, T1 + 5_000);
}

#[test]
fn delete_removes_exact_key_only() {
    let mut s = Store::new();
    let a = key(&[("job", "x")]);
    let b = key(&[("job", "x"), ("instance", "i")]);
    push(&mut s, T1, &a, true, "m 1\n");
    push(&mut s, T1, &b, true, "m 2\n");
    assert_eq!(delete(&mut s, T1, &a), Outcome::Deleted { existed: true });
    assert!(s.group(&b).is_some());
    assert_eq!(delete(&mut s, T1, &a), Outcome::Deleted { existed: false });
    assert_eq!(s.series_count(), 1);
}

#[test]
fn timestamps_are_rejected_and_failure_recorded() {
    let mut s = Store::new();
    let k = key(&[("job", "tj")]);
    push(&mut s, T1, &k, true, "ts_ok 1\n");
    let o = push(&mut s, T1 + 10_000, &k, true, "ts_metric 1 1700000000000\n");
    match o {
        Outcome::Rejected { message } => {
            assert!(message.ends_with("pushed metrics must not have timestamps"))
        }
        other => panic!("{other:?}"),
    }
    let g = s.group(&k).unwrap();
    assert!(g.families.contains_key("ts_ok"));
    assert_eq!((g.push_time, g.failure_time), (T1, T1 + 10_000));
    assert!(!g.last_push_successful());
}

#[test]
fn rejected_push_to_new_key_creates_failed_group() {
    let mut s = Store::new();
    let k = key(&[("job", "new")]);
    assert!(rejected(&push(&mut s, T1, &k, true, "m 1 5\n")));
    let g = s.group(&k).unwrap();
    assert_eq!((g.push_time, g.failure_time), (0, T1));
}

#[test]
fn type_conflicts_across_groups_but_not_within_a_replaced_group() {
    let mut s = Store::new();
    let a = key(&[("job", "a")]);
    let b = key(&[("job", "b")]);
    assert_eq!(push(&mut s, T1, &a, true, "# TYPE t counter\nt 1\n"), Outcome::Pushed);
    assert!(rejected(&push(&mut s, T1, &b, true, "# TYPE t gauge\nt 1\n")));
    assert!(rejected(&push(&mut s, T1, &b, true, "t 1\n")));
    // The only holder may change the type with PUT or POST.
    assert_eq!(push(&mut s, T1, &a, true, "# TYPE t gauge\nt 1\n"), Outcome::Pushed);
    assert_eq!(push(&mut s, T1, &a, false, "# TYPE t untyped\nt 1\n"), Outcome::Pushed);
    assert_eq!(push(&mut s, T1, &b, true, "t 2\n"), Outcome::Pushed);
}

#[test]
fn duplicate_series_within_and_across_groups() {
    let mut s = Store::new();
    assert!(rejected(&push(
        &mut s,
        T1,
        &key(&[("job", "dj2")]),
        true,
        "dup 1\ndup 2\n"
    )));
    let a = key(&[("job", "x")]);
    let b = key(&[("job", "x"), ("instance", "i")]);
    assert_eq!(push(&mut s, T1, &b, true, "m 1\n"), Outcome::Pushed);
    // Group {job=x} pushing instance="i" collides with {job=x,instance=i}'s series.
    assert!(rejected(&push(&mut s, T1, &a, true, "m{instance=\"i\"} 1\n")));
    // Body labels are overwritten by the key, which can make duplicates.
    let d = key(&[("job", "dj"), ("instance", "i")]);
    assert!(rejected(&push(
        &mut s,
        T1,
        &d,
        true,
        "da{instance=\"a\"} 1\nda{instance=\"b\"} 2\n"
    )));
    // Replacing one's own series is not a duplicate.
    assert_eq!(push(&mut s, T1, &b, true, "m 3\n"), Outcome::Pushed);
}

#[test]
fn key_with_empty_instance_does_not_poison_the_store() {
    let mut s = Store::new();
    let plain = key(&[("job", "c")]);
    let empty = key(&[("job", "c"), ("instance", "")]);
    push(&mut s, T1, &plain, true, "coll 1\n");
    assert!(matches!(
        push(&mut s, T1, &empty, true, "coll 2\n"),
        Outcome::KeyConflict { .. }
    ));
    assert!(s.group(&empty).is_none());
    assert_eq!(
        push(&mut s, T1, &key(&[("job", "innocent")]), true, "other 1\n"),
        Outcome::Pushed
    );
}

#[test]
fn suffix_collisions() {
    let mut s = Store::new();
    assert_eq!(
        push(&mut s, T1, &key(&[("job", "s1")]), true, "sx_count 1\n"),
        Outcome::Pushed
    );
    let o = push(
        &mut s,
        T1,
        &key(&[("job", "s2")]),
        true,
        "# TYPE sx summary\nsx_sum 1\nsx_count 1\n",
    );
    assert!(rejected(&o), "{o:?}");
    let o = push(
        &mut s,
        T1,
        &key(&[("job", "h")]),
        true,
        "# TYPE hx histogram\nhx_bucket{le=\"1\"} 1\n",
    );
    assert_eq!(o, Outcome::Pushed);
    assert!(rejected(&push(
        &mut s,
        T1,
        &key(&[("job", "h2")]),
        true,
        "hx_bucket 1\n"
    )));
}

#[test]
fn self_metric_type_conflict() {
    let mut s = Store::new();
    let k = key(&[("job", "own")]);
    assert!(rejected(&push(
        &mut s,
        T1,
        &k,
        true,
        "# TYPE process_open_fds counter\nprocess_open_fds 5\n"
    )));
    assert_eq!(
        push(
            &mut s,
            T1,
            &k,
            true,
            "# TYPE process_open_fds gauge\nprocess_open_fds 5\n"
        ),
        Outcome::Pushed
    );
}

#[test]
fn pushed_timestamp_gauges_are_overridden() {
    let mut s = Store::new();
    let k = key(&[("job", "pft")]);
    push(
        &mut s,
        T1,
        &k,
        true,
        "# TYPE push_failure_time_seconds gauge\npush_failure_time_seconds 123\npush_time_seconds 5\n",
    );
    push(
        &mut s,
        T1 + 1_000,
        &k,
        true,
        "# TYPE push_failure_time_seconds gauge\npush_failure_time_seconds 123\n",
    );
    let g = s.group(&k).unwrap();
    assert_eq!((g.push_time, g.failure_time), (T1 + 1_000, 0));
    assert!(g.families.is_empty());
}

#[test]
fn invalid_protobuf_content_is_rejected() {
    let mut s = Store::new();
    let k = key(&[("job", "pb")]);
    let bad_name = pm::MetricFamily {
        name: Some("bad-name.x".into()),
        r#type: Some(pm::MetricType::Gauge as i32),
        metric: vec![pm::Metric {
            gauge: Some(pm::Gauge { value: Some(1.0) }),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(rejected(&push_families(&mut s, T1, &k, true, vec![bad_name])));
    let mismatch = gauge_with_a_counter_value("mm");
    assert!(rejected(&push_families(&mut s, T1, &k, true, vec![mismatch])));
    let bad_label = pm::MetricFamily {
        name: Some("bl".into()),
        r#type: Some(pm::MetricType::Gauge as i32),
        metric: vec![pm::Metric {
            label: vec![pm::LabelPair {
                name: Some("a-b".into()),
                value: Some("x".into()),
            }],
            gauge: Some(pm::Gauge { value: Some(1.0) }),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(rejected(&push_families(&mut s, T1, &k, true, vec![bad_label])));
}

#[test]
fn clock_is_monotonic_even_if_a_leader_is_behind() {
    let mut s = Store::new();
    let k = key(&[("job", "mono")]);
    push(&mut s, T1, &k, true, "a 1\n");
    assert_eq!(s.group(&k).unwrap().push_time, T1, "the leader's time when it is ahead");
    push(&mut s, T1 - 1_000_000_000, &k, true, "a 2\n");
    assert_eq!(
        s.group(&k).unwrap().push_time,
        T1 + 1_000,
        "one step after the last stamp"
    );
}

/// Behind a leader whose clock is behind, a push and a rejected push still
/// get distinct stamps in the order applied, so the group's "last push
/// failed" follows what came last, in the exposition's float seconds too.
#[test]
fn failure_state_follows_the_order_of_mutations_when_the_leader_is_behind() {
    let mut s = Store::new();
    let k = key(&[("job", "skew")]);
    push(&mut s, T1, &k, true, "a 1\n");
    let behind = T1 - 3_600_000_000_000;
    assert!(rejected(&push(&mut s, behind, &k, false, "a 1 1234\n")));
    let g = s.group(&k).unwrap();
    assert!(!g.last_push_successful(), "the rejected push came last");
    assert!((g.failure_time as f64 / 1e9) > (g.push_time as f64 / 1e9));
    push(&mut s, behind, &k, true, "a 2\n");
    let g = s.group(&k).unwrap();
    assert!(g.last_push_successful(), "the successful push came last");
    assert!((g.push_time as f64 / 1e9) > (g.failure_time as f64 / 1e9));
}

/// Mutations that share one log entry are stamped in their order, one step
/// apart: the first at the leader's time.
#[test]
fn mutations_of_one_entry_get_increasing_stamps() {
    let mut s = Store::new();
    let a = key(&[("job", "a")]);
    let b = key(&[("job", "b")]);
    let m = |k: &GroupingKey| pb::Mutation {
        op: Some(pb::mutation::Op::Push(pb::Push {
            grouping_key: key_to_pb(k),
            replace: true,
            families: parse_text(b"x 1\n").unwrap(),
            consistency_check: true,
        })),
        request: None,
    };
    s.apply_batch(T1, ApplyRules::NEWEST, &[m(&a), m(&b)]);
    assert_eq!(s.group(&a).unwrap().push_time, T1);
    assert_eq!(s.group(&b).unwrap().push_time, T1 + 1_000);
}

#[test]
fn help_is_chosen_deterministically_and_header_written_once() {
    let mut s = Store::new();
    push(&mut s, T1, &key(&[("job", "hb")]), true, "# HELP h Help B.\nh 1\n");
    push(&mut s, T1, &key(&[("job", "ha")]), true, "# HELP h Help A.\nh 2\n");
    let text = render(&s);
    assert_eq!(text.matches("# HELP h ").count(), 1);
    assert!(text.contains("# HELP h Help A.\n"));
}

#[test]
fn snapshot_restore_renders_identically() {
    let mut s = Store::new();
    push(
        &mut s,
        T1,
        &key(&[("job", "a"), ("instance", "1")]),
        true,
        "# TYPE c counter\nc{x=\"1\"} 1\n# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n",
    );
    push(
        &mut s,
        T1 + 1,
        &key(&[("job", "b")]),
        true,
        "# HELP g help\n# TYPE g gauge\ng 1\n",
    );
    push(&mut s, T1 + 2, &key(&[("job", "f")]), true, "x 1 1\n");
    let view = s.snapshot_view();
    let restored = Store::restore(view.clock, &view.groups_pb().collect::<Vec<_>>(), ApplyRules::NEWEST).unwrap();
    assert_eq!(render(&s), render(&restored));
    assert_eq!(restored.series_count(), s.series_count());
    // Indexes were rebuilt: a conflicting push is still refused.
    let mut restored = restored;
    assert!(rejected(&push(
        &mut restored,
        T1 + 3,
        &key(&[("job", "z")]),
        true,
        "# TYPE c gauge\nc 1\n"
    )));
}

#[test]
fn wipe_removes_everything() {
    let mut s = Store::new();
    push(&mut s, T1, &key(&[("job", "a")]), true, "a 1\n");
    push(&mut s, T1, &key(&[("job", "b")]), true, "b 1\n");
    let m = pb::Mutation {
        op: Some(pb::mutation::Op::Wipe(pb::Wipe {})),
        request: None,
    };
    assert_eq!(
        s.apply_batch(T1, ApplyRules::NEWEST, &[m]),
        vec![Outcome::Wiped { groups: 2 }]
    );
    assert_eq!(s.group_count(), 0);
    assert_eq!(render(&s), "");
}

/// Stored families are encoded field by field from borrowed pieces of the
/// push; the bytes must be exactly what prost writes for the same family, with
/// the sanitised labels (grouping labels win, `instance=""` added, sorted) and
/// series in the reference's order.
#[test]
fn stored_encoding_is_prosts_encoding_of_the_sanitised_family() {
    let mut store = Store::new();
    let k = key(&[("job", "j"), ("zone", "z\"1")]);
    let label = |n: &str, v: &str| pm::LabelPair {
        name: Some(n.into()),
        value: Some(v.into()),
    };
    let families = vec![
        pm::MetricFamily {
            name: Some("g".into()),
            help: Some("a gauge".into()),
            r#type: Some(pm::MetricType::Gauge as i32),
            metric: vec![
                pm::Metric {
                    label: vec![label("zone", "body"), label("b", "2"), label("a", "")],
                    gauge: Some(pm::Gauge { value: Some(1.5) }),
                    ..Default::default()
                },
                pm::Metric {
                    label: vec![label("instance", "i")],
                    gauge: Some(pm::Gauge { value: Some(-0.0) }),
                    ..Default::default()
                },
            ],
            unit: Some("seconds".into()),
        },
        pm::MetricFamily {
            name: Some("h".into()),
            help: Some(String::new()),
            r#type: Some(pm::MetricType::Histogram as i32),
            metric: vec![pm::Metric {
                histogram: Some(pm::Histogram {
                    sample_count: Some(3),
                    sample_sum: Some(2.5),
                    bucket: vec![pm::Bucket {
                        upper_bound: Some(1.0),
                        cumulative_count: Some(1),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            unit: None,
        },
        pm::MetricFamily {
            name: Some("s".into()),
            help: None,
            r#type: Some(pm::MetricType::Summary as i32),
            metric: vec![pm::Metric {
                label: vec![label("q", "x")],
                summary: Some(pm::Summary {
                    sample_count: Some(2),
                    sample_sum: Some(1.0),
                    quantile: vec![pm::Quantile {
                        quantile: Some(0.5),
                        value: Some(0.25),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            unit: None,
        },
        pm::MetricFamily {
            name: Some("c".into()),
            help: Some("count".into()),
            r#type: Some(pm::MetricType::Counter as i32),
            metric: vec![pm::Metric {
                counter: Some(pm::Counter {
                    value: Some(7.0),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            unit: None,
        },
    ];
    assert_eq!(push_families(&mut store, T1, &k, true, families), Outcome::Pushed);
    let group = store.group(&k).unwrap();
    let g = &group.families["g"];
    let decoded = g.decode();
    assert_eq!(decoded.encode_to_vec(), g.encoded.as_ref(), "canonical prost bytes");
    assert_eq!(decoded.help.as_deref(), Some("a gauge"));
    assert_eq!(decoded.unit.as_deref(), Some("seconds"));
    let names_values: Vec<Vec<(String, String)>> = decoded
        .metric
        .iter()
        .map(|m| {
            m.label
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect()
        })
        .collect();
    let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    };
    assert_eq!(
        names_values,
        vec![
            owned(&[("instance", "i"), ("job", "j"), ("zone", "z\"1")]),
            owned(&[("a", ""), ("b", "2"), ("instance", ""), ("job", "j"), ("zone", "z\"1")]),
        ]
    );
    for name in ["h", "s", "c"] {
        let f = &group.families[name];
        assert_eq!(f.decode().encode_to_vec(), f.encoded.as_ref(), "family {name}");
    }
    assert_eq!(
        group.families["h"].decode().help.as_deref(),
        Some(""),
        "an empty help is kept"
    );
    assert_eq!(
        String::from_utf8(g.text.to_vec()).unwrap(),
        "g{instance=\"i\",job=\"j\",zone=\"z\\\"1\"} 0\ng{a=\"\",b=\"2\",instance=\"\",job=\"j\",zone=\"z\\\"1\"} 1.5\n"
    );
}

/// A family pushed with a HELP that is present but empty (a Go client's
/// protobuf push of a metric made without help): the newest rules keep it
/// (text `# HELP e `, protobuf `help: ""`, as the reference), the rules of
/// the entry formats before drop it, as a family pushed without HELP; a
/// restore keeps or drops it by the rules the snapshot was built with.
#[test]
fn an_empty_help_is_kept_or_dropped_by_the_apply_rules() {
    let family = |help: Option<&str>| pm::MetricFamily {
        name: Some("e".into()),
        help: help.map(str::to_string),
        r#type: Some(pm::MetricType::Untyped as i32),
        metric: vec![pm::Metric {
            untyped: Some(pm::Untyped { value: Some(1.0) }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let pushed = |rules: ApplyRules, help: Option<&str>| {
        let mut store = Store::new();
        let m = pb::Mutation {
            op: Some(pb::mutation::Op::Push(pb::Push {
                grouping_key: key_to_pb(&key(&[("job", "j")])),
                replace: true,
                families: vec![family(help)],
                consistency_check: true,
            })),
            request: None,
        };
        assert_eq!(store.apply_batch(T1, rules, &[m]), vec![Outcome::Pushed]);
        store
    };
    let sample = "e{instance=\"\",job=\"j\"} 1\n";
    let old = ApplyRules { keep_empty_help: false };
    let kept = pushed(ApplyRules::NEWEST, Some(""));
    assert!(
        render(&kept).starts_with(&format!("# HELP e \n# TYPE e untyped\n{sample}")),
        "{}",
        render(&kept)
    );
    assert_eq!(kept.merged_families()[0].help.as_deref(), Some(""));
    let dropped = pushed(old, Some(""));
    assert!(
        render(&dropped).starts_with(&format!("# TYPE e untyped\n{sample}")),
        "{}",
        render(&dropped)
    );
    assert_eq!(dropped.merged_families()[0].help, None);
    assert_eq!(
        render(&pushed(ApplyRules::NEWEST, None)),
        render(&dropped),
        "no HELP pushed: no line"
    );

    let groups: Vec<pb::StoredGroup> = kept.snapshot_view().groups_pb().collect();
    let restored = Store::restore(kept.snapshot_view().clock, &groups, ApplyRules::NEWEST).unwrap();
    assert_eq!(render(&restored), render(&kept));
    let restored_by_old_rules = Store::restore(kept.snapshot_view().clock, &groups, old).unwrap();
    assert_eq!(render(&restored_by_old_rules), render(&dropped));
}

#[test]
fn series_of_merged_groups_sort_by_label_count_then_values() {
    // The spec's listing of E20-E23b: a two-label series sorts before a
    // three-label one although its group's key sorts after.
    let mut s = Store::new();
    push(&mut s, T1, &key(&[("job", "j3"), ("a", "2")]), true, "x 1\n");
    push(&mut s, T1, &key(&[("job", "trail")]), true, "x 2\n");
    push(&mut s, T1, &key(&[("job", "b")]), true, "x 3\n");
    let text = render(&s);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let x: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("x{")).collect();
    assert_eq!(
        x,
        [
            "x{instance=\"\",job=\"b\"} 3",
            "x{instance=\"\",job=\"trail\"} 2",
            "x{a=\"2\",instance=\"\",job=\"j3\"} 1",
        ]
    );
    let push_times: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("push_time_seconds{"))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        push_times,
        [
            "push_time_seconds{instance=\"\",job=\"b\"}",
            "push_time_seconds{instance=\"\",job=\"trail\"}",
            "push_time_seconds{a=\"2\",instance=\"\",job=\"j3\"}",
        ]
    );
    // The protobuf exposition carries the same order.
    let merged = s.merged_families();
    let x = merged.iter().find(|f| f.name() == "x").unwrap();
    let jobs: Vec<&str> = x.metric.iter().map(|m| m.label.last().unwrap().value()).collect();
    assert_eq!(jobs, ["b", "trail", "j3"]);
}

#[test]
fn histogram_groups_sort_by_their_first_series_without_le() {
    // {job="c"}: two labels (le is not one); {job="b"}: three (zz from the
    // body). Key order and a key that counted le would both put "b" first.
    let mut s = Store::new();
    let with_buckets = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n";
    let without_buckets = "# TYPE h histogram\nh_sum{zz=\"1\"} 1\nh_count{zz=\"1\"} 1\n";
    push(&mut s, T1, &key(&[("job", "c")]), true, with_buckets);
    push(&mut s, T1, &key(&[("job", "b")]), true, without_buckets);
    let text = render(&s);
    let c = text.find("h_bucket{instance=\"\",job=\"c\"").unwrap();
    let b = text.find("h_sum{instance=\"\",job=\"b\"").unwrap();
    assert!(c < b, "{text}");
}

#[test]
fn structural_errors_name_the_series_with_its_stored_labels() {
    let mut s = Store::new();
    let family = gauge_with_a_counter_value("pb_t");
    let outcome = push_families(&mut s, T1, &key(&[("job", "pbt")]), true, vec![family]);
    let Outcome::Rejected { message } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        message.ends_with("collected metric \"pb_t\" {instance=\"\",job=\"pbt\"} is not a GAUGE"),
        "{message}"
    );
}

/// The soft own families (`reserved::SOFT_SELF_FAMILIES`) are shown unless a
/// stored family clashes with them; the push that clashes is stored, and
/// the own family comes back once it is gone.
#[test]
fn a_stored_family_shadows_a_soft_own_family_that_it_clashes_with() {
    use super::reserved::{SELF_FAMILIES, SOFT_SELF_FAMILIES};
    let lag = "pushgate_raft_replication_lag_entries";
    let fsync = "pushgate_log_fsync_duration_seconds";
    let mut s = Store::new();
    let all = s.own_families_shown();
    assert_eq!(all.len(), SELF_FAMILIES.len() + SOFT_SELF_FAMILIES.len());
    assert!(all.windows(2).all(|w| w[0] < w[1]), "sorted for render_plan");

    let same_name = key(&[("job", "same-name")]);
    assert_eq!(
        push(&mut s, T1, &same_name, true, &format!("{lag} 3\n")),
        Outcome::Pushed
    );
    let by_suffix = key(&[("job", "by-suffix")]);
    let body = format!("# TYPE {fsync}_bucket gauge\n{fsync}_bucket 1\n");
    assert_eq!(push(&mut s, T1 + 1, &by_suffix, true, &body), Outcome::Pushed);
    let shown = s.own_families_shown();
    assert!(!shown.contains(&lag) && !shown.contains(&fsync), "{shown:?}");
    assert!(shown.contains(&"pushgate_raft_leader_changes_seen_total"));
    assert!(
        SELF_FAMILIES.iter().all(|(n, _)| shown.contains(n)),
        "checked families always show"
    );

    delete(&mut s, T1 + 2, &same_name);
    delete(&mut s, T1 + 3, &by_suffix);
    assert_eq!(s.own_families_shown(), all);
}

/// A soft family named like a stored summary's or histogram's series is
/// shadowed too: the scrape would otherwise hold one name twice.
#[test]
fn a_stored_histogram_shadows_a_soft_family_named_like_its_series() {
    let mut s = Store::new();
    assert!(!s.shadows("x_count", pm::MetricType::Counter));
    let body = "# TYPE x histogram\nx_bucket{le=\"+Inf\"} 1\nx_sum 1\nx_count 1\n";
    assert_eq!(push(&mut s, T1, &key(&[("job", "h")]), true, body), Outcome::Pushed);
    assert!(s.shadows("x_count", pm::MetricType::Counter));
    assert!(s.shadows("x", pm::MetricType::Gauge));
    assert!(!s.shadows("y", pm::MetricType::Histogram));
}
