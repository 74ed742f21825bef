//! Offsets as `sluice consume --offset` users say them, and where each
//! consumed partition starts and ends:
//!
//! ```text
//! beginning | end | N (an offset) | -N (the last N) | @TIMESTAMP (RFC 3339 or epoch ms)
//! ```
//!
//! [`plan`] checks the topics and partitions exist (naming what does not)
//! and asks the broker (Metadata, then ListOffsets) for each partition's
//! log start, end (high watermark) and, for `@TIMESTAMP`, the first
//! offset at or after it.

use sluice_protocol::api::{ListOffsetsPartition, ListOffsetsRequest, MetadataRequest, OffsetSpec};
use sluice_protocol::client::Connection;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::common::CliError;

/// Where to start each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetArg {
    /// The oldest record stored.
    Beginning,
    /// Only records written from now on.
    End,
    /// This offset.
    At(u64),
    /// The last N records.
    Last(u64),
    /// The first record at or after this time (ms since the epoch).
    Time(i64),
}

impl std::str::FromStr for OffsetArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}`: use beginning, end, N, -N (the last N) or @TIMESTAMP");
        Ok(match s {
            "beginning" | "earliest" | "oldest" => Self::Beginning,
            "end" | "latest" | "newest" => Self::End,
            _ if s.starts_with('@') => Self::Time(parse_time(&s[1..]).ok_or_else(bad)?),
            _ if s.starts_with('-') => Self::Last(s[1..].parse().map_err(|_| bad())?),
            _ => Self::At(s.parse().map_err(|_| bad())?),
        })
    }
}

/// Epoch milliseconds or an RFC 3339 date-time, as epoch milliseconds.
fn parse_time(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    let at = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

/// One partition to read: where it starts and where its log ended when
/// the command started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The first offset to read.
    pub start: u64,
    /// The high watermark at start (`--exit-at-end` stops here).
    pub end: u64,
}

/// The partitions of `topics` (only `partitions`, when not empty), after
/// checking they exist.
///
/// # Errors
/// [`CliError::Usage`] naming an unknown topic or partition;
/// [`CliError::Client`] when the broker cannot answer.
pub async fn partitions(
    conn: &Connection,
    topics: &[String],
    partitions: &[u32],
) -> Result<Vec<(String, u32)>, CliError> {
    let meta = conn.call(&MetadataRequest { topics: topics.to_vec() }).await?;
    let mut out = Vec::new();
    for name in topics {
        let topic = meta.topics.iter().find(|t| &t.name == name && t.error_code.is_ok());
        let topic = topic.ok_or_else(|| CliError::UnknownTopic(name.clone()))?;
        let count = topic.partitions.len() as u32;
        if let Some(&partition) = partitions.iter().find(|p| **p >= count) {
            return Err(CliError::UnknownPartition { topic: name.clone(), partition, count });
        }
        let wanted: Vec<u32> = if partitions.is_empty() { (0..count).collect() } else { partitions.to_vec() };
        out.extend(wanted.into_iter().map(|p| (name.clone(), p)));
    }
    Ok(out)
}

/// Topic-partitions.
type Partitions = Vec<(String, u32)>;

/// Offsets of `tps` for `spec`, in order, each asked of its partition's
/// leader (named by `conn`'s metadata; a single node answers for all).
async fn list(conn: &Connection, tps: &[(String, u32)], spec: OffsetSpec) -> Result<Vec<u64>, CliError> {
    let mut by_leader: Vec<(Option<String>, Partitions)> = Vec::new();
    for (tp, leader) in tps.iter().zip(leader_addrs(conn, tps).await?) {
        match by_leader.iter_mut().find(|(l, _)| *l == leader) {
            Some((_, group)) => group.push(tp.clone()),
            None => by_leader.push((leader, vec![tp.clone()])),
        }
    }
    let mut found = std::collections::HashMap::new();
    for (leader, group) in by_leader {
        let other;
        let at = match leader {
            Some(addr) => {
                other = super::common::connect(&addr).await?;
                &other
            }
            None => conn,
        };
        for (tp, offset) in group.iter().zip(list_at(at, &group, spec).await?) {
            found.insert(tp.clone(), offset);
        }
    }
    Ok(tps.iter().map(|tp| found[tp]).collect())
}

/// The address of each partition's leader where it is another broker than
/// the one `conn` reaches (`None`: ask `conn`).
async fn leader_addrs(conn: &Connection, tps: &[(String, u32)]) -> Result<Vec<Option<String>>, CliError> {
    let mut topics: Vec<String> = tps.iter().map(|(t, _)| t.clone()).collect();
    topics.dedup();
    let meta = conn.call(&MetadataRequest { topics }).await?;
    let addr_of =
        |id: i64| meta.brokers.iter().find(|b| i64::try_from(b.id).ok() == Some(id)).map(|b| b.addr.clone());
    Ok(tps
        .iter()
        .map(|(t, p)| {
            let topic = meta.topics.iter().find(|m| &m.name == t)?;
            let leader = topic.partitions.iter().find(|m| m.partition == *p)?.leader;
            (i64::try_from(meta.node_id).ok() != Some(leader)).then(|| addr_of(leader)).flatten()
        })
        .collect())
}

/// Offsets of `tps` for `spec` from the broker `conn` reaches.
async fn list_at(conn: &Connection, tps: &[(String, u32)], spec: OffsetSpec) -> Result<Vec<u64>, CliError> {
    let request = ListOffsetsRequest {
        partitions: tps
            .iter()
            .map(|(topic, partition)| ListOffsetsPartition {
                topic: topic.clone(),
                partition: *partition,
                spec,
            })
            .collect(),
    };
    let resp = conn.call(&request).await?;
    tps.iter()
        .map(|(t, p)| {
            let r = resp.partitions.iter().find(|r| &r.topic == t && r.partition == *p);
            match r {
                Some(r) if r.error_code.is_ok() => Ok(r.offset),
                Some(r) => Err(CliError::Usage(format!("offsets of {t}/{p}: {:?}", r.error_code))),
                None => Err(CliError::Usage(format!("the broker did not answer for {t}/{p}"))),
            }
        })
        .collect()
}

/// Where each of `tps` starts for `offset`, and where it ends now.
///
/// # Errors
/// [`CliError::Usage`] for an offset past a partition's end (naming it);
/// [`CliError::Client`] when the broker cannot answer.
pub async fn plan(
    conn: &Connection,
    tps: Vec<(String, u32)>,
    offset: OffsetArg,
) -> Result<Vec<PartitionPlan>, CliError> {
    let first = list(conn, &tps, OffsetSpec::Earliest).await?;
    let end = list(conn, &tps, OffsetSpec::Latest).await?;
    let at = match offset {
        OffsetArg::Time(ms) => Some(list(conn, &tps, OffsetSpec::Timestamp(ms)).await?),
        _ => None,
    };
    let mut out = Vec::with_capacity(tps.len());
    for (i, (topic, partition)) in tps.into_iter().enumerate() {
        let (first, end) = (first[i], end[i]);
        let start = match offset {
            OffsetArg::Beginning => first,
            OffsetArg::End => end,
            OffsetArg::Last(n) => end.saturating_sub(n).max(first),
            OffsetArg::Time(_) => at.as_ref().map_or(end, |a| a[i].min(end)),
            OffsetArg::At(o) if o > end => {
                return Err(CliError::Usage(format!(
                    "offset {o} is past the end of {topic}/{partition} (its offsets are {first}..{end})"
                )))
            }
            OffsetArg::At(o) => o.max(first),
        };
        out.push(PartitionPlan { topic, partition, start, end });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_as_users_say_them() {
        assert_eq!("beginning".parse(), Ok(OffsetArg::Beginning));
        assert_eq!("end".parse(), Ok(OffsetArg::End));
        assert_eq!("42".parse(), Ok(OffsetArg::At(42)));
        assert_eq!("-5".parse(), Ok(OffsetArg::Last(5)));
        assert_eq!("@1700000000000".parse(), Ok(OffsetArg::Time(1_700_000_000_000)));
        assert_eq!("@2023-11-14T22:13:20Z".parse(), Ok(OffsetArg::Time(1_700_000_000_000)));
        assert!("soon".parse::<OffsetArg>().is_err());
        assert!("@yesterday".parse::<OffsetArg>().is_err());
    }
}
