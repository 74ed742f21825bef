//! Length-prefixed framing: a `u32` big-endian length, then that many bytes.
//!
//! ```text
//! +----------------+---------------------------+
//! | length: u32 BE | payload: `length` bytes   |
//! +----------------+---------------------------+
//! ```
//!
//! The decoder is a two-state machine (`Head`, `Data(len)`). The declared
//! length is checked against the configured maximum *before* any buffer is
//! reserved; "need more bytes" is `Ok(None)`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Bytes in the length prefix.
pub const LENGTH_PREFIX: usize = 4;
/// Default maximum payload size: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// A framing failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The declared (or outgoing) payload is larger than allowed.
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The declared payload length.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Copy)]
enum State {
    Head,
    Data(usize),
}

/// `tokio_util` codec for length-prefixed frames.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    /// Largest payload accepted or sent.
    max_frame_bytes: usize,
    /// Where the decoder is in the current frame.
    state: State,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameCodec {
    /// A codec that refuses payloads over `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes, state: State::Head }
    }

    /// The configured maximum payload size.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Whether part of a frame has been consumed (its length prefix) and
    /// the rest is still awaited. A server uses it, with the bytes still
    /// buffered, to time out a frame that stalls halfway.
    pub fn mid_frame(&self) -> bool {
        matches!(self.state, State::Data(_))
    }

    fn check(&self, size: usize) -> Result<(), FrameError> {
        if size > self.max_frame_bytes {
            return Err(FrameError::TooLarge { size, max: self.max_frame_bytes });
        }
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if let State::Head = self.state {
            if src.len() < LENGTH_PREFIX {
                return Ok(None);
            }
            let len = src.get_u32() as usize;
            // Checked before reserving: a hostile length never allocates.
            self.check(len)?;
            src.reserve(len);
            self.state = State::Data(len);
        }
        let State::Data(len) = self.state else {
            return Ok(None);
        };
        if src.len() < len {
            return Ok(None);
        }
        self.state = State::Head;
        let frame = src.split_to(len).freeze();
        src.reserve(LENGTH_PREFIX);
        Ok(Some(frame))
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(payload.as_ref(), dst)
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        self.check(payload.len())?;
        dst.reserve(LENGTH_PREFIX + payload.len());
        dst.put_u32(payload.len() as u32);
        dst.extend_from_slice(payload);
        Ok(())
    }
}

/// The 4-byte length prefix for a payload of `len` bytes.
pub fn length_prefix(len: usize) -> [u8; LENGTH_PREFIX] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(payload, &mut buf).unwrap();
        buf
    }

    #[test]
    fn round_trip() {
        let mut buf = framed(b"hello");
        assert_eq!(&buf[..4], &[0, 0, 0, 5]);
        let frame = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(&frame[..], b"hello");
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_head_and_body_need_more() {
        let full = framed(b"abcdef");
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        for (i, byte) in full.iter().enumerate() {
            buf.put_u8(*byte);
            let out = codec.decode(&mut buf).unwrap();
            if i + 1 < full.len() {
                assert!(out.is_none(), "frame complete too early at byte {i}");
            } else {
                assert_eq!(&out.unwrap()[..], b"abcdef");
            }
        }
    }

    #[test]
    fn empty_frame_is_a_frame() {
        let mut buf = framed(b"");
        assert_eq!(FrameCodec::default().decode(&mut buf).unwrap().unwrap().len(), 0);
    }

    #[test]
    fn several_frames_in_one_read() {
        let mut buf = framed(b"one");
        buf.extend_from_slice(&framed(b"two"));
        let mut codec = FrameCodec::default();
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"one");
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"two");
        assert!(codec.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn oversized_length_is_rejected_before_reserving() {
        let mut buf = BytesMut::from(&[0xFF, 0xFF, 0xFF, 0xFF][..]);
        let cap_before = buf.capacity();
        let err = FrameCodec::new(1024).decode(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { size: 0xFFFF_FFFF, max: 1024 }));
        assert!(buf.capacity() <= cap_before.max(64));
    }

    proptest::proptest! {
        /// Arbitrary bytes, fed in arbitrary pieces: frames come out no larger
        /// than the maximum, an oversized length is an error, and the decoder
        /// never panics or reserves past the maximum.
        #[test]
        fn arbitrary_streams(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048), cuts in proptest::collection::vec(0usize..2048, 0..8)) {
            let max = 256;
            let mut codec = FrameCodec::new(max);
            let mut buf = BytesMut::new();
            let mut cuts = cuts;
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let mut start = 0;
            'feed: for cut in cuts {
                let cut = cut.min(bytes.len()).max(start);
                buf.extend_from_slice(&bytes[start..cut]);
                start = cut;
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(frame)) => proptest::prop_assert!(frame.len() <= max),
                        Ok(None) => break,
                        Err(FrameError::TooLarge { size, max: m }) => {
                            proptest::prop_assert!(size > m);
                            break 'feed;
                        }
                        Err(e) => proptest::prop_assert!(false, "unexpected {e}"),
                    }
                    proptest::prop_assert!(buf.capacity() <= 2 * (max + LENGTH_PREFIX) + bytes.len());
                }
            }
        }

        /// Valid frames cut at arbitrary points decode to exactly what was sent.
        #[test]
        fn valid_frames_survive_any_split(payloads in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100), 0..10), split in 1usize..64) {
            let mut wire = BytesMut::new();
            for p in &payloads {
                FrameCodec::default().encode(&p[..], &mut wire).unwrap();
            }
            let mut codec = FrameCodec::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for chunk in wire.chunks(split) {
                buf.extend_from_slice(chunk);
                while let Some(frame) = codec.decode(&mut buf).unwrap() {
                    out.push(frame.to_vec());
                }
            }
            proptest::prop_assert_eq!(out, payloads);
        }
    }

    #[test]
    fn exact_maximum_is_accepted_and_one_more_is_not() {
        let mut codec = FrameCodec::new(8);
        let mut buf = BytesMut::new();
        codec.encode(&[0u8; 8][..], &mut buf).unwrap();
        assert!(codec.encode(&[0u8; 9][..], &mut buf).is_err());
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 8);
    }
}
