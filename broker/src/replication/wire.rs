//! Frames of the replication channel of the peer protocol (after a
//! [`Hello`](crate::cluster::peer_wire::Hello) naming
//! [`Channel::Replication`](crate::cluster::peer_wire::Channel)): binary,
//! big-endian, with `sluice_protocol`'s [`Writer`]/[`Reader`], so record
//! batches travel as the leader stored them (`Bytes` slices of its log, no
//! re-encoding).
//!
//! Every frame starts with a `u8` kind. Requests, one at a time, each
//! answered by the response of the same kind:
//!
//! - `1` ReplicaFetch: topic (u16 string), partition u32, replica_id u64,
//!   leader_epoch u32, fetch_offset u64, durable_offset u64, max_bytes u32,
//!   max_wait_ms u32 → error u16, high_watermark u64, log_start_offset u64,
//!   batches (u32-length-prefixed bytes).
//! - `2` OffsetForLeaderEpoch: topic, partition u32, epoch i32 (as u32) →
//!   error u16, epoch i32 (-1: none), end_offset u64.
//!
//! Decoding checks every length against what the frame holds before
//! taking it (the frame itself was bounded by the codec), and refuses
//! trailing bytes: a malformed frame is a typed error, never a panic.

use bytes::Bytes;
use sluice_protocol::{ErrorCode, Reader, WireError, Writer};

const FETCH: u8 = 1;
const OFFSET_FOR_EPOCH: u8 = 2;

/// A follower's fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetch {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The follower's node id.
    pub replica_id: u64,
    /// The leader epoch the follower believes current.
    pub leader_epoch: u32,
    /// Fetch from here (the follower's log end).
    pub fetch_offset: u64,
    /// The follower's durable offset (its own high watermark).
    pub durable_offset: u64,
    /// At most this many bytes of batches (at least one batch).
    pub max_bytes: u32,
    /// Wait at most this long for data when there is none.
    pub max_wait_ms: u32,
}

/// The leader's answer to a [`ReplicaFetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchResponse {
    /// `None` or why the fetch was refused.
    pub error: ErrorCode,
    /// The leader's high watermark.
    pub high_watermark: u64,
    /// The leader's log start offset.
    pub log_start_offset: u64,
    /// Whole batches from `fetch_offset`, as stored.
    pub batches: Bytes,
}

/// A follower's question: where does epoch `epoch` end in the leader's log?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetForLeaderEpoch {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The follower's last epoch.
    pub epoch: i32,
}

/// The leader's answer (KIP-279): the largest epoch `<= epoch` it has (-1:
/// none), and the first offset after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEndOffset {
    /// `None` or why it was refused.
    pub error: ErrorCode,
    /// The epoch found, -1 when none.
    pub epoch: i32,
    /// The first offset whose epoch is above it.
    pub end_offset: u64,
}

/// A request on the replication channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaRequest {
    /// Fetch batches.
    Fetch(ReplicaFetch),
    /// OffsetForLeaderEpoch.
    OffsetForLeaderEpoch(OffsetForLeaderEpoch),
}

/// A response on the replication channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaResponse {
    /// To a fetch.
    Fetch(ReplicaFetchResponse),
    /// To an OffsetForLeaderEpoch.
    OffsetForLeaderEpoch(EpochEndOffset),
}

impl ReplicaRequest {
    /// The frame.
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        match self {
            Self::Fetch(f) => {
                w.u8(FETCH);
                w.string(&f.topic);
                w.u32(f.partition);
                w.u64(f.replica_id);
                w.u32(f.leader_epoch);
                w.u64(f.fetch_offset);
                w.u64(f.durable_offset);
                w.u32(f.max_bytes);
                w.u32(f.max_wait_ms);
            }
            Self::OffsetForLeaderEpoch(o) => {
                w.u8(OFFSET_FOR_EPOCH);
                w.string(&o.topic);
                w.u32(o.partition);
                w.u32(o.epoch as u32);
            }
        }
        w.into_bytes()
    }

    /// Decodes a frame.
    ///
    /// # Errors
    /// A truncated or malformed frame, an unknown kind, trailing bytes.
    pub fn decode(frame: Bytes) -> Result<Self, WireError> {
        let mut r = Reader::new(frame);
        let req = match r.u8()? {
            FETCH => Self::Fetch(ReplicaFetch {
                topic: r.string()?,
                partition: r.u32()?,
                replica_id: r.u64()?,
                leader_epoch: r.u32()?,
                fetch_offset: r.u64()?,
                durable_offset: r.u64()?,
                max_bytes: r.u32()?,
                max_wait_ms: r.u32()?,
            }),
            OFFSET_FOR_EPOCH => Self::OffsetForLeaderEpoch(OffsetForLeaderEpoch {
                topic: r.string()?,
                partition: r.u32()?,
                epoch: r.u32()? as i32,
            }),
            other => {
                return Err(WireError::InvalidValue {
                    field: "replication request kind",
                    value: u64::from(other),
                })
            }
        };
        r.finish("replication request")?;
        Ok(req)
    }
}

impl ReplicaResponse {
    /// The frame as chunks to write in order (for
    /// `sluice_protocol::io::write_frame`): a fetch's batches are the last
    /// chunk as they came from the log, never copied into the frame.
    pub fn chunks(&self) -> Vec<Bytes> {
        match self {
            Self::Fetch(f) => {
                let mut w = Writer::new();
                w.u8(FETCH);
                w.u16(f.error as u16);
                w.u64(f.high_watermark);
                w.u64(f.log_start_offset);
                w.u32(u32::try_from(f.batches.len()).unwrap_or(u32::MAX));
                vec![w.into_bytes(), f.batches.clone()]
            }
            Self::OffsetForLeaderEpoch(_) => vec![self.encode()],
        }
    }

    /// The frame.
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        match self {
            Self::Fetch(f) => {
                w.u8(FETCH);
                w.u16(f.error as u16);
                w.u64(f.high_watermark);
                w.u64(f.log_start_offset);
                w.len_bytes(&f.batches);
            }
            Self::OffsetForLeaderEpoch(o) => {
                w.u8(OFFSET_FOR_EPOCH);
                w.u16(o.error as u16);
                w.u32(o.epoch as u32);
                w.u64(o.end_offset);
            }
        }
        w.into_bytes()
    }

    /// Decodes a frame.
    ///
    /// # Errors
    /// A truncated or malformed frame, an unknown kind, trailing bytes.
    pub fn decode(frame: Bytes) -> Result<Self, WireError> {
        let mut r = Reader::new(frame);
        let resp = match r.u8()? {
            FETCH => Self::Fetch(ReplicaFetchResponse {
                error: ErrorCode::from_u16(r.u16()?),
                high_watermark: r.u64()?,
                log_start_offset: r.u64()?,
                batches: r.len_bytes()?,
            }),
            OFFSET_FOR_EPOCH => Self::OffsetForLeaderEpoch(EpochEndOffset {
                error: ErrorCode::from_u16(r.u16()?),
                epoch: r.u32()? as i32,
                end_offset: r.u64()?,
            }),
            other => {
                return Err(WireError::InvalidValue {
                    field: "replication response kind",
                    value: u64::from(other),
                })
            }
        };
        r.finish("replication response")?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_an_error() {
        let fetch = ReplicaRequest::Fetch(ReplicaFetch {
            topic: "t".into(),
            partition: 3,
            replica_id: 2,
            leader_epoch: 7,
            fetch_offset: 10,
            durable_offset: 9,
            max_bytes: 1 << 20,
            max_wait_ms: 500,
        });
        assert_eq!(ReplicaRequest::decode(fetch.encode()).unwrap(), fetch);
        let resp = ReplicaResponse::Fetch(ReplicaFetchResponse {
            error: ErrorCode::None,
            high_watermark: 5,
            log_start_offset: 0,
            batches: Bytes::from_static(b"abc"),
        });
        assert_eq!(ReplicaResponse::decode(resp.encode()).unwrap(), resp);
        let epoch = ReplicaResponse::OffsetForLeaderEpoch(EpochEndOffset {
            error: ErrorCode::None,
            epoch: -1,
            end_offset: 4,
        });
        assert_eq!(ReplicaResponse::decode(epoch.encode()).unwrap(), epoch);
        // The chunks written to the socket are the frame, the batches
        // shared with the log rather than copied.
        for r in [&resp, &epoch] {
            assert_eq!(r.chunks().concat(), r.encode().to_vec());
        }
        if let ReplicaResponse::Fetch(f) = &resp {
            assert_eq!(resp.chunks()[1].as_ptr(), f.batches.as_ptr());
        }
        let frame = fetch.encode();
        for cut in 0..frame.len() {
            assert!(ReplicaRequest::decode(frame.slice(..cut)).is_err(), "cut at {cut}");
        }
        assert!(ReplicaRequest::decode(Bytes::from_static(&[9, 0, 0])).is_err());
        // A lying batches length is refused before anything is taken.
        let lying = Bytes::from_static(&[
            1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ]);
        assert!(ReplicaResponse::decode(lying).is_err());
        let mut trailing = fetch.encode().to_vec();
        trailing.push(0);
        assert!(ReplicaRequest::decode(Bytes::from(trailing)).is_err());
    }
}
