//! Zigzag varints (as in protobuf `sint64` and Kafka record fields): small
//! magnitudes of either sign take few bytes. At most 10 bytes for an `i64`.

use bytes::BufMut;

/// The most bytes a varint may take.
pub const MAX_VARINT_LEN: usize = 10;

/// Bytes `v` takes as a zigzag varint.
#[inline]
pub fn len(v: i64) -> usize {
    let z = zigzag(v);
    let bits = 64 - (z | 1).leading_zeros() as usize;
    // ceil(bits / 7) for bits in 1..=64, without a division (protobuf's trick).
    (bits * 9 + 64) / 64
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Appends `v` as a zigzag varint.
pub fn put(buf: &mut impl BufMut, v: i64) {
    let mut z = zigzag(v);
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

/// Writes `v` as a zigzag varint at `out[pos..]`; returns the position
/// after it. For encoders that gather several varints before one copy.
///
/// # Panics
/// When fewer than [`len`]`(v)` bytes are left after `pos`.
#[inline]
pub fn encode_at(out: &mut [u8], mut pos: usize, v: i64) -> usize {
    let mut z = zigzag(v);
    // Fast paths: record fields are mostly one or two bytes.
    if z < 0x80 {
        out[pos] = z as u8;
        return pos + 1;
    }
    if z < 0x4000 {
        out[pos..pos + 2].copy_from_slice(&[(z as u8) | 0x80, (z >> 7) as u8]);
        return pos + 2;
    }
    while z >= 0x80 {
        out[pos] = (z as u8) | 0x80;
        pos += 1;
        z >>= 7;
    }
    out[pos] = z as u8;
    pos + 1
}

/// Reads a zigzag varint from the front of `src`: the value and the bytes it
/// took, or `None` when it is truncated or longer than 10 bytes / 64 bits.
#[inline(always)]
pub fn get(src: &[u8]) -> Option<(i64, usize)> {
    // Fast paths: most record fields (small lengths, deltas, a record's
    // index) fit one or two bytes.
    match *src {
        [b0, ..] if b0 < 0x80 => {
            let z = u64::from(b0);
            return Some((((z >> 1) as i64) ^ -((z & 1) as i64), 1));
        }
        [b0, b1, ..] if b1 < 0x80 => {
            let z = u64::from(b0 & 0x7F) | (u64::from(b1) << 7);
            return Some((((z >> 1) as i64) ^ -((z & 1) as i64), 2));
        }
        _ => {}
    }
    let mut z: u64 = 0;
    for (i, &byte) in src.iter().take(MAX_VARINT_LEN).enumerate() {
        let part = u64::from(byte & 0x7F);
        if i == MAX_VARINT_LEN - 1 && part > 1 {
            return None; // bits past the 64th
        }
        z |= part << (7 * i);
        if byte & 0x80 == 0 {
            let v = ((z >> 1) as i64) ^ -((z & 1) as i64);
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        for (v, bytes) in [
            (0i64, &[0x00][..]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7E]),
            (-64, &[0x7F]),
            (64, &[0x80, 0x01]),
        ] {
            let mut buf = Vec::new();
            put(&mut buf, v);
            assert_eq!(buf, bytes, "{v}");
            assert_eq!(len(v), bytes.len());
            assert_eq!(get(bytes), Some((v, bytes.len())));
        }
    }

    #[test]
    fn len_is_seven_bits_per_byte_for_every_width() {
        for bits in 1..=64usize {
            let z: u64 = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
            let v = ((z >> 1) as i64) ^ -((z & 1) as i64); // un-zigzag
            assert_eq!(len(v), bits.div_ceil(7), "{bits} bits");
        }
    }

    #[test]
    fn extremes_and_malformed() {
        for v in [i64::MIN, i64::MAX] {
            let mut buf = Vec::new();
            put(&mut buf, v);
            assert_eq!(buf.len(), MAX_VARINT_LEN);
            assert_eq!(get(&buf), Some((v, MAX_VARINT_LEN)));
        }
        assert_eq!(get(&[0x80]), None, "truncated");
        assert_eq!(get(&[0xFF; 11]), None, "too long");
        let mut over = [0xFFu8; 10];
        over[9] = 0x02;
        assert_eq!(get(&over), None, "65th bit");
    }

    proptest! {
        #[test]
        fn round_trip(v in any::<i64>()) {
            let mut buf = Vec::new();
            put(&mut buf, v);
            prop_assert_eq!(buf.len(), len(v));
            prop_assert_eq!(get(&buf), Some((v, buf.len())));
            let mut at = [0u8; 1 + MAX_VARINT_LEN];
            let end = encode_at(&mut at, 1, v);
            prop_assert_eq!(&at[1..end], &buf[..], "encode_at writes what put writes");
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Some((_, used)) = get(&bytes) {
                prop_assert!(used <= MAX_VARINT_LEN && used <= bytes.len());
            }
        }
    }
}
