//! ApiVersions: which api keys and versions the broker speaks.
//!
//! ```text
//! request:  (empty)
//! response: apis [api_key u16 | min_version u16 | max_version u16]
//! ```

use super::{ApiKey, Message, Request};
use crate::{Reader, WireError, Writer};

/// Asks the broker which apis it supports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiVersionsRequest;

/// One supported api and its version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersionRange {
    /// The api key.
    pub api_key: u16,
    /// Oldest version understood.
    pub min_version: u16,
    /// Newest version understood.
    pub max_version: u16,
}

/// The broker's supported apis.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiVersionsResponse {
    /// One entry per api.
    pub apis: Vec<ApiVersionRange>,
}

impl Message for ApiVersionsRequest {
    const NAME: &'static str = "ApiVersions request";
    fn encode(&self, _: &mut Writer) {}
    fn decode(_: &mut Reader) -> Result<Self, WireError> {
        Ok(Self)
    }
}

impl Request for ApiVersionsRequest {
    const API_KEY: ApiKey = ApiKey::ApiVersions;
    type Response = ApiVersionsResponse;
}

impl Message for ApiVersionsResponse {
    const NAME: &'static str = "ApiVersions response";
    fn encode(&self, w: &mut Writer) {
        w.vec(&self.apis, |w, a| {
            w.u16(a.api_key);
            w.u16(a.min_version);
            w.u16(a.max_version);
        });
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        let apis = r.vec("apis", 6, |r| {
            Ok(ApiVersionRange { api_key: r.u16()?, min_version: r.u16()?, max_version: r.u16()? })
        })?;
        Ok(Self { apis })
    }
}
