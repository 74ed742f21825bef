//! Routes a Kafka request to its api's module and frames the response. The
//! table [`SERVED`] is what ApiVersions advertises: only what is
//! implemented, at the versions the tests cover; the group apis come from
//! [`KafkaGroups::APIS`]. A request for an api or version outside them is
//! refused (ApiVersions excepted: it is answered at v0 with
//! `UNSUPPORTED_VERSION` and the table, so clients downgrade).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use super::groups::KafkaGroups;
use super::state::{Kafka, Reply};
use super::wire::{decode_header, encode_at, malformed, response_header, Chunks, Header};
use super::{
    alter_configs, cluster, configs, fetch, guard, init_producer_id, list_offsets, metadata, metrics,
    produce, topics, KafkaError,
};

/// The apis served here and their version ranges (ApiVersions).
pub const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::InitProducerId, 0, 4),
];

/// Whether `api` is served at `version`.
fn served(api: ApiKey, version: i16) -> bool {
    SERVED.iter().chain(KafkaGroups::APIS).any(|&(k, lo, hi)| k == api && (lo..=hi).contains(&version))
}

/// Decodes one request frame and starts answering it. `local` is the
/// address the client reached (Metadata advertises it).
///
/// # Errors
/// What closes the connection: an unknown api, an unsupported version, a
/// malformed request, a response that cannot be encoded.
pub fn dispatch(kafka: &Arc<Kafka>, frame: Bytes, local: Option<SocketAddr>) -> Result<Reply, KafkaError> {
    let started = std::time::Instant::now();
    let api = frame.get(..2).and_then(|k| ApiKey::try_from(i16::from_be_bytes([k[0], k[1]])).ok());
    let reply = route(kafka, frame, local);
    match api {
        Some(api) if kafka.broker.config.metrics => {
            metrics::record(&kafka.broker.metrics, api, started, reply)
        }
        _ => reply,
    }
}

/// Decodes the header and hands the body to its api's module.
fn route(kafka: &Arc<Kafka>, mut frame: Bytes, local: Option<SocketAddr>) -> Result<Reply, KafkaError> {
    let header = decode_header(&mut frame)?;
    if header.api == ApiKey::ApiVersions {
        return api_versions(&header).map(|c| Reply::Now(Some(c)));
    }
    if !served(header.api, header.version) {
        return Err(KafkaError::UnsupportedVersion { api: header.api, version: header.version });
    }
    guard::check(&header, &frame)?;
    let k = Arc::clone(kafka);
    let h = header.clone();
    let body = frame;
    Ok(match header.api {
        ApiKey::Produce => produce::handle(kafka, &header, body)?,
        ApiKey::Fetch => later(fetch::handle(k, h, body)),
        ApiKey::ListOffsets => later(async move { list_offsets::handle(&k.broker, &h, body).map(Some) }),
        ApiKey::Metadata => later(async move { metadata::handle(&k.broker, &h, body, local).map(Some) }),
        ApiKey::CreateTopics => later(topics::create(Arc::clone(&k.broker), h, body)),
        ApiKey::DeleteTopics => later(topics::delete(Arc::clone(&k.broker), h, body)),
        ApiKey::CreatePartitions => later(topics::create_partitions(Arc::clone(&k.broker), h, body)),
        ApiKey::DescribeConfigs => later(async move { configs::describe(&k.broker, &h, body).map(Some) }),
        ApiKey::AlterConfigs => later(alter_configs::alter(Arc::clone(&k.broker), h, body)),
        ApiKey::IncrementalAlterConfigs => later(configs::alter(Arc::clone(&k.broker), h, body)),
        ApiKey::DescribeCluster => Reply::Now(Some(cluster::describe(&kafka.broker, &header, body, local)?)),
        ApiKey::InitProducerId => later(init_producer_id::init(k, h, body)),
        api => later(async move {
            let response = k.groups.handle(api, h.version, body).await.map_err(|e| malformed(&h, e))?;
            Ok(Some(vec![response_header(&h, 0).freeze(), response.freeze()]))
        }),
    })
}

fn later(future: impl Future<Output = Result<Option<Chunks>, KafkaError>> + Send + 'static) -> Reply {
    Reply::Later(Box::pin(future))
}

/// ApiVersions, answered at the request's version when served, else at v0
/// with `UNSUPPORTED_VERSION` (the request body is not needed).
fn api_versions(header: &Header) -> Result<Chunks, KafkaError> {
    let supported = (0..=3).contains(&header.version);
    let mut response = ApiVersionsResponse::default();
    response.api_keys = SERVED
        .iter()
        .chain(KafkaGroups::APIS)
        .map(|&(api, lo, hi)| {
            let mut v = ApiVersion::default();
            v.api_key = api as i16;
            v.min_version = lo;
            v.max_version = hi;
            v
        })
        .collect();
    if !supported {
        response.error_code = ResponseError::UnsupportedVersion.code();
    }
    encode_at(header, if supported { header.version } else { 0 }, &response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn api_versions_answers_unsupported_versions_at_v0() {
        let h = Header { api: ApiKey::ApiVersions, version: 9, correlation_id: 3 };
        let chunks = api_versions(&h).unwrap();
        let mut body = chunks[0].slice(4..);
        let r = ApiVersionsResponse::decode(&mut body, 0).unwrap();
        assert_eq!(r.error_code, 35);
        assert!(r.api_keys.iter().any(|v| v.api_key == ApiKey::Fetch as i16 && v.max_version == 16));
        let h = Header { api: ApiKey::ApiVersions, version: 3, correlation_id: 3 };
        let chunks = api_versions(&h).unwrap();
        let mut body = chunks[0].slice(4..);
        assert_eq!(ApiVersionsResponse::decode(&mut body, 3).unwrap().error_code, 0);
    }

    #[test]
    fn every_served_version_is_one_kafka_protocol_knows() {
        for &(api, lo, hi) in SERVED.iter().chain(KafkaGroups::APIS) {
            let known = api.valid_versions();
            assert!(known.min <= lo && hi <= known.max, "{api:?} {lo}..={hi} outside {known}");
        }
        for &(api, _, _) in SERVED.iter().chain(KafkaGroups::APIS) {
            assert!(api == ApiKey::ApiVersions || guard::covers(api), "{api:?} has no guard schema");
        }
        assert!(served(ApiKey::Fetch, 4) && !served(ApiKey::Fetch, 3) && !served(ApiKey::EndTxn, 0));
    }
}
