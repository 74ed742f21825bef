//! The Kafka listener's request metrics: each api is counted and timed
//! under its own label (`kafka_Produce`, `kafka_Fetch`, ...: apart from the
//! native apis of the same names), from decoding the request to its
//! response being ready. A request that closes the connection counts as an
//! error labelled with why.

use std::time::Instant;

use kafka_protocol::messages::ApiKey;

use super::state::{Pending, Reply};
use super::KafkaError;
use crate::metrics::{Metrics, KAFKA_APIS as NAMES};

/// The label of `api`.
pub fn name(api: ApiKey) -> &'static str {
    use ApiKey as K;
    let i = match api {
        K::Produce => 0,
        K::Fetch => 1,
        K::ListOffsets => 2,
        K::Metadata => 3,
        K::ApiVersions => 4,
        K::CreateTopics => 5,
        K::DeleteTopics => 6,
        K::CreatePartitions => 7,
        K::DescribeConfigs => 8,
        K::IncrementalAlterConfigs => 9,
        K::DescribeCluster => 10,
        K::InitProducerId => 11,
        K::FindCoordinator => 12,
        K::JoinGroup => 13,
        K::SyncGroup => 14,
        K::Heartbeat => 15,
        K::LeaveGroup => 16,
        K::OffsetCommit => 17,
        K::OffsetFetch => 18,
        K::ListGroups => 19,
        K::DescribeGroups => 20,
        K::DeleteGroups => 21,
        K::ConsumerGroupHeartbeat => 22,
        K::ConsumerGroupDescribe => 23,
        _ => 24,
    };
    NAMES[i]
}

/// Records `reply` (or the error that closes the connection) once its
/// response is ready.
pub fn record(
    metrics: &std::sync::Arc<Metrics>,
    api: ApiKey,
    started: Instant,
    reply: Result<Reply, KafkaError>,
) -> Result<Reply, KafkaError> {
    let label = name(api);
    match reply {
        Ok(Reply::Now(chunks)) => {
            metrics.request(label, started.elapsed(), None);
            Ok(Reply::Now(chunks))
        }
        Ok(Reply::Later(future)) => {
            let metrics = std::sync::Arc::clone(metrics);
            let wrapped: Pending = Box::pin(async move {
                let result = future.await;
                metrics.request(label, started.elapsed(), result.as_ref().err().map(reason));
                result
            });
            Ok(Reply::Later(wrapped))
        }
        Err(e) => {
            metrics.request(label, started.elapsed(), Some(reason(&e)));
            Err(e)
        }
    }
}

/// The error label of a request that closed the connection.
fn reason(e: &KafkaError) -> &'static str {
    match e {
        KafkaError::ShortHeader { .. } | KafkaError::UnknownApi { .. } | KafkaError::Malformed { .. } => {
            "MALFORMED_REQUEST"
        }
        KafkaError::UnsupportedVersion { .. } => "UNSUPPORTED_VERSION",
        KafkaError::Encode { .. } => "ENCODE_FAILED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_routed_api_has_its_own_label() {
        for &(api, _, _) in
            super::super::dispatch::SERVED.iter().chain(super::super::groups::KafkaGroups::APIS)
        {
            assert_ne!(name(api), "kafka_Other", "{api:?}");
        }
        assert_eq!(name(ApiKey::Produce), "kafka_Produce");
        assert_eq!(name(ApiKey::EndTxn), "kafka_Other");
        for (i, n) in NAMES.iter().enumerate() {
            let api = ApiKey::iter().find(|a| format!("kafka_{a:?}") == *n);
            assert!(api.is_some_and(|a| name(a) == NAMES[i]) || *n == "kafka_Other", "{n}");
        }
    }
}
