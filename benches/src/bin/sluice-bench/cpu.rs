//! CPU accounting: how many CPU-seconds the broker and the clients spent in
//! a timed section, read from `/proc` (Linux) before and after it.
//!
//! The in-process broker runs on its own runtime, whose threads are named
//! [`BROKER_THREADS`]; its CPU is the sum of `utime + stime` of this
//! process's threads with that name (`/proc/self/task/*/stat`). The clients
//! are everything else in this process: the process total
//! (`/proc/self/stat`, which keeps the time of threads that have exited)
//! minus the broker's threads. An external broker's CPU is its whole
//! process (`/proc/<pid>`, from `--broker-pid`), or unknown; with an
//! external broker, the clients are this whole process.
//!
//! Per thread, the figure is the scheduler's own count of nanoseconds on a
//! CPU (`/proc/self/task/TID/schedstat`, first field); then the clients are
//! the other threads of this process, and threads that exited during the
//! timed section are not counted (the runtimes' workers live through it).
//! Where the kernel has no `schedstat`, `stat`'s `utime + stime` is used,
//! in clock ticks of `USER_HZ` (100 per second on every Linux ABI): good to
//! 10 ms per thread only, and then the clients are the process total
//! (which keeps exited threads' time) less the broker's threads. Where
//! `/proc` cannot be read (not Linux), every figure is `None`.

use std::path::Path;

/// The name of the in-process broker's runtime threads.
pub const BROKER_THREADS: &str = "broker";

/// Clock ticks per second in `/proc/*/stat` (Linux's `USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU-seconds spent so far, split between the broker and the clients.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSample {
    /// The broker's CPU-seconds (its threads here, or its process).
    pub broker: Option<f64>,
    /// This process's CPU-seconds less the in-process broker's.
    pub clients: Option<f64>,
}

impl CpuSample {
    /// What was spent between `self` (before) and `later` (after).
    pub fn until(self, later: CpuSample) -> CpuSample {
        let diff = |a: Option<f64>, b: Option<f64>| Some((b? - a?).max(0.0));
        CpuSample { broker: diff(self.broker, later.broker), clients: diff(self.clients, later.clients) }
    }
}

/// Where the broker's CPU is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerCpu {
    /// The threads named [`BROKER_THREADS`] in this process.
    InProcess,
    /// Another process (`--broker-pid`).
    Process(u32),
    /// An external broker whose pid was not given.
    Unknown,
}

/// Samples the CPU-seconds spent so far.
pub fn sample(broker: BrokerCpu) -> CpuSample {
    match broker {
        BrokerCpu::InProcess => {
            if let Some((broker, others)) = thread_schedstat(Path::new("/proc/self/task"), BROKER_THREADS) {
                return CpuSample { broker: Some(broker), clients: Some(others) };
            }
            let total = read_ticks(Path::new("/proc/self/stat"));
            let threads = thread_ticks(Path::new("/proc/self/task"), BROKER_THREADS);
            CpuSample {
                broker: threads.map(seconds),
                clients: total.zip(threads).map(|(t, b)| seconds(t.saturating_sub(b))),
            }
        }
        BrokerCpu::Process(pid) => CpuSample {
            broker: process_seconds(&Path::new("/proc").join(pid.to_string())),
            clients: process_seconds(Path::new("/proc/self")),
        },
        BrokerCpu::Unknown => CpuSample { broker: None, clients: process_seconds(Path::new("/proc/self")) },
    }
}

/// A whole process's CPU-seconds (`proc_dir` is `/proc/PID`): its live
/// threads' `schedstat`, else its `stat` in ticks.
fn process_seconds(proc_dir: &Path) -> Option<f64> {
    match thread_schedstat(&proc_dir.join("task"), "") {
        Some((all, _)) => Some(all),
        None => read_ticks(&proc_dir.join("stat")).map(seconds),
    }
}

fn seconds(ticks: u64) -> f64 {
    ticks as f64 / TICKS_PER_SECOND
}

/// `utime + stime` of one `stat` file, in ticks.
fn read_ticks(path: &Path) -> Option<u64> {
    parse_stat(&std::fs::read_to_string(path).ok()?).map(|(_, ticks)| ticks)
}

/// The summed ticks of the threads under `task_dir` whose name starts with
/// `prefix`. Threads that exit between listing and reading are skipped.
fn thread_ticks(task_dir: &Path, prefix: &str) -> Option<u64> {
    let mut sum = 0;
    for entry in std::fs::read_dir(task_dir).ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if let Some((name, ticks)) = parse_stat(&text) {
            if name.starts_with(prefix) {
                sum += ticks;
            }
        }
    }
    Some(sum)
}

/// Seconds on a CPU of the threads under `task_dir` whose name starts with
/// `prefix`, and of the others, from `schedstat`; `None` where the kernel
/// has none. Threads that exit between listing and reading are skipped.
fn thread_schedstat(task_dir: &Path, prefix: &str) -> Option<(f64, f64)> {
    let (mut matching, mut others, mut read_any) = (0u64, 0u64, false);
    for entry in std::fs::read_dir(task_dir).ok()?.flatten() {
        let (Ok(stat), Ok(sched)) = (
            std::fs::read_to_string(entry.path().join("stat")),
            std::fs::read_to_string(entry.path().join("schedstat")),
        ) else {
            continue;
        };
        let (Some((name, _)), Some(ns)) = (parse_stat(&stat), parse_schedstat(&sched)) else { continue };
        read_any = true;
        if name.starts_with(prefix) {
            matching += ns;
        } else {
            others += ns;
        }
    }
    read_any.then_some((matching as f64 / 1e9, others as f64 / 1e9))
}

/// The first field of a `schedstat` line: nanoseconds spent on a CPU.
///
/// ```text
/// 123456789 2345 67
/// `-- on CPU (ns); then waiting on a run queue (ns); then time slices
/// ```
pub fn parse_schedstat(line: &str) -> Option<u64> {
    line.split_ascii_whitespace().next()?.parse().ok()
}

/// Parses a `/proc/*/stat` line into the thread's name and `utime + stime`.
///
/// ```text
/// 1234 (tokio-runtime-w) S 1 2 3 4 5 6 7 8 9 10 UTIME STIME ...
///      `-- comm: may hold spaces and ')'; it ends at the last ')'
/// ```
/// After the name, `utime` and `stime` are the 12th and 13th fields
/// (fields 14 and 15 of the whole line).
pub fn parse_stat(line: &str) -> Option<(&str, u64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let name = line.get(open + 1..close)?;
    let mut rest = line.get(close + 1..)?.split_ascii_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// CPU-seconds per million records, `None` when unknown or nothing moved.
pub fn per_million(cpu_s: Option<f64>, records: u64) -> Option<f64> {
    (records > 0).then(|| cpu_s.map(|s| s * 1e6 / records as f64)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_past_a_name_with_spaces_and_parens() {
        let line = "4242 (broker) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 37 5 0 0 20 0 3 0 99 0 0";
        assert_eq!(parse_stat(line), Some(("broker) x", 42)));
        let plain = "7 (clients) R 1 7 7 0 -1 0 0 0 0 0 1500 250 0 0 20 0 1 0 1 0 0\n";
        assert_eq!(parse_stat(plain), Some(("clients", 1750)));
    }

    #[test]
    fn parses_schedstat_nanoseconds() {
        assert_eq!(parse_schedstat("123456789 2345 67\n"), Some(123_456_789));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn a_truncated_or_garbled_line_is_none() {
        assert_eq!(parse_stat("7 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("7 x S 1 2 3 4 5 6 7 8 9 10 11 12 13"), None);
        assert_eq!(parse_stat("7 (x) S 1 2 3 4 5 6 7 8 9 10 ab 12 13"), None);
    }

    #[test]
    fn this_process_is_sampled_and_its_broker_threads_found() {
        let before = sample(BrokerCpu::InProcess);
        let handle = std::thread::Builder::new()
            .name(format!("{BROKER_THREADS}-test"))
            .spawn(|| {
                // Spin until this thread has a tick of its own (bounded),
                // then sample while it is still alive.
                let me = Path::new("/proc/thread-self/stat");
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while read_ticks(me).unwrap_or(1) == 0 && std::time::Instant::now() < deadline {
                    std::hint::black_box((0..10_000u64).sum::<u64>());
                }
                let ticks = thread_ticks(Path::new("/proc/self/task"), BROKER_THREADS);
                (ticks, sample(BrokerCpu::InProcess), sample(BrokerCpu::Process(std::process::id())))
            })
            .unwrap();
        let (ticks, in_process, whole) = handle.join().unwrap();
        if cfg!(target_os = "linux") {
            assert!(ticks.unwrap() >= 1, "{ticks:?}");
            let spent = before.until(in_process);
            assert!(spent.broker.unwrap() >= 0.005 && spent.clients.is_some(), "{spent:?}");
            assert!(whole.broker.unwrap() >= in_process.broker.unwrap(), "{whole:?} {in_process:?}");
            let (broker, others) = thread_schedstat(Path::new("/proc/self/task"), "no such thread").unwrap();
            assert!(broker == 0.0 && others > 0.0, "{broker} {others}");
            assert_eq!(sample(BrokerCpu::Unknown).broker, None);
        }
    }

    #[test]
    fn per_million_scales_and_knows_what_it_does_not_know() {
        assert_eq!(per_million(Some(0.5), 2_000_000), Some(0.25));
        assert_eq!(per_million(None, 10), None);
        assert_eq!(per_million(Some(1.0), 0), None);
    }
}
