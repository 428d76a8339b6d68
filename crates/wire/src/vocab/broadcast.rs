//! The metadata of a broadcast request and of its engines' replies, as ipyparallel's
//! `BroadcastView` and broadcast scheduler write them (docs/PROTOCOL.md §9.2):
//! `targets` as `[[uuid, id], ..]`, `is_coalescing`, and `original_msg_id`, the msg_id of
//! the client's request that each per-engine copy (and its reply) carries.
//!
//! Read leniently, as the broadcast scheduler always has: metadata that is not an object
//! reads as empty, a field of the wrong type as its default, and a target that is not a
//! `[string, non-negative integer, ..]` list is skipped. Only the fields are read: the
//! scheduler forwards or re-signs the message it came in, so nothing else needs keeping.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{lenient_bool, lenient_string, read_object};

/// One engine a broadcast goes to: `[uuid, id]` on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastTarget {
    pub uuid: String,
    pub id: u64,
}

/// What the broadcast scheduler reads of a request's or a reply's metadata.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct BroadcastMetadata {
    /// One combined reply for all engines (`true` only when the bool `true` was sent).
    #[serde(default, deserialize_with = "lenient_bool")]
    pub is_coalescing: bool,
    /// The engines, in the order sent; not a list = none.
    #[serde(default, deserialize_with = "targets")]
    pub targets: Vec<BroadcastTarget>,
    /// The client's msg_id; `None` when absent or not a string.
    #[serde(default, deserialize_with = "lenient_string")]
    pub original_msg_id: Option<String>,
}

impl BroadcastMetadata {
    /// Reads a metadata frame; metadata that is not a JSON object reads as empty.
    pub fn read(md: &Value) -> Self {
        read_object(md)
    }
}

/// `[[uuid, id], ..]`: items whose first element is a string and second a non-negative
/// integer (further elements ignored); other items are skipped, a non-list reads as none.
fn targets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<BroadcastTarget>, D::Error> {
    let value = Value::deserialize(d)?;
    let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
    Ok(items
        .iter()
        .filter_map(|t| {
            Some(BroadcastTarget {
                uuid: t.get(0)?.as_str()?.to_string(),
                id: t.get(1)?.as_u64()?,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target(uuid: &str, id: u64) -> BroadcastTarget {
        BroadcastTarget {
            uuid: uuid.into(),
            id,
        }
    }

    #[test]
    fn reads_targets_flags_and_original_id() {
        let md = BroadcastMetadata::read(&json!({
            "is_broadcast": true, "is_coalescing": true,
            "targets": [["a", 0], ["b", 1, "extra"]], "original_msg_id": "m",
        }));
        assert!(md.is_coalescing);
        assert_eq!(md.targets, vec![target("a", 0), target("b", 1)]);
        assert_eq!(md.original_msg_id.as_deref(), Some("m"));
    }

    #[test]
    fn ill_formed_fields_read_as_defaults_and_bad_targets_are_skipped() {
        let md = BroadcastMetadata::read(&json!({
            "is_coalescing": "yes", "original_msg_id": 5,
            "targets": [["a", -1], [1, 2], ["b"], "c", {"0": "d", "1": 2}, ["e", 2.5], ["f", 3]],
        }));
        assert_eq!(md.targets, vec![target("f", 3)]);
        assert!(!md.is_coalescing);
        assert_eq!(md.original_msg_id, None);
        for odd in [
            json!({"targets": "a"}),
            json!({"targets": {"a": 1}}),
            json!(null),
        ] {
            assert_eq!(BroadcastMetadata::read(&odd), BroadcastMetadata::default());
        }
        // A list is not an object, even one that looks like the fields in order.
        assert_eq!(
            BroadcastMetadata::read(&json!([true, [["a", 0]], "m"])),
            BroadcastMetadata::default()
        );
    }
}
