//! Counter values for `incr`: one CBOR integer (major type 0 or 1), as serde/ciborium writes an `i64`.

/// The CBOR encoding of `n` in its shortest form (what ciborium writes for an `i64`).
pub fn encode(n: i64) -> Vec<u8> {
    // Major type 0 holds n >= 0; major type 1 holds -1 - n for negative n.
    let (major, magnitude) = if n >= 0 {
        (0u8, n as u64)
    } else {
        (0x20u8, !(n as u64))
    };
    let mut out = Vec::with_capacity(9);
    match magnitude {
        0..=23 => out.push(major | magnitude as u8),
        24..=0xff => out.extend_from_slice(&[major | 24, magnitude as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend_from_slice(&(magnitude as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend_from_slice(&(magnitude as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&magnitude.to_be_bytes());
        }
    }
    out
}

/// The integer `bytes` hold, if they are exactly one CBOR integer that fits an `i64`.
///
/// Edge cases: any other CBOR item (text, float, bignum tag, ...), trailing bytes, a truncated
/// item, or an integer outside the `i64` range → `None`.
pub fn decode(bytes: &[u8]) -> Option<i64> {
    let (&first, rest) = bytes.split_first()?;
    let major = first & 0xe0;
    if major != 0 && major != 0x20 {
        return None;
    }
    let magnitude = match first & 0x1f {
        info @ 0..=23 if rest.is_empty() => u64::from(info),
        24 if rest.len() == 1 => u64::from(rest[0]),
        25 if rest.len() == 2 => u64::from(u16::from_be_bytes([rest[0], rest[1]])),
        26 if rest.len() == 4 => u64::from(u32::from_be_bytes(rest.try_into().ok()?)),
        27 if rest.len() == 8 => u64::from_be_bytes(rest.try_into().ok()?),
        _ => return None,
    };
    let n = i64::try_from(magnitude).ok()?;
    Some(if major == 0 { n } else { -1 - n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_every_width_boundary() {
        for n in [
            0,
            1,
            23,
            24,
            255,
            256,
            65_535,
            65_536,
            4_294_967_295,
            4_294_967_296,
            i64::MAX,
            -1,
            -24,
            -25,
            -256,
            -257,
            i64::MIN,
        ] {
            assert_eq!(decode(&encode(n)), Some(n), "{n}");
        }
        assert_eq!(encode(10), [0x0a]);
        assert_eq!(encode(-1), [0x20]);
        assert_eq!(encode(500), [0x19, 0x01, 0xf4]);
    }

    #[test]
    fn refuses_everything_else() {
        let not_counters: [&[u8]; 8] = [
            b"",
            &[0x61, b'a'],                      // text "a"
            &[0xf9, 0x3c, 0x00],                // float 1.0
            &[0x18],                            // truncated
            &[0x0a, 0x00],                      // trailing byte
            &[0x1b, 0x80, 0, 0, 0, 0, 0, 0, 0], // 2^63: above i64::MAX
            &[0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0], // -1 - 2^63: below i64::MIN
            &[0xc2, 0x41, 0x01],                // bignum tag
        ];
        for bytes in not_counters {
            assert_eq!(decode(bytes), None, "{bytes:?}");
        }
    }
}
