//! Finds the structure of decoded flow-log text in bulk: where lines end, where the spaces
//! between values are, and which bytes no plain record line contains.
//!
//! Text is classified 64 bytes at a time into bitmaps, so that later stages read each line
//! already knowing where its values start and end. The few byte-level operations that have
//! vector versions live behind [`Kernels`]: a portable version in word arithmetic (the
//! reference in tests, and the fallback on x86-64 processors without AVX2), on x86-64 an
//! AVX2 version chosen at run time, and on arm64 a NEON version (NEON is part of every
//! arm64 Linux target, so it needs no detection). No I/O here; buffers are reused from call
//! to call.

/// One bit per byte of a 64-byte block, byte `i` at bit `i`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockClasses {
    /// `' '` and `'\n'`: the bytes that end a value.
    pub separators: u64,
    pub newlines: u64,
    /// Bytes below 0x20 other than `'\n'` (tabs, carriage returns) and bytes above 0x7f:
    /// lines with any of them are left to the general, per-line path.
    pub unusual: u64,
}

impl BlockClasses {
    /// From the masks of spaces, newlines, and bytes below 0x20 or above 0x7f (which
    /// include the newlines).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[inline(always)]
    fn from_masks(spaces: u64, newlines: u64, below_space: u64) -> BlockClasses {
        BlockClasses {
            separators: spaces | newlines,
            newlines,
            unusual: below_space & !newlines,
        }
    }
}

/// The byte-level operations with vector versions. Implementors are zero-sized tokens; one
/// that uses special instructions can only be obtained where the processor has them.
pub(crate) trait Kernels: Copy {
    /// Classifies the 64 bytes of `block`.
    fn classify(self, block: &[u8; 64]) -> BlockClasses;

    /// Reads `window[..len]` as a dotted-quad IPv4 address with the standard library's
    /// rules (four decimal octets up to 255, no leading zeros); `None` for anything else.
    /// The bytes of `window` after `len` may be anything.
    fn ipv4(self, window: &[u8; 16], len: usize) -> Option<u32>;
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// The high bit of each byte of the little-endian `word` set where the byte is `byte`.
/// Exact per byte: no carry crosses from one byte into the next.
#[inline(always)]
pub(crate) fn bytes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    !((x & LOW7).wrapping_add(LOW7) | x) & HIGH
}

// On arm64 only the tests use the portable kernels (NEON is always there).
#[cfg_attr(all(target_arch = "aarch64", not(test)), allow(dead_code))]
/// The high bit of each byte set where the byte is below 0x20 or above 0x7f.
#[inline(always)]
fn bytes_unusual(word: u64) -> u64 {
    // Adding 0x60 to the low seven bits sets a byte's high bit exactly when they are at
    // least 0x20, and never carries out of the byte.
    let at_least_space = (word & LOW7).wrapping_add(ONES * 0x60);
    (!at_least_space | word) & HIGH
}

/// Gathers the eight high bits of `high_bits` into the low byte, byte `i` to bit `i`: the
/// partial products of the multiplication never collide.
#[inline(always)]
pub(crate) fn gather_high_bits(high_bits: u64) -> u64 {
    (high_bits >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56
}

#[cfg_attr(all(target_arch = "aarch64", not(test)), allow(dead_code))]
#[inline(always)]
fn word_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|word| word.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

#[cfg_attr(all(target_arch = "aarch64", not(test)), allow(dead_code))]
/// The kernels in plain word arithmetic, eight bytes at a time: correct everywhere.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Portable;

impl Kernels for Portable {
    #[inline(always)]
    fn classify(self, block: &[u8; 64]) -> BlockClasses {
        let mut classes = BlockClasses::default();
        for index in 0..8 {
            let word = word_at(block, 8 * index);
            let newlines = bytes_equal(word, b'\n');
            let separators = bytes_equal(word, b' ') | newlines;
            let unusual = bytes_unusual(word) & !newlines;
            classes.separators |= gather_high_bits(separators) << (8 * index);
            classes.newlines |= gather_high_bits(newlines) << (8 * index);
            classes.unusual |= gather_high_bits(unusual) << (8 * index);
        }
        classes
    }

    #[inline(always)]
    fn ipv4(self, window: &[u8; 16], len: usize) -> Option<u32> {
        if !(7..=15).contains(&len) {
            return None;
        }
        let length_mask = (1u32 << len) - 1;
        let dots = (gather_high_bits(bytes_equal(word_at(window, 0), b'.'))
            | gather_high_bits(bytes_equal(word_at(window, 8), b'.')) << 8)
            as u32
            & length_mask;
        let [first, second, third] = three_dots(dots)?;
        let octet = |start: usize, end: usize| octet_value(window, start, end);
        let bits = octet(0, first)? << 24
            | octet(first + 1, second)? << 16
            | octet(second + 1, third)? << 8
            | octet(third + 1, len)?;
        Some(bits)
    }
}

/// The positions of exactly three dots, or `None`.
#[inline(always)]
fn three_dots(dots: u32) -> Option<[usize; 3]> {
    if dots.count_ones() != 3 {
        return None;
    }
    let first = dots.trailing_zeros() as usize;
    let rest = dots & (dots - 1);
    let second = rest.trailing_zeros() as usize;
    let third = (rest & (rest - 1)).trailing_zeros() as usize;
    Some([first, second, third])
}

#[cfg_attr(all(target_arch = "aarch64", not(test)), allow(dead_code))]
/// The octet `window[start..end]`: one to three digits, no leading zero, at most 255.
/// Reads the four bytes from `start` and works on them as one word, without a branch per
/// digit.
#[inline(always)]
fn octet_value(window: &[u8; 16], start: usize, end: usize) -> Option<u32> {
    let digits = end.wrapping_sub(start);
    if digits.wrapping_sub(1) >= 3 {
        return None;
    }
    let bytes = window.get(start..start + 4)?;
    let word = u32::from_le_bytes(bytes.try_into().ok()?);
    let values = word.wrapping_sub(0x3030_3030);
    // A byte is a digit when its value is at most 9: neither its own high bit nor the one
    // reached by adding 0x76 is set (carries start only at bytes already flagged).
    let not_digits = (values | values.wrapping_add(0x7676_7676)) & 0x8080_8080;
    let shift = 32 - 8 * digits as u32;
    if not_digits << shift != 0 {
        return None;
    }
    // The digits moved to the top bytes, most significant first: [0, h, t, u].
    let aligned = values << shift;
    let leading_zero = digits > 1 && values & 0xff == 0;
    // Byte-reversed, the digits compare as a number: h t u against 2 5 5.
    if leading_zero || aligned.swap_bytes() > 0x0002_0505 {
        return None;
    }
    Some(aligned.wrapping_mul(1 | 10 << 8 | 100 << 16) >> 24)
}

/// Where the four octets of a dotted quad in the first `len` bytes of a window lie, given
/// a bit per byte of the window for its digits and its dots: the index of their lengths'
/// row in [`OCTET_LAYOUTS`], or `None` unless those bytes are 7 to 15 digits and exactly
/// three dots, with one to three digits an octet.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn octet_layout_index(digits: u32, dots: u32, len: usize) -> Option<usize> {
    if !(7..=15).contains(&len) {
        return None;
    }
    let length_mask = (1u32 << len) - 1;
    let dots = dots & length_mask;
    if (digits | dots) & length_mask != length_mask {
        return None;
    }
    let [first, second, third] = three_dots(dots)?;
    let lengths = [
        first,
        second - first - 1,
        third - second - 1,
        len - third - 1,
    ];
    if lengths.iter().any(|&length| !(1..=3).contains(&length)) {
        return None;
    }
    Some((lengths[0] - 1) * 27 + (lengths[1] - 1) * 9 + (lengths[2] - 1) * 3 + (lengths[3] - 1))
}

/// An octet's smallest value in the lane width each instruction set compares it in: 32
/// bits on x86 (`_mm_cmpgt_epi32`), 16 on NEON (`vcgt_u16`, four lanes of the eight used).
#[cfg(target_arch = "x86_64")]
type OctetMinimums = [u32; 4];
#[cfg(target_arch = "aarch64")]
type OctetMinimums = [u16; 8];

/// For octet lengths (l0, l1, l2, l3), each 1 to 3, at index
/// `(l0-1)*27 + (l1-1)*9 + (l2-1)*3 + (l3-1)`: the byte positions that put octet `k`'s
/// digits at the top of 32-bit lane `k`, with 0x80 before them (x86's byte shuffle reads
/// it as zero, as NEON's table lookup reads any index past 15), and each octet's smallest
/// value without a leading zero (0, 10 or 100).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
struct OctetLayouts {
    positions: [[u8; 16]; 81],
    minimums: [OctetMinimums; 81],
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
static OCTET_LAYOUTS: OctetLayouts = {
    let mut positions = [[0x80u8; 16]; 81];
    let mut minimums = [[0; _]; 81];
    let mut index = 0;
    while index < 81 {
        let lengths = [
            index / 27 + 1,
            index / 9 % 3 + 1,
            index / 3 % 3 + 1,
            index % 3 + 1,
        ];
        let mut start = 0;
        let mut octet = 0;
        while octet < 4 {
            let length = lengths[octet];
            let mut digit = 0;
            while digit < length {
                positions[index][4 * octet + 4 - length + digit] = (start + digit) as u8;
                digit += 1;
            }
            minimums[index][octet] = [0, 10, 100][length - 1];
            start += length + 1;
            octet += 1;
        }
        index += 1;
    }
    OctetLayouts {
        positions,
        minimums,
    }
};

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::Avx2;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BlockClasses, Kernels, OCTET_LAYOUTS, octet_layout_index};
    use std::arch::x86_64::*;

    /// The kernels in AVX2 (and the SSSE3, SSE4.1, POPCNT and BMI instructions that come
    /// with it). A value exists only where [`Avx2::detect`] found them.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx2(());

    impl Avx2 {
        /// The token, when this processor has every feature that functions instantiating
        /// generic code with it are compiled for: their attribute is
        /// `#[target_feature(enable = "avx2,bmi1,bmi2,lzcnt,popcnt,sse4.1,ssse3")]`.
        #[inline]
        pub(crate) fn detect() -> Option<Avx2> {
            let found = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("bmi1")
                && is_x86_feature_detected!("bmi2")
                && is_x86_feature_detected!("lzcnt")
                && is_x86_feature_detected!("popcnt")
                && is_x86_feature_detected!("sse4.1")
                && is_x86_feature_detected!("ssse3");
            found.then_some(Avx2(()))
        }
    }

    impl Kernels for Avx2 {
        #[inline(always)]
        fn classify(self, block: &[u8; 64]) -> BlockClasses {
            // SAFETY: an `Avx2` value exists only where `detect` found AVX2; the loads read
            // exactly the 64 bytes of `block`.
            unsafe {
                let low = _mm256_loadu_si256(block.as_ptr().cast());
                let high = _mm256_loadu_si256(block.as_ptr().add(32).cast());
                // No closures: they would not be inlined with the target features.
                let space = _mm256_set1_epi8(b' ' as i8);
                let newline = _mm256_set1_epi8(b'\n' as i8);
                let spaces = _mm256_movemask_epi8(_mm256_cmpeq_epi8(low, space)) as u32 as u64
                    | (_mm256_movemask_epi8(_mm256_cmpeq_epi8(high, space)) as u32 as u64) << 32;
                let newlines = _mm256_movemask_epi8(_mm256_cmpeq_epi8(low, newline)) as u32 as u64
                    | (_mm256_movemask_epi8(_mm256_cmpeq_epi8(high, newline)) as u32 as u64) << 32;
                // A signed comparison: below 0x20, or 0x80 and above.
                let below_space = _mm256_movemask_epi8(_mm256_cmpgt_epi8(space, low)) as u32 as u64
                    | (_mm256_movemask_epi8(_mm256_cmpgt_epi8(space, high)) as u32 as u64) << 32;
                BlockClasses::from_masks(spaces, newlines, below_space)
            }
        }

        #[inline(always)]
        fn ipv4(self, window: &[u8; 16], len: usize) -> Option<u32> {
            // SAFETY: as in `classify` (SSSE3 and SSE4.1 come with the detected set); the
            // load reads exactly `window`, the table loads one row of each table.
            unsafe {
                let text = _mm_loadu_si128(window.as_ptr().cast());
                let values = _mm_sub_epi8(text, _mm_set1_epi8(b'0' as i8));
                let digit_bytes = _mm_cmpeq_epi8(_mm_min_epu8(values, _mm_set1_epi8(9)), values);
                let dot_bytes = _mm_cmpeq_epi8(text, _mm_set1_epi8(b'.' as i8));
                let digits = _mm_movemask_epi8(digit_bytes) as u32;
                let dots = _mm_movemask_epi8(dot_bytes) as u32;
                let index = octet_layout_index(digits, dots, len)?;
                let shuffle = _mm_loadu_si128(OCTET_LAYOUTS.positions[index].as_ptr().cast());
                let minimums = _mm_loadu_si128(OCTET_LAYOUTS.minimums[index].as_ptr().cast());
                // Lane k holds [0, h, t, u]; weights 100, 10, 1 give the octet in 32 bits.
                let lanes = _mm_shuffle_epi8(values, shuffle);
                let weights = _mm_set1_epi32(i32::from_le_bytes([1, 100, 10, 1]));
                let octets = _mm_madd_epi16(
                    _mm_maddubs_epi16(lanes, weights),
                    _mm_set1_epi32(0x0001_0001),
                );
                let too_large = _mm_cmpgt_epi32(octets, _mm_set1_epi32(255));
                let leading_zero = _mm_cmpgt_epi32(minimums, octets);
                if _mm_movemask_epi8(_mm_or_si128(too_large, leading_zero)) != 0 {
                    return None;
                }
                let bytes = _mm_packus_epi16(_mm_packus_epi32(octets, octets), octets);
                Some((_mm_cvtsi128_si32(bytes) as u32).swap_bytes())
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{BlockClasses, Kernels, OCTET_LAYOUTS, octet_layout_index};
    use std::arch::aarch64::*;

    /// The kernels in NEON (Advanced SIMD), which every `aarch64-*-linux-*` target enables:
    /// no run-time detection and no `target_feature` wrappers are needed.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Neon(());

    impl Neon {
        #[inline(always)]
        pub(crate) fn new() -> Neon {
            Neon(())
        }
    }

    /// Byte `i` of each 16-byte lane weighted `1 << (i % 8)`: a comparison result masked
    /// with it and summed pairwise gives one bit per byte (NEON has no `movemask`).
    const BIT_WEIGHTS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];

    /// Bit `i` set where byte `i` of the four comparison results (64 bytes) is all ones.
    #[inline(always)]
    fn mask64(parts: [uint8x16_t; 4]) -> u64 {
        // SAFETY: NEON is enabled for every aarch64 Linux target; no memory is read but the
        // constant.
        unsafe {
            let weights = vld1q_u8(BIT_WEIGHTS.as_ptr());
            let first = vpaddq_u8(vandq_u8(parts[0], weights), vandq_u8(parts[1], weights));
            let second = vpaddq_u8(vandq_u8(parts[2], weights), vandq_u8(parts[3], weights));
            let quarters = vpaddq_u8(first, second);
            vgetq_lane_u64(vreinterpretq_u64_u8(vpaddq_u8(quarters, quarters)), 0)
        }
    }

    /// Bit `i` set where byte `i` of the comparison result (16 bytes) is all ones.
    #[inline(always)]
    fn mask16(part: uint8x16_t) -> u32 {
        // SAFETY: as in `mask64`.
        unsafe {
            let weighted = vandq_u8(part, vld1q_u8(BIT_WEIGHTS.as_ptr()));
            u32::from(vaddv_u8(vget_low_u8(weighted)))
                | u32::from(vaddv_u8(vget_high_u8(weighted))) << 8
        }
    }

    impl Kernels for Neon {
        #[inline(always)]
        fn classify(self, block: &[u8; 64]) -> BlockClasses {
            // SAFETY: NEON is enabled for the target; the loads read exactly the 64 bytes
            // of `block`.
            unsafe {
                let bytes = vld1q_u8_x4(block.as_ptr());
                let parts = [bytes.0, bytes.1, bytes.2, bytes.3];
                let space = vdupq_n_u8(b' ');
                let newline = vdupq_n_u8(b'\n');
                // A signed comparison: below 0x20, or 0x80 and above.
                let signed_space = vdupq_n_s8(b' ' as i8);
                let spaces = mask64(parts.map(|part| vceqq_u8(part, space)));
                let newlines = mask64(parts.map(|part| vceqq_u8(part, newline)));
                let below_space =
                    mask64(parts.map(|part| vcltq_s8(vreinterpretq_s8_u8(part), signed_space)));
                BlockClasses::from_masks(spaces, newlines, below_space)
            }
        }

        #[inline(always)]
        fn ipv4(self, window: &[u8; 16], len: usize) -> Option<u32> {
            // SAFETY: NEON is enabled for the target; the load reads exactly `window`, the
            // table loads one row of each table.
            unsafe {
                let text = vld1q_u8(window.as_ptr());
                let values = vsubq_u8(text, vdupq_n_u8(b'0'));
                let digits = mask16(vcleq_u8(values, vdupq_n_u8(9)));
                let dots = mask16(vceqq_u8(text, vdupq_n_u8(b'.')));
                let index = octet_layout_index(digits, dots, len)?;
                let lookup = vld1q_u8(OCTET_LAYOUTS.positions[index].as_ptr());
                let minimums = vld1_u16(OCTET_LAYOUTS.minimums[index].as_ptr());
                // Lane k holds [0, h, t, u]; weights 0, 100, 10, 1 summed per lane give the
                // octet (at most 999, so 16 bits hold it).
                let lanes = vqtbl1q_u8(values, lookup);
                let weights = vld1_u8([0u8, 100, 10, 1, 0, 100, 10, 1].as_ptr());
                let low = vmull_u8(vget_low_u8(lanes), weights);
                let high = vmull_u8(vget_high_u8(lanes), weights);
                let pairs = vpaddq_u16(low, high);
                let octets = vget_low_u16(vpaddq_u16(pairs, pairs));
                let too_large = vcgt_u16(octets, vdup_n_u16(255));
                let leading_zero = vcgt_u16(minimums, octets);
                if vget_lane_u64(vreinterpret_u64_u16(vorr_u16(too_large, leading_zero)), 0) != 0 {
                    return None;
                }
                let bytes = vget_lane_u32(
                    vreinterpret_u32_u8(vmovn_u16(vcombine_u16(octets, octets))),
                    0,
                );
                Some(bytes.swap_bytes())
            }
        }
    }
}

/// Calls `$generic(kernels, $args)` with the best kernels this processor has: on x86-64
/// [`Avx2`], through `$avx2`, a wrapper of the same generic function carrying the
/// `target_feature` attribute named at [`Avx2::detect`] (so that everything inlined into it
/// is compiled for those instructions), or else [`Portable`]; on arm64 [`Neon`], which the
/// whole target is compiled for; elsewhere [`Portable`].
///
/// Code instantiated for `Avx2` must reach the kernels through functions inlined into the
/// wrapper, never through closures, which are compiled on their own without the features.
macro_rules! with_kernels {
    ($avx2:path, $generic:path, ($($arg:ident),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            match $crate::scan::Avx2::detect() {
                // SAFETY: `detect` found every feature the wrapper is compiled for (the
                // arguments are plain names: nothing else runs inside this block).
                Some(avx2) => unsafe { $avx2(avx2, $($arg),*) },
                None => $generic($crate::scan::Portable, $($arg),*),
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            $generic($crate::scan::Neon::new(), $($arg),*)
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            $generic($crate::scan::Portable, $($arg),*)
        }
    }};
}
pub(crate) use with_kernels;

/// Where the lines, value separators and unusual bytes of a stretch of decoded text are.
///
/// Bitmaps have one bit per byte (bit `i % 64` of word `i / 64`) and two more words past
/// the text, so a line's bits can always be read a word beyond its end: separators there
/// are all ones, unusual bytes all zeros.
///
/// Buffers only grow: each build overwrites what it uses, and `words` and
/// `newline_count` say how much that is.
#[derive(Clone, Debug, Default)]
pub(crate) struct TextIndex {
    separators: Vec<u64>,
    unusual: Vec<u64>,
    any_unusual: bool,
    /// Bitmap words in use, spare words included.
    words: usize,
    newlines: Vec<u32>,
    newline_count: usize,
}

/// Extra zero words after each bitmap.
const SPARE_WORDS: usize = 2;

impl TextIndex {
    /// Indexes `text` (at most 4 GiB: offsets are 32-bit), reusing the buffers.
    pub(crate) fn build(&mut self, text: &[u8]) {
        with_kernels!(build_with_avx2, build_index, (self, text));
    }

    /// The offsets of the newlines, in order.
    pub(crate) fn newlines(&self) -> &[u32] {
        &self.newlines[..self.newline_count]
    }

    /// Whether `text[start..end]` has no unusual byte (see [`BlockClasses::unusual`]).
    #[inline]
    pub(crate) fn is_plain(&self, start: usize, end: usize) -> bool {
        if !self.any_unusual || start >= end {
            return true;
        }
        let (first, last) = (start / 64, (end - 1) / 64);
        (first..=last).all(|word| {
            let mut bits = self.unusual[word];
            if word == first {
                bits &= u64::MAX << (start % 64);
            }
            if word == last {
                bits &= u64::MAX >> (63 - (end - 1) % 64);
            }
            bits == 0
        })
    }

    /// The separators from byte `start` on.
    #[inline(always)]
    pub(crate) fn separators_from(&self, start: usize) -> LineSeparators<'_> {
        LineSeparators::new(&self.separators[..self.words], start)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,bmi1,bmi2,lzcnt,popcnt,sse4.1,ssse3")]
fn build_with_avx2(kernels: Avx2, index: &mut TextIndex, text: &[u8]) {
    build_index(kernels, index, text);
}

#[inline(always)]
pub(crate) fn build_index<K: Kernels>(kernels: K, index: &mut TextIndex, text: &[u8]) {
    let blocks = text.len().div_ceil(64);
    // Bitmaps are written in place; two newline offsets are written for every block
    // whatever it holds (the count then keeps the real ones), so that blocks with none or
    // one take no branch.
    index.words = blocks + SPARE_WORDS;
    grow_to(&mut index.separators, index.words);
    grow_to(&mut index.unusual, index.words);
    grow_to(&mut index.newlines, 2 * blocks + 2);
    // Past the text, every bit is a separator: a reader looking for the end of a value
    // always finds one.
    index.separators[blocks..index.words].fill(u64::MAX);
    index.unusual[blocks..index.words].fill(0);
    let mut found = 0;
    let mut any_unusual = 0;
    // No closure here: code instantiated for `Avx2` must call the kernels from functions
    // inlined into the `target_feature` wrapper, or their instructions are not used.
    let mut chunks = text.chunks_exact(64);
    for (number, block) in chunks.by_ref().enumerate() {
        let classes = kernels.classify(block.try_into().unwrap_or(&[0; 64]));
        any_unusual |= classes.unusual;
        found = record_block(index, number, classes, found, blocks);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // The tail is padded with a letter: neither separator, newline nor unusual.
        let mut block = [b'x'; 64];
        block[..rest.len()].copy_from_slice(rest);
        let classes = kernels.classify(&block);
        any_unusual |= classes.unusual;
        found = record_block(index, blocks - 1, classes, found, blocks);
    }
    index.newline_count = found;
    index.any_unusual = any_unusual != 0;
}

/// Makes `buffer` at least `len` long, keeping what it holds.
fn grow_to<T: Copy + Default>(buffer: &mut Vec<T>, len: usize) {
    if buffer.len() < len {
        buffer.resize(len, T::default());
    }
}

/// Stores block `number` (of `blocks`)'s classes; `found` newlines are known before it,
/// and the count after it is returned.
#[inline(always)]
fn record_block(
    index: &mut TextIndex,
    number: usize,
    classes: BlockClasses,
    found: usize,
    blocks: usize,
) -> usize {
    index.separators[number] = classes.separators;
    index.unusual[number] = classes.unusual;
    let base = (number * 64) as u32;
    let mut bits = classes.newlines;
    let count = bits.count_ones() as usize;
    index.newlines[found] = base + bits.trailing_zeros();
    bits &= bits.wrapping_sub(1);
    index.newlines[found + 1] = base + bits.trailing_zeros();
    if count > 2 {
        // Room for the block's offsets and the pair of every block still to come.
        let room = found + count + 2 * (blocks - number);
        many_newlines(
            &mut index.newlines,
            room,
            found,
            base,
            bits & bits.wrapping_sub(1),
        );
    }
    found + count
}

/// Writes the offsets of a block's third and later newlines (`bits`) after its first two
/// at `found`: only blocks of very short lines get here.
#[cold]
fn many_newlines(newlines: &mut Vec<u32>, room: usize, found: usize, base: u32, mut bits: u64) {
    grow_to(newlines, room);
    let mut at = found + 2;
    while bits != 0 {
        newlines[at] = base + bits.trailing_zeros();
        bits &= bits - 1;
        at += 1;
    }
}

/// The separator bits of text from one byte on, as words: bit 0 of word 0 is that byte.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LineSeparators<'a> {
    words: &'a [u64],
    first_word: usize,
    shift: u32,
}

impl<'a> LineSeparators<'a> {
    #[inline(always)]
    pub(crate) fn new(words: &'a [u64], start: usize) -> Self {
        LineSeparators {
            words,
            first_word: start / 64,
            shift: (start % 64) as u32,
        }
    }

    /// Word `index` (bits `64 * index ..`). Past the bitmap every bit is set, like the
    /// spare words: a reader looking for the next separator always finds one, however many
    /// values it still expects.
    #[inline(always)]
    pub(crate) fn word(&self, index: usize) -> u64 {
        let at = self.first_word + index;
        let low = self.words.get(at).copied().unwrap_or(u64::MAX);
        let high = self.words.get(at + 1).copied().unwrap_or(u64::MAX);
        ((u128::from(high) << 64 | u128::from(low)) >> self.shift) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The classes of a block, byte by byte.
    fn classes_by_bytes(block: &[u8; 64]) -> BlockClasses {
        let mut classes = BlockClasses::default();
        for (index, &byte) in block.iter().enumerate() {
            let bit = 1u64 << index;
            if byte == b' ' || byte == b'\n' {
                classes.separators |= bit;
            }
            if byte == b'\n' {
                classes.newlines |= bit;
            }
            if (byte < 0x20 && byte != b'\n') || byte > 0x7f {
                classes.unusual |= bit;
            }
        }
        classes
    }

    fn octets_by_std(token: &[u8]) -> Option<u32> {
        let text = std::str::from_utf8(token).ok()?;
        text.parse::<std::net::Ipv4Addr>().ok().map(u32::from)
    }

    fn window_of(token: &[u8], rest: &[u8]) -> [u8; 16] {
        let mut window = [b' '; 16];
        let bytes: Vec<u8> = token.iter().chain(rest).copied().collect();
        let shown = bytes.len().min(16);
        window[..shown].copy_from_slice(&bytes[..shown]);
        window
    }

    /// Bytes of every class, spaces and newlines most often: drawn as plain bytes and
    /// mapped, which generates long texts far faster than a union strategy per byte.
    fn interesting_text(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), len).prop_map(|bytes| {
            bytes
                .into_iter()
                .map(|byte| match byte % 16 {
                    0..=3 => b' ',
                    4 | 5 => b'\n',
                    6 => b'\r',
                    7 => b'\t',
                    8 => b'.',
                    9 => 0x7f,
                    10 => 0x80 | byte,
                    11 => 0x1f,
                    12 => byte,
                    _ => b'a' + byte % 26,
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn portable_classes_are_exact(
            block in interesting_text(64..65),
        ) {
            let block: [u8; 64] = block.try_into().unwrap();
            prop_assert_eq!(Portable.classify(&block), classes_by_bytes(&block));
        }

        #[test]
        fn portable_ipv4_agrees_with_the_standard_library(
            token in "[0-9.]{0,16}|([0-9]{1,3}\\.){3}[0-9]{1,3}",
            rest in "[ 0-9.a-z]{0,16}",
        ) {
            let bytes = token.as_bytes();
            prop_assume!(bytes.len() <= 16);
            let window = window_of(bytes, rest.as_bytes());
            prop_assert_eq!(Portable.ipv4(&window, bytes.len()), octets_by_std(bytes));
        }
    }

    #[cfg(target_arch = "x86_64")]
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn avx2_kernels_agree_with_the_portable_ones(
            block in interesting_text(64..65),
            token in "[0-9.]{0,16}|([0-9]{1,3}\\.){3}[0-9]{1,3}|[0-9a-f:.]{7,15}",
            rest in "[ 0-9.a-z]{0,16}",
        ) {
            let Some(avx2) = Avx2::detect() else {
                return Ok(());
            };
            let block: [u8; 64] = block.try_into().unwrap();
            prop_assert_eq!(avx2.classify(&block), Portable.classify(&block));
            let bytes = token.as_bytes();
            prop_assume!(bytes.len() <= 16);
            let window = window_of(bytes, rest.as_bytes());
            prop_assert_eq!(avx2.ipv4(&window, bytes.len()), Portable.ipv4(&window, bytes.len()));
        }
    }

    #[cfg(target_arch = "aarch64")]
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn neon_kernels_agree_with_the_portable_ones(
            block in interesting_text(64..65),
            token in "[0-9.]{0,16}|([0-9]{1,3}\\.){3}[0-9]{1,3}|[0-9a-f:.]{7,15}",
            rest in "[ 0-9.a-z]{0,16}",
        ) {
            let block: [u8; 64] = block.try_into().unwrap();
            prop_assert_eq!(Neon::new().classify(&block), Portable.classify(&block));
            let bytes = token.as_bytes();
            prop_assume!(bytes.len() <= 16);
            let window = window_of(bytes, rest.as_bytes());
            prop_assert_eq!(
                Neon::new().ipv4(&window, bytes.len()),
                Portable.ipv4(&window, bytes.len())
            );
        }

        #[test]
        fn neon_and_portable_indexes_agree(
            text in interesting_text(0..700),
        ) {
            let mut portable = TextIndex::default();
            build_index(Portable, &mut portable, &text);
            let mut vector = TextIndex::default();
            build_index(Neon::new(), &mut vector, &text);
            prop_assert_eq!(&portable.separators, &vector.separators);
            prop_assert_eq!(&portable.unusual, &vector.unusual);
            prop_assert_eq!(&portable.newlines, &vector.newlines);
        }
    }

    #[cfg(target_arch = "x86_64")]
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn indexes_agree_whichever_kernels_build_them(
            text in interesting_text(0..700),
        ) {
            let Some(avx2) = Avx2::detect() else {
                return Ok(());
            };
            let mut portable = TextIndex::default();
            build_index(Portable, &mut portable, &text);
            let mut vector = TextIndex::default();
            // SAFETY: `detect` found the features.
            unsafe { build_with_avx2(avx2, &mut vector, &text) };
            prop_assert_eq!(&portable.separators, &vector.separators);
            prop_assert_eq!(&portable.unusual, &vector.unusual);
            prop_assert_eq!(&portable.newlines, &vector.newlines);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn the_index_marks_every_newline_separator_and_unusual_byte(
            text in interesting_text(0..700),
            start in 0usize..700,
        ) {
            let mut index = TextIndex::default();
            index.build(&text);
            let newlines: Vec<u32> = text
                .iter()
                .enumerate()
                .filter(|(_, byte)| **byte == b'\n')
                .map(|(at, _)| at as u32)
                .collect();
            prop_assert_eq!(index.newlines(), &newlines[..]);
            let start = start.min(text.len());
            let separators = index.separators_from(start);
            for (offset, &byte) in text[start..].iter().enumerate() {
                let bit = separators.word(offset / 64) >> (offset % 64) & 1;
                prop_assert_eq!(bit == 1, byte == b' ' || byte == b'\n', "at {}", start + offset);
            }
            let plain = text[start..].iter().all(|&byte| (0x20..0x80).contains(&byte) || byte == b'\n');
            prop_assert_eq!(index.is_plain(start, text.len()), plain);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// One index built over texts of every size in turn (as the splitter reuses it)
        /// describes each as a fresh one would.
        #[test]
        fn a_reused_index_forgets_earlier_texts(
            texts in proptest::collection::vec(interesting_text(0..300), 1..6),
        ) {
            let mut reused = TextIndex::default();
            for text in &texts {
                reused.build(text);
                let mut fresh = TextIndex::default();
                fresh.build(text);
                prop_assert_eq!(reused.newlines(), fresh.newlines());
                prop_assert_eq!(reused.is_plain(0, text.len()), fresh.is_plain(0, text.len()));
                for word in 0..text.len() / 64 + SPARE_WORDS {
                    prop_assert_eq!(
                        reused.separators_from(0).word(word),
                        fresh.separators_from(0).word(word)
                    );
                }
            }
        }
    }

    #[test]
    fn blocks_of_many_short_lines_keep_their_newlines_in_order() {
        let text = b"a\nb\n\n\nc\n".repeat(20);
        let mut index = TextIndex::default();
        index.build(&text);
        let expected: Vec<u32> = (0..text.len() as u32)
            .filter(|&at| text[at as usize] == b'\n')
            .collect();
        assert_eq!(index.newlines(), &expected[..]);
    }

    #[test]
    fn every_octet_layout_reads_its_addresses() {
        for index in 0..81 {
            let lengths = [
                index / 27 + 1,
                index / 9 % 3 + 1,
                index / 3 % 3 + 1,
                index % 3 + 1,
            ];
            for sample in ["1", "25", "255"].iter().zip(["9", "10", "199"]) {
                let octets: Vec<&str> = lengths
                    .iter()
                    .map(|&length| {
                        if length == 3 {
                            *sample.0
                        } else {
                            &sample.1[..length.min(sample.1.len())]
                        }
                    })
                    .collect();
                let token = octets.join(".");
                let window = window_of(token.as_bytes(), b" 1.2.3.4");
                let expected = octets_by_std(token.as_bytes());
                assert_eq!(Portable.ipv4(&window, token.len()), expected, "{token}");
                #[cfg(target_arch = "x86_64")]
                if let Some(avx2) = Avx2::detect() {
                    assert_eq!(avx2.ipv4(&window, token.len()), expected, "{token}");
                }
                #[cfg(target_arch = "aarch64")]
                assert_eq!(Neon::new().ipv4(&window, token.len()), expected, "{token}");
            }
        }
    }
}
