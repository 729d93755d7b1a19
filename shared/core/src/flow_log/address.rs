//! Address parsing: dotted-quad IPv4 and the usual IPv6 forms read straight into bits, the
//! standard library for the rare rest. Used by both the reference parser and the fast
//! readers.

use std::net::{IpAddr, Ipv6Addr};

use super::record::Slot;

/// Reads an address token: the IPv4 and IPv6 fast paths, then the standard library.
#[inline]
pub(super) fn read_address(line: &str, start: usize, end: usize) -> Option<Slot> {
    let token = &line.as_bytes()[start..end];
    if let Some(bits) = read_ipv4(token) {
        return Some(Slot::Ipv4(bits));
    }
    if let Some(bits) = read_ipv6(token) {
        return Some(Slot::Ipv6(Ipv6Addr::from_bits(bits)));
    }
    read_other_address(&line[start..end])
}

/// An address the dotted-quad kernel declined: IPv6, or anything the standard library
/// reads. Not inlined: most addresses never get here.
#[inline(never)]
pub(super) fn read_unusual_address(token: &[u8]) -> Option<Slot> {
    if let Some(bits) = read_ipv6(token) {
        return Some(Slot::Ipv6(Ipv6Addr::from_bits(bits)));
    }
    read_other_address(std::str::from_utf8(token).ok()?)
}

/// Reads an address the IPv4 fast path did not: IPv6, or IPv4 written unusually.
#[inline(never)]
fn read_other_address(token: &str) -> Option<Slot> {
    match token.parse().ok()? {
        IpAddr::V4(v4) => Some(Slot::Ipv4(v4.to_bits())),
        IpAddr::V6(v6) => Some(Slot::Ipv6(v6)),
    }
}

/// Reads a dotted-quad IPv4 address with the standard library's rules (no leading
/// zeros); `None` sends the caller to the general path.
#[inline]
fn read_ipv4(token: &[u8]) -> Option<u32> {
    if !(7..=15).contains(&token.len()) {
        return None;
    }
    let mut bits = 0u32;
    let mut rest = token;
    for index in 0..4 {
        let (value, used) = read_octet(rest)?;
        bits = bits << 8 | value;
        rest = &rest[used..];
        if index < 3 {
            rest = rest.strip_prefix(b".")?;
        }
    }
    rest.is_empty().then_some(bits)
}

/// One to three decimal digits, at most 255, without a leading zero.
#[inline]
fn read_octet(bytes: &[u8]) -> Option<(u32, usize)> {
    let digit = |index: usize| {
        bytes
            .get(index)
            .map(|byte| u32::from(byte.wrapping_sub(b'0')))
            .filter(|&digit| digit <= 9)
    };
    let first = digit(0)?;
    let Some(second) = digit(1) else {
        return Some((first, 1));
    };
    if first == 0 {
        return None;
    }
    let Some(third) = digit(2) else {
        return Some((first * 10 + second, 2));
    };
    let value = first * 100 + second * 10 + third;
    (value <= 255).then_some((value, 3))
}

/// Reads an IPv6 address in the usual forms (hex groups, at most one `::`); `None` sends
/// the caller to the standard library, which also knows the rare embedded-IPv4 form.
/// Groups are shifted straight into the address bits (those after a `::` into a second
/// accumulator, moved into place at the end), with a table for the hex digits.
#[inline]
fn read_ipv6(token: &[u8]) -> Option<u128> {
    let (mut head, mut head_groups) = (0u128, 0u32);
    let (mut tail, mut tail_groups) = (0u128, 0u32);
    let mut after_gap = false;
    let mut at = 0;
    if token.starts_with(b"::") {
        after_gap = true;
        at = 2;
    }
    while at < token.len() {
        if head_groups + tail_groups == 8 {
            return None;
        }
        // At most four hex digits; a fifth one makes the token invalid.
        let mut value = 0u32;
        let mut digits = 0;
        while digits < 5
            && let Some(&byte) = token.get(at + digits)
            && HEX_VALUES[usize::from(byte)] < 16
        {
            value = value << 4 | u32::from(HEX_VALUES[usize::from(byte)]);
            digits += 1;
        }
        if !(1..=4).contains(&digits) {
            return None;
        }
        at += digits;
        if after_gap {
            tail = tail << 16 | u128::from(value);
            tail_groups += 1;
        } else {
            head = head << 16 | u128::from(value);
            head_groups += 1;
        }
        match token.get(at) {
            None => break,
            Some(b':') if token.get(at + 1) == Some(&b':') => {
                if after_gap {
                    return None;
                }
                after_gap = true;
                at += 2;
            }
            // A single colon must be followed by another group.
            Some(b':') if at + 1 < token.len() => at += 1,
            Some(_) => return None,
        }
    }
    match (after_gap, head_groups + tail_groups) {
        (false, 8) => Some(head),
        // The `::` stands for at least one zero group: the head moves up past them.
        (true, groups) if groups < 8 => {
            let head = head.checked_shl(16 * (8 - head_groups)).unwrap_or(0);
            Some(head | tail)
        }
        _ => None,
    }
}

/// The value of each byte as a hex digit, or 16 when it is not one.
static HEX_VALUES: [u8; 256] = {
    let mut values = [16u8; 256];
    let mut byte = 0;
    while byte < 256 {
        values[byte] = match byte as u8 {
            digit @ b'0'..=b'9' => digit - b'0',
            letter @ b'a'..=b'f' => letter - b'a' + 10,
            letter @ b'A'..=b'F' => letter - b'A' + 10,
            _ => 16,
        };
        byte += 1;
    }
    values
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    #[test]
    fn fast_ipv6_parser_agrees_with_the_standard_library_on_common_forms() {
        for text in [
            "::",
            "::1",
            "1::",
            "2001:db8::",
            "2001:db8:1234:a100:8d6e:3477:df66:f105",
            "fe80::1:2",
            "2001:DB8::F",
            "0:0:0:0:0:0:0:1",
        ] {
            let expected: Ipv6Addr = text.parse().unwrap();
            assert_eq!(
                read_ipv6(text.as_bytes()),
                Some(expected.to_bits()),
                "{text}"
            );
        }
        for bad in [
            ":",
            ":::",
            "1:::2",
            "1::2::3",
            "12345::",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7",
            "1:",
            "g::",
            "1::2:",
        ] {
            assert_eq!(read_ipv6(bad.as_bytes()), None, "{bad}");
            assert!(bad.parse::<Ipv6Addr>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn fast_address_parsers_agree_with_the_standard_library(text in "[0-9a-fA-F:.]{0,45}") {
            let standard = text.parse::<IpAddr>().ok();
            let fast = read_ipv4(text.as_bytes())
                .map(|bits| IpAddr::V4(Ipv4Addr::from_bits(bits)))
                .or_else(|| read_ipv6(text.as_bytes()).map(|bits| IpAddr::V6(Ipv6Addr::from_bits(bits))));
            // The fast paths may decline (embedded IPv4); when they answer, they agree.
            if let Some(fast) = fast {
                prop_assert_eq!(Some(fast), standard);
            }
        }

        #[test]
        fn every_address_round_trips_through_the_fast_parsers(v4 in any::<u32>(), v6 in any::<u128>()) {
            let v4_text = Ipv4Addr::from_bits(v4).to_string();
            prop_assert_eq!(read_ipv4(v4_text.as_bytes()), Some(v4));
            let v6_text = Ipv6Addr::from_bits(v6).to_string();
            if !v6_text.contains('.') {
                prop_assert_eq!(read_ipv6(v6_text.as_bytes()), Some(v6));
            }
        }
    }
}
