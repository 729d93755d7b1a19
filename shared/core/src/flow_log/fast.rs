//! The fast readers: read a well-formed line in one pass, each value straight into its
//! slot, using the separator index the kernels (`crate::scan`) built; the lines of an
//! object are read in place ([`read_lines`]), a single line from a padded copy.
//!
//! The reference parser (`parse`) is the specification: the fast readers only accept lines
//! it accepts, with the same values, and decline everything else (runs of spaces, invalid
//! values, rare forms), which then takes the general path. The property tests below check
//! that they agree, with every kernel the processor has.

use crate::decode::{DecodeError, LineBatch, LineSink, ObjectLines, RecordSink};
#[cfg(target_arch = "x86_64")]
use crate::scan::Avx2;
use crate::scan::{Kernels, LineSeparators, TextIndex, build_index};

use super::address::read_unusual_address;
use super::fields::{Action, LogStatus};
use super::format::{DEFAULT_FIELDS, DEFAULT_READERS, FlowFormat, Reader};
use super::parse::{RecordParser, normalise_timestamp, starts_like_export_timestamp, text_slot};
use super::record::{FlowRecord, Slot};

impl RecordParser {
    /// Reads a line in place, knowing its separators: the fast path for lines of an object.
    /// `window` starts with the line, which is shorter than [`MARKED_MAX_LINE`]; the bytes
    /// after it may be anything. `None` when the fast readers decline the line;
    /// [`RecordParser::parse`] then decides.
    #[inline(always)]
    pub(crate) fn read_marked<'a, K: Kernels>(
        &'a mut self,
        kernels: K,
        line: &'a str,
        window: &LineWindow,
        separators: LineSeparators<'_>,
    ) -> Option<FlowRecord<'a>> {
        // A first column of text would take an export timestamp as its value; such lines
        // are for `parse` to strip or refuse. Numbers, addresses and keywords refuse it.
        if self.first_column_is_text && starts_like_export_timestamp(line.as_bytes()) {
            return None;
        }
        let marked = MarkedLine {
            window,
            len: line.len(),
            separators,
        };
        read_format(
            kernels,
            self.is_default,
            &self.format,
            &marked,
            &mut self.slots,
        )
        .then(|| self.record(line))
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,bmi1,bmi2,lzcnt,popcnt,sse4.1,ssse3")]
pub(crate) fn read_lines_with_avx2<R: RecordSink>(
    kernels: Avx2,
    object: &mut ObjectLines<R>,
    lines: &LineBatch<'_>,
) -> Result<(), DecodeError> {
    read_lines(kernels, object, lines)
}

/// The lines of a batch: those of plain bytes, with room to read past their end, go to the
/// parser's fast readers in place; the rest, and any they decline, take the line-by-line
/// path, which finds headers, blank lines and the reasons for malformed ones.
#[inline(always)]
pub(crate) fn read_lines<K: Kernels, R: RecordSink>(
    kernels: K,
    object: &mut ObjectLines<R>,
    lines: &LineBatch<'_>,
) -> Result<(), DecodeError> {
    let text = lines.text;
    let mut start = 0;
    for (&newline, line_number) in lines.index.newlines().iter().zip(lines.first_line_number..) {
        let end = newline as usize;
        let bytes = &text[start..end];
        // Lines close to the end of the text are read from a copy instead.
        let window = text[start..].first_chunk::<{ size_of::<LineWindow>() }>();
        let fast = match (&mut object.parser, window) {
            (Some(parser), Some(window))
                if bytes.len() < MARKED_MAX_LINE && lines.index.is_plain(start, end) =>
            {
                // SAFETY: `is_plain` found only bytes from 0x20 to 0x7f: ASCII, so UTF-8.
                let line = unsafe { std::str::from_utf8_unchecked(bytes) };
                let separators = lines.index.separators_from(start);
                parser.read_marked(kernels, line, window, separators)
            }
            _ => None,
        };
        match fast {
            Some(record) => object.records.record(&record),
            None => object.line(line_number, bytes)?,
        }
        start = end + 1;
    }
    Ok(())
}

/// The fast readers take lines shorter than this; longer ones (no real record) take the
/// general path. A power of two: reads mask their offsets with it.
pub(crate) const MARKED_MAX_LINE: usize = 512;

/// The bytes the fast readers see of a line: the line, then whatever follows it. Every
/// read is at most 16 bytes from an offset below [`MARKED_MAX_LINE`], so it stays inside
/// without a bounds check.
pub(crate) type LineWindow = [u8; MARKED_MAX_LINE + 32];

/// A single line copied with padding after it, and its index, for [`RecordParser::parse`].
#[derive(Clone, Debug)]
pub(super) struct LineScratch {
    window: Box<LineWindow>,
    index: TextIndex,
}

impl Default for LineScratch {
    fn default() -> Self {
        LineScratch {
            window: Box::new([b' '; MARKED_MAX_LINE + 32]),
            index: TextIndex::default(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,bmi1,bmi2,lzcnt,popcnt,sse4.1,ssse3")]
pub(super) fn read_copied_with_avx2(kernels: Avx2, parser: &mut RecordParser, line: &str) -> bool {
    read_copied(kernels, parser, line)
}

/// The fast readers on a copy of `line` (trimmed), for lines that arrive one at a time.
#[inline(always)]
pub(super) fn read_copied<K: Kernels>(kernels: K, parser: &mut RecordParser, line: &str) -> bool {
    let len = line.len();
    if len >= MARKED_MAX_LINE {
        return false;
    }
    let scratch = &mut parser.scratch;
    scratch.window[..len].copy_from_slice(line.as_bytes());
    scratch.window[len] = b'\n';
    build_index(kernels, &mut scratch.index, &scratch.window[..=len]);
    // A newline inside the line (a CloudWatch message may hold one) is not a separator
    // for the general path: such lines are left to it.
    if scratch.index.newlines().len() != 1 {
        return false;
    }
    let marked = MarkedLine {
        window: &scratch.window,
        len,
        separators: scratch.index.separators_from(0),
    };
    read_format(
        kernels,
        parser.is_default,
        &parser.format,
        &marked,
        &mut parser.slots,
    )
}

/// The fast readers for a format: the default one's, specialised (`is_default`), or the
/// format's reader table.
#[inline(always)]
fn read_format<K: Kernels>(
    kernels: K,
    is_default: bool,
    format: &FlowFormat,
    line: &MarkedLine<'_>,
    slots: &mut [Slot],
) -> bool {
    if is_default {
        read_default_marked(kernels, line, slots)
    } else {
        read_marked(kernels, &format.readers, line, slots)
    }
}

/// A line as the fast readers see it, and where its separators are. The byte at `len` is
/// a separator (the newline), and separators go on after it: the index ends with a word of
/// them.
struct MarkedLine<'a> {
    window: &'a LineWindow,
    len: usize,
    separators: LineSeparators<'a>,
}

/// The ends of a line's values, in order: each call gives the next separator.
struct ValueEnds<'a> {
    separators: LineSeparators<'a>,
    word: usize,
    bits: u64,
}

impl<'a> ValueEnds<'a> {
    #[inline(always)]
    fn new(separators: LineSeparators<'a>) -> Self {
        ValueEnds {
            separators,
            word: 0,
            bits: separators.word(0),
        }
    }

    /// The first separator not yet returned: there is always one more.
    #[inline(always)]
    fn next(&mut self) -> usize {
        while self.bits == 0 {
            self.word += 1;
            self.bits = self.separators.word(self.word);
        }
        let end = self.word * 64 + self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        end
    }
}

/// Reads a well-formed line in one pass from left to right, each value straight into its
/// slot. `false` when the line is anything else: a wrong field count, runs of spaces, an
/// invalid value, or a rare form the fast readers leave alone (numbers of 17 or more
/// digits). The caller then takes the general path, which accepts exactly the same values
/// and explains errors; so this function only has to be right about the lines it accepts.
///
/// Values past the line's end (a line with too few of them) are read as garbage from the
/// window and then refused by the final check.
#[inline(always)]
fn read_marked<K: Kernels>(
    kernels: K,
    readers: &[Reader],
    line: &MarkedLine<'_>,
    slots: &mut [Slot],
) -> bool {
    let mut ends = ValueEnds::new(line.separators);
    let mut start = 0;
    let mut valid = true;
    for (reader, slot) in readers.iter().zip(slots.iter_mut()) {
        let end = ends.next();
        valid &= read_value(kernels, *reader, line.window, start, end, slot);
        start = end + 1;
    }
    valid && start == line.len + 1
}

/// [`read_marked`] for the default format, written out column by column so that each
/// reader is known at compile time: no dispatch per value.
#[inline(always)]
fn read_default_marked<K: Kernels>(kernels: K, line: &MarkedLine<'_>, slots: &mut [Slot]) -> bool {
    let Some(slots) = slots.first_chunk_mut::<{ DEFAULT_FIELDS.len() }>() else {
        return false;
    };
    let mut ends = ValueEnds::new(line.separators);
    let mut start = 0;
    macro_rules! columns {
        ($($column:literal)*) => {$(
            let end = ends.next();
            let reader = DEFAULT_READERS[$column];
            if !read_value(kernels, reader, line.window, start, end, &mut slots[$column]) {
                return false;
            }
            start = end + 1;
        )*};
    }
    columns!(0 1 2 3 4 5 6 7 8 9 10 11 12 13);
    start == line.len + 1
}

/// Reads `window[start..end]` (no separator inside; possibly empty) into `slot`; `false`
/// for anything the general path must look at. Reads up to 16 bytes from `start` whatever
/// the value's length.
#[inline(always)]
fn read_value<K: Kernels>(
    kernels: K,
    reader: Reader,
    window: &LineWindow,
    start: usize,
    end: usize,
    slot: &mut Slot,
) -> bool {
    let length = end.wrapping_sub(start);
    let start = start % MARKED_MAX_LINE;
    let first = window_word(window, start);
    // `-` and a separator: an absent value.
    let is_absent = length == 1 && first as u8 == b'-';
    let value = match reader {
        Reader::Text if length == 0 || length >= MARKED_MAX_LINE => return false,
        Reader::Text if is_absent => Slot::Absent,
        Reader::Text => text_slot(start, start + length),
        Reader::BoundedText { max_bytes, .. } if length == 0 || length > max_bytes as usize => {
            return false;
        }
        Reader::BoundedText { .. } if is_absent => Slot::Absent,
        Reader::BoundedText { .. } => text_slot(start, start + length),
        Reader::Number { max, .. } => match read_number(window, start, length) {
            Some(value) if value <= max => Slot::Number(value),
            Some(_) => return false,
            None if is_absent => Slot::Absent,
            None => return false,
        },
        Reader::Timestamp(_) => match read_number(window, start, length) {
            Some(value) => Slot::Number(normalise_timestamp(value)),
            None if is_absent => Slot::Absent,
            None => return false,
        },
        Reader::Address(_) => {
            // A `match`, not a closure: closures lose the kernels' target features.
            let bits = match window[start..].first_chunk::<16>() {
                Some(address) => kernels.ipv4(address, length),
                None => None,
            };
            match bits {
                Some(bits) => Slot::Ipv4(bits),
                None if is_absent => Slot::Absent,
                None => match window
                    .get(start..start + length)
                    .and_then(read_unusual_address)
                {
                    Some(value) => value,
                    None => return false,
                },
            }
        }
        Reader::Action | Reader::LogStatus => {
            // A keyword's length in bytes is the number of bytes its mask keeps.
            let is = |(keyword, mask): (u64, u64)| {
                length == (mask.count_ones() / 8) as usize && first & mask == keyword
            };
            match reader {
                Reader::Action if is(REJECT) => Slot::Action(Action::Reject),
                Reader::Action if is(ACCEPT) => Slot::Action(Action::Accept),
                Reader::LogStatus if is(OK) => Slot::LogStatus(LogStatus::Ok),
                Reader::LogStatus if is(NODATA) => Slot::LogStatus(LogStatus::NoData),
                Reader::LogStatus if is(SKIPDATA) => Slot::LogStatus(LogStatus::SkipData),
                _ if is_absent => Slot::Absent,
                _ => return false,
            }
        }
    };
    *slot = value;
    true
}

/// The eight bytes of `window` from `at` (below [`MARKED_MAX_LINE`]) as a little-endian
/// word.
#[inline(always)]
fn window_word(window: &LineWindow, at: usize) -> u64 {
    let bytes = window[at % MARKED_MAX_LINE..].first_chunk::<8>();
    u64::from_le_bytes(bytes.copied().unwrap_or_default())
}

/// A keyword of up to eight bytes as the little-endian word [`window_word`] reads from its
/// start, and the mask of its bytes.
const fn keyword(text: &[u8]) -> (u64, u64) {
    let mut bytes = [0u8; 8];
    let mut index = 0;
    while index < text.len() {
        bytes[index] = text[index];
        index += 1;
    }
    let mask = if text.len() == 8 {
        u64::MAX
    } else {
        (1 << (8 * text.len())) - 1
    };
    (u64::from_le_bytes(bytes), mask)
}

const REJECT: (u64, u64) = keyword(b"REJECT");
const ACCEPT: (u64, u64) = keyword(b"ACCEPT");
const OK: (u64, u64) = keyword(b"OK");
const NODATA: (u64, u64) = keyword(b"NODATA");
const SKIPDATA: (u64, u64) = keyword(b"SKIPDATA");

const POWERS_OF_TEN: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The `length` decimal digits at `window[start..]` (1 to 16 of them; more are left to the
/// general path, which checks for overflow), or `None`.
#[inline(always)]
fn read_number(window: &LineWindow, start: usize, length: usize) -> Option<u64> {
    let first = window_word(window, start);
    match length {
        1..=8 => digits_value(first, length),
        9..=16 => {
            let high = digits_value(first, 8)?;
            let low = digits_value(window_word(window, start + 8), length - 8)?;
            Some(high * POWERS_OF_TEN[length - 8] + low)
        }
        _ => None,
    }
}

/// The value of the first `digits` (1 to 8) bytes of the little-endian `word` when they
/// are all ASCII digits, the first byte being the most significant: pairs, then quads,
/// then all eight combined with three multiplications.
#[inline(always)]
fn digits_value(word: u64, digits: usize) -> Option<u64> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let values = word.wrapping_sub(ONES * u64::from(b'0'));
    // A byte is a digit when its value is at most 9: neither its own high bit nor the one
    // reached by adding 0x76 is set. Carries start only at bytes already flagged.
    let not_digits = (values | values.wrapping_add(ONES * 0x76)) & (ONES << 7);
    let shift = 64 - 8 * digits as u32;
    if not_digits << shift != 0 {
        return None;
    }
    // Moving the digits to the top bytes leaves zeros in front: leading zeros.
    let value = values << shift;
    let value = (value.wrapping_mul(10 << 8 | 1) >> 8) & 0x00ff_00ff_00ff_00ff;
    let value = (value.wrapping_mul(100 << 16 | 1) >> 16) & 0x0000_ffff_0000_ffff;
    Some(value.wrapping_mul(10_000 << 32 | 1) >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow_log::{Field, FieldKind, FieldValue, MAX_COLUMNS, ParseError};
    use crate::scan::Portable;
    use proptest::prelude::*;
    use proptest::sample::{select, subsequence};

    /// Values that are valid for some kinds and not others, or sit on an edge of a fast
    /// reader: lengths around eight and sixteen digits, the u64 and port limits, unusual
    /// address forms, near-miss keywords.
    const TOKENS: &[&str] = &[
        "-",
        "--",
        "0",
        "00",
        "7",
        "007",
        "255",
        "256",
        "65535",
        "65536",
        "1418530010",
        "1418530010000",
        "12345678",
        "123456789",
        "999999999999999",
        "1234567890123456",
        "9999999999999999999",
        "18446744073709551615",
        "18446744073709551616",
        "000000000000000000000001",
        "1.2.3.4",
        "10.0.0.220",
        "255.255.255.255",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3",
        "1.2.3.4.5",
        "1.2.3.4x",
        "::",
        "::1",
        "2001:db8::ffff:0:1",
        "::ffff:1.2.3.4",
        "fe80::1%eth0",
        "2001:DB8::F",
        "REJECT",
        "ACCEPT",
        "REJECTED",
        "reject",
        "OK",
        "OKAY",
        "NODATA",
        "SKIPDATA",
        "SKIPDATAX",
        "eni-1235b8ca123456789",
        "x\ty",
        "12a",
        "a12",
        "é",
        "9é",
        "1\u{a0}2",
        "-1",
        "+1",
    ];

    /// Tokens that are valid for a field of this kind, most of the time.
    fn plausible(kind: FieldKind) -> &'static [&'static str] {
        match kind {
            FieldKind::Number { .. } | FieldKind::Timestamp => &[
                "0",
                "6",
                "443",
                "65535",
                "1418530010",
                "12345678",
                "123456789012345",
            ],
            FieldKind::Address => &["10.0.0.1", "203.0.113.12", "::1", "2001:db8::1"],
            FieldKind::Action => &["ACCEPT", "REJECT"],
            FieldKind::LogStatus => &["OK", "NODATA", "SKIPDATA"],
            FieldKind::Text => &["eni-1235b8ca123456789", "123456789010", "x"],
        }
    }

    /// A few fields in any order and, for each, a plausible token or any tricky one.
    fn record_like_lines() -> impl Strategy<Value = (Vec<Field>, Vec<&'static str>)> {
        subsequence(Field::ALL.to_vec(), 1..8)
            .prop_shuffle()
            .prop_flat_map(|fields| {
                let tokens: Vec<_> = fields
                    .iter()
                    .map(|field| {
                        prop_oneof![
                            3 => select(plausible(field.kind())),
                            1 => select(TOKENS),
                        ]
                    })
                    .collect();
                (Just(fields), tokens)
            })
    }

    fn line_of(tokens: &[&str], spaces: &[usize]) -> String {
        let mut line = String::new();
        for (token, spaces) in tokens.iter().zip(spaces) {
            line.push_str(token);
            line.push_str(&" ".repeat(*spaces));
        }
        line.trim_ascii().to_owned()
    }

    /// What the fast readers make of `line` with each kernel this processor has: the slots
    /// when they accept it. Every kernel must agree.
    fn fast_slots(parser: &mut RecordParser, line: &str) -> Option<Vec<Slot>> {
        let portable = read_copied(Portable, parser, line).then(|| parser.slots.clone());
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = Avx2::detect() {
            // SAFETY: `detect` found the features.
            let vector = unsafe { read_copied_with_avx2(avx2, parser, line) };
            assert_eq!(vector.then(|| parser.slots.clone()), portable, "{line:?}");
        }
        portable
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the fast readers accept, the general path accepts with the same values;
        /// what they decline goes to the general path, so parsing is unchanged.
        #[test]
        fn fast_reading_agrees_with_the_general_path(
            (fields, tokens) in record_like_lines(),
            spaces in proptest::collection::vec(1usize..3, 8),
            extra in proptest::option::weighted(0.1, select(TOKENS)),
        ) {
            let mut tokens = tokens;
            tokens.extend(extra);
            let line = line_of(&tokens, &spaces);
            let mut parser = RecordParser::new(FlowFormat::from_fields(&fields));
            if let Some(fast) = fast_slots(&mut parser, &line) {
                prop_assert_eq!(parser.read_by_tokens(&line), Ok(()));
                prop_assert_eq!(&fast, &parser.slots);
            }
        }

        #[test]
        fn the_default_format_reader_agrees_with_the_general_one(
            tokens in DEFAULT_FIELDS.map(|field| {
                prop_oneof![
                    3 => select(plausible(field.kind())),
                    1 => select(TOKENS),
                ]
            }),
            spaces in proptest::collection::vec(1usize..3, 15),
            extra in proptest::option::weighted(0.1, select(TOKENS)),
            missing in 0usize..30,
        ) {
            let mut tokens = tokens.to_vec();
            tokens.extend(extra);
            if missing < tokens.len() {
                tokens.remove(missing);
            }
            let line = line_of(&tokens, &spaces);
            let mut default = RecordParser::new(FlowFormat::default());
            let mut general = default.clone();
            // The same format, read column by column through the reader table.
            general.is_default = false;
            prop_assert_eq!(fast_slots(&mut default, &line), fast_slots(&mut general, &line));
        }

        #[test]
        fn word_digit_reading_agrees_with_the_standard_library(
            digits in "[0-9]{0,17}",
            rest in "[ -~\u{80}-\u{ff}]{0,20}",
        ) {
            let mut window = [b' '; size_of::<LineWindow>()];
            let text = format!("{digits} {rest}");
            window[..text.len()].copy_from_slice(text.as_bytes());
            let bytes = &window;
            let expected = (1..=16).contains(&digits.len()).then(|| digits.parse::<u64>().unwrap());
            prop_assert_eq!(read_number(bytes, 0, digits.len()), expected);
            // Any shorter length reads a prefix; a longer one takes in the space.
            for length in 1..digits.len().min(16) {
                let prefix = digits[..length].parse::<u64>().unwrap();
                prop_assert_eq!(read_number(bytes, 0, length), Some(prefix));
            }
            prop_assert_eq!(read_number(bytes, 0, digits.len() + 1), None);
        }
    }

    #[test]
    fn lines_of_any_length_parse_alike_across_mask_blocks_and_past_the_fast_limit() {
        // A text column whose length moves the following tokens across the 64-byte
        // boundaries of the separator bitmap, and finally past the fast readers' limit.
        let format =
            FlowFormat::from_log_format("${vpc-id} ${srcaddr} ${dstport} ${action}").unwrap();
        let mut parser = RecordParser::new(format);
        for padding in 0..600 {
            let vpc = format!("vpc-{}", "a".repeat(padding));
            for line in [
                format!("{vpc} 10.1.2.3  22 REJECT"),
                format!("{vpc} 10.1.2.3 22 REJECT"),
            ] {
                let record = parser.parse(&line).unwrap();
                assert_eq!(record.text(Field::VpcId), Some(vpc.as_str()), "{padding}");
                assert_eq!(
                    record.address(Field::SrcAddr),
                    Some("10.1.2.3".parse().unwrap())
                );
                assert_eq!(record.number(Field::DstPort), Some(22));
                assert_eq!(record.action(), Some(Action::Reject));
                let extra = format!("{line} x");
                assert!(matches!(
                    parser.parse(&extra),
                    Err(ParseError::FieldCount { found: 5, .. })
                ));
            }
        }
    }

    #[test]
    fn a_newline_inside_a_message_is_not_a_separator() {
        // CloudWatch messages reach `parse` whole; the general path splits on spaces only.
        let mut parser = RecordParser::new(FlowFormat::default());
        let line =
            "2 123456789010 eni-1 1.2.3.4 5.6.7.8 1 2 6 1 1 1418530010 1418530070 REJECT\nOK";
        assert!(matches!(
            parser.parse(line),
            Err(ParseError::FieldCount {
                expected: 14,
                found: 13,
                ..
            })
        ));
        let mut texts =
            RecordParser::new(FlowFormat::from_log_format("${vpc-id} ${az-id}").unwrap());
        assert!(
            texts
                .parse("a\nb c")
                .is_ok_and(|record| record.text(Field::VpcId) == Some("a\nb"))
        );
    }

    #[test]
    fn the_widest_format_reads_a_short_line_to_its_end() {
        // 255 columns against a line of three values: the fast readers walk past the
        // line's end for the missing ones and must stop; the general path then counts.
        let names: Vec<String> = (0..MAX_COLUMNS)
            .map(|index| format!("${{x{index}}}"))
            .collect();
        let format = FlowFormat::from_log_format(&names.join(" ")).unwrap();
        let mut parser = RecordParser::new(format.clone());
        assert!(matches!(
            parser.parse("a b c"),
            Err(ParseError::FieldCount {
                expected: 255,
                found: 3,
                ..
            })
        ));
        let wide = names.iter().map(|_| "v").collect::<Vec<_>>().join(" ");
        let record = parser.parse(&wide).unwrap();
        assert_eq!(record.column_value(254), Some(FieldValue::Text("v")));
    }

    #[test]
    fn only_the_default_format_takes_the_default_reader() {
        assert!(RecordParser::new(FlowFormat::default()).is_default);
        let mut fields = DEFAULT_FIELDS.to_vec();
        fields.swap(5, 6);
        assert!(!RecordParser::new(FlowFormat::from_fields(&fields)).is_default);
    }

    #[test]
    fn typical_lines_take_the_fast_path_and_oddities_do_not() {
        let mut parser = RecordParser::new(FlowFormat::default());
        for line in [
            "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK",
            "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA",
            "2 123456789010 eni-1 2001:db8::1 ::1 0 0 58 1 84 1418530010 1418530070 ACCEPT SKIPDATA",
            "2 123456789010 eni-1 ::ffff:1.2.3.4 1.2.3.4 1 2 6 1 1 1 1 ACCEPT OK",
        ] {
            assert!(fast_slots(&mut parser, line).is_some(), "{line}");
        }
        for line in [
            "",
            // Runs of spaces and numbers too long for a word pair: valid, and left to the
            // general path.
            "2  123456789010 eni-1 1.2.3.4 1.2.3.4 1 2 6 1 1 1418530010 1418530070 ACCEPT OK",
            "2 123456789010 eni-1 1.2.3.4 1.2.3.4 1 2 6 1 18446744073709551615 1 1 ACCEPT OK",
        ] {
            assert!(fast_slots(&mut parser, line).is_none(), "{line}");
            assert!(line.is_empty() || parser.parse(line).is_ok(), "{line}");
        }
    }
}
