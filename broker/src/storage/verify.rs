//! Offline verification of a partition directory (`sluice verify`): walks
//! every segment batch by batch, checks structure, dense offsets and the
//! CRC, and lists what is wrong. Reads only; changes nothing (recovery is
//! the broker's job).

use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use sluice_protocol::batch::{self, BatchHeader, HEADER_LEN};

use super::files::{self, FileName, SegmentFile};

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The segment file.
    pub file: PathBuf,
    /// Byte position in it.
    pub position: u64,
    /// Offset of the batch, when its header could be read.
    pub offset: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

/// What verifying a partition found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segments read.
    pub segments: usize,
    /// Batches that passed every check.
    pub good_batches: u64,
    /// Corrupt batches (bad CRC, bad structure, offsets not dense).
    pub corrupt: Vec<Problem>,
    /// Bytes after the last readable batch of a segment (a torn or
    /// preallocated tail; recovery cuts it).
    pub torn: Vec<Problem>,
    /// Index files that disagree with their log (rebuilt on start).
    pub index_warnings: Vec<Problem>,
    /// Files where recovery kept bytes it could not read (see
    /// `files::quarantine_path`): for the operator to inspect or delete.
    pub quarantined: Vec<Problem>,
}

/// Verifies every segment in `dir`.
pub fn verify_dir(dir: &Path) -> std::io::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)?.filter_map(Result::ok) {
        match files::parse(&entry.file_name().to_string_lossy()) {
            FileName::Segment(base, SegmentFile::Log) => bases.push(base),
            FileName::Quarantined => report.quarantined.push(Problem {
                file: entry.path(),
                position: 0,
                offset: None,
                reason: format!("{} bytes recovery could not read, kept aside", entry.metadata()?.len()),
            }),
            _ => {}
        }
    }
    bases.sort_unstable();
    report.quarantined.sort_by(|a, b| a.file.cmp(&b.file));
    let mut expected: Option<u64> = None;
    for base in bases {
        let path = files::segment_path(dir, base, SegmentFile::Log);
        report.segments += 1;
        if expected.is_some_and(|e| e != base) {
            report.corrupt.push(Problem {
                file: path.clone(),
                position: 0,
                offset: Some(base),
                reason: format!("segment starts at {base}, previous ended at {}", expected.unwrap_or(0)),
            });
        }
        let (next, len) = verify_segment(&path, base, &mut report)?;
        expected = Some(next);
        check_index(dir, base, len, &mut report);
    }
    Ok(report)
}

/// Walks one segment file batch by batch, streaming (a segment can be
/// GiBs; memory stays at the read buffer): structure, CRC and dense
/// offsets from `base`. Returns the offset after the last batch and the
/// file's length.
fn verify_segment(path: &Path, base: u64, report: &mut VerifyReport) -> std::io::Result<(u64, u64)> {
    let file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut chunk = vec![0u8; 1 << 16];
    let mut next = base;
    let mut pos = 0u64;
    while pos < len {
        let problem =
            |reason: String, offset| Problem { file: path.to_owned(), position: pos, offset, reason };
        let mut header = [0u8; HEADER_LEN];
        let got = (len - pos).min(HEADER_LEN as u64) as usize;
        reader.read_exact(&mut header[..got])?;
        let plausible = BatchHeader::parse(&header[..got]).ok().filter(|h| {
            h.total_len() >= HEADER_LEN && pos + h.total_len() as u64 <= len && h.record_count > 0
        });
        let Some(h) = plausible else {
            // Past the last batch: zeros are preallocation, anything else a
            // torn or garbage tail.
            let mut nonzero = header[..got].iter().any(|b| *b != 0);
            while !nonzero {
                let n = reader.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                nonzero = chunk[..n].iter().any(|b| *b != 0);
            }
            if nonzero {
                report.torn.push(problem(format!("{} unreadable bytes at the end", len - pos), None));
            }
            break;
        };
        // The CRC (CRC-32C) covers everything from `attributes` on, streamed.
        let mut computed = batch::crc_append(0, &header[batch::ATTRIBUTES_POS..]);
        let mut left = h.total_len() - HEADER_LEN;
        while left > 0 {
            let n = left.min(chunk.len());
            reader.read_exact(&mut chunk[..n])?;
            computed = batch::crc_append(computed, &chunk[..n]);
            left -= n;
        }
        if computed != h.crc {
            report.corrupt.push(problem(
                format!("crc mismatch: stored {:#010x}, computed {computed:#010x}", h.crc),
                Some(h.base_offset),
            ));
        } else if h.base_offset != next || h.last_offset_delta != h.record_count - 1 {
            report.corrupt.push(problem(
                format!("offsets not dense: batch at {} where {next} was expected", h.base_offset),
                Some(h.base_offset),
            ));
        } else {
            report.good_batches += 1;
        }
        next = h.next_offset().max(next);
        pos += h.total_len() as u64;
    }
    Ok((next, len))
}

fn check_index(dir: &Path, base: u64, log_len: u64, report: &mut VerifyReport) {
    let path = files::segment_path(dir, base, SegmentFile::Index);
    let Ok(index) = fs::read(&path) else {
        report.index_warnings.push(Problem {
            file: path,
            position: 0,
            offset: None,
            reason: "missing (rebuilt on start)".into(),
        });
        return;
    };
    let mut previous: Option<(u32, u32)> = None;
    for (i, e) in index.chunks(8).enumerate() {
        let entry = (e.len() == 8).then(|| {
            (u32::from_be_bytes([e[0], e[1], e[2], e[3]]), u32::from_be_bytes([e[4], e[5], e[6], e[7]]))
        });
        let ok = entry.is_some_and(|(rel, position)| {
            u64::from(position) < log_len && previous.is_none_or(|(prel, ppos)| rel > prel && position > ppos)
        });
        if !ok {
            report.index_warnings.push(Problem {
                file: path.clone(),
                position: (i * 8) as u64,
                offset: None,
                reason: "inconsistent entry (the index is rebuilt from the log on start)".into(),
            });
            return;
        }
        previous = entry;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{DiskSpace, FsyncPolicy, Log, LogConfig};
    use sluice_protocol::batch::BatchBuilder;

    #[test]
    fn finds_flipped_bits_and_bad_indexes_and_nothing_in_good_logs() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            fsync: FsyncPolicy::Never,
            segment_bytes: 8192,
            index_interval_bytes: 512,
            ..LogConfig::default()
        };
        let (log, _) = Log::open(dir.path(), config, DiskSpace::Real).unwrap();
        for i in 0..60u8 {
            let mut b = BatchBuilder::new();
            b.append(0, None, Some(&[i; 200]), &[]);
            log.append(&b.build(), 0).unwrap();
        }
        log.close().unwrap();
        drop(log);
        let clean = verify_dir(dir.path()).unwrap();
        assert!(
            clean.corrupt.is_empty() && clean.torn.is_empty() && clean.index_warnings.is_empty(),
            "{clean:?}"
        );
        assert_eq!(clean.good_batches, 60);
        assert!(clean.segments > 1);

        let first = files::segment_path(dir.path(), 0, SegmentFile::Log);
        let mut bytes = fs::read(&first).unwrap();
        let one = bytes.len() / 30;
        bytes[one * 3 + 100] ^= 0x40; // inside the 4th batch's value
        fs::write(&first, bytes).unwrap();
        fs::write(files::segment_path(dir.path(), 0, SegmentFile::Index), [0xFF; 16]).unwrap();
        let report = verify_dir(dir.path()).unwrap();
        assert_eq!(report.corrupt.len(), 1, "{report:?}");
        assert_eq!(report.corrupt[0].offset, Some(3));
        assert_eq!(report.good_batches, 59, "batches after the corrupt one are still checked");
        assert_eq!(report.index_warnings.len(), 1);

        // A tail of zeros (preallocation) is fine; one stray byte far into
        // it (past the first read buffers) is a torn tail.
        let last = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| match files::parse(&e.unwrap().file_name().to_string_lossy()) {
                FileName::Segment(base, SegmentFile::Log) => Some(base),
                _ => None,
            })
            .max()
            .unwrap();
        let last = files::segment_path(dir.path(), last, SegmentFile::Log);
        let mut bytes = fs::read(&last).unwrap();
        let end = bytes.len();
        bytes.resize(end + 300_000, 0);
        fs::write(&last, &bytes).unwrap();
        assert!(verify_dir(dir.path()).unwrap().torn.is_empty(), "zeros are preallocation");
        bytes[end + 250_000] = 7;
        fs::write(&last, &bytes).unwrap();
        let report = verify_dir(dir.path()).unwrap();
        assert_eq!(report.torn.len(), 1, "{report:?}");
        assert_eq!(report.torn[0].position, end as u64);
        assert_eq!(report.good_batches, 59);
    }
}
