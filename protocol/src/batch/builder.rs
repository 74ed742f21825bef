//! Building a batch record by record. Records are encoded straight into one
//! buffer (a `Vec`: appending is a capacity check and a copy) behind a
//! reserved header; `build` compresses the records section if
//! asked, fills the header and computes the CRC. One allocation per batch.

use bytes::{BufMut, Bytes};

use super::{
    compute_crc, varint, Compression, HeaderRef, CRC_POS, HEADER_LEN, LOG_OVERHEAD, MAGIC,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};

/// Bytes of a record's prefix at most: length (5), attributes (1),
/// timestamp delta (10), offset delta (5), key length (5), value length
/// (5), rounded up.
const PREFIX_MAX: usize = 32;

/// Accumulates records into one batch.
#[derive(Debug)]
pub struct BatchBuilder {
    /// Header space followed by the encoded records.
    buf: Vec<u8>,
    /// Records appended.
    count: u32,
    /// Timestamp of the first record; deltas are relative to it.
    first_timestamp: i64,
    /// Largest timestamp seen.
    max_timestamp: i64,
    /// Codec applied by `build`.
    compression: Compression,
    /// Idempotence fields copied into the header.
    producer_id: i64,
    /// See `producer_id`.
    producer_epoch: i16,
    /// See `producer_id`.
    base_sequence: i32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::with_capacity(4096)
    }
}

impl BatchBuilder {
    /// An empty, uncompressed batch from a non-idempotent producer.
    pub fn new() -> Self {
        Self::default()
    }

    /// As [`new`](Self::new), reserving `capacity` bytes up front.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_buffer(Vec::with_capacity(capacity.max(HEADER_LEN)))
    }

    /// As [`new`](Self::new), encoding into `buf` (cleared first): a
    /// caller that recycles the buffers of built batches (see
    /// [`reclaim`](Self::reclaim)) writes into pages it has touched
    /// before, instead of fresh ones the kernel must fault in and zero.
    pub fn with_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.resize(HEADER_LEN, 0);
        Self {
            buf,
            count: 0,
            first_timestamp: 0,
            max_timestamp: i64::MIN,
            compression: Compression::None,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
        }
    }

    /// Sets the codec used by [`build`](Self::build).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Marks the batch as sent by idempotent producer `id`/`epoch`, its first
    /// record carrying sequence number `base_sequence`.
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Records appended so far.
    pub fn record_count(&self) -> u32 {
        self.count
    }

    /// Whether no record was appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Uncompressed size of the batch so far, header included.
    pub fn size_in_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes a record would add to the batch.
    pub fn record_size(
        timestamp_delta: i64,
        offset_delta: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
    ) -> usize {
        let body = body_len(timestamp_delta, offset_delta, key, value, headers);
        varint::len(body as i64) + body
    }

    /// Bytes of a record's body besides its two deltas (attributes, key,
    /// value, headers): what [`append_fixed`](Self::append_fixed) takes, so
    /// a caller that sized the record already does not size it twice.
    pub fn fixed_len(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[HeaderRef<'_>]) -> usize {
        1 + nullable_len(key)
            + nullable_len(value)
            + varint::len(headers.len() as i64)
            + headers.iter().map(|h| nullable_len(Some(h.key)) + nullable_len(h.value)).sum::<usize>()
    }

    /// Appends a record.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
    ) {
        self.append_fixed(timestamp, key, value, headers, Self::fixed_len(key, value, headers));
    }

    /// Appends a record whose [`fixed_len`](Self::fixed_len) is `fixed`.
    pub fn append_fixed(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
        fixed: usize,
    ) {
        if self.count == 0 {
            self.first_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let delta = timestamp.wrapping_sub(self.first_timestamp);
        let body = fixed + varint::len(delta) + varint::len(i64::from(self.count));
        debug_assert_eq!(body, body_len(delta, self.count, key, value, headers));
        let buf = &mut self.buf;
        // Room for the whole record, and for the prefix's fixed-size copy.
        buf.reserve((body + varint::MAX_VARINT_LEN).max(PREFIX_MAX));
        // Length, attributes (0, the same byte as varint 0), deltas and the
        // key's length (with the value's length too when there is no key)
        // are encoded in place into a zeroed fixed-size block (no `memcpy`
        // call for a few bytes), then cut to the bytes used; then the key,
        // the value, and the headers. In place, not on the stack: a block
        // written byte by byte and then reloaded whole to be copied stalls
        // the reload, on every record.
        let start = buf.len();
        buf.extend_from_slice(&[0u8; PREFIX_MAX]);
        let prefix = &mut buf[start..];
        let mut n = varint::encode_at(prefix, 0, body as i64);
        n = varint::encode_at(prefix, n + 1, delta);
        n = varint::encode_at(prefix, n, i64::from(self.count));
        n = varint::encode_at(prefix, n, nullable_len_field(key));
        if key.is_none() {
            n = varint::encode_at(prefix, n, nullable_len_field(value));
        }
        buf.truncate(start + n);
        if let Some(key) = key {
            buf.extend_from_slice(key);
            put_varints(buf, [nullable_len_field(value)]);
        }
        if let Some(value) = value {
            buf.extend_from_slice(value);
        }
        if headers.len() < 64 {
            buf.push((headers.len() as u8) << 1); // a one-byte varint
        } else {
            varint::put(buf, headers.len() as i64);
        }
        for h in headers {
            put_nullable(buf, Some(h.key));
            put_nullable(buf, h.value);
        }
        self.count += 1;
    }

    /// The buffer of a built batch back, for [`with_buffer`](Self::with_buffer):
    /// `None` while other handles to it live (a write or a retry still
    /// holds it).
    pub fn reclaim(batch: Bytes) -> Option<Vec<u8>> {
        batch.try_into_mut().ok().map(Vec::from)
    }

    /// Finishes the batch: `base_offset` 0 and `partition_leader_epoch` -1
    /// (the broker stamps both), magic 2, CRC-32C set.
    pub fn build(self) -> Bytes {
        let mut buf = self.buf;
        if self.compression != Compression::None {
            let packed = self.compression.compress(&buf[HEADER_LEN..]);
            buf.truncate(HEADER_LEN);
            buf.extend_from_slice(&packed);
        }
        let batch_length = (buf.len() - LOG_OVERHEAD) as u32;
        let max_timestamp = if self.count == 0 { self.first_timestamp } else { self.max_timestamp };
        let mut header = &mut buf[..HEADER_LEN];
        header.put_u64(0);
        header.put_u32(batch_length);
        header.put_i32(NO_PARTITION_LEADER_EPOCH);
        header.put_i8(MAGIC);
        header.put_u32(0); // crc, below
        header.put_u16(self.compression as u16);
        header.put_u32(self.count.saturating_sub(1));
        header.put_i64(self.first_timestamp);
        header.put_i64(max_timestamp);
        header.put_i64(self.producer_id);
        header.put_i16(self.producer_epoch);
        header.put_i32(self.base_sequence);
        header.put_u32(self.count);
        let crc = compute_crc(&buf);
        buf[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(buf)
    }
}

fn nullable_len(v: Option<&[u8]>) -> usize {
    match v {
        None => varint::len(-1),
        Some(v) => varint::len(v.len() as i64) + v.len(),
    }
}

fn body_len(
    timestamp_delta: i64,
    offset_delta: u32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[HeaderRef<'_>],
) -> usize {
    varint::len(timestamp_delta)
        + varint::len(i64::from(offset_delta))
        + BatchBuilder::fixed_len(key, value, headers)
}

/// The length field of a nullable byte string: -1 for null.
fn nullable_len_field(v: Option<&[u8]>) -> i64 {
    v.map_or(-1, |v| v.len() as i64)
}

/// Appends up to six varints with one copy (encoded on the stack first).
#[inline]
fn put_varints<const N: usize>(buf: &mut Vec<u8>, values: [i64; N]) {
    let mut scratch = [0u8; 6 * varint::MAX_VARINT_LEN];
    let mut used = 0;
    for v in values {
        used = varint::encode_at(&mut scratch, used, v);
    }
    buf.extend_from_slice(&scratch[..used]);
}

fn put_nullable(buf: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => varint::put(buf, -1),
        Some(v) => {
            varint::put(buf, v.len() as i64);
            buf.extend_from_slice(v);
        }
    }
}
