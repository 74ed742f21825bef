//! `sluice group list | describe | reset-offsets | delete`.

use clap::{Args, Subcommand};
use serde::Serialize;
use sluice_protocol::api::{
    DeleteGroupRequest, DescribeGroupRequest, DescribeGroupResponse, GroupListing, ListGroupsRequest,
    OffsetChange, ResetOffsetsRequest, ResetSpec,
};
use sluice_protocol::client::Connection;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::common::{connect, known_offset, offset_text, print_json, print_table, say, CliError};

/// Group commands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List groups.
    #[command(after_help = "Examples:\n  sluice group list\n  sluice group list --json")]
    List,
    /// Show a group's members, assignment, committed offsets and lag.
    #[command(
        after_help = "Examples:\n  sluice group describe billing\n  sluice group describe billing --json"
    )]
    Describe {
        /// Group name.
        group: String,
    },
    /// Move a group's committed offsets (only while it has no members).
    #[command(
        after_help = "Examples:\n  sluice group reset-offsets billing --topic orders --to-earliest --dry-run\n  sluice group reset-offsets billing --topic orders --to-datetime 2026-11-22T10:00:00Z"
    )]
    ResetOffsets(ResetArgs),
    /// Delete a group and its committed offsets (only while it has no members).
    #[command(after_help = "Examples:\n  sluice group delete billing")]
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

/// Parses an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`,
/// `T` also written `t` or a space) to ms since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    // The parser takes any separator; this command has always named these.
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let at = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

/// A row of `group list --json`.
#[derive(Serialize)]
struct GroupRow<'a> {
    group: &'a str,
    members: u32,
    state: &'a str,
}

/// `group describe --json` (fields in alphabetical order, as printed).
#[derive(Serialize)]
struct GroupView<'a> {
    epoch: u32,
    group: &'a str,
    members: Vec<MemberView<'a>>,
    offsets: Vec<LagView<'a>>,
    state: &'a str,
    total_lag: u64,
}

/// A member in `group describe --json`.
#[derive(Serialize)]
struct MemberView<'a> {
    assignment: Vec<AssignmentView<'a>>,
    client_id: &'a str,
    host: &'a str,
    member_id: &'a str,
}

/// A member's partitions of one topic.
#[derive(Serialize)]
struct AssignmentView<'a> {
    partitions: &'a [u32],
    topic: &'a str,
}

/// A partition's committed offset and lag.
#[derive(Serialize)]
struct LagView<'a> {
    committed: Option<u64>,
    lag: u64,
    log_end_offset: u64,
    partition: u32,
    topic: &'a str,
}

/// A row of `group reset-offsets --json`.
#[derive(Serialize)]
struct Change<'a> {
    topic: &'a str,
    partition: u32,
    previous: Option<u64>,
    new: u64,
}

fn group_view(d: &DescribeGroupResponse) -> GroupView<'_> {
    GroupView {
        epoch: d.epoch,
        group: &d.group,
        members: d
            .members
            .iter()
            .map(|m| MemberView {
                assignment: m
                    .assignment
                    .iter()
                    .map(|t| AssignmentView { partitions: &t.partitions, topic: &t.topic })
                    .collect(),
                client_id: &m.client_id,
                host: &m.host,
                member_id: &m.member_id,
            })
            .collect(),
        offsets: d
            .offsets
            .iter()
            .map(|o| LagView {
                committed: known_offset(o.committed),
                lag: o.lag,
                log_end_offset: o.log_end_offset,
                partition: o.partition,
                topic: &o.topic,
            })
            .collect(),
        state: &d.state,
        total_lag: d.offsets.iter().map(|o| o.lag).sum(),
    }
}

/// Runs a group command.
///
/// # Errors
/// The broker's refusal (an unknown group, a group with members, a bad
/// target), a date-time that is not RFC 3339, or a connection failure.
pub async fn run(addr: &str, json: bool, cmd: GroupCommand) -> Result<(), CliError> {
    let conn = connect(addr).await?;
    match cmd {
        GroupCommand::List => list(&conn, json).await,
        GroupCommand::Describe { group } => describe(&conn, group, json).await,
        GroupCommand::ResetOffsets(args) => reset_offsets(&conn, &args, json).await,
        GroupCommand::Delete { group } => {
            conn.call(&DeleteGroupRequest { group: group.clone() }).await?;
            say!("deleted group {group}");
            Ok(())
        }
    }
}

async fn list(conn: &Connection, json: bool) -> Result<(), CliError> {
    let groups: Vec<GroupListing> = conn.call(&ListGroupsRequest).await?.groups;
    if json {
        let rows: Vec<GroupRow<'_>> = groups
            .iter()
            .map(|g| GroupRow { group: &g.group, members: g.members, state: &g.state })
            .collect();
        return print_json(&rows);
    }
    let rows: Vec<Vec<String>> =
        groups.iter().map(|g| vec![g.group.clone(), g.state.clone(), g.members.to_string()]).collect();
    print_table(&["GROUP", "STATE", "MEMBERS"], &rows);
    Ok(())
}

async fn describe(conn: &Connection, group: String, json: bool) -> Result<(), CliError> {
    let d = conn.call(&DescribeGroupRequest { group }).await?;
    if json {
        return print_json(&group_view(&d));
    }
    say!("group {} ({}, epoch {}, {} member(s))", d.group, d.state, d.epoch, d.members.len());
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
        say!("member {} client={} host={}", m.member_id, m.client_id, m.host);
    }
    Ok(())
}

impl ResetTarget {
    fn spec(&self) -> Result<ResetSpec, CliError> {
        Ok(if self.to_earliest {
            ResetSpec::Earliest
        } else if self.to_latest {
            ResetSpec::Latest
        } else if let Some(o) = self.to_offset {
            ResetSpec::Offset(o)
        } else if let Some(dt) = &self.to_datetime {
            ResetSpec::Timestamp(
                parse_rfc3339(dt)
                    .ok_or_else(|| CliError::Usage(format!("`{dt}` is not an RFC 3339 date-time")))?,
            )
        } else {
            ResetSpec::ShiftBy(self.shift_by.unwrap_or(0))
        })
    }
}

async fn reset_offsets(conn: &Connection, args: &ResetArgs, json: bool) -> Result<(), CliError> {
    let req = ResetOffsetsRequest {
        group: args.group.clone(),
        topic: args.topic.clone(),
        partitions: args.partition.into_iter().collect(),
        spec: args.target.spec()?,
        dry_run: args.dry_run,
    };
    let changes: Vec<OffsetChange> = conn.call(&req).await?.offsets;
    if json {
        let rows: Vec<Change<'_>> = changes
            .iter()
            .map(|c| Change {
                topic: &c.topic,
                partition: c.partition,
                previous: known_offset(c.previous),
                new: c.new,
            })
            .collect();
        return print_json(&rows);
    }
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|c| vec![c.topic.clone(), c.partition.to_string(), offset_text(c.previous), c.new.to_string()])
        .collect();
    print_table(&["TOPIC", "PARTITION", "PREVIOUS", "NEW"], &rows);
    if args.dry_run {
        say!("(dry run: nothing changed)");
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
        assert_eq!(parse_rfc3339("2026-11-22t10:00:00z"), Some(1_795_341_600_000));
        assert_eq!(parse_rfc3339("2026-11-22 10:00:00Z"), Some(1_795_341_600_000));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.5Z"), Some(-500));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.0005Z"), Some(-1000), "floored to the ms");
        for bad in [
            "",
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-11-22T10:00:00",
            "2026-11-22T10:00:00.Z",
            "2026-11-22X10:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
