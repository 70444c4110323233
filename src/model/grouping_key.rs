//! Grouping keys: the label set, taken only from the push URL, that names a group.
//!
//! `/metrics/job/<job>{/<label>/<value>}` with `@base64` markers for values that
//! cannot be written in a path segment. The rules (and error texts) follow the
//! reference Pushgateway's `splitLabels`, except that a key whose values are not
//! valid UTF-8 is refused up front instead of creating a group that would
//! poison every later scrape (spec §2.6).

use std::fmt;
use std::sync::Arc;

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use thiserror::Error;

use super::go_quote::go_quote;

use super::names::is_valid_label_name;

/// One `name="value"` pair.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub name: String,
    pub value: String,
}

/// A grouping key: labels sorted by name, names unique, always containing `job`.
///
/// Cheap to clone (shared), ordered (groups are kept and rendered in key order,
/// which makes every replica's output identical).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupingKey(Arc<[Label]>);

/// Why a push URL does not name a valid group. Texts match the reference.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GroupingKeyError {
    #[error("invalid base64 encoding in job name {}: {}", go_quote(.0), .1)]
    JobBase64(Vec<u8>, String),
    #[error("job name is required")]
    MissingJob,
    #[error("odd number of components in label string {}", go_quote(.0))]
    OddComponents(Vec<u8>),
    #[error("improper label name {}", go_quote(.0))]
    ImproperLabelName(Vec<u8>),
    #[error("invalid base64 encoding for label {name}={}: {reason}", go_quote(.value))]
    LabelBase64 {
        name: String,
        value: Vec<u8>,
        reason: String,
    },
    #[error("grouping key is not valid UTF-8 after percent-decoding: {}", go_quote(.0))]
    NotUtf8(Vec<u8>),
}

impl GroupingKey {
    /// Builds a key from labels in any order; later duplicates win (reference quirk).
    /// `job` must be among them.
    pub fn from_labels(labels: impl IntoIterator<Item = (String, String)>) -> Result<Self, GroupingKeyError> {
        let mut map = std::collections::BTreeMap::new();
        for (name, value) in labels {
            map.insert(name, value);
        }
        match map.get("job") {
            Some(job) if !job.is_empty() => {}
            _ => return Err(GroupingKeyError::MissingJob),
        }
        Ok(GroupingKey(
            map.into_iter().map(|(name, value)| Label { name, value }).collect(),
        ))
    }

    /// Parses the part of a push URL after `/metrics/`: `job/<job>...` or
    /// `job@base64/<b64>...`. `job` and `labels` are already percent-decoded
    /// bytes; `labels` includes its leading `/` (possibly empty).
    pub fn from_path(job: &[u8], job_is_base64: bool, labels: &[u8]) -> Result<Self, GroupingKeyError> {
        let job = if job_is_base64 {
            decode_base64(job).map_err(|reason| GroupingKeyError::JobBase64(Vec::new(), reason))?
        } else {
            job.to_vec()
        };
        let mut pairs = split_labels(labels)?;
        if job.is_empty() {
            return Err(GroupingKeyError::MissingJob);
        }
        let job = utf8(job)?;
        pairs.push(("job".to_string(), job));
        Self::from_labels(pairs)
    }

    pub fn labels(&self) -> &[Label] {
        &self.0
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    /// The labels every series of this group is exported with: the key plus
    /// `instance=""` when the key has no `instance`.
    pub fn exported_labels(&self) -> Vec<Label> {
        let mut labels = self.0.to_vec();
        if self.get("instance").is_none() {
            labels.push(Label {
                name: "instance".into(),
                value: String::new(),
            });
            labels.sort();
        }
        labels
    }

    /// How many labels `exported_labels` has, without building them.
    pub fn exported_len(&self) -> usize {
        self.0.len() + usize::from(self.get("instance").is_none())
    }

    /// The values of `exported_labels` in name order, without building them.
    pub fn exported_values(&self) -> impl Iterator<Item = &str> {
        let missing_instance = self.get("instance").is_none().then_some("");
        let at = self.0.partition_point(|l| l.name.as_str() < "instance");
        let values = self.0.iter().map(|l| l.value.as_str());
        values.clone().take(at).chain(missing_instance).chain(values.skip(at))
    }

    /// The other key that exports exactly the same labels as this one
    /// (`{job="a"}` and `{job="a",instance=""}`), if there is one.
    pub fn export_twin(&self) -> GroupingKey {
        match self.get("instance") {
            Some("") => GroupingKey(self.0.iter().filter(|l| l.name != "instance").cloned().collect()),
            Some(_) => self.clone(),
            None => GroupingKey(self.exported_labels().into()),
        }
    }
}

impl fmt::Display for GroupingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for GroupingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn utf8(bytes: Vec<u8>) -> Result<String, GroupingKeyError> {
    String::from_utf8(bytes).map_err(|e| GroupingKeyError::NotUtf8(e.into_bytes()))
}

/// The reference's base64 rule: strip every trailing `=`, then decode the
/// URL-safe alphabet without padding. `=` alone is the empty string.
pub fn decode_base64(input: &[u8]) -> Result<Vec<u8>, String> {
    let end = input.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let trimmed = &input[..end];
    // Go's RawURLEncoding: no padding, and stray trailing bits are ignored.
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &URL_SAFE,
        GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone),
    );
    ENGINE.decode(trimmed).map_err(|e| match e {
        base64::DecodeError::InvalidByte(offset, _) => {
            format!("illegal base64 data at input byte {offset}")
        }
        base64::DecodeError::InvalidLastSymbol(offset, _) => {
            format!("illegal base64 data at input byte {offset}")
        }
        // One symbol left over after the last full quantum: Go reports
        // the position of that symbol.
        base64::DecodeError::InvalidLength(len) => {
            format!("illegal base64 data at input byte {}", len.saturating_sub(1))
        }
        other => other.to_string(),
    })
}

/// Splits `/<name>/<value>...` into pairs, decoding `@base64` values.
fn split_labels(labels: &[u8]) -> Result<Vec<(String, String)>, GroupingKeyError> {
    if labels.len() <= 1 {
        return Ok(Vec::new());
    }
    let components: Vec<&[u8]> = labels[1..].split(|&b| b == b'/').collect();
    if !components.len().is_multiple_of(2) {
        return Err(GroupingKeyError::OddComponents(labels.to_vec()));
    }
    let mut pairs = Vec::with_capacity(components.len() / 2);
    for pair in components.chunks(2) {
        let (raw_name, raw_value) = (pair[0], pair[1]);
        let (name, is_base64) = match raw_name.strip_suffix(b"@base64") {
            Some(stripped) => (stripped, true),
            None => (raw_name, false),
        };
        let name = match std::str::from_utf8(name) {
            Ok(n) if is_valid_label_name(n) && !n.starts_with("__") => n.to_string(),
            _ => return Err(GroupingKeyError::ImproperLabelName(name.to_vec())),
        };
        let value = if is_base64 {
            decode_base64(raw_value).map_err(|reason| GroupingKeyError::LabelBase64 {
                name: name.clone(),
                value: raw_value.to_vec(),
                reason,
            })?
        } else {
            raw_value.to_vec()
        };
        if name == "job" {
            // The job from the URL path wins; this value is dropped unread
            // (the reference takes one that is not UTF-8 without a word).
            continue;
        }
        pairs.push((name, utf8(value)?));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_values_match_exported_labels() {
        for labels in [
            vec![("job", "j")],
            vec![("job", "j"), ("a", "1")],
            vec![("job", "j"), ("instance", "i"), ("z", "2")],
            vec![("job", "j"), ("b", "1"), ("k", "3")],
        ] {
            let key = GroupingKey::from_labels(labels.iter().map(|(n, v)| (n.to_string(), v.to_string()))).unwrap();
            let exported = key.exported_labels();
            assert_eq!(key.exported_len(), exported.len());
            let values: Vec<&str> = key.exported_values().collect();
            let expected: Vec<&str> = exported.iter().map(|l| l.value.as_str()).collect();
            assert_eq!(values, expected, "{labels:?}");
        }
    }

    fn key(job: &str, b64: bool, labels: &str) -> Result<GroupingKey, GroupingKeyError> {
        GroupingKey::from_path(job.as_bytes(), b64, labels.as_bytes())
    }

    fn pairs(k: &GroupingKey) -> Vec<(&str, &str)> {
        k.labels().iter().map(|l| (l.name.as_str(), l.value.as_str())).collect()
    }

    #[test]
    fn plain_job_and_labels() {
        let k = key("some_job", false, "/instance/some_instance").unwrap();
        assert_eq!(pairs(&k), [("instance", "some_instance"), ("job", "some_job")]);
    }

    #[test]
    fn trailing_slash_adds_no_label() {
        assert_eq!(pairs(&key("j", false, "/").unwrap()), [("job", "j")]);
    }

    #[test]
    fn base64_job_and_values_with_optional_padding() {
        assert_eq!(pairs(&key("L3Zhci90bXA", true, "").unwrap()), [("job", "/var/tmp")]);
        let k = key("x", false, "/path@base64/L3Zhci90bXA=").unwrap();
        assert_eq!(k.get("path"), Some("/var/tmp"));
        let k = key("x", false, "/a@base64/=/b@base64/").unwrap();
        assert_eq!(k.get("a"), Some(""));
        assert_eq!(k.get("b"), Some(""));
        let k = key("x", false, "/p@base64/bGFiZWwvdmFsdWUy==").unwrap();
        assert_eq!(k.get("p"), Some("label/value2"));
    }

    #[test]
    fn errors_carry_reference_texts() {
        assert_eq!(
            key("foo.bar", true, "").unwrap_err().to_string(),
            "invalid base64 encoding in job name \"\": illegal base64 data at input byte 3"
        );
        assert_eq!(
            key("j", false, "/lbl@base64/foo.bar").unwrap_err().to_string(),
            "invalid base64 encoding for label lbl=\"foo.bar\": illegal base64 data at input byte 3"
        );
        assert_eq!(
            key("j", false, "/l@base64/abcde").unwrap_err().to_string(),
            "invalid base64 encoding for label l=\"abcde\": illegal base64 data at input byte 4"
        );
        assert_eq!(
            key("j", false, "/l@base64/j").unwrap_err().to_string(),
            "invalid base64 encoding for label l=\"j\": illegal base64 data at input byte 0"
        );
        assert_eq!(
            GroupingKey::from_path(b"j", false, b"/a\xff/b")
                .unwrap_err()
                .to_string(),
            "improper label name \"a\\xff\""
        );
        assert_eq!(
            pairs(&GroupingKey::from_path(b"j", false, b"/job@base64/iHst").unwrap()),
            vec![("job", "j")],
            "a job label is dropped before its value is read as UTF-8"
        );
        assert_eq!(
            key("j", false, "/instance").unwrap_err().to_string(),
            "odd number of components in label string \"/instance\""
        );
        assert_eq!(
            key("j", false, "/a-b/c").unwrap_err().to_string(),
            "improper label name \"a-b\""
        );
        assert_eq!(
            key("j", false, "/__x/c").unwrap_err().to_string(),
            "improper label name \"__x\""
        );
        assert_eq!(key("=", true, "").unwrap_err(), GroupingKeyError::MissingJob);
    }

    #[test]
    fn job_segment_wins_and_later_duplicates_win() {
        assert_eq!(pairs(&key("j1", false, "/job/j2").unwrap()), [("job", "j1")]);
        assert_eq!(key("j3", false, "/a/1/a/2").unwrap().get("a"), Some("2"));
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert!(matches!(
            GroupingKey::from_path(b"j", false, b"/a/\xff"),
            Err(GroupingKeyError::NotUtf8(_))
        ));
    }

    #[test]
    fn export_twin_relates_missing_and_empty_instance() {
        let plain = key("c", false, "").unwrap();
        let empty = key("c", false, "/instance@base64/=").unwrap();
        assert_eq!(plain.export_twin(), empty);
        assert_eq!(empty.export_twin(), plain);
        let set = key("c", false, "/instance/i").unwrap();
        assert_eq!(set.export_twin(), set);
    }
}
