//! What `sluice produce` reads: stdin split at a delimiter (any byte
//! string), one record per file, or one JSON record per line (the shape
//! [`super::format`] draws). No UTF-8 requirement: records are bytes.
//!
//! The splitter reads stdin in chunks and holds at most one unfinished
//! record plus a chunk; an empty piece after the last delimiter is not a
//! record (input ending in a newline ends its last line).

use std::path::PathBuf;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::common::CliError;
use super::format::{JsonRecord, RecordBytes};

/// Bytes read from stdin at a time.
const CHUNK: usize = 64 * 1024;

/// One record to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Key, value and headers.
    pub bytes: RecordBytes,
    /// Partition asked for by the input (JSON).
    pub partition: Option<u32>,
    /// Timestamp asked for by the input (JSON).
    pub timestamp: Option<i64>,
}

/// Splits a byte stream at `delimiter`.
#[derive(Debug)]
pub struct Splitter<R> {
    reader: R,
    delimiter: Vec<u8>,
    buf: Vec<u8>,
    /// Where the next piece starts in `buf`.
    start: usize,
    /// Bytes of `buf` before this hold no delimiter start.
    scanned: usize,
    eof: bool,
}

impl<R: AsyncRead + Unpin> Splitter<R> {
    /// Splits `reader` at `delimiter` (not empty).
    pub fn new(reader: R, delimiter: Vec<u8>) -> Self {
        Self { reader, delimiter, buf: Vec::new(), start: 0, scanned: 0, eof: false }
    }

    /// The next piece, without its delimiter; `None` at the end.
    ///
    /// # Errors
    /// The reader's.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, CliError> {
        let d = self.delimiter.len();
        loop {
            let from = self.scanned.max(self.start);
            let found = self.buf[from..].windows(d).position(|w| w == self.delimiter.as_slice());
            if let Some(i) = found {
                let at = from + i;
                let piece = self.buf[self.start..at].to_vec();
                self.start = at + d;
                self.scanned = self.start;
                return Ok(Some(piece));
            }
            self.scanned = self.buf.len().saturating_sub(d - 1).max(self.start);
            if self.eof {
                let rest = self.buf.split_off(self.start);
                (self.start, self.scanned) = (0, 0);
                self.buf.clear();
                return Ok((!rest.is_empty()).then_some(rest));
            }
            // Drop the pieces handed out, then read on.
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
            let len = self.buf.len();
            self.buf.resize(len + CHUNK, 0);
            let n = self.reader.read(&mut self.buf[len..]).await?;
            self.buf.truncate(len + n);
            self.eof = n == 0;
        }
    }
}

/// Where records come from.
#[derive(Debug)]
pub enum Source<R> {
    /// Pieces of a stream, split at a key delimiter when one is given.
    Delimited { split: Splitter<R>, key_delimiter: Option<Vec<u8>> },
    /// One JSON record per line.
    Json(Splitter<R>),
    /// One record per file (the whole file its value).
    Files(std::vec::IntoIter<PathBuf>),
}

/// `piece` as a record: split at the first `key_delimiter` into key and
/// value (no key when absent).
fn keyed(piece: Vec<u8>, key_delimiter: Option<&[u8]>) -> RecordBytes {
    let at = key_delimiter
        .filter(|k| !k.is_empty())
        .and_then(|k| piece.windows(k.len()).position(|w| w == k).map(|i| (i, k.len())));
    let (key, value) = match at {
        Some((i, len)) => {
            (Some(Bytes::copy_from_slice(&piece[..i])), Bytes::copy_from_slice(&piece[i + len..]))
        }
        None => (None, Bytes::from(piece)),
    };
    RecordBytes { key, value: Some(value), headers: Vec::new() }
}

impl<R: AsyncRead + Unpin> Source<R> {
    /// The next record; `None` at the end of the input.
    ///
    /// # Errors
    /// Reading failed, or a JSON line is not a record (naming the line).
    pub async fn next(&mut self, line: u64) -> Result<Option<Input>, CliError> {
        let plain = |bytes| Input { bytes, partition: None, timestamp: None };
        match self {
            Self::Delimited { split, key_delimiter } => {
                Ok(split.next().await?.map(|p| plain(keyed(p, key_delimiter.as_deref()))))
            }
            Self::Files(paths) => match paths.next() {
                None => Ok(None),
                Some(path) => {
                    let value = tokio::fs::read(&path)
                        .await
                        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
                    Ok(Some(plain(RecordBytes { key: None, value: Some(value.into()), headers: Vec::new() })))
                }
            },
            Self::Json(split) => loop {
                let Some(text) = split.next().await? else { return Ok(None) };
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let bad = |e: String| CliError::Usage(format!("input line {line}: {e}"));
                let r: JsonRecord = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
                let bytes = r.bytes().map_err(|e| bad(e.to_string()))?;
                return Ok(Some(Input { bytes, partition: r.partition, timestamp: r.timestamp }));
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pieces(input: &[u8], delimiter: &[u8]) -> Vec<Vec<u8>> {
        let mut s = Splitter::new(input, delimiter.to_vec());
        let mut out = Vec::new();
        while let Some(p) = s.next().await.unwrap() {
            out.push(p);
        }
        out
    }

    #[tokio::test]
    async fn splits_at_any_byte_string() {
        assert_eq!(pieces(b"a\nb\n\nc", b"\n").await, [&b"a"[..], b"b", b"", b"c"]);
        assert_eq!(pieces(b"a\n", b"\n").await, [b"a"]);
        assert_eq!(pieces(b"x\xff--y--", b"--").await, [&b"x\xff"[..], b"y"]);
        let big: Vec<u8> = (0..200_000u32).flat_map(|i| [(i % 30) as u8, 0x1e]).collect();
        assert_eq!(pieces(&big, b"\x1e").await.len(), 200_000);
    }

    #[test]
    fn a_key_delimiter_splits_at_its_first_occurrence() {
        let r = keyed(b"k:v:w".to_vec(), Some(b":"));
        assert_eq!((r.key.as_deref(), r.value.as_deref()), (Some(&b"k"[..]), Some(&b"v:w"[..])));
        let r = keyed(b"plain".to_vec(), Some(b":"));
        assert_eq!((r.key, r.value.as_deref()), (None, Some(&b"plain"[..])));
    }
}
