//! VPC flow-log record formats and the record parser.
//!
//! Owns the documented field names (versions 2 to 8, transit gateway and ECS fields
//! included), [`FlowFormat`] built from a console `LogFormat` string or an S3 header line,
//! and [`RecordParser`], which turns one line into a borrowed [`FlowRecord`] without
//! allocating. No I/O here and no clock: everything is a function of its input.
//!
//! - `fields`: [`Field`] and its kinds, [`Action`], [`LogStatus`].
//! - `format`: [`FlowFormat`] and its [`Column`]s.
//! - `parse`: [`RecordParser`], the reference parser, and [`ParseError`].
//! - `record`: [`FlowRecord`] and [`FieldValue`].
//! - `fast`: the fast readers, which agree with the reference parser on every line they
//!   accept; lines of an object are read in place.
//! - `address`, `tokens`: address parsing and splitting at spaces.
//! - `tests`: the parser's tests: documented formats and records, errors and their text.

mod address;
mod fast;
mod fields;
mod format;
mod parse;
mod record;
mod tokens;

#[cfg(test)]
mod tests;

pub(crate) use fast::read_lines;
#[cfg(target_arch = "x86_64")]
pub(crate) use fast::read_lines_with_avx2;
pub use fields::{
    Action, Field, FieldKind, LogStatus, MAX_INTERFACE_ID_BYTES, MAX_REJECT_REASON_BYTES,
};
pub use format::{Column, DEFAULT_FIELDS, FlowFormat, FormatError, MAX_COLUMNS};
pub use parse::{EXCERPT_BYTES, MAX_QUOTED_VALUE, MalformedLine, ParseError, RecordParser};
pub(crate) use record::AddressBits;
pub use record::{FieldValue, FlowRecord};
