//! The record batch: Kafka's RecordBatch v2, byte for byte, on the native
//! wire, on disk and on the Kafka wire (docs/format.md, DESIGN §4).
//!
//! ```text
//! position  size  field
//!        0     8  base_offset             i64   stamped by the broker; not under the CRC
//!        8     4  batch_length            i32   bytes after this field
//!       12     4  partition_leader_epoch  i32   stamped by the broker; not under the CRC
//!       16     1  magic                   i8    2
//!       17     4  crc                     u32   CRC-32C (Castagnoli) of bytes 21..end
//!       21     2  attributes              i16   bits 0-2 codec, 3 log-append time,
//!                                                4 transactional, 5 control
//!       23     4  last_offset_delta       i32   record_count - 1
//!       27     8  base_timestamp          i64   ms since the epoch (`first_timestamp`)
//!       35     8  max_timestamp           i64
//!       43     8  producer_id             i64   -1 = none
//!       51     2  producer_epoch          i16   -1 = none
//!       53     4  base_sequence           i32   -1 = none
//!       57     4  records_count           i32
//!       61     -  records                 (compressed as a whole when the codec says so)
//! ```
//!
//! A producer builds a batch with [`BatchBuilder`]; the broker checks it with
//! [`RecordBatch::validate`] (and refuses what it does not support with
//! [`RecordBatch::check_producible`]), stamps `base_offset` and
//! `partition_leader_epoch` in place with [`set_base_offset`] and
//! [`set_partition_leader_epoch`] (no CRC recomputation: the CRC starts at
//! `attributes`) and stores the bytes as they are; readers iterate records
//! with [`RecordBatch::records`] without copying keys or values.
//!
//! Invariants: a parsed header always has magic 2 ([`BatchHeader::parse`]
//! refuses anything else); unsigned header fields here (`base_offset`,
//! `batch_length`, `attributes`, `last_offset_delta`, `record_count`) hold
//! the same bits as Kafka's signed ones, and a value that would be negative
//! in Kafka fails the length and count checks.

mod builder;
mod compression;
mod records;
pub mod varint;

pub use builder::BatchBuilder;
pub use compression::Compression;
pub use records::{HeaderIter, HeaderRef, OwnedHeader, OwnedRecord, RecordIter, RecordRef, Records};

use bytes::Bytes;

/// Byte position of `base_offset`.
pub const BASE_OFFSET_POS: usize = 0;
/// Byte position of `batch_length`.
pub const BATCH_LENGTH_POS: usize = 8;
/// Byte position of `partition_leader_epoch`.
pub const PARTITION_LEADER_EPOCH_POS: usize = 12;
/// Byte position of `magic`.
pub const MAGIC_POS: usize = 16;
/// Byte position of `crc`.
pub const CRC_POS: usize = 17;
/// Byte position of `attributes`; the CRC covers from here to the end.
pub const ATTRIBUTES_POS: usize = 21;
/// Byte position of `last_offset_delta`.
pub const LAST_OFFSET_DELTA_POS: usize = 23;
/// Byte position of `base_timestamp` (called `first_timestamp` here).
pub const FIRST_TIMESTAMP_POS: usize = 27;
/// Byte position of `max_timestamp`.
pub const MAX_TIMESTAMP_POS: usize = 35;
/// Byte position of `producer_id`.
pub const PRODUCER_ID_POS: usize = 43;
/// Byte position of `producer_epoch`.
pub const PRODUCER_EPOCH_POS: usize = 51;
/// Byte position of `base_sequence`.
pub const BASE_SEQUENCE_POS: usize = 53;
/// Byte position of `records_count`.
pub const RECORD_COUNT_POS: usize = 57;
/// Size of the batch header; records start here.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batch_length` counts: `base_offset` and `batch_length`.
pub const LOG_OVERHEAD: usize = 12;

/// The only `magic` (record format version) Sluice reads and writes.
pub const MAGIC: i8 = 2;
/// Attribute bits holding the compression codec.
pub const COMPRESSION_MASK: u16 = 0b111;
/// Attribute bit: timestamps are the broker's log-append time.
pub const LOG_APPEND_TIME_FLAG: u16 = 1 << 3;
/// Attribute bit: the batch belongs to a transaction.
pub const TRANSACTIONAL_FLAG: u16 = 1 << 4;
/// Attribute bit: the batch is a control batch (transaction markers).
pub const CONTROL_FLAG: u16 = 1 << 5;
/// `producer_id` of a batch from a non-idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;
/// `producer_epoch` of a batch from a non-idempotent producer.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// `base_sequence` of a batch from a non-idempotent producer.
pub const NO_SEQUENCE: i32 = -1;
/// `partition_leader_epoch` of a batch not yet stamped by a leader (what
/// Kafka's Java producer writes).
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;
/// Default cap on a decompressed records section (64 MiB).
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// `sequence + increment`, wrapping from `i32::MAX` to 0 as Kafka does
/// (`DefaultRecordBatch.incrementSequence`). `sequence` and `increment` are
/// non-negative.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// Why a batch was rejected. Every variant but
/// [`Unsupported`](Self::Unsupported) maps to `CORRUPT_BATCH` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Fewer bytes than a batch header.
    #[error("batch of {have} bytes is shorter than the {need}-byte header")]
    TooShort {
        /// Bytes present.
        have: usize,
        /// Bytes a header needs.
        need: usize,
    },
    /// `magic` is not 2: not a Kafka RecordBatch v2.
    #[error("record batch magic {0} is not supported: only magic 2 (Kafka RecordBatch v2) is")]
    UnsupportedMagic(i8),
    /// `batch_length` disagrees with the bytes present.
    #[error("batch_length says {declared} bytes follow it, but {actual} do")]
    LengthMismatch {
        /// `batch_length` from the header.
        declared: u32,
        /// Bytes actually after the field.
        actual: usize,
    },
    /// The stored CRC does not match the contents.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// `record_count` or `last_offset_delta` disagree with the records.
    #[error("header declares {declared} records but {actual} were found")]
    RecordCountMismatch {
        /// Count in the header.
        declared: u32,
        /// Records parsed.
        actual: u32,
    },
    /// A batch with no records.
    #[error("batch holds no records")]
    Empty,
    /// Attribute bits name no known codec.
    #[error("unknown compression codec {0}")]
    UnknownCompression(u16),
    /// A header field holds an impossible value.
    #[error("invalid batch header: {0}")]
    InvalidHeader(&'static str),
    /// A well-formed batch using a feature Sluice does not support.
    #[error("unsupported batch: {0}")]
    Unsupported(&'static str),
    /// A record is structurally invalid.
    #[error("record {record} at byte {position} of the records section: {reason}")]
    MalformedRecord {
        /// Index of the record in the batch.
        record: u32,
        /// Byte position in the (decompressed) records section.
        position: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Decompression failed.
    #[error("cannot decompress records: {0}")]
    Decompress(&'static str),
    /// Decompressed records would exceed the allowed size.
    #[error("decompressed records exceed the maximum of {max} bytes (at least {size})")]
    DecompressedTooLarge {
        /// Declared uncompressed size, or the bytes produced when the
        /// stream was cut off (then `max + 1`).
        size: usize,
        /// The limit.
        max: usize,
    },
}

fn be_u16(b: &[u8], pos: usize) -> u16 {
    u16::from_be_bytes([b[pos], b[pos + 1]])
}
fn be_u32(b: &[u8], pos: usize) -> u32 {
    u32::from_be_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]])
}
fn be_u64(b: &[u8], pos: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[pos..pos + 8]);
    u64::from_be_bytes(a)
}

/// The fixed header fields of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Bytes after the `batch_length` field.
    pub batch_length: u32,
    /// Epoch of the leader that appended the batch (stamped by the broker).
    pub partition_leader_epoch: i32,
    /// CRC-32C of bytes [`ATTRIBUTES_POS`]..end.
    pub crc: u32,
    /// Codec, timestamp-type, transactional and control bits.
    pub attributes: u16,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: u32,
    /// Timestamp of the first record (ms): Kafka's `baseTimestamp`.
    pub first_timestamp: i64,
    /// Largest record timestamp (ms).
    pub max_timestamp: i64,
    /// Idempotent producer id, or [`NO_PRODUCER_ID`].
    pub producer_id: i64,
    /// Producer epoch, or [`NO_PRODUCER_EPOCH`].
    pub producer_epoch: i16,
    /// Sequence number of the first record, or [`NO_SEQUENCE`].
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: u32,
}

impl BatchHeader {
    /// Parses the first [`HEADER_LEN`] bytes of `buf`; refuses a `magic`
    /// other than 2.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::TooShort { have: buf.len(), need: HEADER_LEN });
        }
        let magic = buf[MAGIC_POS] as i8;
        if magic != MAGIC {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        Ok(Self {
            base_offset: be_u64(buf, BASE_OFFSET_POS),
            batch_length: be_u32(buf, BATCH_LENGTH_POS),
            partition_leader_epoch: be_u32(buf, PARTITION_LEADER_EPOCH_POS) as i32,
            crc: be_u32(buf, CRC_POS),
            attributes: be_u16(buf, ATTRIBUTES_POS),
            last_offset_delta: be_u32(buf, LAST_OFFSET_DELTA_POS),
            first_timestamp: be_u64(buf, FIRST_TIMESTAMP_POS) as i64,
            max_timestamp: be_u64(buf, MAX_TIMESTAMP_POS) as i64,
            producer_id: be_u64(buf, PRODUCER_ID_POS) as i64,
            producer_epoch: be_u16(buf, PRODUCER_EPOCH_POS) as i16,
            base_sequence: be_u32(buf, BASE_SEQUENCE_POS) as i32,
            record_count: be_u32(buf, RECORD_COUNT_POS),
        })
    }

    /// Total bytes of the batch, from `batch_length`.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset.saturating_add(u64::from(self.last_offset_delta))
    }

    /// Offset after the last record.
    pub fn next_offset(&self) -> u64 {
        self.last_offset().saturating_add(1)
    }

    /// The compression codec.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes)
    }

    /// Whether the broker's append time replaces record timestamps.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & LOG_APPEND_TIME_FLAG != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    /// Whether the batch is a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    /// Whether the batch comes from an idempotent producer.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id != NO_PRODUCER_ID
    }

    /// Sequence number of the last record (wrapping as Kafka does).
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        increment_sequence(self.base_sequence, self.last_offset_delta.min(i32::MAX as u32) as i32)
    }
}

/// Total length of the batch at the front of `buf`, from its `batch_length`,
/// or `None` when fewer than [`LOG_OVERHEAD`] bytes are there.
pub fn peek_total_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= LOG_OVERHEAD).then(|| LOG_OVERHEAD + be_u32(buf, BATCH_LENGTH_POS) as usize)
}

/// Writes `base_offset` into a batch in place. The CRC does not cover it.
///
/// # Panics
/// If `batch` is shorter than 8 bytes (callers hold validated batches).
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[BASE_OFFSET_POS..BASE_OFFSET_POS + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes `partition_leader_epoch` into a batch in place. The CRC does not
/// cover it.
///
/// # Panics
/// If `batch` is shorter than 16 bytes (callers hold validated batches).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH_POS..PARTITION_LEADER_EPOCH_POS + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks a validated batch as using log-append time `timestamp`: sets the
/// attribute bit and both timestamps, then recomputes the CRC.
///
/// # Panics
/// If `batch` is shorter than [`HEADER_LEN`] (callers hold validated batches).
pub fn set_log_append_time(batch: &mut [u8], timestamp: i64) {
    let attributes = be_u16(batch, ATTRIBUTES_POS) | LOG_APPEND_TIME_FLAG;
    batch[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[FIRST_TIMESTAMP_POS..FIRST_TIMESTAMP_POS + 8].copy_from_slice(&timestamp.to_be_bytes());
    batch[MAX_TIMESTAMP_POS..MAX_TIMESTAMP_POS + 8].copy_from_slice(&timestamp.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
}

/// CRC-32C of everything from `attributes` on (hardware accelerated).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_POS.min(batch.len())..])
}

/// The batch CRC (CRC-32C) continued over `bytes`: a batch's CRC streamed
/// in pieces is `crc_append(crc_append(0, first), second)`, for readers that
/// do not hold the batch in one slice (`sluice verify`).
pub fn crc_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// A whole batch, length-checked, over shared bytes.
#[derive(Debug, Clone)]
pub struct RecordBatch {
    /// The batch, exactly `header.total_len()` bytes.
    bytes: Bytes,
    /// Its parsed header.
    header: BatchHeader,
}

impl RecordBatch {
    /// Wraps exactly one batch. Checks the header is present and that
    /// `batch_length` matches `bytes`; the CRC is checked by
    /// [`verify_crc`](Self::verify_crc) or [`validate`](Self::validate).
    pub fn new(bytes: Bytes) -> Result<Self, BatchError> {
        let header = BatchHeader::parse(&bytes)?;
        let actual = bytes.len() - LOG_OVERHEAD;
        if header.batch_length as usize != actual {
            return Err(BatchError::LengthMismatch { declared: header.batch_length, actual });
        }
        Ok(Self { bytes, header })
    }

    /// The header fields.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch's bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The batch's bytes, by value.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Checks the stored CRC against the contents.
    pub fn verify_crc(&self) -> Result<(), BatchError> {
        let computed = compute_crc(&self.bytes);
        if computed != self.header.crc {
            return Err(BatchError::CrcMismatch { stored: self.header.crc, computed });
        }
        Ok(())
    }

    /// Full validation, as the broker does on produce: CRC, codec, producer
    /// fields, and every record's structure, with counts and offset deltas
    /// matching the header. Magic was checked by [`new`](Self::new).
    pub fn validate(&self, max_decompressed: usize) -> Result<(), BatchError> {
        self.verify_crc()?;
        let h = &self.header;
        if h.record_count == 0 {
            return Err(BatchError::Empty);
        }
        if h.record_count > i32::MAX as u32 || h.last_offset_delta != h.record_count - 1 {
            return Err(BatchError::RecordCountMismatch {
                declared: h.record_count,
                actual: h.last_offset_delta.saturating_add(1),
            });
        }
        if h.is_idempotent() && (h.producer_id < 0 || h.producer_epoch < 0 || h.base_sequence < 0) {
            return Err(BatchError::InvalidHeader(
                "an idempotent batch needs a non-negative producer id, epoch and base sequence",
            ));
        }
        // The iterator checks every record, the count and trailing bytes.
        let records = self.records_with_limit(max_decompressed)?;
        records.iter().try_for_each(|record| record.map(drop))
    }

    /// Refuses what a producer may send in Kafka but Sluice does not
    /// support yet: transactional and control batches.
    pub fn check_producible(&self) -> Result<(), BatchError> {
        if self.header.is_control() {
            return Err(BatchError::Unsupported("control batches come from brokers, not producers"));
        }
        if self.header.is_transactional() {
            return Err(BatchError::Unsupported(
                "transactional batches: Sluice does not support transactions yet",
            ));
        }
        Ok(())
    }

    /// The records, decompressed when needed (up to
    /// [`DEFAULT_MAX_DECOMPRESSED_BYTES`]). Does not check the CRC.
    pub fn records(&self) -> Result<Records, BatchError> {
        self.records_with_limit(DEFAULT_MAX_DECOMPRESSED_BYTES)
    }

    /// As [`records`](Self::records) with an explicit decompression limit.
    pub fn records_with_limit(&self, max_decompressed: usize) -> Result<Records, BatchError> {
        let section = self.bytes.slice(HEADER_LEN..);
        let data = match self.header.compression()? {
            Compression::None => section,
            codec => Bytes::from(codec.decompress(&section, max_decompressed)?),
        };
        Ok(Records::new(data, &self.header))
    }
}

/// Splits a buffer holding whole batches back to back (a fetch response's
/// records, a segment slice) into batches. Stops with an error at the first
/// batch whose length is inconsistent; a trailing partial batch is an error.
pub fn split_batches(mut buf: Bytes) -> impl Iterator<Item = Result<RecordBatch, BatchError>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let total = match peek_total_len(&buf) {
            Some(total) if total >= HEADER_LEN && total <= buf.len() => total,
            _ => {
                let have = buf.len();
                buf.clear();
                return Some(Err(BatchError::TooShort { have, need: HEADER_LEN.max(have + 1) }));
            }
        };
        Some(RecordBatch::new(buf.split_to(total)))
    })
}

#[cfg(test)]
mod tests;
