//! Primitive wire encoding: a bounds-checked, zero-copy [`Reader`] over a
//! received frame and a [`Writer`] that builds a frame as a list of `Bytes`
//! chunks, so large payloads (record batches) are referenced, not copied.
//!
//! Every integer is big-endian. A *short string* is a `u16` byte length then
//! UTF-8; a *bytes* field is a `u32` length then raw bytes; an *array* is a
//! `u32` element count then the elements. Decoding never allocates more than
//! the bytes actually present: an array count is checked against the bytes
//! that remain before anything is reserved.
//!
//! Decoding is also bounded in what it builds: an element in memory can be
//! much larger than on the wire (an empty string is 2 bytes on the wire and a
//! 24-byte `String`), so each [`Reader`] has an allocation budget of
//! [`DECODE_AMPLIFICATION`] times the message's size plus
//! [`DECODE_SLACK_BYTES`]. Every array charges `count × size_of::<T>()`
//! before reserving, and every string its length; a message that would
//! decode past its budget is refused with [`WireError::DecodeBudget`]. So
//! whatever a peer sends, decoding one message of `n` bytes asks the
//! allocator for at most `8 n + 64 KiB` bytes (the allocator's own rounding
//! and headers come on top).

use bytes::{BufMut, Bytes, BytesMut};

/// A malformed message: what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The message ended before a field was complete.
    #[error("unexpected end of message at byte {position}: need {need} bytes, have {have}")]
    UnexpectedEof {
        /// Byte position of the field in the message.
        position: usize,
        /// Bytes the field needs.
        need: usize,
        /// Bytes left in the message.
        have: usize,
    },
    /// A string field is not UTF-8.
    #[error("string at byte {position} is not valid UTF-8")]
    InvalidUtf8 {
        /// Byte position of the string's first byte.
        position: usize,
    },
    /// An array declares more elements than the remaining bytes could hold.
    #[error("{field}: {count} elements declared but only {remaining} bytes remain")]
    CountTooLarge {
        /// Which array.
        field: &'static str,
        /// The declared element count.
        count: u32,
        /// Bytes left in the message.
        remaining: usize,
    },
    /// A field holds a value outside its domain (an unknown enum tag, say).
    #[error("{field}: invalid value {value}")]
    InvalidValue {
        /// Which field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// Decoding would build more than the message's allocation budget.
    #[error("{field}: decoding needs {need} more bytes of memory but the message's budget has {left} left ({DECODE_AMPLIFICATION}× its size + {DECODE_SLACK_BYTES})")]
    DecodeBudget {
        /// Which field.
        field: &'static str,
        /// Bytes the field would allocate.
        need: usize,
        /// Bytes of budget left.
        left: usize,
    },
    /// An array has more elements than its field allows.
    #[error("{field}: {count} elements exceed the limit of {max}")]
    TooManyElements {
        /// Which array.
        field: &'static str,
        /// The declared element count.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes were left over after the message was decoded.
    #[error("{trailing} unexpected trailing bytes after {what}")]
    TrailingBytes {
        /// The message decoded.
        what: &'static str,
        /// How many bytes were left.
        trailing: usize,
    },
}

/// A message decodes into at most this many times its size in memory
/// (plus [`DECODE_SLACK_BYTES`]).
pub const DECODE_AMPLIFICATION: usize = 8;
/// Allocation every message may use whatever its size, so small messages
/// with many short fields always decode.
pub const DECODE_SLACK_BYTES: usize = 64 << 10;

/// A cursor over one received message. Slices handed out share the frame's
/// allocation (`Bytes::slice`), so a record batch is never copied here.
#[derive(Debug, Clone)]
pub struct Reader {
    /// The whole message.
    buf: Bytes,
    /// Next byte to read.
    pos: usize,
    /// Bytes decoding may still allocate (arrays and strings).
    budget: usize,
}

impl Reader {
    /// A reader positioned at the start of `buf`, with an allocation budget
    /// of [`DECODE_AMPLIFICATION`] × its length + [`DECODE_SLACK_BYTES`].
    pub fn new(buf: Bytes) -> Self {
        let budget = buf.len().saturating_mul(DECODE_AMPLIFICATION).saturating_add(DECODE_SLACK_BYTES);
        Self { buf, pos: 0, budget }
    }

    /// Takes `need` bytes from the allocation budget.
    fn charge(&mut self, field: &'static str, need: usize) -> Result<(), WireError> {
        if need > self.budget {
            return Err(WireError::DecodeBudget { field, need, left: self.budget });
        }
        self.budget -= need;
        Ok(())
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Position of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, need: usize) -> Result<&[u8], WireError> {
        let have = self.remaining();
        if need > have {
            return Err(WireError::UnexpectedEof { position: self.pos, need, have });
        }
        let start = self.pos;
        self.pos += need;
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads a `u8`.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_be_bytes)
    }
    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_be_bytes)
    }
    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_be_bytes)
    }
    /// Reads a big-endian `i64`.
    pub fn i64(&mut self) -> Result<i64, WireError> {
        self.array().map(i64::from_be_bytes)
    }

    /// Reads `len` raw bytes without copying them.
    pub fn bytes(&mut self, len: usize) -> Result<Bytes, WireError> {
        let start = self.pos;
        self.take(len)?;
        Ok(self.buf.slice(start..self.pos))
    }

    /// Reads a `u32`-length-prefixed byte string without copying it.
    pub fn len_bytes(&mut self) -> Result<Bytes, WireError> {
        let len = self.u32()? as usize;
        self.bytes(len)
    }

    /// Reads a `u16`-length-prefixed UTF-8 string.
    pub fn string(&mut self) -> Result<String, WireError> {
        let len = usize::from(self.u16()?);
        let position = self.pos;
        self.charge("string", len)?;
        let raw = self.take(len)?;
        std::str::from_utf8(raw).map(str::to_owned).map_err(|_| WireError::InvalidUtf8 { position })
    }

    /// Reads an array's `u32` element count, refusing counts that the
    /// remaining bytes cannot hold at `min_element_size` bytes each.
    pub fn count(&mut self, field: &'static str, min_element_size: usize) -> Result<usize, WireError> {
        let count = self.u32()?;
        let remaining = self.remaining();
        if (count as usize).saturating_mul(min_element_size.max(1)) > remaining {
            return Err(WireError::CountTooLarge { field, count, remaining });
        }
        Ok(count as usize)
    }

    /// Reads an array of `T`, each element decoded by `element`.
    pub fn vec<T>(
        &mut self,
        field: &'static str,
        min_element_size: usize,
        mut element: impl FnMut(&mut Self) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let count = self.count(field, min_element_size)?;
        self.charge(field, count.saturating_mul(std::mem::size_of::<T>()))?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(element(self)?);
        }
        Ok(out)
    }

    /// Like [`vec`](Self::vec), refusing more than `max` elements (a bound
    /// on the work one request can ask for).
    pub fn vec_max<T>(
        &mut self,
        field: &'static str,
        min_element_size: usize,
        max: usize,
        element: impl FnMut(&mut Self) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let mut peek = self.clone();
        let count = peek.u32()? as usize;
        if count > max {
            return Err(WireError::TooManyElements { field, count, max });
        }
        self.vec(field, min_element_size, element)
    }

    /// Checks that the whole message was consumed.
    pub fn finish(&self, what: &'static str) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            trailing => Err(WireError::TrailingBytes { what, trailing }),
        }
    }
}

/// Payloads at least this long are referenced as their own chunk instead of
/// being copied into the writer's buffer.
const MIN_SHARED_CHUNK: usize = 512;

/// Builds one outgoing message as a list of chunks. Small fields go into a
/// growing buffer; large `Bytes` payloads are appended by reference.
#[derive(Debug, Default)]
pub struct Writer {
    /// Fields written since the last shared chunk.
    head: BytesMut,
    /// Finished chunks, in order.
    chunks: Vec<Bytes>,
    /// Total bytes written so far.
    len: usize,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Total bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes a `u8`.
    pub fn u8(&mut self, v: u8) {
        self.head.put_u8(v);
        self.len += 1;
    }
    /// Writes a big-endian `u16`.
    pub fn u16(&mut self, v: u16) {
        self.head.put_u16(v);
        self.len += 2;
    }
    /// Writes a big-endian `u32`.
    pub fn u32(&mut self, v: u32) {
        self.head.put_u32(v);
        self.len += 4;
    }
    /// Writes a big-endian `u64`.
    pub fn u64(&mut self, v: u64) {
        self.head.put_u64(v);
        self.len += 8;
    }
    /// Writes a big-endian `i64`.
    pub fn i64(&mut self, v: i64) {
        self.head.put_i64(v);
        self.len += 8;
    }

    /// Writes raw bytes, by reference when they are large.
    pub fn bytes(&mut self, v: &Bytes) {
        if v.len() >= MIN_SHARED_CHUNK {
            if !self.head.is_empty() {
                self.chunks.push(self.head.split().freeze());
            }
            self.chunks.push(v.clone());
        } else {
            self.head.extend_from_slice(v);
        }
        self.len += v.len();
    }

    /// Writes a `u32` length, then the bytes. Lengths past `u32::MAX` cannot
    /// be framed at all, so callers keep payloads under the frame maximum.
    pub fn len_bytes(&mut self, v: &Bytes) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.bytes(v);
    }

    /// Writes a `u16` length, then the UTF-8 bytes. A string longer than
    /// 65,535 bytes is cut at the last character boundary that fits: names on
    /// the wire are validated far below that.
    pub fn string(&mut self, v: &str) {
        let mut end = v.len().min(usize::from(u16::MAX));
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.head.extend_from_slice(&v.as_bytes()[..end]);
        self.len += end;
    }

    /// Writes an array: a `u32` count, then each element.
    pub fn vec<T>(&mut self, items: &[T], mut element: impl FnMut(&mut Self, &T)) {
        self.u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
        for item in items {
            element(self, item);
        }
    }

    /// The message as chunks, in order.
    pub fn into_chunks(mut self) -> Vec<Bytes> {
        if !self.head.is_empty() {
            self.chunks.push(self.head.freeze());
        }
        self.chunks
    }

    /// The message as one contiguous buffer (copies shared chunks).
    pub fn into_bytes(self) -> Bytes {
        let chunks = self.into_chunks();
        match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.into_iter().next().unwrap_or_default(),
            _ => {
                let mut out = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
                for c in chunks {
                    out.extend_from_slice(&c);
                }
                out.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut w = Writer::new();
        w.u8(7);
        w.u16(0xBEEF);
        w.u32(0xDEAD_BEEF);
        w.u64(u64::MAX - 1);
        w.i64(-5);
        w.string("héllo");
        w.len_bytes(&Bytes::from(vec![9u8; 600]));
        w.vec(&[1u32, 2, 3], |w, v| w.u32(*v));
        let len = w.len();
        let buf = w.into_bytes();
        assert_eq!(buf.len(), len);
        let mut r = Reader::new(buf);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 0xBEEF);
        assert_eq!(r.u32().unwrap(), 0xDEAD_BEEF);
        assert_eq!(r.u64().unwrap(), u64::MAX - 1);
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(r.string().unwrap(), "héllo");
        assert_eq!(r.len_bytes().unwrap(), Bytes::from(vec![9u8; 600]));
        assert_eq!(r.vec("v", 4, |r| r.u32()).unwrap(), vec![1, 2, 3]);
        r.finish("test").unwrap();
    }

    #[test]
    fn large_payloads_are_shared_not_copied() {
        let payload = Bytes::from(vec![1u8; 4096]);
        let mut w = Writer::new();
        w.u32(1);
        w.bytes(&payload);
        w.u32(2);
        let chunks = w.into_chunks();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].as_ptr(), payload.as_ptr());
    }

    #[test]
    fn eof_reports_position_and_sizes() {
        let mut r = Reader::new(Bytes::from_static(&[0, 1, 2]));
        r.u8().unwrap();
        assert_eq!(r.u32(), Err(WireError::UnexpectedEof { position: 1, need: 4, have: 2 }));
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut r = Reader::new(Bytes::from_static(&[0xFF, 0xFF, 0xFF, 0xFF, 0]));
        assert!(matches!(
            r.vec("things", 1, |r| r.u8()),
            Err(WireError::CountTooLarge { count: u32::MAX, .. })
        ));
    }

    #[test]
    fn decoding_is_bounded_by_the_message_size() {
        // 64 KiB of empty strings: 32 Ki `String`s (768 KiB) from 64 KiB.
        let mut msg = (32u32 << 10).to_be_bytes().to_vec();
        msg.resize(4 + (64 << 10), 0);
        let mut r = Reader::new(msg.into());
        assert!(matches!(
            r.vec("names", 2, Reader::string),
            Err(WireError::DecodeBudget { field: "names", .. })
        ));
        // The same names with some bytes each fit.
        let mut w = Writer::new();
        w.vec(&vec!["topic-name".to_owned(); 10_000], |w, s| w.string(s));
        assert_eq!(Reader::new(w.into_bytes()).vec("names", 2, Reader::string).unwrap().len(), 10_000);
        // Strings are charged their length.
        let mut w = Writer::new();
        w.string(&"x".repeat(100));
        let mut r = Reader::new(w.into_bytes());
        r.budget = 99;
        assert!(matches!(r.string(), Err(WireError::DecodeBudget { need: 100, left: 99, .. })));
    }

    #[test]
    fn vec_max_refuses_long_arrays_before_decoding() {
        let mut w = Writer::new();
        w.vec(&[1u32, 2, 3], |w, v| w.u32(*v));
        let bytes = w.into_bytes();
        assert_eq!(Reader::new(bytes.clone()).vec_max("v", 4, 3, Reader::u32).unwrap(), [1, 2, 3]);
        assert_eq!(
            Reader::new(bytes).vec_max("v", 4, 2, Reader::u32),
            Err(WireError::TooManyElements { field: "v", count: 3, max: 2 })
        );
    }

    #[test]
    fn bad_utf8_and_trailing_bytes_are_errors() {
        let mut r = Reader::new(Bytes::from_static(&[0, 2, 0xC3, 0x28, 1]));
        assert_eq!(r.string(), Err(WireError::InvalidUtf8 { position: 2 }));
        assert!(r.finish("x").is_err());
    }

    #[test]
    fn overlong_strings_are_cut_at_a_char_boundary() {
        let s = "é".repeat(40_000);
        let mut w = Writer::new();
        w.string(&s);
        let mut r = Reader::new(w.into_bytes());
        let back = r.string().unwrap();
        assert!(back.len() <= usize::from(u16::MAX));
        assert!(s.starts_with(&back));
    }
}
