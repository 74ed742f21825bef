//! Topic ids (issue #13 item 5): a deleted and re-created topic is a new
//! topic, and a group does not resume it at the deleted one's committed
//! offsets, even when the broker stopped between the deletion and the
//! clean-up of the offsets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice_protocol::api::{
    Acks, CommitOffset, DeleteTopicRequest, OffsetCommitRequest, OffsetFetchRequest, TopicPartition,
    NO_OFFSET,
};
use sluice_protocol::client::Connection;
use sluice_protocol::ErrorCode;
use sluice_tests::{batch, create_topic, produce, TestBroker};

async fn commit(admin: &Connection, topic: &str, offset: u64) {
    let resp = admin
        .call(&OffsetCommitRequest {
            group: "g".into(),
            member_id: String::new(),
            member_epoch: 0,
            offsets: vec![CommitOffset {
                topic: topic.into(),
                partition: 0,
                offset,
                metadata: String::new(),
            }],
        })
        .await
        .unwrap();
    assert_eq!(resp.results[0].error_code, ErrorCode::None);
}

async fn committed(admin: &Connection, topic: &str) -> u64 {
    let req = OffsetFetchRequest {
        group: "g".into(),
        partitions: vec![TopicPartition { topic: topic.into(), partition: 0 }],
    };
    admin.call(&req).await.unwrap().offsets[0].offset
}

async fn topic_with_commit(admin: &Connection, topic: &str) {
    create_topic(admin, topic, 2, &[]).await.unwrap();
    produce(admin, topic, 0, Acks::Durable, batch(10, 8, 1)).await.unwrap();
    commit(admin, topic, 7).await;
    assert_eq!(committed(admin, topic).await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_starts_without_the_old_committed_offsets() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    topic_with_commit(&admin, "t").await;
    admin.call(&DeleteTopicRequest { name: "t".into() }).await.unwrap();
    create_topic(&admin, "t", 2, &[]).await.unwrap();
    assert_eq!(committed(&admin, "t").await, NO_OFFSET, "the new topic inherited the old one's offset");
    // A commit to the new topic is its own, and survives a restart.
    produce(&admin, "t", 0, Acks::Durable, batch(3, 8, 2)).await.unwrap();
    commit(&admin, "t", 2).await;
    drop(admin);
    let broker = broker.restart().await;
    let admin = broker.connect().await;
    assert_eq!(committed(&admin, "t").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_a_topic_replaced_while_stopped_are_dropped() {
    let broker = TestBroker::start(|_| {}).await;
    let admin = broker.connect().await;
    topic_with_commit(&admin, "gone").await;
    topic_with_commit(&admin, "replaced").await;
    topic_with_commit(&admin, "kept").await;
    drop(admin);
    let mut broker = broker;
    broker.stop().await;
    // What a crash between a topic's deletion and its offsets' clean-up
    // leaves: `gone` deleted; `replaced` deleted and created again (a new id).
    let topics = broker.config.data_dir.join("topics");
    std::fs::remove_dir_all(topics.join("gone")).unwrap();
    let path = topics.join("replaced/topic.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("\"id\": \"").unwrap() + 7;
    let replaced = format!("{}00000000-0000-4000-8000-000000000001{}", &text[..at], &text[at + 36..]);
    std::fs::write(&path, replaced).unwrap();
    let broker = broker.restart().await;
    let admin = broker.connect().await;
    assert_eq!(committed(&admin, "replaced").await, NO_OFFSET);
    assert_eq!(committed(&admin, "kept").await, 7);
    create_topic(&admin, "gone", 1, &[]).await.unwrap();
    assert_eq!(committed(&admin, "gone").await, NO_OFFSET);
}
