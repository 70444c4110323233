//! The group store: every pushed group, with the indexes that make a push cost
//! O(size of the push) and a scrape a concatenation of pre-rendered text.
//!
//! `Store::apply` is the deterministic state machine transition of pushgate:
//! it reads no clock and no configuration (the leader's time and the
//! consistency-check setting travel inside the mutation), so every replica
//! that applies the same entries holds byte-identical state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use serde::{Deserialize, Serialize};

use super::grouping_key::{GroupingKey, Label};
use super::names::{is_valid_label_name, is_valid_metric_name};
use super::render::{write_float, write_header, write_metric, write_metric_with_labels, LabelRef};
use super::reserved::{
    self_family_type, PUSH_FAILURE_TIME, PUSH_FAILURE_TIME_HELP, PUSH_TIME, PUSH_TIME_HELP, SELF_FAMILIES,
    SOFT_SELF_FAMILIES,
};
use super::series_order::{cmp_series, sort_metrics, SeriesKeys};
use crate::pb::io::prometheus::client as pm;
use crate::pb::pushgate::v1 as pb;

/// Prefix of every consistency error, as the reference words it.
pub const INCONSISTENT_PREFIX: &str = "pushed metrics are invalid or inconsistent with existing metrics: ";

/// What applying one mutation did. This is the answer the client gets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The push was stored.
    Pushed,
    /// The push was refused; the group's failure time was recorded (the group is
    /// created if it did not exist, as the reference does).
    Rejected { message: String },
    /// The push was refused before touching any group: its key exports the same
    /// series as an existing group with another key.
    KeyConflict { message: String },
    /// A group was deleted (or did not exist).
    Deleted { existed: bool },
    /// Every group was deleted.
    Wiped { groups: u64 },
    /// The mutation could not be understood (a newer format, or a corrupt entry).
    Malformed { message: String },
}

/// The rules apply follows where releases of pushgate differ. Every replica
/// must apply an entry by the rules it was written for (the entry's format,
/// `cluster::codec::ENTRY_FORMAT_VERSION`), or two of them would hold
/// different groups at the same index; so they travel with the entry
/// instead of being this release's fixed behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyRules {
    /// Keep a pushed family's HELP that is present but empty (a protobuf
    /// push from a Go client of a metric made without help), which the text
    /// exposition then writes as `# HELP name ` like the reference does.
    /// Without it such a HELP is dropped, as for a family pushed with none.
    pub keep_empty_help: bool,
}

impl ApplyRules {
    /// This release's own rules.
    pub const NEWEST: ApplyRules = ApplyRules { keep_empty_help: true };

    /// The HELP a family is stored with under these rules.
    fn help<'a>(&self, pushed: Option<&'a str>) -> Option<&'a str> {
        pushed.filter(|h| self.keep_empty_help || !h.is_empty())
    }
}

/// One family as stored in a group: already sanitised, sorted and rendered.
#[derive(Debug)]
pub struct StoredFamily {
    pub kind: pm::MetricType,
    /// The pushed help, if the push had one (see [`ApplyRules`] for an empty one).
    pub help: Option<Arc<str>>,
    /// When the push that wrote this family was applied (Unix ns).
    pub pushed_at: i64,
    /// The sanitised `MetricFamily`, protobuf-encoded (API, protobuf scrape, snapshots).
    pub encoded: Bytes,
    /// Its sample lines in text format (no HELP/TYPE), ready to be concatenated.
    pub text: Bytes,
    /// Identity hashes of its series, for the duplicate index.
    pub series: Box<[u64]>,
}

impl StoredFamily {
    pub fn decode(&self) -> pm::MetricFamily {
        pm::MetricFamily::decode(self.encoded.as_ref()).unwrap_or_default()
    }
}

/// One group: a grouping key, its families and its two timestamps.
#[derive(Debug, Clone)]
pub struct Group {
    pub key: GroupingKey,
    /// Unix ns of the last successful change; 0 = never.
    pub push_time: i64,
    /// Unix ns of the last failed push; 0 = never.
    pub failure_time: i64,
    pub families: BTreeMap<Arc<str>, Arc<StoredFamily>>,
}

impl Group {
    pub fn last_push_successful(&self) -> bool {
        self.failure_time <= self.push_time
    }
}

/// A family ready to be stored, with its name.
type NamedFamily = (Arc<str>, Arc<StoredFamily>);

type IdentityMap<V> = HashMap<u64, V, BuildHasherDefault<IdentityHasher>>;

/// Keys of the series index are already hashes.
#[derive(Default)]
pub struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// How many groups hold a family of a given name, by type.
#[derive(Default, Clone, Copy, Debug)]
struct TypeCounts([u32; 6]);

/// The whole replicated state.
#[derive(Default)]
pub struct Store {
    groups: BTreeMap<GroupingKey, Arc<Group>>,
    /// Family name -> keys of the groups that hold it with at least one series.
    family_index: BTreeMap<Arc<str>, BTreeSet<GroupingKey>>,
    /// Family name -> per-type group counts (the cross-group type check).
    type_index: rustc_hash::FxHashMap<Arc<str>, TypeCounts>,
    /// Series identity hash -> how many stored series have it (duplicate check).
    series_index: IdentityMap<u32>,
    series_count: u64,
    /// Clock of the state machine (Unix ns): the last time stamped. Every
    /// mutation is stamped later than the one before (see `tick`), so push
    /// and failure times never go backwards, or stand still, after a
    /// failover to a leader whose clock is behind.
    clock: i64,
}

/// The least step between two stamps. One microsecond, so that two stamps
/// also differ in the exposition's float seconds (which resolve about
/// 0.24 µs at today's Unix times) and "did the last push fail" (failure time
/// after push time) is always decided by which came last.
const MIN_STAMP_STEP_NANOS: i64 = 1_000;

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn groups(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.groups.values()
    }

    pub fn group(&self, key: &GroupingKey) -> Option<&Arc<Group>> {
        self.groups.get(key)
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub fn series_count(&self) -> u64 {
        self.series_count
    }

    /// Applies one batch entry's mutations, in order, at the leader's `time`.
    pub fn apply_batch<'a>(
        &mut self,
        time_unix_nanos: i64,
        rules: ApplyRules,
        mutations: impl IntoIterator<Item = &'a pb::Mutation>,
    ) -> Vec<Outcome> {
        mutations
            .into_iter()
            .map(|m| self.apply_one(time_unix_nanos, rules, m))
            .collect()
    }

    /// Applies one mutation of an entry stamped `time_unix_nanos` (the
    /// mutations of one entry are applied one after the other).
    pub fn apply_one(&mut self, time_unix_nanos: i64, rules: ApplyRules, mutation: &pb::Mutation) -> Outcome {
        let now = self.tick(time_unix_nanos);
        self.apply(now, rules, mutation)
    }

    /// The stamp of the next mutation: the leader's time, unless that is not
    /// after the last stamp (a leader whose clock is behind, or mutations
    /// that share an entry); then the last stamp plus the least step.
    fn tick(&mut self, time: i64) -> i64 {
        self.clock = time.max(self.clock.saturating_add(MIN_STAMP_STEP_NANOS));
        self.clock
    }

    fn apply(&mut self, now: i64, rules: ApplyRules, mutation: &pb::Mutation) -> Outcome {
        match &mutation.op {
            Some(pb::mutation::Op::Push(push)) => self.apply_push(now, rules, push),
            Some(pb::mutation::Op::Delete(delete)) => match key_from_pb(&delete.grouping_key) {
                Some(key) => Outcome::Deleted {
                    existed: self.remove_group(&key),
                },
                None => malformed("delete without a valid grouping key"),
            },
            Some(pb::mutation::Op::Wipe(_)) => {
                let keys: Vec<GroupingKey> = self.groups.keys().cloned().collect();
                for key in &keys {
                    self.remove_group(key);
                }
                Outcome::Wiped {
                    groups: keys.len() as u64,
                }
            }
            None => malformed("mutation of an unknown kind (written by a newer pushgate?)"),
        }
    }

    fn apply_push(&mut self, now: i64, rules: ApplyRules, push: &pb::Push) -> Outcome {
        let Some(key) = key_from_pb(&push.grouping_key) else {
            return malformed("push without a valid grouping key");
        };
        let twin = key.export_twin();
        if twin != key && self.groups.contains_key(&twin) {
            return Outcome::KeyConflict {
                message: format!(
                    "grouping key {key} exports the same series as the existing group {twin}; \
                     push to that key or delete that group first"
                ),
            };
        }
        let existing = self.groups.get(&key).cloned();
        match self.prepare(&key, push, existing.as_deref(), now, rules) {
            Ok(families) => {
                let mut group = match &existing {
                    Some(g) if !push.replace => (**g).clone(),
                    Some(g) => Group {
                        key: g.key.clone(),
                        push_time: g.push_time,
                        failure_time: g.failure_time,
                        families: BTreeMap::new(),
                    },
                    None => Group {
                        key: key.clone(),
                        push_time: 0,
                        failure_time: 0,
                        families: BTreeMap::new(),
                    },
                };
                group.push_time = now;
                for (name, family) in families {
                    group.families.insert(name, family);
                }
                self.replace_group(existing, group);
                Outcome::Pushed
            }
            Err(errors) => {
                let group = match &existing {
                    Some(g) => Group {
                        failure_time: now,
                        ..(**g).clone()
                    },
                    None => Group {
                        key: key.clone(),
                        push_time: 0,
                        failure_time: now,
                        families: BTreeMap::new(),
                    },
                };
                self.replace_group(existing, group);
                Outcome::Rejected {
                    message: join_errors(errors),
                }
            }
        }
    }

    /// Validates, sanitises and renders the pushed families; checks them against
    /// the rest of the store (as it will be after the push) when asked to.
    fn prepare(
        &self,
        key: &GroupingKey,
        push: &pb::Push,
        existing: Option<&Group>,
        now: i64,
        rules: ApplyRules,
    ) -> Result<Vec<NamedFamily>, Vec<String>> {
        if push
            .families
            .iter()
            .any(|f| f.metric.iter().any(|m| m.timestamp_ms.is_some()))
        {
            return Err(vec!["pushed metrics must not have timestamps".into()]);
        }
        // Later families of the same name replace earlier ones (protobuf bodies);
        // the two synthetic gauges are always the gateway's own.
        let mut pushed: BTreeMap<&str, &pm::MetricFamily> = BTreeMap::new();
        for family in &push.families {
            let name = family.name();
            if name != PUSH_TIME && name != PUSH_FAILURE_TIME {
                pushed.insert(name, family);
            }
        }

        // What the push removes from the store: the whole group (PUT) or the
        // same-named families (POST).
        let mut removed_series: IdentityMap<u32> = IdentityMap::default();
        let mut removed_types: rustc_hash::FxHashMap<&str, pm::MetricType> = Default::default();
        if let Some(group) = existing {
            for (name, family) in &group.families {
                if push.replace || pushed.contains_key(name.as_ref()) {
                    for h in family.series.iter() {
                        *removed_series.entry(*h).or_default() += 1;
                    }
                    if !family.series.is_empty() {
                        removed_types.insert(name, family.kind);
                    }
                }
            }
        }
        let check = push.consistency_check;
        let grouping = key.labels();
        let mut errors = Vec::new();
        let mut seen_in_push: IdentityMap<()> = IdentityMap::default();
        let mut prepared = Vec::with_capacity(pushed.len());
        let mut scratch = Vec::new();
        // The sanitised labels of a family's series, borrowed from the push
        // and the grouping key: no metric is copied to be stored.
        let mut label_buf: Vec<(&str, &str)> = Vec::new();

        for (&name, family) in &pushed {
            if !is_valid_metric_name(name) {
                errors.push(format!("metric name {name:?} is not a valid Prometheus metric name"));
                continue;
            }
            let kind = match pm::MetricType::try_from(family.r#type.unwrap_or(0)) {
                Ok(pm::MetricType::GaugeHistogram) | Err(_) => {
                    errors.push(format!("metric {name:?} has an unsupported metric type"));
                    continue;
                }
                Ok(kind) => kind,
            };
            label_buf.clear();
            let mut series: Vec<(std::ops::Range<usize>, &pm::Metric)> = Vec::with_capacity(family.metric.len());
            let mut hashes = Vec::with_capacity(family.metric.len());
            for metric in &family.metric {
                if let Err(e) = check_metric(name, kind, metric, grouping) {
                    errors.push(e);
                    continue;
                }
                let start = label_buf.len();
                push_sanitized_labels(&mut label_buf, &metric.label, grouping);
                let labels = &label_buf[start..];
                let hash = series_hash(name, labels);
                let duplicate_in_store = check
                    && self.series_index.get(&hash).copied().unwrap_or(0)
                        > removed_series.get(&hash).copied().unwrap_or(0);
                if seen_in_push.insert(hash, ()).is_some() || duplicate_in_store {
                    errors.push(format!(
                        "collected metric {:?} {} was collected before with the same name and label values",
                        name,
                        describe_labels(labels)
                    ));
                    label_buf.truncate(start);
                    continue;
                }
                hashes.push(hash);
                series.push((start..label_buf.len(), metric));
            }
            if check && !series.is_empty() {
                if let Some(own) = self_family_type(name) {
                    if own != kind {
                        errors.push(format!(
                            "gathered metric family {name} has type {} but should have {}",
                            kind.as_str_name(),
                            own.as_str_name()
                        ));
                    }
                }
                if let Some(other) = self.other_type(name, kind, &removed_types) {
                    errors.push(format!(
                        "collected metric {:?} {} is not a {} (another group has {name} as {})",
                        name,
                        describe_labels(&label_buf[series[0].0.clone()]),
                        other.as_str_name(),
                        other.as_str_name()
                    ));
                }
                let exists = |n: &str| -> Option<pm::MetricType> {
                    if let Some(f) = pushed.get(n) {
                        if !f.metric.is_empty() {
                            return pm::MetricType::try_from(f.r#type.unwrap_or(0)).ok();
                        }
                    }
                    self.stored_type(n, &removed_types).or_else(|| self_family_type(n))
                };
                if let Some(e) = suffix_collision(name, kind, exists) {
                    errors.push(e);
                }
            }
            if !errors.is_empty() {
                // The push is refused: nothing of it will be stored.
                continue;
            }
            let labels_of = |range: &std::ops::Range<usize>| &label_buf[range.clone()];
            sort_series(&mut series, labels_of);
            let help = rules.help(family.help.as_deref());
            let sanitized = SanitizedFamily {
                name,
                help,
                kind,
                kind_given: family.r#type.is_some(),
                unit: family.unit.as_deref(),
                series: series.iter().map(|(r, m)| (labels_of(r), *m)),
            };
            let (encoded, text) = stored_forms(
                &mut scratch,
                sanitized.encoded_len(),
                |out| sanitized.encode(out),
                |out| {
                    for (labels, m) in sanitized.series.clone() {
                        write_metric_with_labels(out, name, kind, labels, m);
                    }
                },
            );
            prepared.push((
                Arc::<str>::from(name),
                Arc::new(StoredFamily {
                    kind,
                    help: help.map(Arc::from),
                    pushed_at: now,
                    encoded,
                    text,
                    series: hashes.into_boxed_slice(),
                }),
            ));
        }
        if errors.is_empty() {
            Ok(prepared)
        } else {
            Err(errors)
        }
    }

    /// A type other than `kind` that another group (not being replaced) holds `name` with.
    fn other_type(
        &self,
        name: &str,
        kind: pm::MetricType,
        removed: &rustc_hash::FxHashMap<&str, pm::MetricType>,
    ) -> Option<pm::MetricType> {
        let mut counts = self.type_index.get(name).copied().unwrap_or_default();
        if let Some(r) = removed.get(name) {
            counts.0[*r as usize] = counts.0[*r as usize].saturating_sub(1);
        }
        (0..counts.0.len())
            .filter(|&t| t != kind as usize && counts.0[t] > 0)
            .find_map(|t| pm::MetricType::try_from(t as i32).ok())
    }

    /// The type `name` is stored with after the removals, if any group holds it.
    fn stored_type(&self, name: &str, removed: &rustc_hash::FxHashMap<&str, pm::MetricType>) -> Option<pm::MetricType> {
        let mut counts = self.type_index.get(name).copied()?;
        if let Some(r) = removed.get(name) {
            counts.0[*r as usize] = counts.0[*r as usize].saturating_sub(1);
        }
        (0..counts.0.len())
            .find(|&t| counts.0[t] > 0)
            .and_then(|t| pm::MetricType::try_from(t as i32).ok())
    }

    /// Swaps a group for a new version, keeping every index in step.
    fn replace_group(&mut self, old: Option<Arc<Group>>, new: Group) {
        if let Some(old) = old {
            self.unindex(&old);
        }
        self.index(&new);
        self.groups.insert(new.key.clone(), Arc::new(new));
    }

    fn remove_group(&mut self, key: &GroupingKey) -> bool {
        match self.groups.remove(key) {
            Some(group) => {
                self.unindex(&group);
                true
            }
            None => false,
        }
    }

    fn index(&mut self, group: &Group) {
        for (name, family) in &group.families {
            if family.series.is_empty() {
                continue;
            }
            self.family_index
                .entry(name.clone())
                .or_default()
                .insert(group.key.clone());
            self.type_index.entry(name.clone()).or_default().0[family.kind as usize] += 1;
            for h in family.series.iter() {
                *self.series_index.entry(*h).or_default() += 1;
            }
            self.series_count += family.series.len() as u64;
        }
    }

    fn unindex(&mut self, group: &Group) {
        for (name, family) in &group.families {
            if family.series.is_empty() {
                continue;
            }
            if let Some(keys) = self.family_index.get_mut(name) {
                keys.remove(&group.key);
                if keys.is_empty() {
                    self.family_index.remove(name);
                }
            }
            if let Some(counts) = self.type_index.get_mut(name) {
                let c = &mut counts.0[family.kind as usize];
                *c = c.saturating_sub(1);
                if counts.0.iter().all(|c| *c == 0) {
                    self.type_index.remove(name);
                }
            }
            for h in family.series.iter() {
                if let Some(c) = self.series_index.get_mut(h) {
                    *c -= 1;
                    if *c == 0 {
                        self.series_index.remove(h);
                    }
                }
            }
            self.series_count -= family.series.len() as u64;
        }
    }

    /// Writes the pushed part of the exposition: every family (merged across
    /// groups, groups in key order) and the two synthetic gauges. Families that
    /// the process exports itself are written through `own`, which gets the
    /// name and must write that family's header and own samples; the pushed
    /// samples follow under the same header.
    pub fn render_text(&self, out: &mut Vec<u8>, own_names: &[&str], mut own: impl FnMut(&str, &mut Vec<u8>)) {
        for piece in self.render_plan(own_names) {
            match piece {
                Piece::Text(b) => out.extend_from_slice(&b),
                Piece::Own(name) => own(name, out),
            }
        }
    }

    /// Whether a stored family clashes with an own family `name` of type
    /// `kind` that the consistency check does not know
    /// (`reserved::SOFT_SELF_FAMILIES`): it has the same name, or the two
    /// would collide by a `_count`, `_sum` or `_bucket` suffix.
    pub fn shadows(&self, name: &str, kind: pm::MetricType) -> bool {
        let none = rustc_hash::FxHashMap::default();
        let stored = |n: &str| self.stored_type(n, &none);
        stored(name).is_some() || suffix_collision(name, kind, stored).is_some()
    }

    /// The names of the own families a scrape shows, sorted: every checked
    /// one, and the soft ones no stored family shadows.
    pub fn own_families_shown(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = SELF_FAMILIES.iter().map(|(n, _)| *n).collect();
        names.extend(
            SOFT_SELF_FAMILIES
                .iter()
                .filter(|(n, kind)| !self.shadows(n, *kind))
                .map(|(n, _)| *n),
        );
        names.sort_unstable();
        names
    }

    /// The exposition as a list of pieces: shared, pre-rendered text of every
    /// group's families plus the few lines made here (headers, timestamps).
    /// Cheap to build (no sample text is copied), so a scrape holds the store
    /// only briefly and concatenates (and compresses) after letting go.
    pub fn render_plan<'n>(&self, own_names: &[&'n str]) -> Vec<Piece<'n>> {
        let synthetic: &[&str] = if self.groups.is_empty() {
            &[]
        } else {
            &[PUSH_FAILURE_TIME, PUSH_TIME]
        };
        let mut names: Vec<&str> = self.family_index.keys().map(|n| n.as_ref()).collect();
        names.extend_from_slice(synthetic);
        names.sort_unstable();
        names.dedup();
        let mut pieces = Vec::with_capacity(self.groups.len() + names.len() * 2 + own_names.len());
        let mut timestamp_order: Option<Vec<&Arc<Group>>> = None;
        let mut scratch = Vec::new();
        let flush = |scratch: &mut Vec<u8>, pieces: &mut Vec<Piece<'n>>| {
            if !scratch.is_empty() {
                pieces.push(Piece::Text(Bytes::from(std::mem::take(scratch))));
            }
        };
        // Merge the sorted own names into the sorted pushed names.
        let mut own_iter = own_names.iter().peekable();
        for name in names {
            while let Some(own) = own_iter.peek() {
                if **own < name {
                    flush(&mut scratch, &mut pieces);
                    pieces.push(Piece::Own(own));
                    own_iter.next();
                } else {
                    break;
                }
            }
            let keys = self.family_index.get(name);
            if own_iter.peek().is_some_and(|o| **o == name) {
                flush(&mut scratch, &mut pieces);
                pieces.push(Piece::Own(own_iter.next().copied().unwrap_or_default()));
            } else if name == PUSH_TIME || name == PUSH_FAILURE_TIME {
                let (help, pick): (&str, fn(&Group) -> i64) = if name == PUSH_TIME {
                    (PUSH_TIME_HELP, |g| g.push_time)
                } else {
                    (PUSH_FAILURE_TIME_HELP, |g| g.failure_time)
                };
                write_header(&mut scratch, name, Some(help), pm::MetricType::Gauge);
                for group in timestamp_order.get_or_insert_with(|| self.groups_in_series_order()) {
                    write_timestamp_sample(&mut scratch, name, &group.key, pick(group));
                }
                continue;
            } else if let Some(keys) = keys {
                let families = keys.iter().filter_map(|k| self.groups.get(k)?.families.get(name));
                let mut kind = None;
                let mut help = None;
                for f in families {
                    kind.get_or_insert(f.kind);
                    if f.help.is_some() {
                        help = f.help.clone();
                        break;
                    }
                }
                write_header(
                    &mut scratch,
                    name,
                    help.as_deref(),
                    kind.unwrap_or(pm::MetricType::Untyped),
                );
            }
            if let Some(keys) = keys {
                flush(&mut scratch, &mut pieces);
                let chunks: Vec<&StoredFamily> = keys
                    .iter()
                    .filter_map(|k| self.groups.get(k)?.families.get(name))
                    .map(|f| &**f)
                    .collect();
                if chunks.len() > 1 {
                    let mut order = SeriesKeys::default();
                    for f in &chunks {
                        order.push_first_series(&f.text, name, f.kind);
                    }
                    pieces.extend(
                        order
                            .sorted_order()
                            .into_iter()
                            .map(|i| Piece::Text(chunks[i].text.clone())),
                    );
                } else {
                    pieces.extend(chunks.into_iter().map(|f| Piece::Text(f.text.clone())));
                }
            }
        }
        flush(&mut scratch, &mut pieces);
        for own in own_iter {
            pieces.push(Piece::Own(own));
        }
        pieces
    }

    /// Merged families for protobuf exposition (pushed part only, same order as text).
    pub fn merged_families(&self) -> Vec<pm::MetricFamily> {
        let mut out: Vec<pm::MetricFamily> = Vec::new();
        let mut names: Vec<&str> = self.family_index.keys().map(|n| n.as_ref()).collect();
        if !self.groups.is_empty() {
            names.extend_from_slice(&[PUSH_FAILURE_TIME, PUSH_TIME]);
        }
        names.sort_unstable();
        let mut timestamp_order: Option<Vec<&Arc<Group>>> = None;
        for name in names {
            if name == PUSH_TIME || name == PUSH_FAILURE_TIME {
                let help = if name == PUSH_TIME {
                    PUSH_TIME_HELP
                } else {
                    PUSH_FAILURE_TIME_HELP
                };
                let metric = timestamp_order
                    .get_or_insert_with(|| self.groups_in_series_order())
                    .iter()
                    .map(|g| timestamp_metric(&g.key, if name == PUSH_TIME { g.push_time } else { g.failure_time }))
                    .collect();
                out.push(pm::MetricFamily {
                    name: Some(name.into()),
                    help: Some(help.into()),
                    r#type: Some(pm::MetricType::Gauge as i32),
                    metric,
                    unit: None,
                });
                continue;
            }
            let mut merged: Option<pm::MetricFamily> = None;
            for key in self.family_index.get(name).into_iter().flatten() {
                if let Some(f) = self.groups.get(key).and_then(|g| g.families.get(name)) {
                    let decoded = f.decode();
                    match &mut merged {
                        None => merged = Some(decoded),
                        Some(m) => {
                            if m.help.is_none() {
                                m.help = decoded.help;
                            }
                            m.metric.extend(decoded.metric);
                        }
                    }
                }
            }
            if let Some(mut family) = merged {
                sort_metrics(&mut family.metric);
                out.push(family);
            }
        }
        out
    }

    /// The groups in the order of their `push_time_seconds` series: by their
    /// exported labels (grouping key plus `instance=""` if absent), as the
    /// reference sorts series (`series_order`).
    fn groups_in_series_order(&self) -> Vec<&Arc<Group>> {
        let cmp = |a: &Arc<Group>, b: &Arc<Group>| {
            cmp_series(
                a.key.exported_len(),
                a.key.exported_values(),
                b.key.exported_len(),
                b.key.exported_values(),
            )
        };
        let mut groups: Vec<&Arc<Group>> = self.groups.values().collect();
        groups.sort_by(|a, b| cmp(a, b));
        groups
    }

    // ---- snapshots -------------------------------------------------------

    /// The groups as they are now: a cheap copy (shared groups) that can be
    /// encoded without holding up `apply`.
    pub fn snapshot_view(&self) -> StoreView {
        StoreView {
            clock: self.clock,
            groups: self.groups.values().cloned().collect(),
        }
    }

    /// Rebuilds a store from a snapshot's groups (re-rendering and
    /// re-indexing), which were stored by `rules`.
    pub fn restore(clock: i64, groups: &[pb::StoredGroup], rules: ApplyRules) -> Result<Store, String> {
        let mut store = Store {
            clock,
            ..Store::default()
        };
        let mut scratch = Vec::new();
        for g in groups {
            let key = key_from_pb(&g.grouping_key).ok_or("snapshot group without a valid grouping key")?;
            let mut families = BTreeMap::new();
            for f in &g.families {
                let decoded = pm::MetricFamily::decode(f.family.as_ref())
                    .map_err(|e| format!("snapshot family of group {key} does not decode: {e}"))?;
                let name = decoded.name().to_string();
                let kind = decoded.r#type();
                let (encoded, text) = stored_forms(
                    &mut scratch,
                    f.family.len(),
                    |out| out.extend_from_slice(&f.family),
                    |out| {
                        for m in &decoded.metric {
                            write_metric(out, &name, kind, m);
                        }
                    },
                );
                let series: Vec<u64> = decoded.metric.iter().map(|m| series_hash(&name, &m.label)).collect();
                families.insert(
                    Arc::<str>::from(name.as_str()),
                    Arc::new(StoredFamily {
                        kind,
                        help: rules.help(decoded.help.as_deref()).map(Arc::from),
                        pushed_at: f.pushed_at_unix_nanos,
                        encoded,
                        text,
                        series: series.into_boxed_slice(),
                    }),
                );
            }
            let group = Group {
                key: key.clone(),
                push_time: g.push_time_unix_nanos,
                failure_time: g.failure_time_unix_nanos,
                families,
            };
            store.index(&group);
            store.groups.insert(key, Arc::new(group));
        }
        Ok(store)
    }
}

/// A family's two stored forms, its protobuf encoding (`encoded_len` bytes,
/// written by `encode`) and its text sample lines (written by `render`), in
/// one allocation of their exact size.
///
/// Rendering into a growing `Vec` and keeping it would hold up to twice the
/// bytes for as long as the family is stored, and two allocations per family
/// interleave with short-lived ones and fragment the heap: together about a
/// third of a small store's memory (docs/benchmarks.md).
fn stored_forms(
    scratch: &mut Vec<u8>,
    encoded_len: usize,
    encode: impl FnOnce(&mut Vec<u8>),
    render: impl FnOnce(&mut Vec<u8>),
) -> (Bytes, Bytes) {
    scratch.clear();
    render(scratch);
    let mut both = Vec::with_capacity(encoded_len + scratch.len());
    encode(&mut both);
    let encoded_len = both.len();
    both.extend_from_slice(scratch);
    let both = Bytes::from(both);
    (both.slice(..encoded_len), both.slice(encoded_len..))
}

/// A sanitised family as borrowed pieces of a push: its series are the
/// pushed metrics' values under their sanitised, sorted labels. Encodes
/// exactly as prost encodes the equivalent owned `MetricFamily` (a unit test
/// holds the two to the same bytes), without building that copy.
struct SanitizedFamily<'a, I> {
    name: &'a str,
    help: Option<&'a str>,
    kind: pm::MetricType,
    /// Whether the push said the type: a protobuf family may leave it out
    /// (it is then a counter), and the protobuf scrape formats leave it out
    /// again, as the reference does.
    kind_given: bool,
    unit: Option<&'a str>,
    series: I,
}

impl<'a, I> SanitizedFamily<'a, I>
where
    I: Iterator<Item = (&'a [(&'a str, &'a str)], &'a pm::Metric)> + Clone,
{
    fn encoded_len(&self) -> usize {
        use prost::encoding::{encoded_len_varint, int32, key_len};
        let mut len = string_field_len(1, self.name)
            + self.help.map_or(0, |h| string_field_len(2, h))
            + if self.kind_given {
                int32::encoded_len(3, &(self.kind as i32))
            } else {
                0
            }
            + self.unit.map_or(0, |u| string_field_len(5, u));
        for (labels, m) in self.series.clone() {
            let body = metric_body_len(labels, m);
            len += key_len(4) + encoded_len_varint(body as u64) + body;
        }
        len
    }

    fn encode(&self, out: &mut Vec<u8>) {
        use prost::encoding::{encode_key, encode_varint, int32, WireType};
        encode_string_field(1, self.name, out);
        if let Some(h) = self.help {
            encode_string_field(2, h, out);
        }
        if self.kind_given {
            int32::encode(3, &(self.kind as i32), out);
        }
        for (labels, m) in self.series.clone() {
            encode_key(4, WireType::LengthDelimited, out);
            encode_varint(metric_body_len(labels, m) as u64, out);
            encode_metric_body(labels, m, out);
        }
        if let Some(u) = self.unit {
            encode_string_field(5, u, out);
        }
    }
}

fn string_field_len(tag: u32, value: &str) -> usize {
    prost::encoding::key_len(tag) + prost::encoding::encoded_len_varint(value.len() as u64) + value.len()
}

fn encode_string_field(tag: u32, value: &str, out: &mut Vec<u8>) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(value.len() as u64, out);
    out.extend_from_slice(value.as_bytes());
}

fn label_pair_len(name: &str, value: &str) -> usize {
    string_field_len(1, name) + string_field_len(2, value)
}

/// `Metric` fields in tag order: label (1), gauge (2), counter (3), summary (4),
/// untyped (5), histogram (7). Timestamps (6) never reach a stored family.
fn metric_body_len(labels: &[(&str, &str)], m: &pm::Metric) -> usize {
    use prost::encoding::{encoded_len_varint, key_len, message};
    let mut len = 0;
    for (n, v) in labels {
        let pair = label_pair_len(n, v);
        len += key_len(1) + encoded_len_varint(pair as u64) + pair;
    }
    len + m.gauge.as_ref().map_or(0, |g| message::encoded_len(2, g))
        + m.counter.as_ref().map_or(0, |c| message::encoded_len(3, c))
        + m.summary.as_ref().map_or(0, |s| message::encoded_len(4, s))
        + m.untyped.as_ref().map_or(0, |u| message::encoded_len(5, u))
        + m.histogram.as_ref().map_or(0, |h| message::encoded_len(7, h))
}

fn encode_metric_body(labels: &[(&str, &str)], m: &pm::Metric, out: &mut Vec<u8>) {
    use prost::encoding::{encode_key, encode_varint, message, WireType};
    for (n, v) in labels {
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(label_pair_len(n, v) as u64, out);
        encode_string_field(1, n, out);
        encode_string_field(2, v, out);
    }
    if let Some(g) = &m.gauge {
        message::encode(2, g, out);
    }
    if let Some(c) = &m.counter {
        message::encode(3, c, out);
    }
    if let Some(s) = &m.summary {
        message::encode(4, s, out);
    }
    if let Some(u) = &m.untyped {
        message::encode(5, u, out);
    }
    if let Some(h) = &m.histogram {
        message::encode(7, h, out);
    }
}

/// One piece of a rendered exposition.
pub enum Piece<'n> {
    /// Text to copy as it is.
    Text(Bytes),
    /// Here goes the header and samples of the process's own family of this name.
    Own(&'n str),
}

/// A consistent, shared copy of the groups for encoding a snapshot.
pub struct StoreView {
    pub clock: i64,
    pub groups: Vec<Arc<Group>>,
}

impl StoreView {
    /// The groups as snapshot records, one at a time, so that a snapshot can be
    /// encoded while it is written instead of as one copy of the whole store.
    pub fn groups_pb(&self) -> impl Iterator<Item = pb::StoredGroup> + '_ {
        self.groups.iter().map(|g| pb::StoredGroup {
            grouping_key: key_to_pb(&g.key),
            push_time_unix_nanos: g.push_time,
            failure_time_unix_nanos: g.failure_time,
            families: g
                .families
                .values()
                .map(|f| pb::StoredFamily {
                    pushed_at_unix_nanos: f.pushed_at,
                    family: f.encoded.clone(),
                })
                .collect(),
        })
    }
}

pub fn key_to_pb(key: &GroupingKey) -> Vec<pb::Label> {
    key.labels()
        .iter()
        .map(|l| pb::Label {
            name: l.name.clone(),
            value: l.value.clone(),
        })
        .collect()
}

pub fn key_from_pb(labels: &[pb::Label]) -> Option<GroupingKey> {
    GroupingKey::from_labels(labels.iter().map(|l| (l.name.clone(), l.value.clone()))).ok()
}

fn malformed(message: &str) -> Outcome {
    Outcome::Malformed {
        message: message.to_string(),
    }
}

fn join_errors(errors: Vec<String>) -> String {
    if errors.len() == 1 {
        format!("{INCONSISTENT_PREFIX}{}", errors[0])
    } else {
        let mut msg = format!("{INCONSISTENT_PREFIX}{} error(s) occurred:", errors.len());
        for e in errors {
            msg.push_str("\n* ");
            msg.push_str(&e);
        }
        msg
    }
}

/// Checks one pushed metric on its own: value field matching the type, label names.
/// Errors name the series with the labels it would be stored with, as the
/// reference's do (grouping labels, `instance`).
fn check_metric(name: &str, kind: pm::MetricType, m: &pm::Metric, grouping: &[Label]) -> Result<(), String> {
    let has_value = match kind {
        pm::MetricType::Counter => m.counter.is_some(),
        pm::MetricType::Gauge => m.gauge.is_some(),
        pm::MetricType::Summary => m.summary.is_some(),
        pm::MetricType::Untyped => m.untyped.is_some(),
        pm::MetricType::Histogram | pm::MetricType::GaugeHistogram => m.histogram.is_some(),
    };
    let what = || {
        let mut labels = Vec::with_capacity(m.label.len() + grouping.len() + 1);
        push_sanitized_labels(&mut labels, &m.label, grouping);
        describe_labels(&labels)
    };
    if !has_value {
        return Err(format!(
            "collected metric {name:?} {} is not a {}",
            what(),
            kind.as_str_name()
        ));
    }
    // Few labels are the rule: compare with the earlier ones instead of
    // allocating a set for every series.
    let mut names = (m.label.len() > 16).then(HashSet::new);
    for (i, l) in m.label.iter().enumerate() {
        let label = l.name();
        if !is_valid_label_name(label) || label.starts_with("__") {
            return Err(format!(
                "collected metric {name:?} {} has a label with an invalid name: {label}",
                what()
            ));
        }
        let repeated = match &mut names {
            Some(set) => !set.insert(label),
            None => m.label[..i].iter().any(|earlier| earlier.name() == label),
        };
        if repeated {
            return Err(format!(
                "collected metric {name:?} {} has two or more labels with the same name: {label}",
                what()
            ));
        }
        if kind == pm::MetricType::Summary && label == "quantile" {
            return Err(format!(
                "collected metric {name:?} {} must not have an explicit \"quantile\" label",
                what()
            ));
        }
        if kind == pm::MetricType::Histogram && label == "le" {
            return Err(format!(
                "collected metric {name:?} {} must not have an explicit \"le\" label",
                what()
            ));
        }
    }
    Ok(())
}

/// Appends a series' sanitised labels to `out`: grouping labels override body
/// labels, `instance=""` when absent, sorted by name. Body label names are
/// unique (`check_metric`), so the result has no duplicate names.
fn push_sanitized_labels<'a>(out: &mut Vec<(&'a str, &'a str)>, body: &'a [pm::LabelPair], grouping: &'a [Label]) {
    let start = out.len();
    for l in body {
        if grouping.binary_search_by(|g| g.name.as_str().cmp(l.name())).is_err() {
            out.push((l.name(), l.value()));
        }
    }
    for g in grouping {
        out.push((g.name.as_str(), g.value.as_str()));
    }
    if !out[start..].iter().any(|(n, _)| *n == "instance") {
        out.push(("instance", ""));
    }
    out[start..].sort_by(|a, b| a.0.cmp(b.0));
}

/// The reference's series order inside a family: fewer labels first, then label
/// values position by position.
fn sort_series<'a, T>(series: &mut [(T, &pm::Metric)], labels_of: impl Fn(&T) -> &'a [(&'a str, &'a str)]) {
    series.sort_by(|(a, _), (b, _)| {
        let (a, b) = (labels_of(a), labels_of(b));
        cmp_series(a.len(), a.iter().map(|l| l.1), b.len(), b.iter().map(|l| l.1))
    });
}

/// A stable (version- and process-independent) hash of a series identity.
pub fn series_hash<L: LabelRef>(name: &str, labels: &[L]) -> u64 {
    // The identity is laid out on the stack (on the heap only when long): this
    // runs for every series of every push, on every replica.
    let len = name.len()
        + labels
            .iter()
            .map(|l| 2 + l.label_name().len() + l.label_value().len())
            .sum::<usize>();
    let mut stack = [0u8; 512];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(name.as_bytes());
    for l in labels {
        put(&[0xff]);
        put(l.label_name().as_bytes());
        put(&[0xfe]);
        put(l.label_value().as_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(buf)
}

fn describe_labels<L: LabelRef>(labels: &[L]) -> String {
    let mut out = Vec::new();
    out.push(b'{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(l.label_name().as_bytes());
        out.extend_from_slice(b"=\"");
        super::render::write_escaped_label_value(&mut out, l.label_value());
        out.push(b'"');
    }
    out.push(b'}');
    String::from_utf8_lossy(&out).into_owned()
}

/// client_golang's suffix collision rule between summaries/histograms and
/// families named like their `_count`/`_sum`/`_bucket` samples.
fn suffix_collision(
    name: &str,
    kind: pm::MetricType,
    exists: impl Fn(&str) -> Option<pm::MetricType>,
) -> Option<String> {
    for suffix in ["_count", "_sum", "_bucket"] {
        if let Some(base) = name.strip_suffix(suffix) {
            match exists(base) {
                Some(pm::MetricType::Summary) if suffix != "_bucket" => {
                    return Some(format!(
                        "collected metric named {name:?} collides with previously collected summary named {base:?}"
                    ))
                }
                Some(pm::MetricType::Histogram) => {
                    return Some(format!(
                        "collected metric named {name:?} collides with previously collected histogram named {base:?}"
                    ))
                }
                _ => {}
            }
        }
    }
    let suffixes: &[&str] = match kind {
        pm::MetricType::Summary => &["_count", "_sum"],
        pm::MetricType::Histogram => &["_count", "_sum", "_bucket"],
        _ => &[],
    };
    for suffix in suffixes {
        let other = format!("{name}{suffix}");
        if exists(&other).is_some() {
            return Some(format!(
                "collected {} named {name:?} collides with previously collected metric named {other:?}",
                kind.as_str_name().to_ascii_lowercase()
            ));
        }
    }
    None
}

/// Unix ns as the float seconds the timestamp gauges show.
pub fn unix_seconds(ns: i64) -> f64 {
    ns as f64 / 1e9
}

fn write_timestamp_sample(out: &mut Vec<u8>, name: &str, key: &GroupingKey, ns: i64) {
    out.extend_from_slice(name.as_bytes());
    out.push(b'{');
    for (i, l) in key.exported_labels().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(l.name.as_bytes());
        out.extend_from_slice(b"=\"");
        super::render::write_escaped_label_value(out, &l.value);
        out.push(b'"');
    }
    out.extend_from_slice(b"} ");
    write_float(out, unix_seconds(ns));
    out.push(b'\n');
}

pub fn timestamp_metric(key: &GroupingKey, ns: i64) -> pm::Metric {
    pm::Metric {
        label: key
            .exported_labels()
            .into_iter()
            .map(|l| pm::LabelPair {
                name: Some(l.name),
                value: Some(l.value),
            })
            .collect(),
        gauge: Some(pm::Gauge {
            value: Some(unix_seconds(ns)),
        }),
        ..Default::default()
    }
}
