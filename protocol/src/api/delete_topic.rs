//! DeleteTopic: removes a topic and its files.
//!
//! ```text
//! request:  name string
//! response: (empty)
//! ```

use super::{ApiKey, Message, Request};
use crate::{Reader, WireError, Writer};

/// Deletes a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicRequest {
    /// Topic name.
    pub name: String,
}

/// The topic was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteTopicResponse;

impl Message for DeleteTopicRequest {
    const NAME: &'static str = "DeleteTopic request";
    fn encode(&self, w: &mut Writer) {
        w.string(&self.name);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self { name: r.string()? })
    }
}

impl Request for DeleteTopicRequest {
    const API_KEY: ApiKey = ApiKey::DeleteTopic;
    type Response = DeleteTopicResponse;
}

impl Message for DeleteTopicResponse {
    const NAME: &'static str = "DeleteTopic response";
    fn encode(&self, _: &mut Writer) {}
    fn decode(_: &mut Reader) -> Result<Self, WireError> {
        Ok(Self)
    }
}
