//! How `consume` prints a record and how `produce` reads one back: byte
//! strings with escapes (`\n`, `\t`, `\\`, `\0`, `\xHH`), kcat-style format
//! strings (`%t %p %o %T %k %s %h %K %S`), and one JSON object per record.
//!
//! A JSON record is
//!
//! ```text
//! {"topic":"t","partition":0,"offset":7,"timestamp":1700000000000,
//!  "key":"k" | null,"value":"v" | null,"headers":[{"key":"h","value":"x" | null}]}
//! ```
//!
//! When any of its byte strings is not UTF-8, every byte string is base64
//! (standard alphabet, padded) and the object carries `"encoding":"base64"`;
//! `produce --json` reads the same shape (topic and offset ignored).
//! Pure functions: no I/O beyond the writer handed in.

use std::io::Write;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sluice_consumer::ConsumerRecord;

use super::common::CliError;

/// Turns `\n \r \t \\ \0 \xHH` in `s` into bytes; other bytes are kept.
///
/// # Errors
/// [`CliError::Usage`] for a bad `\x` escape or an unknown one.
pub fn unescape(s: &str) -> Result<Vec<u8>, CliError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let next = b.get(i + 1).copied();
        let (byte, used) = match next {
            Some(b'n') => (b'\n', 2),
            Some(b'r') => (b'\r', 2),
            Some(b't') => (b'\t', 2),
            Some(b'0') => (0, 2),
            Some(b'\\') => (b'\\', 2),
            Some(b'x') => {
                let hex = s.get(i + 2..i + 4).and_then(|h| u8::from_str_radix(h, 16).ok());
                (
                    hex.ok_or_else(|| {
                        CliError::Usage(format!("bad escape in `{s}`: \\x needs two hex digits"))
                    })?,
                    4,
                )
            }
            _ => {
                return Err(CliError::Usage(format!(
                    "unknown escape in `{s}` (use \\n \\r \\t \\0 \\\\ \\xHH)"
                )))
            }
        };
        out.push(byte);
        i += used;
    }
    Ok(out)
}

/// One piece of a parsed format string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    Value,
    Headers,
    KeyLen,
    ValueLen,
}

/// A parsed `--format` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format(Vec<Piece>);

impl Format {
    /// Parses `%t %p %o %T %k %s %h %K %S %%` and the escapes of [`unescape`].
    ///
    /// # Errors
    /// [`CliError::Usage`] for an unknown `%` directive or escape.
    pub fn parse(spec: &str) -> Result<Self, CliError> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = spec.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let piece = match chars.next() {
                Some('%') => {
                    text.push('%');
                    continue;
                }
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('T') => Piece::Timestamp,
                Some('k') => Piece::Key,
                Some('s') => Piece::Value,
                Some('h') => Piece::Headers,
                Some('K') => Piece::KeyLen,
                Some('S') => Piece::ValueLen,
                other => {
                    let d = other.map_or_else(String::new, String::from);
                    return Err(CliError::Usage(format!(
                        "unknown format directive `%{d}` (use %t %p %o %T %k %s %h %K %S %%)"
                    )));
                }
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(unescape(&std::mem::take(&mut text))?));
            }
            pieces.push(piece);
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(unescape(&text)?));
        }
        Ok(Self(pieces))
    }

    /// Writes `r` as this format says (a null key or value prints nothing,
    /// its length `-1`; headers as `k=v` joined by commas).
    ///
    /// # Errors
    /// The writer's.
    pub fn write(&self, out: &mut impl Write, r: &ConsumerRecord) -> std::io::Result<()> {
        let len = |b: &Option<Bytes>| b.as_ref().map_or(-1, |b| b.len() as i64);
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.write_all(t)?,
                Piece::Topic => out.write_all(r.topic.as_bytes())?,
                Piece::Partition => write!(out, "{}", r.partition)?,
                Piece::Offset => write!(out, "{}", r.offset)?,
                Piece::Timestamp => write!(out, "{}", r.timestamp)?,
                Piece::Key => out.write_all(r.key.as_deref().unwrap_or_default())?,
                Piece::Value => out.write_all(r.value.as_deref().unwrap_or_default())?,
                Piece::KeyLen => write!(out, "{}", len(&r.key))?,
                Piece::ValueLen => write!(out, "{}", len(&r.value))?,
                Piece::Headers => {
                    for (i, h) in r.headers.iter().enumerate() {
                        out.write_all(if i == 0 { b"" } else { b"," })?;
                        out.write_all(&h.key)?;
                        out.write_all(b"=")?;
                        out.write_all(h.value.as_deref().unwrap_or_default())?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One header of a JSON record.
#[derive(Debug, Serialize, Deserialize)]
pub struct JsonHeader {
    /// Header key (base64 under `"encoding":"base64"`).
    pub key: String,
    /// Header value, `null` for none.
    pub value: Option<String>,
}

/// One record as JSON (the module doc draws it).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct JsonRecord {
    /// Topic (ignored by `produce`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Partition (`produce`: where to write, else the key decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// Offset (ignored by `produce`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Timestamp in ms (`produce`: kept, else the producer's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Key, `null` for none.
    #[serde(default)]
    pub key: Option<String>,
    /// Value, `null` for none.
    #[serde(default)]
    pub value: Option<String>,
    /// Headers in order.
    #[serde(default)]
    pub headers: Vec<JsonHeader>,
    /// `"base64"` when the byte strings are base64, absent for UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

/// The byte strings of a record, decoded from a [`JsonRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBytes {
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

impl JsonRecord {
    /// `r` as JSON: UTF-8 text when every byte string is, else base64.
    pub fn from_record(r: &ConsumerRecord) -> Self {
        let all = [r.key.as_ref(), r.value.as_ref()]
            .into_iter()
            .flatten()
            .chain(r.headers.iter().flat_map(|h| std::iter::once(&h.key).chain(h.value.as_ref())));
        let text = all.into_iter().all(|b| std::str::from_utf8(b).is_ok());
        let enc = |b: &Bytes| if text { String::from_utf8_lossy(b).into_owned() } else { STANDARD.encode(b) };
        Self {
            topic: Some(r.topic.to_string()),
            partition: Some(r.partition),
            offset: Some(r.offset),
            timestamp: Some(r.timestamp),
            key: r.key.as_ref().map(enc),
            value: r.value.as_ref().map(enc),
            headers: r
                .headers
                .iter()
                .map(|h| JsonHeader { key: enc(&h.key), value: h.value.as_ref().map(enc) })
                .collect(),
            encoding: (!text).then(|| "base64".to_owned()),
        }
    }

    /// The byte strings, decoded as `encoding` says.
    ///
    /// # Errors
    /// [`CliError::Usage`] for an unknown encoding or bad base64.
    pub fn bytes(&self) -> Result<RecordBytes, CliError> {
        let base64 = match self.encoding.as_deref() {
            None | Some("utf-8" | "utf8") => false,
            Some("base64") => true,
            Some(other) => return Err(CliError::Usage(format!("unknown encoding `{other}` (use base64)"))),
        };
        let dec = |s: &String| -> Result<Bytes, CliError> {
            if !base64 {
                return Ok(Bytes::from(s.clone().into_bytes()));
            }
            STANDARD.decode(s).map(Bytes::from).map_err(|e| CliError::Usage(format!("bad base64: {e}")))
        };
        let opt = |s: &Option<String>| s.as_ref().map(dec).transpose();
        let headers = self
            .headers
            .iter()
            .map(|h| Ok((dec(&h.key)?, opt(&h.value)?)))
            .collect::<Result<_, CliError>>()?;
        Ok(RecordBytes { key: opt(&self.key)?, value: opt(&self.value)?, headers })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_protocol::batch::OwnedHeader;

    use super::*;

    fn record(key: Option<&[u8]>, value: &[u8]) -> ConsumerRecord {
        ConsumerRecord {
            topic: Arc::from("t"),
            partition: 1,
            offset: 7,
            timestamp: 42,
            key: key.map(Bytes::copy_from_slice),
            value: Some(Bytes::copy_from_slice(value)),
            headers: vec![OwnedHeader {
                key: Bytes::from_static(b"h"),
                value: Some(Bytes::from_static(b"x")),
            }],
        }
    }

    #[test]
    fn escapes_become_bytes() {
        assert_eq!(unescape(r"a\nb\t\\\0\x1e").unwrap(), b"a\nb\t\\\0\x1e");
        assert!(unescape(r"\xZ1").is_err());
        assert!(unescape(r"\q").is_err());
    }

    #[test]
    fn a_format_string_prints_every_field() {
        let f = Format::parse(r"%t/%p@%o %T [%k|%K] %s(%S) %h 100%%\n").unwrap();
        let mut out = Vec::new();
        f.write(&mut out, &record(None, b"v")).unwrap();
        assert_eq!(out, b"t/1@7 42 [|-1] v(1) h=x 100%\n");
        assert!(Format::parse("%q").is_err());
    }

    #[test]
    fn json_is_text_for_utf8_and_base64_otherwise_and_reads_back() {
        let text = JsonRecord::from_record(&record(Some(b"null"), b"v"));
        let line = serde_json::to_string(&text).unwrap();
        assert!(line.contains(r#""key":"null""#) && !line.contains("encoding"), "{line}");
        let none = serde_json::to_string(&JsonRecord::from_record(&record(None, b"v"))).unwrap();
        assert!(none.contains(r#""key":null"#), "{none}");
        let raw = record(Some(b"k"), &[0xff, 0, 1]);
        let bin = JsonRecord::from_record(&raw);
        let line = serde_json::to_string(&bin).unwrap();
        assert!(line.contains(r#""encoding":"base64""#), "{line}");
        let back: JsonRecord = serde_json::from_str(&line).unwrap();
        let b = back.bytes().unwrap();
        assert_eq!((b.key, b.value), (raw.key, raw.value));
        assert_eq!(b.headers, vec![(Bytes::from_static(b"h"), Some(Bytes::from_static(b"x")))]);
    }
}
