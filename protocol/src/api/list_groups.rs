//! ListGroups: every group with members or committed offsets.
//!
//! ```text
//! request:  (empty)
//! response: groups [group string | state string | members u32]
//! ```

use super::{ApiKey, Message, Request};
use crate::{Reader, WireError, Writer};

/// Lists groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListGroupsRequest;

/// One group in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group name.
    pub group: String,
    /// `Empty`, `Stable` or `Reconciling`.
    pub state: String,
    /// Active members.
    pub members: u32,
}

/// Every group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListGroupsResponse {
    /// By name.
    pub groups: Vec<GroupListing>,
}

impl Message for ListGroupsRequest {
    const NAME: &'static str = "ListGroups request";
    fn encode(&self, _: &mut Writer) {}
    fn decode(_: &mut Reader) -> Result<Self, WireError> {
        Ok(Self)
    }
}

impl Request for ListGroupsRequest {
    const API_KEY: ApiKey = ApiKey::ListGroups;
    type Response = ListGroupsResponse;
}

impl Message for ListGroupsResponse {
    const NAME: &'static str = "ListGroups response";
    fn encode(&self, w: &mut Writer) {
        w.vec(&self.groups, |w, g| {
            w.string(&g.group);
            w.string(&g.state);
            w.u32(g.members);
        });
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            groups: r.vec("groups", 8, |r| {
                Ok(GroupListing { group: r.string()?, state: r.string()?, members: r.u32()? })
            })?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(ListGroupsRequest.to_bytes().len(), 0);
        let resp = ListGroupsResponse {
            groups: vec![GroupListing { group: "g".into(), state: "Stable".into(), members: 2 }],
        };
        assert_eq!(ListGroupsResponse::decode_all(resp.to_bytes()), Ok(resp));
    }
}
