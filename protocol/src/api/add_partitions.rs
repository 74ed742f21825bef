//! AddPartitions: grows a live topic to `count` partitions (partitions
//! only grow). `count` is the new total, not the number to add, so a
//! retried request changes nothing the second time; asking for the count
//! the topic already has is refused like asking for fewer.
//!
//! ```text
//! request:  name string | count u32
//! response: old_count u32 | new_count u32
//! ```
//!
//! Keyed records hash over the partition count: after growth most keys
//! map to a different partition than before.

use super::{ApiKey, Message, Request};
use crate::{Reader, WireError, Writer};

/// Grows a topic's partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddPartitionsRequest {
    /// Topic name.
    pub name: String,
    /// The partition count wanted: more than the topic has.
    pub count: u32,
}

/// The topic's partition count before and after.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddPartitionsResponse {
    /// Partitions before the request.
    pub old_count: u32,
    /// Partitions now.
    pub new_count: u32,
}

impl Message for AddPartitionsRequest {
    const NAME: &'static str = "AddPartitions request";
    fn encode(&self, w: &mut Writer) {
        w.string(&self.name);
        w.u32(self.count);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self { name: r.string()?, count: r.u32()? })
    }
}

impl Request for AddPartitionsRequest {
    const API_KEY: ApiKey = ApiKey::AddPartitions;
    type Response = AddPartitionsResponse;
}

impl Message for AddPartitionsResponse {
    const NAME: &'static str = "AddPartitions response";
    fn encode(&self, w: &mut Writer) {
        w.u32(self.old_count);
        w.u32(self.new_count);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self { old_count: r.u32()?, new_count: r.u32()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Message;

    #[test]
    fn round_trip() {
        let req = AddPartitionsRequest { name: "orders".into(), count: 6 };
        let bytes = req.to_bytes();
        assert_eq!(AddPartitionsRequest::decode_all(bytes).unwrap(), req);
        let resp = AddPartitionsResponse { old_count: 3, new_count: 6 };
        assert_eq!(AddPartitionsResponse::decode_all(resp.to_bytes()).unwrap(), resp);
    }
}
