//! Compression of a batch's records section. The batch header stays
//! uncompressed; only the bytes after `record_count` are compressed, and a
//! compressed batch is stored and served as it is.
//!
//! - lz4: an lz4 *block* preceded by the uncompressed size as `u32`
//!   little-endian (lz4_flex's size-prepended block format).
//! - zstd: one zstd frame that records its content size.
//!
//! Decompression refuses to produce more than a caller-given maximum, and
//! learns the size from the input before allocating, so a hostile batch can
//! not make the broker or a client allocate past it.

use super::BatchError;

/// The codec of a batch, bits 0-2 of `attributes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Records stored as they are.
    #[default]
    None = 0,
    /// lz4 block with prepended size.
    Lz4 = 1,
    /// zstd frame.
    Zstd = 2,
}

impl Compression {
    /// The codec for attribute bits 0-2.
    pub fn from_attributes(attributes: u16) -> Result<Self, BatchError> {
        match attributes & super::COMPRESSION_MASK {
            0 => Ok(Self::None),
            1 => Ok(Self::Lz4),
            2 => Ok(Self::Zstd),
            other => Err(BatchError::UnknownCompression(other)),
        }
    }

    /// Compresses `records` with this codec.
    pub fn compress(self, records: &[u8]) -> Vec<u8> {
        match self {
            Self::None => records.to_vec(),
            Self::Lz4 => lz4_flex::block::compress_prepend_size(records),
            // Level 3 (zstd's default). The in-memory encoder cannot fail on
            // valid input; an empty frame would be rejected on read anyway.
            Self::Zstd => zstd::bulk::compress(records, 3).unwrap_or_default(),
        }
    }

    /// Decompresses `data`, refusing outputs larger than `max`.
    pub fn decompress(self, data: &[u8], max: usize) -> Result<Vec<u8>, BatchError> {
        match self {
            Self::None => Ok(data.to_vec()),
            Self::Lz4 => {
                let Some(size) = data.get(..4) else {
                    return Err(BatchError::Decompress("lz4 block shorter than its size prefix"));
                };
                let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
                check_size(size, max)?;
                let mut out = vec![0u8; size];
                let n = lz4_flex::block::decompress_into(&data[4..], &mut out)
                    .map_err(|_| BatchError::Decompress("invalid lz4 block"))?;
                if n != size {
                    return Err(BatchError::Decompress("lz4 block shorter than its declared size"));
                }
                Ok(out)
            }
            Self::Zstd => {
                let size = zstd::zstd_safe::get_frame_content_size(data)
                    .ok()
                    .flatten()
                    .ok_or(BatchError::Decompress("zstd frame without a known content size"))?;
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                check_size(size, max)?;
                let out = zstd::bulk::decompress(data, size)
                    .map_err(|_| BatchError::Decompress("invalid zstd frame"))?;
                if out.len() != size {
                    return Err(BatchError::Decompress("zstd frame shorter than its content size"));
                }
                Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let data: Vec<u8> = (0..10_000u32).flat_map(|i| (i % 97).to_be_bytes()).collect();
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let packed = c.compress(&data);
            assert_eq!(c.decompress(&packed, data.len()).unwrap(), data, "{c:?}");
            if c != Compression::None {
                assert!(packed.len() < data.len() / 2, "{c:?} should compress");
            }
        }
    }

    #[test]
    fn declared_size_past_the_limit_is_refused_before_allocating() {
        let mut hostile = u32::MAX.to_le_bytes().to_vec();
        hostile.extend_from_slice(&[0; 8]);
        assert!(matches!(
            Compression::Lz4.decompress(&hostile, 1 << 20),
            Err(BatchError::DecompressedTooLarge { .. })
        ));
        let big = Compression::Zstd.compress(&vec![0u8; 2 << 20]);
        assert!(matches!(
            Compression::Zstd.decompress(&big, 1 << 20),
            Err(BatchError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error() {
        for c in [Compression::Lz4, Compression::Zstd] {
            assert!(c.decompress(&[1, 0, 0, 0, 0xFF, 0xFF], 1 << 20).is_err());
            assert!(c.decompress(&[], 1 << 20).is_err());
        }
    }
}
