//! Compression of a batch's records section, with Kafka's codecs. The batch
//! header stays uncompressed; only the bytes after `records_count` are
//! compressed, and a compressed batch is stored and served as it is.
//!
//! - gzip (1): a gzip stream (several members are read back to back).
//! - snappy (2): written in the xerial framing Kafka's Java client uses
//!   (`\x82SNAPPY\0`, version and compatible version as `i32`, then chunks
//!   of `i32` length + raw snappy block, 32 KiB of input each); read in that
//!   framing or as one raw snappy block (what some clients write).
//! - lz4 (3): the lz4 *frame* format (independent 64 KiB blocks, no
//!   checksums, like Kafka's Java client).
//! - zstd (4): a zstd frame, read with a streaming decoder: Kafka clients'
//!   frames often do not record their content size.
//!
//! Decompression never produces more than a caller-given maximum: streams
//! are read into a buffer grown by doubling up to `max + 1` bytes and
//! refused past `max`, and sizes declared in the input (raw snappy blocks)
//! are checked before allocating; a hostile batch can not make the broker or
//! a client allocate past the limit (zstd's window is capped by it too,
//! between 2 and 128 MiB).

use std::io::{Read, Write};

use super::BatchError;

/// The codec of a batch, bits 0-2 of `attributes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Records stored as they are.
    #[default]
    None = 0,
    /// gzip.
    Gzip = 1,
    /// snappy (xerial framing).
    Snappy = 2,
    /// lz4 frame.
    Lz4 = 3,
    /// zstd frame.
    Zstd = 4,
}

/// The xerial snappy framing's magic.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// Header: magic, version, compatible version.
const XERIAL_HEADER_LEN: usize = 16;
/// Input bytes per snappy chunk (snappy-java's default block size).
const XERIAL_BLOCK: usize = 32 * 1024;
/// zstd windows accepted: up to the decompression limit (a frame's window
/// is what the decoder allocates, whatever its content), but always 2 MiB
/// (Kafka clients' default level uses at most that) and never past 128 MiB
/// (zstd's own default limit, what Kafka's Java consumer accepts).
const ZSTD_WINDOW_LOG: std::ops::RangeInclusive<u32> = 21..=27;

/// The zstd window log allowed for outputs of at most `max` bytes.
fn zstd_window_log_max(max: usize) -> u32 {
    let log = usize::BITS - max.saturating_sub(1).leading_zeros();
    log.clamp(*ZSTD_WINDOW_LOG.start(), *ZSTD_WINDOW_LOG.end())
}

impl Compression {
    /// The codec for attribute bits 0-2.
    pub fn from_attributes(attributes: u16) -> Result<Self, BatchError> {
        match attributes & super::COMPRESSION_MASK {
            0 => Ok(Self::None),
            1 => Ok(Self::Gzip),
            2 => Ok(Self::Snappy),
            3 => Ok(Self::Lz4),
            4 => Ok(Self::Zstd),
            other => Err(BatchError::UnknownCompression(other)),
        }
    }

    /// Compresses `records` with this codec.
    pub fn compress(self, records: &[u8]) -> Vec<u8> {
        // Writing into a Vec cannot fail; the encoders' only errors are I/O.
        match self {
            Self::None => records.to_vec(),
            Self::Gzip => {
                let out = Vec::with_capacity(records.len() / 2 + 64);
                let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
                let _ = enc.write_all(records);
                enc.finish().unwrap_or_default()
            }
            Self::Snappy => snappy_xerial(records),
            Self::Lz4 => {
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max64KB)
                    .block_mode(lz4_flex::frame::BlockMode::Independent);
                let out = Vec::with_capacity(records.len() / 2 + 64);
                let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
                let _ = enc.write_all(records);
                enc.finish().unwrap_or_default()
            }
            // Level 3 (zstd's default).
            Self::Zstd => zstd::bulk::compress(records, 3).unwrap_or_default(),
        }
    }

    /// Decompresses `data`, refusing outputs larger than `max`.
    pub fn decompress(self, data: &[u8], max: usize) -> Result<Vec<u8>, BatchError> {
        match self {
            Self::None => {
                check_size(data.len(), max)?;
                Ok(data.to_vec())
            }
            Self::Gzip => {
                read_bounded(flate2::read::MultiGzDecoder::new(data), data.len(), max, "invalid gzip stream")
            }
            Self::Snappy => unsnappy(data, max),
            Self::Lz4 => {
                read_bounded(lz4_flex::frame::FrameDecoder::new(data), data.len(), max, "invalid lz4 frame")
            }
            Self::Zstd => {
                let invalid = BatchError::Decompress("invalid zstd frame");
                let mut dec = zstd::stream::read::Decoder::with_buffer(data).map_err(|_| invalid.clone())?;
                dec.window_log_max(zstd_window_log_max(max)).map_err(|_| invalid)?;
                read_bounded(dec, data.len(), max, "invalid zstd frame")
            }
        }
    }
}

fn check_size(size: usize, max: usize) -> Result<(), BatchError> {
    if size > max {
        return Err(BatchError::DecompressedTooLarge { size, max });
    }
    Ok(())
}

/// Reads `r` to its end into a buffer that never grows past `max + 1`
/// bytes; more than `max` is refused.
fn read_bounded(
    mut r: impl Read,
    input_len: usize,
    max: usize,
    invalid: &'static str,
) -> Result<Vec<u8>, BatchError> {
    let limit = max.saturating_add(1);
    let mut buf = vec![0u8; input_len.saturating_mul(4).max(256).min(limit)];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if filled >= limit {
                return Err(BatchError::DecompressedTooLarge { size: filled, max });
            }
            buf.resize(buf.len().saturating_mul(2).min(limit), 0);
        }
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(BatchError::Decompress(invalid)),
        }
    }
    check_size(filled, max)?;
    buf.truncate(filled);
    Ok(buf)
}

/// Snappy in the xerial framing, as Kafka's Java client writes it.
fn snappy_xerial(records: &[u8]) -> Vec<u8> {
    let chunks = records.len().div_ceil(XERIAL_BLOCK);
    let mut out = Vec::with_capacity(
        XERIAL_HEADER_LEN
            + chunks * 4
            + snap::raw::max_compress_len(XERIAL_BLOCK.min(records.len())) * chunks,
    );
    out.extend_from_slice(XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes()); // version
    out.extend_from_slice(&1i32.to_be_bytes()); // compatible version
    let mut enc = snap::raw::Encoder::new();
    for chunk in records.chunks(XERIAL_BLOCK) {
        let at = out.len();
        out.resize(at + 4 + snap::raw::max_compress_len(chunk.len()), 0);
        // Cannot fail: the output has room for the worst case.
        let n = enc.compress(chunk, &mut out[at + 4..]).unwrap_or(0);
        out[at..at + 4].copy_from_slice(&(n as u32).to_be_bytes());
        out.truncate(at + 4 + n);
    }
    out
}

/// Snappy in the xerial framing or as one raw block.
fn unsnappy(data: &[u8], max: usize) -> Result<Vec<u8>, BatchError> {
    let Some(mut rest) = data.strip_prefix(XERIAL_MAGIC) else {
        let mut out = Vec::new();
        unsnappy_block(data, &mut out, max)?;
        return Ok(out);
    };
    rest = rest.get(8..).ok_or(BatchError::Decompress("xerial snappy header cut short"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or(BatchError::Decompress("xerial snappy chunk length cut short"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let block = tail.get(..len).ok_or(BatchError::Decompress("xerial snappy chunk cut short"))?;
        unsnappy_block(block, &mut out, max)?;
        rest = &tail[len..];
    }
    Ok(out)
}

/// Appends one raw snappy block's contents to `out`, checking its declared
/// size against what `max` leaves before allocating.
fn unsnappy_block(block: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), BatchError> {
    let invalid = |_| BatchError::Decompress("invalid snappy block");
    let size = snap::raw::decompress_len(block).map_err(invalid)?;
    let at = out.len();
    check_size(at.saturating_add(size), max)?;
    out.resize(at + size, 0);
    let n = snap::raw::Decoder::new().decompress(block, &mut out[at..]).map_err(invalid)?;
    if n != size {
        return Err(BatchError::Decompress("snappy block shorter than its declared size"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] =
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

    #[test]
    fn round_trips() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 97).to_be_bytes()).collect();
        for c in ALL {
            let packed = c.compress(&data);
            assert_eq!(c.decompress(&packed, data.len()).unwrap(), data, "{c:?}");
            assert!(c.decompress(&packed, data.len() - 1).is_err(), "{c:?} past the limit");
            assert_eq!(c.decompress(&c.compress(&[]), 10).unwrap(), Vec::<u8>::new(), "{c:?} empty");
            if c != Compression::None {
                assert!(packed.len() < data.len() / 2, "{c:?} should compress");
            }
        }
    }

    #[test]
    fn snappy_is_xerial_framed_and_raw_blocks_read_too() {
        let data = vec![7u8; 100_000];
        let packed = Compression::Snappy.compress(&data);
        assert_eq!(&packed[..16], b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01");
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(Compression::Snappy.decompress(&raw, 1 << 20).unwrap(), data);
    }

    #[test]
    fn zstd_without_a_content_size_is_read() {
        let data = vec![3u8; 50_000];
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_contentsize(false).unwrap();
        enc.write_all(&data).unwrap();
        let frame = enc.finish().unwrap();
        assert_eq!(zstd::zstd_safe::get_frame_content_size(&frame).ok().flatten(), None);
        assert_eq!(Compression::Zstd.decompress(&frame, 1 << 20).unwrap(), data);
    }

    #[test]
    fn output_past_the_limit_is_refused() {
        let big = vec![0u8; 4 << 20];
        for c in ALL {
            assert!(
                matches!(
                    c.decompress(&c.compress(&big), 1 << 20),
                    Err(BatchError::DecompressedTooLarge { .. })
                ),
                "{c:?}"
            );
        }
        // A raw snappy block declaring 4 GiB is refused before allocating.
        let mut hostile = Vec::new();
        let mut z = u64::from(u32::MAX);
        while z >= 0x80 {
            hostile.push((z as u8) | 0x80);
            z >>= 7;
        }
        hostile.push(z as u8);
        hostile.extend_from_slice(&[0; 8]);
        assert!(matches!(
            Compression::Snappy.decompress(&hostile, 1 << 20),
            Err(BatchError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn zstd_windows_are_capped_by_the_limit() {
        assert_eq!(zstd_window_log_max(1 << 10), 21);
        assert_eq!(zstd_window_log_max((1 << 24) + 1), 25);
        assert_eq!(zstd_window_log_max(64 << 20), 26);
        assert_eq!(zstd_window_log_max(usize::MAX), 27);
        // A frame whose window exceeds the cap is refused.
        let data = vec![1u8; 1000];
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_contentsize(false).unwrap();
        enc.window_log(24).unwrap();
        enc.write_all(&data).unwrap();
        let frame = enc.finish().unwrap();
        assert!(Compression::Zstd.decompress(&frame, 1 << 20).is_err(), "16 MiB window, 1 MiB limit");
        assert_eq!(Compression::Zstd.decompress(&frame, 16 << 20).unwrap(), data);
    }

    #[test]
    fn garbage_is_an_error() {
        for c in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            assert!(c.decompress(&[1, 0, 0, 0, 0xFF, 0xFF], 1 << 20).is_err(), "{c:?}");
            // Empty input is an error or nothing: never a panic.
            assert!(c.decompress(&[], 1 << 20).map_or(true, |out| out.is_empty()), "{c:?}");
        }
        let mut cut = Compression::Snappy.compress(&[5u8; 100_000]);
        cut.truncate(cut.len() - 3);
        assert!(Compression::Snappy.decompress(&cut, 1 << 20).is_err());
    }
}
