//! Scans over the bytes of a request's token, its header map, a token's claims text and the
//! identity header values, eight bytes at a time (thirty-two for the token compare and the header
//! map's ASCII check, which run over a whole token or map on every request).
//!
//! Written by hand because the standard ones are slow where mlgate runs: on wasm32 `usize` is four
//! bytes, so core's `memchr` and UTF-8 validation read four at a time, and slice equality becomes
//! `memcmp`, which wasm32 links as a byte-at-a-time loop. Each of these ran over every request's
//! 1–2 KB token or header map; counted in wasm operators (`mlgate-harness bench`), the three
//! replaced first were a third of a cache hit. The claims and header-value scans did the same
//! for a cold token, one byte or one `char` per step. Words come from `as_chunks` arrays: with the crate's
//! size optimisation, `chunks_exact` slices stayed a chain of calls per word.

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
/// Subtracted from a word, flags (with `!word & HIGHS`) every byte below 0x20: the control bytes.
const SPACES: u64 = u64::from_ne_bytes([0x20; 8]);

/// `a == b`.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Thirty-two bytes a step, four words folded into one test: the whole token is compared on
    // every cache hit, and the loop's own bookkeeping cost more than the loads at one word a step.
    let ((a_blocks, a_rest), (b_blocks, b_rest)) = (a.as_chunks::<32>(), b.as_chunks::<32>());
    let ((a_words, a_tail), (b_words, b_tail)) = (a_rest.as_chunks::<8>(), b_rest.as_chunks::<8>());
    a_tail == b_tail
        && a_words
            .iter()
            .zip(b_words)
            .all(|(x, y)| u64::from_ne_bytes(*x) == u64::from_ne_bytes(*y))
        && a_blocks.iter().zip(b_blocks).all(|(x, y)| {
            let (Some([x0, x1, x2, x3]), Some([y0, y1, y2, y3])) = (quad(x), quad(y)) else {
                return false;
            };
            (x0 ^ y0) | (x1 ^ y1) | (x2 ^ y2) | (x3 ^ y3) == 0
        })
}

/// A 32-byte block as four words (always: the `None` arm is never taken, and compiled away).
#[inline(always)]
fn quad(block: &[u8; 32]) -> Option<[u64; 4]> {
    match block.as_chunks::<8>().0 {
        [a, b, c, d] => Some([
            u64::from_ne_bytes(*a),
            u64::from_ne_bytes(*b),
            u64::from_ne_bytes(*c),
            u64::from_ne_bytes(*d),
        ]),
        _ => None,
    }
}

/// `a.eq_ignore_ascii_case(b)`, trying exact equality first: header names come lower-case from
/// Envoy (HTTP/2 requires it, and Envoy lower-cases HTTP/1 names), and the byte-wise
/// case-folding compare cost each header lookup more than the rest of it.
pub fn same_ignoring_ascii_case(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && (same_bytes(a, b) || a.eq_ignore_ascii_case(b))
}

/// Whether `haystack` holds `needle`.
pub fn contains_byte(haystack: &[u8], needle: u8) -> bool {
    let pattern = u64::from_ne_bytes([needle; 8]);
    let (words, tail) = haystack.as_chunks::<8>();
    tail.contains(&needle)
        || words.iter().any(|word| {
            // Zero exactly where a byte equals `needle`; the test is exact for "some byte is
            // zero" (it may misplace which one, which does not matter here).
            let x = u64::from_ne_bytes(*word) ^ pattern;
            x.wrapping_sub(ONES) & !x & HIGHS != 0
        })
}

/// Whether every byte is ASCII (and so the bytes are UTF-8).
pub fn is_ascii(bytes: &[u8]) -> bool {
    // Thirty-two bytes a step, as in `same_bytes`: the whole header map is scanned per request.
    let (blocks, rest) = bytes.as_chunks::<32>();
    let (words, tail) = rest.as_chunks::<8>();
    let seen = blocks.iter().fold(0, |seen, block| match quad(block) {
        Some([w0, w1, w2, w3]) => seen | w0 | w1 | w2 | w3,
        None => HIGHS,
    });
    let seen = words
        .iter()
        .fold(seen, |seen, word| seen | u64::from_ne_bytes(*word));
    tail.is_ascii() && seen & HIGHS == 0
}

/// Whether every byte is printable ASCII (`0x20..=0x7e`): no control character, no DEL, nothing
/// beyond ASCII.
pub fn is_printable_ascii(bytes: &[u8]) -> bool {
    const DELETES: u64 = u64::from_ne_bytes([0x7f; 8]);
    let (words, tail) = bytes.as_chunks::<8>();
    tail.iter().all(|b| (0x20..0x7f).contains(b))
        && words.iter().all(|word| {
            let x = u64::from_ne_bytes(*word);
            // Exact for "some byte is below 0x20" and "some byte is zero" (so equal to 0x7f).
            let below_space = x.wrapping_sub(SPACES) & !x;
            let delete = x ^ DELETES;
            let is_delete = delete.wrapping_sub(ONES) & !delete;
            (below_space | is_delete | x) & HIGHS == 0
        })
}

/// Where, from `from` on, a JSON string's text stops being plain: the first `"`, `\\` or control
/// byte (below 0x20), or `bytes.len()`. Claims are mostly string text.
pub fn json_string_stop(bytes: &[u8], from: usize) -> usize {
    const QUOTES: u64 = u64::from_le_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_le_bytes([b'\\'; 8]);
    let rest = bytes.get(from..).unwrap_or_default();
    let (words, tail) = rest.as_chunks::<8>();
    for (index, word) in words.iter().enumerate() {
        let x = u64::from_le_bytes(*word);
        let (quote, backslash) = (x ^ QUOTES, x ^ BACKSLASHES);
        // Each term's lowest flag marks its first match exactly (a borrow only runs upwards
        // from a true match), so the lowest flag of the three is the first stop.
        let stops = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(SPACES) & !x);
        let stops = stops & HIGHS;
        if stops != 0 {
            return from + index * 8 + (stops.trailing_zeros() / 8) as usize;
        }
    }
    let tail_stop = tail
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(tail.len());
    from + words.len() * 8 + tail_stop
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length up to `max_len`, every position, every byte value around it.
    fn haystacks_up_to(
        needle: u8,
        max_len: usize,
    ) -> impl Iterator<Item = (Vec<u8>, Option<usize>)> {
        (0..=max_len).flat_map(move |len| {
            (0..=255u8).flat_map(move |fill| {
                let plain = vec![fill; len];
                let without = (fill != needle).then(|| (plain.clone(), None));
                let with = (0..len).map(move |at| {
                    let mut bytes = vec![fill; len];
                    bytes[at] = needle;
                    (bytes, Some(at))
                });
                without.into_iter().chain(with)
            })
        })
    }

    /// Every length up to three words and a tail.
    fn haystacks(needle: u8) -> impl Iterator<Item = (Vec<u8>, Option<usize>)> {
        haystacks_up_to(needle, 27)
    }

    #[test]
    fn contains_byte_finds_the_needle_wherever_it_is_and_only_then() {
        for needle in [b',', 0x00, 0x7f, 0x80, 0xff] {
            for (haystack, at) in haystacks(needle) {
                assert_eq!(
                    contains_byte(&haystack, needle),
                    haystack.contains(&needle),
                    "needle {needle:#x} at {at:?} in {haystack:?}"
                );
            }
        }
    }

    #[test]
    fn is_ascii_agrees_with_the_standard_check_at_every_position() {
        // Past two 32-byte blocks, so that blocks, words and tail are each seen alone and together.
        for (bytes, at) in haystacks_up_to(0x80, 75)
            .chain(haystacks_up_to(0xff, 75))
            .chain(haystacks(b'a'))
        {
            assert_eq!(is_ascii(&bytes), bytes.is_ascii(), "{at:?} in {bytes:?}");
        }
    }

    #[test]
    fn is_printable_ascii_refuses_any_control_delete_or_non_ascii_byte_at_every_position() {
        for needle in [
            0x00, 0x09, 0x0a, 0x0d, 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0xc2, 0xff,
        ] {
            for (bytes, at) in haystacks(needle) {
                let expected = bytes.iter().all(|b| (0x20..=0x7e).contains(b));
                assert_eq!(is_printable_ascii(&bytes), expected, "{at:?} in {bytes:?}");
            }
        }
    }

    #[test]
    fn json_string_stop_finds_the_first_quote_backslash_or_control_byte_from_any_start() {
        let reference = |bytes: &[u8], from: usize| {
            (from..bytes.len())
                .find(|&at| matches!(bytes[at], b'"' | b'\\' | 0x00..=0x1f))
                .unwrap_or(bytes.len().max(from))
        };
        for needle in [b'"', b'\\', 0x00, 0x1f, 0x20, 0x7f, 0x80, 0xff] {
            for (bytes, at) in haystacks(needle) {
                for from in [0, 1, 7, 8, 9, 30] {
                    assert_eq!(
                        json_string_stop(&bytes, from),
                        reference(&bytes, from),
                        "from {from}, needle {needle:#x} at {at:?} in {bytes:?}"
                    );
                }
            }
        }
        let two_stops = b"abcdefgh\\ijk\"lmnopq";
        assert_eq!(json_string_stop(two_stops, 0), 8);
        assert_eq!(json_string_stop(two_stops, 9), 12);
    }

    #[test]
    fn same_bytes_sees_a_difference_in_any_byte_and_any_length() {
        let token: Vec<u8> = (0..203u32).map(|i| (i * 7 + 3) as u8).collect();
        assert!(same_bytes(&token, &token.clone()));
        for at in 0..token.len() {
            let mut other = token.clone();
            other[at] ^= 0x01;
            assert!(!same_bytes(&token, &other), "byte {at}");
        }
        assert!(!same_bytes(&token, &token[..202]));
        assert!(same_bytes(b"", b""));
    }

    #[test]
    fn same_bytes_sees_a_difference_at_every_position_of_every_length_past_two_blocks() {
        for len in 0..=75usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            assert!(same_bytes(&bytes, &bytes.clone()), "length {len}");
            for at in 0..len {
                let mut other = bytes.clone();
                other[at] ^= 0x80;
                assert!(!same_bytes(&bytes, &other), "byte {at} of {len}");
            }
        }
    }

    #[test]
    fn same_ignoring_ascii_case_agrees_with_the_standard_check() {
        for (a, b) in [
            ("authorization", "authorization"),
            ("Authorization", "authorization"),
            ("AUTHORIZATION", "authorization"),
            ("authorizatioN", "authorization"),
            ("authorizatio_", "authorization"),
            ("authorizatio", "authorization"),
            ("Bearer", "bearer"),
            ("", ""),
            ("x-request-id", "X-REQUEST-ID"),
            ("x-request-ie", "x-request-id"),
        ] {
            assert_eq!(
                same_ignoring_ascii_case(a.as_bytes(), b.as_bytes()),
                a.eq_ignore_ascii_case(b),
                "{a:?} vs {b:?}"
            );
        }
    }
}
