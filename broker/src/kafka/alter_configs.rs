//! AlterConfigs, Kafka's older whole-set form of IncrementalAlterConfigs:
//! the configs named are set and every other config with a Kafka name
//! goes back to the broker's default (Kafka's semantics: the request is the
//! topic's complete set of overrides). Topics only.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::alter_configs_request::{AlterConfigsRequest, AlterConfigsResource};
use kafka_protocol::messages::alter_configs_response::{AlterConfigsResourceResponse, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::configs::{apply, entries, to_sluice, TOPIC};
use super::wire::{decode, Chunks, Header};
use super::{error, KafkaError};
use crate::broker::Broker;
use crate::errors::BrokerError;

/// Answers AlterConfigs.
///
/// # Errors
/// `Malformed` or `Encode`; per-resource failures are answered.
pub async fn alter(
    broker: Arc<Broker>,
    header: Header,
    mut body: Bytes,
) -> Result<Option<Chunks>, KafkaError> {
    let req: AlterConfigsRequest = decode(&header, &mut body)?;
    let validate_only = req.validate_only;
    super::wire::blocking(header, move || {
        let mut response = AlterConfigsResponse::default();
        for resource in req.resources {
            let mut out = AlterConfigsResourceResponse::default();
            if let Err(e) = alter_one(&broker, &resource, validate_only) {
                out.error_code = error::code(&e);
                out.error_message = Some(StrBytes::from_string(e.to_string()));
            }
            out.resource_type = resource.resource_type;
            out.resource_name = resource.resource_name;
            response.responses.push(out);
        }
        response
    })
    .await
}

/// The whole set of one topic's Kafka-named configs: the given ones, the
/// rest at the broker's defaults.
fn alter_one(
    broker: &Broker,
    resource: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), BrokerError> {
    if resource.resource_type != TOPIC {
        return Err(BrokerError::InvalidConfig("only topic configs can be altered".into()));
    }
    let defaults = entries(&broker.config.topic_defaults);
    for c in &resource.configs {
        if defaults.iter().all(|(k, _)| *k != c.name.as_str()) {
            to_sluice(&c.name, "")?; // refuses a name Sluice does not have, naming the ones it has
        }
    }
    let mut changes = Vec::with_capacity(defaults.len());
    for (name, default) in defaults {
        let given = resource.configs.iter().find(|c| c.name.as_str() == name);
        let value = given.and_then(|c| c.value.as_deref()).map_or(default, str::to_owned);
        changes.push(to_sluice(name, &value)?);
    }
    apply(broker, &resource.resource_name, &changes, validate_only)
}
