//! AlterTopic: changes the configs of a live topic (those that can change
//! live: retention, segment roll, fsync mode, message size limit).
//!
//! ```text
//! request:  name string | configs [key string | value string]
//! response: (empty)
//! ```

use super::{ApiKey, ConfigEntry, Message, Request};
use crate::{Reader, WireError, Writer};

/// Alters a topic's configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterTopicRequest {
    /// Topic name.
    pub name: String,
    /// Keys to set; keys not named keep their value.
    pub configs: Vec<ConfigEntry>,
}

/// The configs were changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlterTopicResponse;

impl Message for AlterTopicRequest {
    const NAME: &'static str = "AlterTopic request";
    fn encode(&self, w: &mut Writer) {
        w.string(&self.name);
        ConfigEntry::encode_all(w, &self.configs);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self { name: r.string()?, configs: ConfigEntry::decode_all(r)? })
    }
}

impl Request for AlterTopicRequest {
    const API_KEY: ApiKey = ApiKey::AlterTopic;
    type Response = AlterTopicResponse;
}

impl Message for AlterTopicResponse {
    const NAME: &'static str = "AlterTopic response";
    fn encode(&self, _: &mut Writer) {}
    fn decode(_: &mut Reader) -> Result<Self, WireError> {
        Ok(Self)
    }
}
