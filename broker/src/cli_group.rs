//! `sluice group list | describe | reset-offsets | delete`.

use clap::{Args, Subcommand};
use serde::Serialize;
use sluice_protocol::api::{
    DeleteGroupRequest, DescribeGroupRequest, ListGroupsRequest, ResetOffsetsRequest, ResetSpec, NO_OFFSET,
};

use crate::cli::{connect, print_json, print_table, CliError};

/// Group commands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List groups.
    List,
    /// Show a group's members, assignment, committed offsets and lag.
    Describe {
        /// Group name.
        group: String,
    },
    /// Move a group's committed offsets (only while it has no members).
    ResetOffsets(ResetArgs),
    /// Delete a group and its committed offsets (only while it has no members).
    Delete {
        /// Group name.
        group: String,
    },
}

/// Where reset-offsets moves to.
#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "target")]
pub struct ResetTarget {
    /// The oldest stored offset.
    #[arg(long)]
    to_earliest: bool,
    /// The end of the log.
    #[arg(long)]
    to_latest: bool,
    /// This offset.
    #[arg(long, value_name = "N")]
    to_offset: Option<u64>,
    /// The first record at or after this time (RFC 3339, e.g. 2026-11-22T10:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    to_datetime: Option<String>,
    /// Move by N (negative: back).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
}

/// `reset-offsets` arguments.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Group name.
    group: String,
    /// Topic.
    #[arg(long)]
    topic: String,
    /// Only this partition.
    #[arg(long)]
    partition: Option<u32>,
    #[command(flatten)]
    target: ResetTarget,
    /// Show what would change, change nothing.
    #[arg(long)]
    dry_run: bool,
}

fn offset_text(o: u64) -> String {
    if o == NO_OFFSET {
        "-".into()
    } else {
        o.to_string()
    }
}

/// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`) to ms since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d, h, mi, sec) =
        (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms: String = frac[..digits].chars().chain("000".chars()).take(3).collect();
        millis = ms.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && &rest[3..4] == ":" => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (rest[1..3].parse::<i64>().ok()? * 60 + rest[4..6].parse::<i64>().ok()?)
        }
        _ => return None,
    };
    // Days since the epoch (Howard Hinnant's days_from_civil).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60) * 1000) + millis)
}

#[derive(Serialize)]
struct Change {
    topic: String,
    partition: u32,
    previous: Option<u64>,
    new: u64,
}

/// Runs a group command.
pub async fn run(addr: &str, json: bool, cmd: GroupCommand) -> Result<(), CliError> {
    let conn = connect(addr).await?;
    match cmd {
        GroupCommand::List => {
            let groups = conn.call(&ListGroupsRequest).await?.groups;
            if json {
                let v: Vec<_> = groups
                    .iter()
                    .map(|g| serde_json::json!({"group": g.group, "state": g.state, "members": g.members}))
                    .collect();
                print_json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = groups
                    .iter()
                    .map(|g| vec![g.group.clone(), g.state.clone(), g.members.to_string()])
                    .collect();
                print_table(&["GROUP", "STATE", "MEMBERS"], &rows);
            }
        }
        GroupCommand::Describe { group } => {
            let d = conn.call(&DescribeGroupRequest { group }).await?;
            if json {
                let v = serde_json::json!({
                    "group": d.group, "state": d.state, "epoch": d.epoch,
                    "members": d.members.iter().map(|m| serde_json::json!({
                        "member_id": m.member_id, "client_id": m.client_id, "host": m.host,
                        "assignment": m.assignment.iter().map(|t| serde_json::json!({"topic": t.topic, "partitions": t.partitions})).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "offsets": d.offsets.iter().map(|o| serde_json::json!({
                        "topic": o.topic, "partition": o.partition,
                        "committed": (o.committed != NO_OFFSET).then_some(o.committed),
                        "log_end_offset": o.log_end_offset, "lag": o.lag,
                    })).collect::<Vec<_>>(),
                    "total_lag": d.offsets.iter().map(|o| o.lag).sum::<u64>(),
                });
                print_json(&v)?;
            } else {
                println!("group {} ({}, epoch {}, {} member(s))", d.group, d.state, d.epoch, d.members.len());
                let owner = |topic: &str, p: u32| {
                    d.members
                        .iter()
                        .find(|m| m.assignment.iter().any(|t| t.topic == topic && t.partitions.contains(&p)))
                        .map_or("-".to_owned(), |m| m.member_id.clone())
                };
                let rows: Vec<Vec<String>> = d
                    .offsets
                    .iter()
                    .map(|o| {
                        vec![
                            o.topic.clone(),
                            o.partition.to_string(),
                            offset_text(o.committed),
                            o.log_end_offset.to_string(),
                            o.lag.to_string(),
                            owner(&o.topic, o.partition),
                        ]
                    })
                    .collect();
                print_table(&["TOPIC", "PARTITION", "COMMITTED", "LOG_END", "LAG", "MEMBER"], &rows);
                for m in &d.members {
                    println!("member {} client={} host={}", m.member_id, m.client_id, m.host);
                }
            }
        }
        GroupCommand::ResetOffsets(args) => {
            let t = &args.target;
            let spec = if t.to_earliest {
                ResetSpec::Earliest
            } else if t.to_latest {
                ResetSpec::Latest
            } else if let Some(o) = t.to_offset {
                ResetSpec::Offset(o)
            } else if let Some(dt) = &t.to_datetime {
                ResetSpec::Timestamp(
                    parse_rfc3339(dt)
                        .ok_or_else(|| CliError::Usage(format!("`{dt}` is not an RFC 3339 date-time")))?,
                )
            } else {
                ResetSpec::ShiftBy(t.shift_by.unwrap_or(0))
            };
            let req = ResetOffsetsRequest {
                group: args.group.clone(),
                topic: args.topic.clone(),
                partitions: args.partition.into_iter().collect(),
                spec,
                dry_run: args.dry_run,
            };
            let changes = conn.call(&req).await?.offsets;
            if json {
                let v: Vec<Change> = changes
                    .iter()
                    .map(|c| Change {
                        topic: c.topic.clone(),
                        partition: c.partition,
                        previous: (c.previous != NO_OFFSET).then_some(c.previous),
                        new: c.new,
                    })
                    .collect();
                print_json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = changes
                    .iter()
                    .map(|c| {
                        vec![
                            c.topic.clone(),
                            c.partition.to_string(),
                            offset_text(c.previous),
                            c.new.to_string(),
                        ]
                    })
                    .collect();
                print_table(&["TOPIC", "PARTITION", "PREVIOUS", "NEW"], &rows);
                if args.dry_run {
                    println!("(dry run: nothing changed)");
                }
            }
        }
        GroupCommand::Delete { group } => {
            conn.call(&DeleteGroupRequest { group: group.clone() }).await?;
            println!("deleted group {group}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-22T10:00:00Z"), Some(1_795_341_600_000));
        assert_eq!(parse_rfc3339("2026-11-22T11:00:00.250+01:00"), Some(1_795_341_600_250));
        assert_eq!(parse_rfc3339("2000-02-29T12:30:15-05:30"), Some(951_847_215_000));
        for bad in ["", "2026-11-22", "2026-13-01T00:00:00Z", "2026-11-22T10:00:00", "2026-11-22T10:00:00.Z"]
        {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
