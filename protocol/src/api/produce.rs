//! Produce: appends one record batch to one partition.
//!
//! ```text
//! request:  acks u8 | timeout_ms u32 | topic string | partition u32 | batch bytes
//! response: base_offset u64 | log_append_time i64 | log_start_offset u64
//! ```
//!
//! `acks`: 0 = none (the broker sends no response at all), 1 = leader
//! (answered after the append), 2 = durable (answered after the flush that
//! covers the batch; the default). `log_append_time` is -1 unless the topic
//! stamps log-append time. A duplicate batch from an idempotent producer is
//! answered with success and its original `base_offset`.

use bytes::Bytes;

use super::{tag, ApiKey, Message, Request};
use crate::{Reader, WireError, Writer};

/// When the broker answers a produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Acks {
    /// No response is sent.
    None = 0,
    /// After the batch is appended (in page cache).
    Leader = 1,
    /// After the batch is on stable storage.
    #[default]
    Durable = 2,
}

impl Acks {
    /// The acks for a wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::None),
            1 => Some(Self::Leader),
            2 => Some(Self::Durable),
            _ => None,
        }
    }
}

/// Appends a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    /// When to answer.
    pub acks: Acks,
    /// How long the broker may take before answering `RequestTimedOut`.
    pub timeout_ms: u32,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// One record batch (docs/format.md), `base_offset` ignored.
    pub batch: Bytes,
}

/// Where the batch was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceResponse {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// The broker's append time, or -1 when the topic keeps create time.
    pub log_append_time: i64,
    /// The partition's first offset.
    pub log_start_offset: u64,
}

impl Message for ProduceRequest {
    const NAME: &'static str = "Produce request";
    fn encode(&self, w: &mut Writer) {
        w.u8(self.acks as u8);
        w.u32(self.timeout_ms);
        w.string(&self.topic);
        w.u32(self.partition);
        w.len_bytes(&self.batch);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            acks: tag(r, "acks", Acks::from_u8)?,
            timeout_ms: r.u32()?,
            topic: r.string()?,
            partition: r.u32()?,
            batch: r.len_bytes()?,
        })
    }
}

impl Request for ProduceRequest {
    const API_KEY: ApiKey = ApiKey::Produce;
    type Response = ProduceResponse;
}

impl Message for ProduceResponse {
    const NAME: &'static str = "Produce response";
    fn encode(&self, w: &mut Writer) {
        w.u64(self.base_offset);
        w.i64(self.log_append_time);
        w.u64(self.log_start_offset);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self { base_offset: r.u64()?, log_append_time: r.i64()?, log_start_offset: r.u64()? })
    }
}
