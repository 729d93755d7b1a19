//! Formats: which field is in which space-separated column ([`FlowFormat`]), built from a
//! console `LogFormat` string, an S3 header line or a list of fields, and the [`Reader`]
//! each column is read with, resolved once per format.

use std::fmt;

use super::fields::{Field, FieldKind};

/// One column of a format: a documented field, or a name this version does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Column {
    Known(Field),
    /// Kept as opaque text so that fields AWS adds later never break parsing.
    Unknown(Box<str>),
}

impl Column {
    /// The hyphenated name of the column.
    pub fn name(&self) -> &str {
        match self {
            Column::Known(field) => field.name(),
            Column::Unknown(name) => name,
        }
    }
}

/// Why a format string or header line could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("flow-log format is empty")]
    Empty,
    #[error("flow-log format token {token:?} is not a field name (expected ${{name}} or name)")]
    BadToken { token: String },
    #[error("flow-log format names field {name:?} twice")]
    Duplicate { name: String },
    #[error("flow-log format has {count} fields; at most {max} are supported")]
    TooManyFields { count: usize, max: usize },
}

/// The most columns a format may have. AWS documents about sixty fields.
pub const MAX_COLUMNS: usize = 255;
const NOT_PRESENT: u8 = u8::MAX;

/// The layout of a flow-log record: which field is in which space-separated column.
///
/// Built from the console's `LogFormat` (`${version} ${srcaddr} ...`), from the header line
/// of an S3 object (`version srcaddr ...`), or [`FlowFormat::default`] (the v2 layout).
/// The `version` value inside records never decides the layout; the format does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowFormat {
    pub(super) columns: Vec<Column>,
    pub(super) readers: Vec<Reader>,
    positions: [u8; Field::ALL.len()],
    /// Cached [`FlowFormat::can_count_rejects`]: it is asked once per record.
    counts_rejects: bool,
}

/// The fields of the default format, in order (version 2).
pub const DEFAULT_FIELDS: [Field; 14] = [
    Field::Version,
    Field::AccountId,
    Field::InterfaceId,
    Field::SrcAddr,
    Field::DstAddr,
    Field::SrcPort,
    Field::DstPort,
    Field::Protocol,
    Field::Packets,
    Field::Bytes,
    Field::Start,
    Field::End,
    Field::Action,
    Field::LogStatus,
];

impl Default for FlowFormat {
    fn default() -> Self {
        FlowFormat::from_fields(&DEFAULT_FIELDS)
    }
}

impl FlowFormat {
    /// A format made of documented fields, in the given order.
    ///
    /// Panics if a field repeats; use the string constructors for untrusted input.
    pub fn from_fields(fields: &[Field]) -> Self {
        let columns = fields.iter().map(|&field| Column::Known(field)).collect();
        match FlowFormat::from_columns(columns) {
            Ok(format) => format,
            Err(error) => panic!("invalid built-in format: {error}"),
        }
    }

    fn from_columns(columns: Vec<Column>) -> Result<Self, FormatError> {
        if columns.is_empty() {
            return Err(FormatError::Empty);
        }
        if columns.len() > MAX_COLUMNS {
            return Err(FormatError::TooManyFields {
                count: columns.len(),
                max: MAX_COLUMNS,
            });
        }
        let mut positions = [NOT_PRESENT; Field::ALL.len()];
        for (index, column) in columns.iter().enumerate() {
            let duplicate = match column {
                Column::Known(field) => {
                    let slot = &mut positions[*field as usize];
                    let seen = *slot != NOT_PRESENT;
                    *slot = index as u8;
                    seen
                }
                Column::Unknown(name) => columns[..index].iter().any(|c| c.name() == &**name),
            };
            if duplicate {
                return Err(FormatError::Duplicate {
                    name: column.name().to_owned(),
                });
            }
        }
        let is_transit_gateway = columns.iter().any(
            |column| matches!(column, Column::Known(field) if field.is_transit_gateway_only()),
        );
        let has_action = positions[Field::Action as usize] != NOT_PRESENT;
        let readers: Vec<Reader> = columns.iter().map(Reader::for_column).collect();
        Ok(FlowFormat {
            readers,
            columns,
            positions,
            counts_rejects: has_action && !is_transit_gateway,
        })
    }

    /// Parses the `LogFormat` string of a flow log, as shown in the console or passed to
    /// `CreateFlowLogs`: `${version} ${account-id} ...`.
    ///
    /// Bare names (`version account-id ...`, the S3 header form) are accepted too, so the
    /// same setting works whichever form a user copies. Any `${name}` that is not a
    /// documented field (`${Custom.Field}`, a name from a newer version) is kept as an
    /// opaque text column; only tokens of neither form are errors.
    pub fn from_log_format(text: &str) -> Result<Self, FormatError> {
        let columns = text
            .split_ascii_whitespace()
            .map(|token| {
                let column = match token.strip_prefix("${") {
                    Some(rest) => rest.strip_suffix('}').and_then(column_from_braced_name),
                    None => column_from_name(token),
                };
                column.ok_or_else(|| bad_token(token))
            })
            .collect::<Result<Vec<_>, _>>()?;
        FlowFormat::from_columns(columns)
    }

    /// Parses the first line of an S3 flow-log object, which names the fields in order.
    pub fn from_header(line: &str) -> Result<Self, FormatError> {
        let columns = line
            .split_ascii_whitespace()
            .map(|name| column_from_name(name).ok_or_else(|| bad_token(name)))
            .collect::<Result<Vec<_>, _>>()?;
        FlowFormat::from_columns(columns)
    }

    /// Whether a line is a header (every token a field name, at least one of them
    /// documented) rather than a record.
    ///
    /// Records never qualify: they hold numbers, addresses, `-` or upper-case keywords.
    pub fn is_header_line(line: &str) -> bool {
        let mut any_known = false;
        for token in line.split_ascii_whitespace() {
            if !is_name_like(token) {
                return false;
            }
            any_known |= Field::from_name(token).is_some();
        }
        any_known
    }

    /// The columns, in record order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The number of space-separated values each record must have.
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// The column a documented field occupies, if the format has it.
    #[inline(always)]
    pub fn position(&self, field: Field) -> Option<usize> {
        match self.positions[field as usize] {
            NOT_PRESENT => None,
            position => Some(position as usize),
        }
    }

    /// Whether the format has the field.
    pub fn contains(&self, field: Field) -> bool {
        self.position(field).is_some()
    }

    /// Whether records of this format can be counted as REJECTs at all: they need an
    /// `action` and must not be transit gateway records (which carry no verdict).
    #[inline(always)]
    pub fn can_count_rejects(&self) -> bool {
        self.counts_rejects
    }

    /// Whether the format carries transit gateway fields.
    pub fn is_transit_gateway(&self) -> bool {
        self.columns
            .iter()
            .any(|column| matches!(column, Column::Known(field) if field.is_transit_gateway_only()))
    }

    /// The S3 header line for this format (hyphenated names separated by spaces).
    pub fn header_line(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(Column::name).collect();
        names.join(" ")
    }
}

impl fmt::Display for FlowFormat {
    /// Writes the format as a `LogFormat` string: `${version} ${account-id} ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, column) in self.columns.iter().enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            write!(f, "${{{}}}", column.name())?;
        }
        Ok(())
    }
}

fn bad_token(token: &str) -> FormatError {
    FormatError::BadToken {
        token: token.chars().take(80).collect(),
    }
}

fn column_from_name(name: &str) -> Option<Column> {
    if !is_name_like(name) {
        return None;
    }
    Some(match Field::from_name(name) {
        Some(field) => Column::Known(field),
        None => Column::Unknown(name.into()),
    })
}

/// The column a `${name}` token names: a documented field, or any other name kept as
/// opaque text. The braces make the name unambiguous, so only an empty name or one holding
/// `$`, `{` or `}` (a mistyped token) is refused. Whitespace never reaches here.
fn column_from_braced_name(name: &str) -> Option<Column> {
    if name.is_empty() || name.contains(['$', '{', '}']) {
        return None;
    }
    Some(match Field::from_name(name) {
        Some(field) => Column::Known(field),
        None => Column::Unknown(name.into()),
    })
}

/// Field names are lower-case letters, digits, hyphens and underscores, starting with a letter.
fn is_name_like(token: &str) -> bool {
    let bytes = token.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// How one column is read, resolved once per format so that parsing does no lookups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reader {
    Text,
    /// Text that is stored (as a key or attribute), so bounded in length: longer values
    /// make the line malformed rather than an item DynamoDB refuses.
    BoundedText {
        field: Field,
        max_bytes: u32,
    },
    Number {
        field: Field,
        max: u64,
    },
    Timestamp(Field),
    Address(Field),
    Action,
    LogStatus,
}

impl Reader {
    fn for_column(column: &Column) -> Reader {
        match column {
            Column::Known(field) => Reader::for_field(*field),
            Column::Unknown(_) => Reader::Text,
        }
    }

    const fn for_field(field: Field) -> Reader {
        match field.kind() {
            FieldKind::Text => match field.max_text_bytes() {
                Some(max_bytes) => Reader::BoundedText { field, max_bytes },
                None => Reader::Text,
            },
            FieldKind::Number { max } => Reader::Number { field, max },
            FieldKind::Timestamp => Reader::Timestamp(field),
            FieldKind::Address => Reader::Address(field),
            FieldKind::Action => Reader::Action,
            FieldKind::LogStatus => Reader::LogStatus,
        }
    }
}

/// The readers of the default format, which most flow logs use.
pub(super) const DEFAULT_READERS: [Reader; DEFAULT_FIELDS.len()] = {
    let mut readers = [Reader::Text; DEFAULT_FIELDS.len()];
    let mut index = 0;
    while index < readers.len() {
        readers[index] = Reader::for_field(DEFAULT_FIELDS[index]);
        index += 1;
    }
    readers
};
