//! Offline verification of a partition directory (`sluice verify`): walks
//! every segment batch by batch, checks structure, dense offsets and the
//! CRC, and lists what is wrong. Reads only; changes nothing (recovery is
//! the broker's job).

use std::fs;
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
}

/// Verifies every segment in `dir`.
pub fn verify_dir(dir: &Path) -> std::io::Result<VerifyReport> {
    let mut bases: Vec<u64> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| match files::parse(&e.file_name().to_string_lossy()) {
            FileName::Segment(base, SegmentFile::Log) => Some(base),
            _ => None,
        })
        .collect();
    bases.sort_unstable();
    let mut report = VerifyReport::default();
    let mut expected: Option<u64> = None;
    for base in bases {
        let path = files::segment_path(dir, base, SegmentFile::Log);
        let data = fs::read(&path)?;
        report.segments += 1;
        if expected.is_some_and(|e| e != base) {
            report.corrupt.push(Problem {
                file: path.clone(),
                position: 0,
                offset: Some(base),
                reason: format!("segment starts at {base}, previous ended at {}", expected.unwrap_or(0)),
            });
        }
        let mut next = base;
        let mut pos = 0usize;
        while pos < data.len() {
            let problem =
                |reason: String, offset| Problem { file: path.clone(), position: pos as u64, offset, reason };
            let header = BatchHeader::parse(&data[pos..]).ok();
            let plausible = header.filter(|h| {
                h.total_len() >= HEADER_LEN && pos + h.total_len() <= data.len() && h.record_count > 0
            });
            let Some(h) = plausible else {
                if data[pos..].iter().any(|b| *b != 0) {
                    report
                        .torn
                        .push(problem(format!("{} unreadable bytes at the end", data.len() - pos), None));
                }
                break;
            };
            let bytes = &data[pos..pos + h.total_len()];
            let computed = batch::compute_crc(bytes);
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
            pos += h.total_len();
        }
        expected = Some(next);
        check_index(dir, base, data.len(), &mut report);
    }
    Ok(report)
}

fn check_index(dir: &Path, base: u64, log_len: usize, report: &mut VerifyReport) {
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
            (position as usize) < log_len && previous.is_none_or(|(prel, ppos)| rel > prel && position > ppos)
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
    }
}
