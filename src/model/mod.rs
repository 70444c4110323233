//! The data model: grouping keys, metric families, the group store, and the
//! text/protobuf codecs. Pure: no IO, no clocks, no Raft.

pub mod api_json;
pub mod go_quote;
pub mod grouping_key;
pub mod names;
pub mod protobuf;
pub mod protobuf_text;
pub mod render;
pub mod reserved;
pub mod series_order;
pub mod store;
pub mod text_parse;

#[cfg(test)]
mod store_tests;

pub use grouping_key::{GroupingKey, GroupingKeyError, Label};
pub use store::{ApplyRules, Group, Outcome, Store, StoredFamily};
