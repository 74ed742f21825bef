//! DeleteGroup: removes a group and its committed offsets while it has no
//! members.
//!
//! ```text
//! request:  group string
//! response: (empty)
//! ```

use super::{ApiKey, Message, Request};
use crate::{Reader, WireError, Writer};

/// Deletes a group and its committed offsets (only while it has no members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteGroupRequest {
    /// Group name.
    pub group: String,
}

/// The group was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteGroupResponse;

impl Message for DeleteGroupRequest {
    const NAME: &'static str = "DeleteGroup request";
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self { group: r.string()? })
    }
}

impl Request for DeleteGroupRequest {
    const API_KEY: ApiKey = ApiKey::DeleteGroup;
    type Response = DeleteGroupResponse;
}

impl Message for DeleteGroupResponse {
    const NAME: &'static str = "DeleteGroup response";
    fn encode(&self, _: &mut Writer) {}
    fn decode(_: &mut Reader) -> Result<Self, WireError> {
        Ok(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let req = DeleteGroupRequest { group: "g".into() };
        assert_eq!(DeleteGroupRequest::decode_all(req.to_bytes()), Ok(req));
        assert_eq!(DeleteGroupResponse::decode_all(DeleteGroupResponse.to_bytes()), Ok(DeleteGroupResponse));
    }
}
