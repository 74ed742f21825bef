//! Decode amplification: a maximal hostile request (a whole 16 MiB frame of
//! the smallest elements its arrays allow) never decodes into more than
//! `DECODE_AMPLIFICATION` times its size plus `DECODE_SLACK_BYTES`. The
//! memory a decoded message holds is measured from its vectors' and
//! strings' capacities (what the allocator was asked for).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use sluice_protocol::api::{
    GroupHeartbeatRequest, Message, MetadataRequest, TopicPartitions, MAX_NAMED_TOPICS,
};
use sluice_protocol::frame::DEFAULT_MAX_FRAME_BYTES;
use sluice_protocol::wire::{DECODE_AMPLIFICATION, DECODE_SLACK_BYTES};
use sluice_protocol::{WireError, Writer};

fn bound(size: usize) -> usize {
    DECODE_AMPLIFICATION * size + DECODE_SLACK_BYTES
}

fn strings(v: &Vec<String>) -> usize {
    v.capacity() * std::mem::size_of::<String>() + v.iter().map(String::capacity).sum::<usize>()
}

/// An array of `count` strings of `len` bytes each, padded to `size` bytes.
fn names(count: usize, len: usize) -> Writer {
    let mut w = Writer::new();
    w.u32(count as u32);
    for i in 0..count {
        let name: String = format!("{i:0len$}").chars().take(len).collect();
        w.string(&name);
    }
    w
}

fn metadata_request(count: usize, len: usize) -> Bytes {
    names(count, len).into_bytes()
}

#[test]
fn a_frame_of_empty_topic_names_is_refused_not_decoded() {
    // 8 Mi empty names fill a 16 MiB frame; as `String`s they are 192 MiB.
    let count = DEFAULT_MAX_FRAME_BYTES / 2 - 2;
    let body = metadata_request(count, 0);
    assert!(body.len() <= DEFAULT_MAX_FRAME_BYTES);
    let err = MetadataRequest::decode_all(body).unwrap_err();
    assert!(
        matches!(err, WireError::TooManyElements { .. } | WireError::DecodeBudget { .. }),
        "refused: {err}"
    );
}

#[test]
fn every_metadata_request_decodes_within_its_budget() {
    for (count, len) in [
        (MAX_NAMED_TOPICS, 0),
        (MAX_NAMED_TOPICS, 1),
        (MAX_NAMED_TOPICS, 5),
        (MAX_NAMED_TOPICS, 249),
        (3, 10),
    ] {
        let body = metadata_request(count, len);
        let size = body.len();
        match MetadataRequest::decode_all(body) {
            Ok(req) => {
                assert_eq!(req.topics.len(), count);
                let held = strings(&req.topics);
                assert!(held <= bound(size), "{count} names of {len} bytes: {held} > {}", bound(size));
            }
            Err(WireError::DecodeBudget { .. }) => assert!(len < 3, "{count} names of {len} bytes refused"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(matches!(
        MetadataRequest::decode_all(metadata_request(MAX_NAMED_TOPICS + 1, 1)),
        Err(WireError::TooManyElements { max: MAX_NAMED_TOPICS, .. })
    ));
}

#[test]
fn a_frame_of_empty_heartbeat_topics_and_partitions_is_refused() {
    let head = |w: &mut Writer| {
        w.string("g");
        w.string("");
        w.u32(0);
        w.string("h");
        w.u32(1000);
    };
    // Subscribed topics: all empty names.
    let mut w = Writer::new();
    head(&mut w);
    let count = DEFAULT_MAX_FRAME_BYTES / 2 - 64;
    w.u32(count as u32);
    for _ in 0..count {
        w.string("");
    }
    w.u32(0);
    let err = GroupHeartbeatRequest::decode_all(w.into_bytes()).unwrap_err();
    assert!(matches!(err, WireError::DecodeBudget { .. }), "{err}");
    // Owned partitions: empty topics with no partitions (6 bytes each, 48 in memory).
    let mut w = Writer::new();
    head(&mut w);
    w.u32(0);
    let count = DEFAULT_MAX_FRAME_BYTES / 6 - 64;
    w.u32(count as u32);
    for _ in 0..count {
        w.string("");
        w.u32(0);
    }
    let body = w.into_bytes();
    let size = body.len();
    match GroupHeartbeatRequest::decode_all(body) {
        Err(WireError::DecodeBudget { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(req) => {
            let held = req.owned.capacity() * std::mem::size_of::<TopicPartitions>();
            assert!(held <= bound(size), "{held} bytes from {size}");
        }
    }
}
