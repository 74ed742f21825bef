//! CreateTopic: a new topic with its partition count and config overrides.
//!
//! ```text
//! request:  name string | partitions u32 | configs [key string | value string]
//! response: (empty)
//! ```
//!
//! Config keys: `retention_ms`, `retention_bytes`, `segment_bytes`,
//! `segment_ms`, `fsync` (`always` | `interval:MS` | `never`),
//! `max_message_bytes`, `message_timestamp` (`create` | `log_append`).

use super::{ApiKey, Message, Request};
use crate::{Reader, WireError, Writer};

/// One topic config key and value, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The config key.
    pub key: String,
    /// The value, as text.
    pub value: String,
}

impl ConfigEntry {
    /// A key/value pair.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self { key: key.into(), value: value.into() }
    }

    pub(crate) fn encode_all(w: &mut Writer, entries: &[ConfigEntry]) {
        w.vec(entries, |w, e| {
            w.string(&e.key);
            w.string(&e.value);
        });
    }

    pub(crate) fn decode_all(r: &mut Reader) -> Result<Vec<ConfigEntry>, WireError> {
        r.vec("configs", 4, |r| Ok(ConfigEntry { key: r.string()?, value: r.string()? }))
    }
}

/// Creates a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicRequest {
    /// Topic name.
    pub name: String,
    /// Number of partitions (at least 1).
    pub partitions: u32,
    /// Overrides of the broker's topic defaults.
    pub configs: Vec<ConfigEntry>,
}

/// The topic was created.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateTopicResponse;

impl Message for CreateTopicRequest {
    const NAME: &'static str = "CreateTopic request";
    fn encode(&self, w: &mut Writer) {
        w.string(&self.name);
        w.u32(self.partitions);
        ConfigEntry::encode_all(w, &self.configs);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self { name: r.string()?, partitions: r.u32()?, configs: ConfigEntry::decode_all(r)? })
    }
}

impl Request for CreateTopicRequest {
    const API_KEY: ApiKey = ApiKey::CreateTopic;
    type Response = CreateTopicResponse;
}

impl Message for CreateTopicResponse {
    const NAME: &'static str = "CreateTopic response";
    fn encode(&self, _: &mut Writer) {}
    fn decode(_: &mut Reader) -> Result<Self, WireError> {
        Ok(Self)
    }
}
