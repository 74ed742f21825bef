//! `sluice consume TOPIC...`: prints records with the consumer client, as
//! values one per line, a `--format` string or `--json` objects.
//!
//! With `--group` (and no `--partition`) it joins the group, prints, then
//! commits what it printed (see [`Commits`]): every
//! `--commit-interval-ms`, before each revocation (the consumer announces
//! it and releases the partitions only at the next poll), and exactly what
//! it printed when it stops (on `--max-messages`, `--timeout-ms`, SIGINT
//! or SIGTERM: commit, leave the group, exit 0), unless `--no-commit`. So
//! members running at once never print a record twice, and a member killed
//! with `kill -9` loses nothing: its next owner prints again what it
//! printed after its last commit (at-least-once). With `--group` and
//! `--partition` it commits what it printed the same way (no revocations).
//! Without a group it reads every partition (or each `--partition`) from
//! `--offset` and commits nothing; `--exit-at-end` stops once each one
//! reached the end it had when the command started.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use sluice_consumer::{Consumer, ConsumerRecord, OffsetReset, Polled};

use super::common::{connect, CliError, CLIENT_ID};
use super::format::{Format, JsonRecord};
use super::offsets::{self, OffsetArg, PartitionPlan};

/// `sluice consume` arguments.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topics to read.
    #[arg(required = true, num_args = 1..)]
    topics: Vec<String>,
    /// Consume as a member of this group (commits what was printed).
    #[arg(long)]
    group: Option<String>,
    /// Same as `--offset beginning`.
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Read only this partition (repeatable).
    #[arg(long)]
    partition: Vec<u32>,
    /// Where to start: beginning, end, N, -N (the last N of each
    /// partition) or @TIMESTAMP (RFC 3339 or epoch ms). With a group, where
    /// partitions without a committed offset start (committed ones resume).
    #[arg(long, allow_hyphen_values = true)]
    offset: Option<OffsetArg>,
    /// Stop once every partition reached the end it had at start (kcat -e).
    #[arg(long, short = 'e')]
    exit_at_end: bool,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop after this long without new records (ms).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print the key before the value.
    #[arg(long)]
    print_key: bool,
    /// Print `partition offset` before each record.
    #[arg(long)]
    print_offsets: bool,
    /// Print each record as this format says: %t topic, %p partition, %o
    /// offset, %T timestamp, %k key, %s value, %h headers, %K/%S key/value
    /// lengths, %% a percent sign; escapes \n \t \\ \0 \xHH.
    #[arg(long, value_name = "FMT", conflicts_with_all = ["print_key", "print_offsets"])]
    format: Option<String>,
    /// Commit nothing, even with --group.
    #[arg(long)]
    no_commit: bool,
    /// With --group: commit what was printed this often (ms); also before
    /// each revocation and when the command stops.
    #[arg(long, default_value_t = 5000)]
    commit_interval_ms: u64,
    /// With --group: the group moves this member's partitions to others
    /// after this long without a heartbeat (ms), e.g. after `kill -9`.
    #[arg(long, default_value_t = 10_000)]
    session_timeout_ms: u64,
}

/// How a record is printed.
#[derive(Debug)]
enum Output {
    /// `[partition offset ][key ]value`, one per line.
    Plain { print_key: bool, print_offsets: bool },
    /// A `--format` string.
    Format(Format),
    /// One JSON object per line.
    Json,
}

impl Output {
    fn write(&self, out: &mut impl Write, r: &ConsumerRecord) -> Result<(), CliError> {
        match self {
            Self::Plain { print_key, print_offsets } => {
                if *print_offsets {
                    write!(out, "{} {} ", r.partition, r.offset)?;
                }
                if *print_key {
                    out.write_all(r.key.as_deref().unwrap_or(b"null"))?;
                    out.write_all(b" ")?;
                }
                out.write_all(r.value.as_deref().unwrap_or(b"null"))?;
                out.write_all(b"\n")?;
            }
            Self::Format(f) => f.write(out, r)?,
            Self::Json => {
                serde_json::to_writer(&mut *out, &JsonRecord::from_record(r)).map_err(|e| {
                    match e.io_error_kind() {
                        // A closed stdout is an io error (ends quietly), not a usage one.
                        Some(kind) => CliError::Io(std::io::Error::new(kind, e)),
                        None => CliError::Usage(e.to_string()),
                    }
                })?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }
}

/// Whether the group assigns the partitions (else they are assigned here).
fn subscribes(args: &ConsumeArgs) -> bool {
    args.group.is_some() && args.partition.is_empty()
}

/// The `--offset` asked for (`--from-beginning` included).
fn offset_arg(args: &ConsumeArgs) -> Option<OffsetArg> {
    if args.from_beginning {
        Some(OffsetArg::Beginning)
    } else {
        args.offset
    }
}

/// Checks the topics and partitions, and plans where each assigned
/// partition starts (none when the group assigns them).
async fn plan(broker: &str, args: &ConsumeArgs) -> Result<Vec<PartitionPlan>, CliError> {
    let conn = connect(broker).await?;
    let tps = offsets::partitions(&conn, &args.topics, &args.partition).await?;
    if subscribes(args) {
        if args.exit_at_end {
            return Err(CliError::Usage("--exit-at-end needs --partition when used with --group".into()));
        }
        // Beginning and end are the consumer's reset policy; other offsets
        // are planned per partition now (for those without a commit).
        if matches!(offset_arg(args), None | Some(OffsetArg::Beginning | OffsetArg::End)) {
            return Ok(Vec::new());
        }
    }
    offsets::plan(&conn, tps, offset_arg(args).unwrap_or(OffsetArg::End)).await
}

/// Builds the consumer: subscribed with a group (`plan`'s starts for
/// partitions without a commit), else assigned `plan`'s partitions (sought
/// to their starts when an offset was given or there is no group).
async fn build(broker: &str, args: &ConsumeArgs, plan: &[PartitionPlan]) -> Result<Consumer, CliError> {
    let reset = if offset_arg(args) == Some(OffsetArg::Beginning) {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    let mut builder = Consumer::builder()
        .bootstrap(broker)
        .client_id(CLIENT_ID)
        .auto_offset_reset(reset)
        .session_timeout(Duration::from_millis(args.session_timeout_ms))
        .enable_auto_commit(false);
    if let Some(g) = &args.group {
        builder = builder.group(g.clone());
    }
    builder = if subscribes(args) {
        builder
            .subscribe(args.topics.clone())
            .start_offsets(plan.iter().map(|p| ((p.topic.clone(), p.partition), p.start)))
    } else {
        builder.assign(plan.iter().map(|p| (p.topic.clone(), p.partition)))
    };
    let consumer = builder.build().await?;
    if !subscribes(args) && (args.group.is_none() || args.offset.is_some()) {
        for p in plan {
            consumer.seek(&p.topic, p.partition, p.start);
        }
    }
    Ok(consumer)
}

/// What the print loop did.
#[derive(Debug, Default)]
struct Printed {
    /// Records printed.
    count: u64,
    /// Per partition, the offset after the last record printed.
    next: BTreeMap<(String, u32), u64>,
    /// Per partition, the first offset not printed of a batch cut short by
    /// `--max-messages` (committed at the end: what was printed).
    unprinted: BTreeMap<(String, u32), u64>,
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Partitions not yet at the end they had at start (`--exit-at-end`).
fn open_ends(args: &ConsumeArgs, plan: &[PartitionPlan]) -> Option<BTreeMap<(String, u32), u64>> {
    args.exit_at_end.then(|| {
        plan.iter().filter(|p| p.start < p.end).map(|p| ((p.topic.clone(), p.partition), p.end)).collect()
    })
}

/// When the group's offsets are committed while the command runs: what
/// was printed (and flushed), every `--commit-interval-ms`, before the
/// consumer releases revoked partitions, and when the command stops (see
/// [`final_offsets`]). A record is committed only after it was printed, so
/// a crash loses none (its next owner prints again what was printed after
/// the last commit); a revocation is committed before the partition leaves,
/// so members that run normally print each record once.
struct Commits {
    /// Commit at all (a group, without `--no-commit`).
    on: bool,
    /// Commit what was printed this often.
    every: Duration,
    /// The last commit.
    last: Instant,
    /// What was committed last, per partition (not sent again).
    sent: BTreeMap<(String, u32), u64>,
}

impl Commits {
    fn new(args: &ConsumeArgs) -> Self {
        Self {
            on: args.group.is_some() && !args.no_commit,
            every: Duration::from_millis(args.commit_interval_ms),
            last: Instant::now(),
            sent: BTreeMap::new(),
        }
    }

    /// Commits what was printed of the partitions still owned (those that
    /// moved since the last commit).
    async fn commit(&mut self, consumer: &Consumer, printed: &Printed) -> Result<(), CliError> {
        self.last = Instant::now();
        let offsets: Vec<((String, u32), u64)> = final_offsets(consumer, printed)
            .into_iter()
            .filter(|(tp, o)| self.sent.get(tp) != Some(o))
            .collect();
        if !self.on || offsets.is_empty() {
            return Ok(());
        }
        consumer.commit_offsets(offsets.clone()).await?;
        self.sent.extend(offsets);
        Ok(())
    }

    /// After a batch was printed: commits when the interval passed;
    /// failures are reported on stderr and retried by the next commit.
    async fn after_print(&mut self, consumer: &Consumer, printed: &Printed) {
        if self.last.elapsed() >= self.every {
            if let Err(e) = self.commit(consumer, printed).await {
                eprintln!("warning: commit failed (retried): {e}");
            }
        }
    }

    /// The group takes `revoked`: commits what was printed, then forgets
    /// them (the consumer releases them at the next poll; printed again
    /// later they start afresh).
    async fn before_revocation(
        &mut self,
        consumer: &Consumer,
        printed: &mut Printed,
        revoked: &[(String, u32)],
    ) {
        if let Err(e) = self.commit(consumer, printed).await {
            eprintln!("warning: commit before revocation failed: {e}");
        }
        for tp in revoked {
            printed.next.remove(tp);
            printed.unprinted.remove(tp);
            self.sent.remove(tp);
        }
    }
}

/// The offsets to commit when the command stops: after the last record
/// printed of each partition still owned, or at the first record not
/// printed of a batch cut short by `--max-messages`.
fn final_offsets(consumer: &Consumer, printed: &Printed) -> Vec<((String, u32), u64)> {
    let owned: HashSet<(String, u32)> = consumer.assignment().into_iter().collect();
    let mut offsets = printed.next.clone();
    offsets.extend(printed.unprinted.iter().map(|(tp, o)| (tp.clone(), *o)));
    offsets.into_iter().filter(|(tp, _)| owned.contains(tp)).collect()
}

/// How one polled batch is printed.
struct Batch<'a> {
    /// Subscribed: the consumer, asked whether a partition is still owned
    /// when the records move to another partition (one lost while stdout
    /// blocked past the session timeout is left to its next owner).
    owner: Option<&'a Consumer>,
    /// `--max-messages`.
    max: Option<u64>,
    /// The output format.
    output: &'a Output,
}

impl Batch<'_> {
    /// Prints `records`, counting them, noting where a batch cut short by
    /// `max` stopped and which partitions reached their end.
    fn print(
        &self,
        records: Vec<ConsumerRecord>,
        out: &mut impl Write,
        printed: &mut Printed,
        mut ends: Option<&mut BTreeMap<(String, u32), u64>>,
    ) -> Result<(), CliError> {
        let mut owned: Option<((String, u32), bool)> = None;
        for r in records {
            let tp = (r.topic.to_string(), r.partition);
            if let Some(consumer) = self.owner {
                if owned.as_ref().is_none_or(|(at, _)| *at != tp) {
                    owned = Some((tp.clone(), consumer.assignment().contains(&tp)));
                }
                if owned.as_ref().is_some_and(|(_, own)| !own) {
                    continue;
                }
            }
            if self.max.is_some_and(|m| printed.count >= m) {
                printed.unprinted.entry(tp).or_insert(r.offset);
                continue;
            }
            if let Some(e) = ends.as_deref_mut() {
                if e.get(&tp).is_some_and(|end| r.offset + 1 >= *end) {
                    e.remove(&tp);
                }
            }
            self.output.write(out, &r)?;
            printed.count += 1;
            printed.next.insert(tp, r.offset + 1);
        }
        Ok(out.flush()?)
    }
}

/// Polls and prints until a stop condition.
async fn print_loop(
    consumer: &Consumer,
    args: &ConsumeArgs,
    output: &Output,
    plan: &[PartitionPlan],
    commits: &mut Commits,
) -> Result<Printed, CliError> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = Printed::default();
    let mut ends = open_ends(args, plan);
    let mut last_data = Instant::now();
    let idle = args.timeout_ms.map(Duration::from_millis);
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let full = args.max_messages.is_some_and(|m| printed.count >= m);
        if full
            || idle.is_some_and(|t| last_data.elapsed() >= t)
            || ends.as_ref().is_some_and(|e| e.is_empty())
        {
            break;
        }
        let wait = idle.map_or(Duration::from_millis(500), |t| {
            t.saturating_sub(last_data.elapsed()).min(Duration::from_millis(500))
        });
        let records = match tokio::select! {
            r = consumer.poll_event(wait) => r?,
            () = &mut stop => break,
        } {
            Polled::Records(records) => records,
            Polled::Revoked(revoked) => {
                commits.before_revocation(consumer, &mut printed, &revoked).await;
                continue;
            }
        };
        if !records.is_empty() {
            last_data = Instant::now();
        }
        let owner = subscribes(args).then_some(consumer);
        if owner.is_some() {
            // Lost without a revocation (fenced, or expired): forget them.
            let owned: HashSet<(String, u32)> = consumer.assignment().into_iter().collect();
            printed.next.retain(|tp, _| owned.contains(tp));
            printed.unprinted.retain(|tp, _| owned.contains(tp));
            commits.sent.retain(|tp, _| owned.contains(tp));
        }
        // A blocked stdout must not stall the consumer's tasks (heartbeats).
        tokio::task::block_in_place(|| {
            let batch = Batch { owner, max: args.max_messages, output };
            batch.print(records, &mut out, &mut printed, ends.as_mut())
        })?;
        commits.after_print(consumer, &printed).await;
    }
    out.flush()?;
    Ok(printed)
}

/// Runs the consume command.
///
/// # Errors
/// An unknown topic or partition, an offset past the end, the consumer
/// failing (joining, fetching, committing), or stdout failing.
pub async fn run(broker: &str, json: bool, args: ConsumeArgs) -> Result<(), CliError> {
    let output = match (&args.format, json) {
        (Some(_), true) => return Err(CliError::Usage("--format and --json exclude each other".into())),
        (Some(f), false) => Output::Format(Format::parse(f)?),
        (None, true) => Output::Json,
        (None, false) => Output::Plain { print_key: args.print_key, print_offsets: args.print_offsets },
    };
    let plan = plan(broker, &args).await?;
    let consumer = build(broker, &args, &plan).await?;
    let mut commits = Commits::new(&args);
    let printed = print_loop(&consumer, &args, &output, &plan, &mut commits).await;
    let commit = commits.on;
    let committed = match &printed {
        Ok(p) => commits.commit(&consumer, p).await,
        Err(_) => Ok(()),
    };
    let closed = consumer.close().await;
    let printed = printed?;
    committed?;
    closed?;
    eprintln!("{} records{}", printed.count, if commit { ", offsets committed" } else { "" });
    Ok(())
}
