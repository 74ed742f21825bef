//! Durability tests of the controller log store: what an append, a vote, a
//! truncation or a purge leaves on disk is what a reopen finds.

use std::collections::BTreeMap;

use openraft::entry::RaftEntry;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::vote::RaftLeaderId;

use super::*;
use crate::cluster::state::Command;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(LeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry {
    let cmd = Command::CreateTopic {
        name: format!("t{index}"),
        partitions: 1,
        replication_factor: 1,
        config: BTreeMap::new(),
    };
    Entry::new_normal(log_id(term, index), cmd)
}

async fn indexes(store: &mut LogStore) -> Vec<u64> {
    store.try_get_log_entries(0..).await.unwrap().iter().map(|e| e.log_id.index()).collect()
}

#[tokio::test]
async fn appends_votes_truncations_and_purges_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogStore::open(dir.path()).unwrap();
    assert!(s.get_log_state().await.unwrap().last_log_id.is_none());
    s.append((1..=5).map(|i| entry(1, i)), IOFlushed::Noop).await.unwrap();
    let vote = Vote::new(2, 3);
    s.save_vote(&vote).await.unwrap();
    s.truncate_after(Some(log_id(1, 3))).await.unwrap();
    s.append([entry(2, 4)], IOFlushed::Noop).await.unwrap();
    drop(s);

    let mut s = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut s).await, vec![1, 2, 3, 4]);
    let e4 = s.try_get_log_entries(4..5).await.unwrap();
    assert_eq!(e4[0].log_id, log_id(2, 4), "the truncated entry is gone, the new one is there");
    assert_eq!(s.read_vote().await.unwrap(), Some(vote));

    s.purge(log_id(1, 2)).await.unwrap();
    s.append([entry(2, 5)], IOFlushed::Noop).await.unwrap();
    drop(s);
    let mut s = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut s).await, vec![3, 4, 5]);
    let state = s.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(2, 5)));
}

#[tokio::test]
async fn a_torn_or_corrupt_tail_is_cut_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogStore::open(dir.path()).unwrap();
    s.append((1..=3).map(|i| entry(1, i)), IOFlushed::Noop).await.unwrap();
    drop(s);
    let path = dir.path().join(LOG_FILE);
    let good = fs::read(&path).unwrap();
    // A half-written record after the good ones.
    let mut torn = good.clone();
    let mut extra = Vec::new();
    encode_record(&entry(1, 4), &mut extra).unwrap();
    torn.extend_from_slice(&extra[..extra.len() / 2]);
    fs::write(&path, &torn).unwrap();
    let mut s = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut s).await, vec![1, 2, 3]);
    assert_eq!(fs::read(&path).unwrap(), good, "cut back to the valid prefix");
    // Appending after the cut works and survives.
    s.append([entry(1, 4)], IOFlushed::Noop).await.unwrap();
    drop(s);
    // A flipped byte in the last record: it is dropped, the rest kept.
    let mut bytes = fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let mut s = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut s).await, vec![1, 2, 3]);
    drop(s);
    // The cut bytes were kept beside the log, not thrown away.
    let kept: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("raft.log.cut-"))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
}

#[tokio::test]
async fn an_intact_but_unreadable_record_refuses_to_open_and_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogStore::open(dir.path()).unwrap();
    s.append([entry(1, 1)], IOFlushed::Noop).await.unwrap();
    drop(s);
    let path = dir.path().join(LOG_FILE);
    let body = b"{\"not\": \"an entry\"}";
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    bytes.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    bytes.extend_from_slice(body);
    fs::write(&path, &bytes).unwrap();
    let err = LogStore::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("unreadable"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), bytes, "nothing cut");
}

#[test]
fn decode_stops_at_lying_lengths() {
    let mut buf = Vec::new();
    encode_record(&entry(1, 1), &mut buf).unwrap();
    let good = buf.len() as u64;
    buf.extend_from_slice(&u32::MAX.to_be_bytes());
    buf.extend_from_slice(&[0; 12]);
    let (records, valid) = decode_records(&buf).unwrap();
    assert_eq!((records.len(), valid), (1, good));
    assert_eq!(decode_records(&[]).unwrap().1, 0);
}
