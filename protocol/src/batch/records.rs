//! Zero-copy iteration over a batch's records.
//!
//! ```text
//! record:  length varint            bytes of the rest of the record
//!          attributes i8            unused, 0
//!          timestamp_delta varlong  ms after the batch's base timestamp
//!          offset_delta varint      index of the record in the batch
//!          key_len varint           -1 = null key
//!          key                      key_len bytes
//!          value_len varint         -1 = null value
//!          value                    value_len bytes
//!          header_count varint
//!          headers                  header_count × (key_len varint ≥ 0, key,
//!                                                  value_len varint (-1 = null), value)
//! ```
//!
//! (Kafka's record format inside a RecordBatch v2; varints are zigzag.)
//!
//! [`RecordIter`] checks every field as it goes and stops at the first
//! error: a length out of range, an offset delta that is not the record's
//! index, bytes left in a record, or a count that disagrees with the header.

use bytes::Bytes;

use super::{varint, BatchError, BatchHeader};

/// The (decompressed) records section of one batch, with what is needed to
/// give records their absolute offsets and timestamps.
#[derive(Debug, Clone)]
pub struct Records {
    /// The records section, uncompressed.
    data: Bytes,
    /// From the batch header.
    base_offset: u64,
    /// From the batch header.
    first_timestamp: i64,
    /// `Some(max_timestamp)` when the batch uses log-append time.
    log_append_time: Option<i64>,
    /// From the batch header.
    count: u32,
}

impl Records {
    pub(super) fn new(data: Bytes, header: &BatchHeader) -> Self {
        Self {
            data,
            base_offset: header.base_offset,
            first_timestamp: header.first_timestamp,
            log_append_time: header.is_log_append_time().then_some(header.max_timestamp),
            count: header.record_count,
        }
    }

    /// Number of records the header declares.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether the header declares no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Borrowing iterator over the records.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter { records: self, pos: 0, index: 0, done: false }
    }

    /// A `Bytes` for a slice of this section, sharing its memory.
    pub fn share(&self, slice: &[u8]) -> Bytes {
        self.data.slice_ref(slice)
    }

    /// An owned copy-free record (keys and values share this section).
    pub fn to_owned_record(&self, r: &RecordRef<'_>) -> OwnedRecord {
        OwnedRecord {
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.map(|k| self.share(k)),
            value: r.value.map(|v| self.share(v)),
            headers: if r.headers.left == 0 {
                Vec::new()
            } else {
                r.headers
                    .clone()
                    .map(|h| OwnedHeader { key: self.share(h.key), value: h.value.map(|v| self.share(v)) })
                    .collect()
            },
        }
    }

    /// All records as owned values, sharing this section's memory.
    pub fn to_owned_records(&self) -> Result<Vec<OwnedRecord>, BatchError> {
        self.iter().map(|r| r.map(|r| self.to_owned_record(&r))).collect()
    }
}

/// One record, borrowing from its batch.
#[derive(Debug, Clone)]
pub struct RecordRef<'a> {
    /// Absolute offset.
    pub offset: u64,
    /// Timestamp in ms (the batch's log-append time when it uses that).
    pub timestamp: i64,
    /// Key; `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// Value; `None` for a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// Headers, in order.
    pub headers: HeaderIter<'a>,
}

/// A record header, borrowing from its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRef<'a> {
    /// Header key (not null).
    pub key: &'a [u8],
    /// Header value; `None` for null.
    pub value: Option<&'a [u8]>,
}

/// A record whose fields share the batch's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    /// Absolute offset.
    pub offset: u64,
    /// Timestamp in ms.
    pub timestamp: i64,
    /// Key; `None` for a null key.
    pub key: Option<Bytes>,
    /// Value; `None` for a null value.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<OwnedHeader>,
}

/// An owned record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedHeader {
    /// Header key.
    pub key: Bytes,
    /// Header value; `None` for null.
    pub value: Option<Bytes>,
}

/// Iterator over a record's headers (already checked by [`RecordIter`]).
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    /// The headers' bytes.
    buf: &'a [u8],
    /// Next byte.
    pos: usize,
    /// Headers left.
    left: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = HeaderRef<'a>;

    fn next(&mut self) -> Option<HeaderRef<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut c = Cursor { buf: self.buf, pos: self.pos, record: 0 };
        let key = c.nullable("").ok()??;
        let value = c.nullable("").ok()?;
        self.pos = c.pos;
        Some(HeaderRef { key, value })
    }
}

/// Checking iterator over [`Records`].
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    /// What is iterated.
    records: &'a Records,
    /// Next byte of the records section.
    pos: usize,
    /// Index of the next record.
    index: u32,
    /// Set after the last record or the first error.
    done: bool,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordRef<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let data: &'a [u8] = &self.records.data;
        if self.index == self.records.count {
            self.done = true;
            return (self.pos != data.len()).then_some(Err(BatchError::RecordCountMismatch {
                declared: self.records.count,
                actual: self.records.count.saturating_add(1),
            }));
        }
        let result = self.parse(data);
        match &result {
            Ok(_) => self.index += 1,
            Err(_) => self.done = true,
        }
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.records.count - self.index) as usize;
        (0, Some(left))
    }
}

impl<'a> RecordIter<'a> {
    fn parse(&mut self, data: &'a [u8]) -> Result<RecordRef<'a>, BatchError> {
        if self.pos >= data.len() {
            return Err(BatchError::RecordCountMismatch { declared: self.records.count, actual: self.index });
        }
        let mut outer = Cursor { buf: data, pos: self.pos, record: self.index };
        let len = outer.varint("record length")?;
        let body_start = outer.pos;
        let body_end = usize::try_from(len)
            .ok()
            .and_then(|len| body_start.checked_add(len))
            .filter(|end| *end <= data.len())
            .ok_or_else(|| outer.error("record length out of range"))?;
        let mut c = Cursor { buf: &data[..body_end], pos: body_start, record: self.index };
        c.u8("record attributes")?;
        let timestamp_delta = c.varint("timestamp delta")?;
        let offset_delta = c.varint("offset delta")?;
        if offset_delta != i64::from(self.index) {
            return Err(c.error("offset delta is not the record's index"));
        }
        let key = c.nullable("key length")?;
        let value = c.nullable("value length")?;
        let header_count = c.varint("header count")?;
        let header_count = u32::try_from(header_count)
            .ok()
            .filter(|n| (*n as usize) <= (body_end - c.pos) / 2)
            .ok_or_else(|| c.error("header count out of range"))?;
        let headers_start = c.pos;
        for _ in 0..header_count {
            c.nullable("header key length")?.ok_or_else(|| c.error("null header key"))?;
            c.nullable("header value length")?;
        }
        if c.pos != body_end {
            return Err(c.error("bytes left over in record"));
        }
        self.pos = body_end;
        let timestamp = self
            .records
            .log_append_time
            .unwrap_or_else(|| self.records.first_timestamp.wrapping_add(timestamp_delta));
        Ok(RecordRef {
            offset: self.records.base_offset.wrapping_add(u64::from(self.index)),
            timestamp,
            key,
            value,
            headers: HeaderIter { buf: &data[headers_start..body_end], pos: 0, left: header_count },
        })
    }
}

/// A bounded cursor inside one record.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    record: u32,
}

impl<'a> Cursor<'a> {
    fn error(&self, reason: &'static str) -> BatchError {
        BatchError::MalformedRecord { record: self.record, position: self.pos, reason }
    }

    #[inline]
    fn u8(&mut self, what: &'static str) -> Result<u8, BatchError> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.error(what))?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    fn varint(&mut self, what: &'static str) -> Result<i64, BatchError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let (v, n) = varint::get(rest).ok_or_else(|| self.error(what))?;
        self.pos += n;
        Ok(v)
    }

    /// A varint length (-1 = null) and that many bytes.
    #[inline]
    fn nullable(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, BatchError> {
        let len = self.varint(what)?;
        if len == -1 {
            return Ok(None);
        }
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| self.pos.checked_add(len))
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| self.error(what))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(Some(out))
    }
}
