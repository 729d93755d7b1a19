//! The reference parser: [`RecordParser`] and its general path, which splits a line into
//! tokens, reads each column with its [`Reader`] and explains the first invalid one
//! ([`ParseError`]). It is the specification of what a valid record is: the fast readers
//! (`fast`), which [`RecordParser::parse`] tries first, only take the lines they can read
//! exactly as it does, and property tests there check that they agree.

use super::address::read_address;
#[cfg(target_arch = "x86_64")]
use super::fast::read_copied_with_avx2;
use super::fast::{LineScratch, read_copied};
use super::fields::{Action, Field, LogStatus};
use super::format::{DEFAULT_READERS, FlowFormat, Reader};
use super::record::{FlowRecord, Slot};
use super::tokens::{token_end, tokenize};
use crate::scan::with_kernels;

/// Why one line is not a valid record of the format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("expected {expected} fields, found {found}: {excerpt:?}")]
    FieldCount {
        expected: usize,
        found: usize,
        /// The start of the line (see [`MAX_QUOTED_VALUE`]).
        excerpt: String,
    },
    #[error("{field}: {value:?} is not a number")]
    NotANumber { field: Field, value: String },
    #[error("{field}: {value:?} is larger than {max}")]
    OutOfRange {
        field: Field,
        value: String,
        max: u64,
    },
    #[error("{field}: {value:?} is not an IPv4 or IPv6 address")]
    NotAnAddress { field: Field, value: String },
    #[error("{field}: {length} bytes, longer than the {max} stored: {value:?}")]
    TooLongValue {
        field: Field,
        length: usize,
        max: usize,
        /// The start of the value (see [`MAX_QUOTED_VALUE`]).
        value: String,
    },
    #[error("{field}: {value:?} is not one of {expected}")]
    UnknownKeyword {
        field: Field,
        value: String,
        expected: &'static str,
    },
    #[error(
        "line starts with a timestamp (a CloudWatch Logs export?) followed by {found} fields; expected {expected}: {excerpt:?}"
    )]
    ExportTimestamp {
        expected: usize,
        found: usize,
        /// The start of the line, timestamp included.
        excerpt: String,
    },
    #[error("line is not valid UTF-8")]
    NotUtf8,
    #[error("line is {length} bytes long, over the line length limit: {excerpt:?}")]
    TooLong {
        length: usize,
        /// The start of the line; the rest was dropped unread.
        excerpt: String,
    },
}

impl ParseError {
    /// [`ParseError::TooLong`] for a line of `length` bytes that starts with `head`.
    ///
    /// `head` may end inside a character or hold invalid UTF-8; both show as U+FFFD.
    /// [`EXCERPT_BYTES`] of it are enough for a full excerpt.
    pub fn too_long(length: usize, head: &[u8]) -> Self {
        let head = &head[..head.len().min(EXCERPT_BYTES)];
        ParseError::TooLong {
            length,
            excerpt: quoted(&String::from_utf8_lossy(head)),
        }
    }
}

/// A line that was skipped, with where it was and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line_number}: {error}")]
pub struct MalformedLine {
    /// 1-based line in the object, or 1-based event position in a CloudWatch Logs batch.
    pub line_number: u64,
    pub error: ParseError,
}

/// Raw values and line excerpts in error messages are cut to this many characters.
pub const MAX_QUOTED_VALUE: usize = 64;
/// The most bytes [`MAX_QUOTED_VALUE`] characters of UTF-8 take: how much of a line to keep
/// for an excerpt when the line itself is not kept.
pub const EXCERPT_BYTES: usize = MAX_QUOTED_VALUE * 4;

pub(super) fn quoted(value: &str) -> String {
    value.chars().take(MAX_QUOTED_VALUE).collect()
}

/// Parses lines of one format, reusing its buffers: parsing allocates nothing unless the
/// line is malformed.
#[derive(Clone, Debug)]
pub struct RecordParser {
    pub(super) format: FlowFormat,
    /// Whether the format is the default one, read by code specialised to it.
    pub(super) is_default: bool,
    /// Whether the first column is read as text (see [`RecordParser::read_marked`]).
    pub(super) first_column_is_text: bool,
    pub(super) slots: Vec<Slot>,
    /// (start, end) of each token of the current line; one spare to detect extras.
    tokens: Vec<(u32, u32)>,
    pub(super) scratch: Box<LineScratch>,
}

impl RecordParser {
    /// A parser for records laid out as `format` says.
    pub fn new(format: FlowFormat) -> Self {
        let slots = vec![Slot::Absent; format.width()];
        let tokens = vec![(0, 0); format.width() + 1];
        RecordParser {
            is_default: format.readers == DEFAULT_READERS,
            first_column_is_text: format.readers.first() == Some(&Reader::Text),
            format,
            slots,
            tokens,
            scratch: Box::default(),
        }
    }

    /// The format this parser reads.
    pub fn format(&self) -> &FlowFormat {
        &self.format
    }

    /// Parses one record.
    ///
    /// Fields are separated by runs of spaces; leading and trailing whitespace (a `\r` from
    /// CRLF files) is ignored. A leading ISO-8601 timestamp, as in CloudWatch Logs exports,
    /// is stripped when the rest of the line has exactly the format's width.
    pub fn parse<'a>(&'a mut self, line: &'a str) -> Result<FlowRecord<'a>, ParseError> {
        let line = strip_export_timestamp(line.trim_ascii(), self.format.width())?;
        if !with_kernels!(read_copied_with_avx2, read_copied, (self, line)) {
            self.read_by_tokens(line)?;
        }
        Ok(self.record(line))
    }

    pub(super) fn record<'a>(&'a self, line: &'a str) -> FlowRecord<'a> {
        FlowRecord {
            format: &self.format,
            line,
            slots: &self.slots,
        }
    }

    /// The general path, for lines the fast readers decline: splits the line into tokens
    /// first, so that a wrong field count is reported as such, then reads the columns in
    /// order and explains the first invalid one.
    #[cold]
    #[inline(never)]
    pub(super) fn read_by_tokens(&mut self, line: &str) -> Result<(), ParseError> {
        let width = self.format.width();
        let found = tokenize(line.as_bytes(), &mut self.tokens);
        if found != width {
            return Err(ParseError::FieldCount {
                expected: width,
                found,
                excerpt: quoted(line),
            });
        }
        let columns = self.format.readers.iter().zip(&self.tokens);
        for ((reader, &(start, end)), slot) in columns.zip(&mut self.slots) {
            let (start, end) = (start as usize, end as usize);
            if !read_token(*reader, line, start, end, slot) {
                return Err(explain(*reader, line, start));
            }
        }
        Ok(())
    }
}

/// Strips a CloudWatch Logs export timestamp (`2024-05-01T12:00:00.000Z `) from the front of
/// a line when what follows has exactly `width` fields. No flow-log value looks like an
/// ISO-8601 timestamp, so a line that starts with one but has another count is rejected
/// rather than read with every value shifted by one column.
fn strip_export_timestamp(line: &str, width: usize) -> Result<&str, ParseError> {
    if !starts_like_export_timestamp(line.as_bytes()) {
        return Ok(line);
    }
    strip_found_export_timestamp(line, width)
}

/// Whether a line starts like `2024-05-01T12:00:00.000Z `.
#[inline]
pub(super) fn starts_like_export_timestamp(bytes: &[u8]) -> bool {
    bytes.len() > 20
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b'T'
}

/// The rest of [`strip_export_timestamp`], for the rare lines that start with a timestamp:
/// kept out of line so that building the error costs ordinary records nothing.
#[cold]
#[inline(never)]
fn strip_found_export_timestamp(line: &str, width: usize) -> Result<&str, ParseError> {
    let rest = line
        .split_once(' ')
        .map_or("", |(_, rest)| rest.trim_ascii_start());
    let found = rest.split_ascii_whitespace().count();
    if found == width {
        Ok(rest)
    } else {
        Err(ParseError::ExportTimestamp {
            expected: width,
            found,
            excerpt: quoted(line),
        })
    }
}

/// Seconds since 1970 stay below 10^11 until the year 5138, so anything larger was
/// written in milliseconds.
pub(super) fn normalise_timestamp(value: u64) -> u64 {
    if value >= 100_000_000_000 {
        value / 1000
    } else {
        value
    }
}

/// Reads the token `line[start..end]` (no spaces, not empty) into `slot`; `false` when it
/// is not a valid value ([`explain`] then says why).
///
/// The general reader, used for keywords and to find which column is invalid.
#[inline]
fn read_token(reader: Reader, line: &str, start: usize, end: usize, slot: &mut Slot) -> bool {
    let token = &line.as_bytes()[start..end];
    if token == b"-" {
        *slot = Slot::Absent;
        return true;
    }
    *slot = match reader {
        Reader::Text => text_slot(start, end),
        Reader::BoundedText { max_bytes, .. } if end - start > max_bytes as usize => return false,
        Reader::BoundedText { .. } => text_slot(start, end),
        Reader::Number { max, .. } => match read_digits(token) {
            Some(value) if value <= max => Slot::Number(value),
            _ => return false,
        },
        Reader::Timestamp(_) => match read_digits(token) {
            Some(value) => Slot::Number(normalise_timestamp(value)),
            None => return false,
        },
        Reader::Address(_) => match read_address(line, start, end) {
            Some(slot) => slot,
            None => return false,
        },
        Reader::Action => Slot::Action(match token {
            b"REJECT" => Action::Reject,
            b"ACCEPT" => Action::Accept,
            _ => return false,
        }),
        Reader::LogStatus => Slot::LogStatus(match token {
            b"OK" => LogStatus::Ok,
            b"NODATA" => LogStatus::NoData,
            b"SKIPDATA" => LogStatus::SkipData,
            _ => return false,
        }),
    };
    true
}

fn is_digits(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit())
}

/// Why the token at `start` is not a valid value for `reader`.
#[cold]
fn explain(reader: Reader, line: &str, start: usize) -> ParseError {
    let token = &line[start..token_end(line.as_bytes(), start)];
    match reader {
        Reader::Number { field, max } if is_digits(token) => ParseError::OutOfRange {
            field,
            value: quoted(token),
            max,
        },
        Reader::Timestamp(field) if is_digits(token) => ParseError::OutOfRange {
            field,
            value: quoted(token),
            max: u64::MAX,
        },
        Reader::Number { field, .. } | Reader::Timestamp(field) => ParseError::NotANumber {
            field,
            value: quoted(token),
        },
        Reader::Address(field) => ParseError::NotAnAddress {
            field,
            value: quoted(token),
        },
        Reader::Action => ParseError::UnknownKeyword {
            field: Field::Action,
            value: quoted(token),
            expected: "ACCEPT, REJECT, -",
        },
        Reader::LogStatus => ParseError::UnknownKeyword {
            field: Field::LogStatus,
            value: quoted(token),
            expected: "OK, NODATA, SKIPDATA",
        },
        Reader::BoundedText { field, max_bytes } => ParseError::TooLongValue {
            field,
            length: token.len(),
            max: max_bytes as usize,
            value: quoted(token),
        },
        // Any token is valid text; reaching here means the caller's bug, reported plainly.
        Reader::Text => ParseError::NotUtf8,
    }
}

pub(super) fn text_slot(start: usize, end: usize) -> Slot {
    // Lines are bounded well below 4 GiB by the decoder, so offsets fit in u32.
    Slot::Text {
        start: start as u32,
        end: end as u32,
    }
}

/// Reads a token of decimal digits; `None` for anything else or a value beyond 64 bits.
#[inline]
fn read_digits(token: &[u8]) -> Option<u64> {
    // Up to 19 digits always fit in a u64; longer ones are checked the slow way.
    if token.len() > 19 {
        return token.iter().try_fold(0u64, |value, &byte| {
            let digit = byte.wrapping_sub(b'0');
            (digit <= 9).then_some(())?;
            value.checked_mul(10)?.checked_add(u64::from(digit))
        });
    }
    let mut value: u64 = 0;
    let mut all_digits = true;
    for &byte in token {
        let digit = byte.wrapping_sub(b'0');
        all_digits &= digit <= 9;
        value = value.wrapping_mul(10).wrapping_add(u64::from(digit));
    }
    all_digits.then_some(value)
}
