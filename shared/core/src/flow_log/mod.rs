//! VPC flow-log record formats and the record parser.
//!
//! Owns the documented field names (versions 2 to 8, transit gateway and ECS fields
//! included), [`FlowFormat`] built from a console `LogFormat` string or an S3 header line,
//! and [`RecordParser`], which turns one line into a borrowed [`FlowRecord`] without
//! allocating. No I/O here and no clock: everything is a function of its input.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::ser::{Serialize, SerializeMap, Serializer};

#[cfg(target_arch = "x86_64")]
use crate::scan::Avx2;
use crate::scan::{
    Kernels, LineSeparators, TextIndex, build_index, bytes_equal, gather_high_bits, with_kernels,
};

/// How a field's value is read and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// An unsigned integer no larger than `max`.
    Number { max: u64 },
    /// Unix time; values given in milliseconds are normalised to seconds.
    Timestamp,
    /// An IPv4 or IPv6 address.
    Address,
    /// `ACCEPT` or `REJECT`.
    Action,
    /// `OK`, `NODATA` or `SKIPDATA`.
    LogStatus,
    /// Any text without spaces, kept as written (identifiers, ARNs, enumerations AWS may extend).
    Text,
}

const PORT: FieldKind = FieldKind::Number {
    max: u16::MAX as u64,
};
const BYTE: FieldKind = FieldKind::Number {
    max: u8::MAX as u64,
};
const COUNT: FieldKind = FieldKind::Number { max: u64::MAX };

macro_rules! fields {
    ($($variant:ident => $name:literal, $version:literal, $kind:expr;)*) => {
        /// A flow-log field documented by AWS, named as in the `LogFormat` (`${srcaddr}`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Field { $($variant,)* }

        impl Field {
            /// Every documented field, in documentation order.
            pub const ALL: &'static [Field] = &[$(Field::$variant,)*];

            /// The hyphenated name AWS uses in `LogFormat` strings and S3 header lines.
            pub const fn name(self) -> &'static str {
                match self { $(Field::$variant => $name,)* }
            }

            /// The flow-log version that introduced the field (6 for transit gateway fields).
            pub const fn version(self) -> u8 {
                match self { $(Field::$variant => $version,)* }
            }

            /// How the field's values are read.
            pub const fn kind(self) -> FieldKind {
                match self { $(Field::$variant => $kind,)* }
            }

            /// Looks a field up by its hyphenated name; underscores (as in Parquet and Athena
            /// column names) are accepted in place of hyphens.
            pub fn from_name(name: &str) -> Option<Field> {
                if name.contains('_') {
                    return Field::from_name(&name.replace('_', "-"));
                }
                match name { $($name => Some(Field::$variant),)* _ => None }
            }
        }
    };
}

fields! {
    Version => "version", 2, BYTE;
    AccountId => "account-id", 2, FieldKind::Text;
    InterfaceId => "interface-id", 2, FieldKind::Text;
    SrcAddr => "srcaddr", 2, FieldKind::Address;
    DstAddr => "dstaddr", 2, FieldKind::Address;
    SrcPort => "srcport", 2, PORT;
    DstPort => "dstport", 2, PORT;
    Protocol => "protocol", 2, BYTE;
    Packets => "packets", 2, COUNT;
    Bytes => "bytes", 2, COUNT;
    Start => "start", 2, FieldKind::Timestamp;
    End => "end", 2, FieldKind::Timestamp;
    Action => "action", 2, FieldKind::Action;
    LogStatus => "log-status", 2, FieldKind::LogStatus;
    VpcId => "vpc-id", 3, FieldKind::Text;
    SubnetId => "subnet-id", 3, FieldKind::Text;
    InstanceId => "instance-id", 3, FieldKind::Text;
    TcpFlags => "tcp-flags", 3, COUNT;
    Type => "type", 3, FieldKind::Text;
    PktSrcAddr => "pkt-srcaddr", 3, FieldKind::Address;
    PktDstAddr => "pkt-dstaddr", 3, FieldKind::Address;
    Region => "region", 4, FieldKind::Text;
    AzId => "az-id", 4, FieldKind::Text;
    SublocationType => "sublocation-type", 4, FieldKind::Text;
    SublocationId => "sublocation-id", 4, FieldKind::Text;
    PktSrcAwsService => "pkt-src-aws-service", 5, FieldKind::Text;
    PktDstAwsService => "pkt-dst-aws-service", 5, FieldKind::Text;
    FlowDirection => "flow-direction", 5, FieldKind::Text;
    TrafficPath => "traffic-path", 5, BYTE;
    ResourceType => "resource-type", 6, FieldKind::Text;
    TgwId => "tgw-id", 6, FieldKind::Text;
    TgwAttachmentId => "tgw-attachment-id", 6, FieldKind::Text;
    TgwSrcVpcAccountId => "tgw-src-vpc-account-id", 6, FieldKind::Text;
    TgwDstVpcAccountId => "tgw-dst-vpc-account-id", 6, FieldKind::Text;
    TgwSrcVpcId => "tgw-src-vpc-id", 6, FieldKind::Text;
    TgwDstVpcId => "tgw-dst-vpc-id", 6, FieldKind::Text;
    TgwSrcSubnetId => "tgw-src-subnet-id", 6, FieldKind::Text;
    TgwDstSubnetId => "tgw-dst-subnet-id", 6, FieldKind::Text;
    TgwSrcEni => "tgw-src-eni", 6, FieldKind::Text;
    TgwDstEni => "tgw-dst-eni", 6, FieldKind::Text;
    TgwSrcAzId => "tgw-src-az-id", 6, FieldKind::Text;
    TgwDstAzId => "tgw-dst-az-id", 6, FieldKind::Text;
    TgwPairAttachmentId => "tgw-pair-attachment-id", 6, FieldKind::Text;
    PacketsLostNoRoute => "packets-lost-no-route", 6, COUNT;
    PacketsLostBlackhole => "packets-lost-blackhole", 6, COUNT;
    PacketsLostMtuExceeded => "packets-lost-mtu-exceeded", 6, COUNT;
    PacketsLostTtlExpired => "packets-lost-ttl-expired", 6, COUNT;
    EcsClusterArn => "ecs-cluster-arn", 7, FieldKind::Text;
    EcsClusterName => "ecs-cluster-name", 7, FieldKind::Text;
    EcsContainerInstanceArn => "ecs-container-instance-arn", 7, FieldKind::Text;
    EcsContainerInstanceId => "ecs-container-instance-id", 7, FieldKind::Text;
    EcsContainerId => "ecs-container-id", 7, FieldKind::Text;
    EcsSecondContainerId => "ecs-second-container-id", 7, FieldKind::Text;
    EcsServiceName => "ecs-service-name", 7, FieldKind::Text;
    EcsTaskDefinitionArn => "ecs-task-definition-arn", 7, FieldKind::Text;
    EcsTaskArn => "ecs-task-arn", 7, FieldKind::Text;
    EcsTaskId => "ecs-task-id", 7, FieldKind::Text;
    RejectReason => "reject-reason", 8, FieldKind::Text;
}

/// The longest interface id stored: AWS's are 21 bytes (`eni-` and 17 hex digits). The id
/// becomes part of a DynamoDB sort key (at most 1,024 bytes) and an attribute of counter
/// items (at most 400 KB each), so a longer one makes its line malformed.
pub const MAX_INTERFACE_ID_BYTES: u32 = 64;

/// The longest reject reason read; longer ones make their line malformed (and names
/// over 32 bytes are counted as `other`).
pub const MAX_REJECT_REASON_BYTES: u32 = 64;

impl Field {
    /// The longest value stored for a text field that becomes part of a stored key or
    /// attribute; `None` for fields only read, never stored.
    pub const fn max_text_bytes(self) -> Option<u32> {
        match self {
            Field::InterfaceId => Some(MAX_INTERFACE_ID_BYTES),
            // Reject reasons name counter attributes (`reason_<name>`); AWS's are short
            // words such as `BPA`.
            Field::RejectReason => Some(MAX_REJECT_REASON_BYTES),
            _ => None,
        }
    }

    /// Fields that only transit gateway flow logs carry: a format containing one describes
    /// transit gateway records, which have no security-group or NACL verdict to count.
    pub fn is_transit_gateway_only(self) -> bool {
        self.version() == 6
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The verdict recorded for the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Accept,
    Reject,
}

impl Action {
    /// The keyword as AWS writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "ACCEPT",
            Action::Reject => "REJECT",
        }
    }
}

/// Whether the record carries traffic (`Ok`) or reports a capture gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogStatus {
    /// Data is logged normally.
    Ok,
    /// No traffic to or from the interface during the aggregation interval.
    NoData,
    /// Records were skipped during the aggregation interval (capacity or internal error),
    /// so counts for that interface and interval are a lower bound.
    SkipData,
}

impl LogStatus {
    /// The keyword as AWS writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Ok => "OK",
            LogStatus::NoData => "NODATA",
            LogStatus::SkipData => "SKIPDATA",
        }
    }
}

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
    columns: Vec<Column>,
    readers: Vec<Reader>,
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

fn quoted(value: &str) -> String {
    value.chars().take(MAX_QUOTED_VALUE).collect()
}

/// A parsed value, stored without borrowing so the parser can reuse its buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Slot {
    Absent,
    Number(u64),
    /// IPv4 as its 32-bit value: building an `IpAddr` in the hot loop costs a
    /// store-forwarding stall on every address.
    Ipv4(u32),
    Ipv6(Ipv6Addr),
    Text {
        start: u32,
        end: u32,
    },
    Action(Action),
    LogStatus(LogStatus),
}

/// A value of one field of a record. Absent values (`-`) are `None` where this appears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValue<'a> {
    Number(u64),
    Address(IpAddr),
    Text(&'a str),
    Action(Action),
    LogStatus(LogStatus),
}

/// Parses lines of one format, reusing its buffers: parsing allocates nothing unless the
/// line is malformed.
#[derive(Clone, Debug)]
pub struct RecordParser {
    format: FlowFormat,
    /// Whether the format is the default one, read by code specialised to it.
    is_default: bool,
    /// Whether the first column is read as text (see [`RecordParser::read_marked`]).
    first_column_is_text: bool,
    slots: Vec<Slot>,
    /// (start, end) of each token of the current line; one spare to detect extras.
    tokens: Vec<(u32, u32)>,
    scratch: Box<LineScratch>,
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

    fn record<'a>(&'a self, line: &'a str) -> FlowRecord<'a> {
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
    fn read_by_tokens(&mut self, line: &str) -> Result<(), ParseError> {
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

/// The fast readers take lines shorter than this; longer ones (no real record) take the
/// general path. A power of two: reads mask their offsets with it.
pub(crate) const MARKED_MAX_LINE: usize = 512;

/// The bytes the fast readers see of a line: the line, then whatever follows it. Every
/// read is at most 16 bytes from an offset below [`MARKED_MAX_LINE`], so it stays inside
/// without a bounds check.
pub(crate) type LineWindow = [u8; MARKED_MAX_LINE + 32];

/// A single line copied with padding after it, and its index, for [`RecordParser::parse`].
#[derive(Clone, Debug)]
struct LineScratch {
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
fn read_copied_with_avx2(kernels: Avx2, parser: &mut RecordParser, line: &str) -> bool {
    read_copied(kernels, parser, line)
}

/// The fast readers on a copy of `line` (trimmed), for lines that arrive one at a time.
#[inline(always)]
fn read_copied<K: Kernels>(kernels: K, parser: &mut RecordParser, line: &str) -> bool {
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

/// An address the dotted-quad kernel declined: IPv6, or anything the standard library
/// reads. Not inlined: most addresses never get here.
#[inline(never)]
fn read_unusual_address(token: &[u8]) -> Option<Slot> {
    if let Some(bits) = read_ipv6(token) {
        return Some(Slot::Ipv6(Ipv6Addr::from_bits(bits)));
    }
    read_other_address(std::str::from_utf8(token).ok()?)
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

/// Splits `bytes` at runs of spaces: writes the (start, end) of the first tokens into
/// `tokens` and returns the number of tokens in all.
///
/// Reads eight bytes at a time and finds the spaces among them with a few arithmetic
/// operations (SWAR), so the cost is per word and per token, never a branch per byte.
#[inline]
fn tokenize(bytes: &[u8], tokens: &mut [(u32, u32)]) -> usize {
    let mut starts_found = 0;
    let mut ends_found = 0;
    let mut after_letter = 0u32;
    let mut offset = 0;
    while offset < bytes.len() {
        let word = match bytes.get(offset..offset + 8) {
            Some(word) => u64::from_le_bytes(word.try_into().unwrap_or([b' '; 8])),
            None => {
                // Past the end counts as space, which also closes the last token.
                let mut word = [b' '; 8];
                word[..bytes.len() - offset].copy_from_slice(&bytes[offset..]);
                u64::from_le_bytes(word)
            }
        };
        let spaces = space_bits(word);
        let letters = !spaces & 0xff;
        let previous = (letters << 1 | after_letter) & 0xff;
        let mut starts = letters & !previous;
        let mut ends = spaces & previous;
        while starts != 0 {
            if let Some(token) = tokens.get_mut(starts_found) {
                token.0 = offset as u32 + starts.trailing_zeros();
            }
            starts_found += 1;
            starts &= starts - 1;
        }
        while ends != 0 {
            if let Some(token) = tokens.get_mut(ends_found) {
                token.1 = offset as u32 + ends.trailing_zeros();
            }
            ends_found += 1;
            ends &= ends - 1;
        }
        after_letter = letters >> 7;
        offset += 8;
    }
    if ends_found < starts_found
        && let Some(token) = tokens.get_mut(ends_found)
    {
        token.1 = bytes.len() as u32;
    }
    starts_found
}

/// Bit `i` is set when byte `i` of the little-endian word is a space.
#[inline]
fn space_bits(word: u64) -> u32 {
    gather_high_bits(bytes_equal(word, b' ')) as u32
}

fn token_end(bytes: &[u8], mut position: usize) -> usize {
    while position < bytes.len() && bytes[position] != b' ' {
        position += 1;
    }
    position
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
fn starts_like_export_timestamp(bytes: &[u8]) -> bool {
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
fn normalise_timestamp(value: u64) -> u64 {
    if value >= 100_000_000_000 {
        value / 1000
    } else {
        value
    }
}

/// Reads an address token: the IPv4 and IPv6 fast paths, then the standard library.
#[inline]
fn read_address(line: &str, start: usize, end: usize) -> Option<Slot> {
    let token = &line.as_bytes()[start..end];
    if let Some(bits) = read_ipv4(token) {
        return Some(Slot::Ipv4(bits));
    }
    if let Some(bits) = read_ipv6(token) {
        return Some(Slot::Ipv6(Ipv6Addr::from_bits(bits)));
    }
    read_other_address(&line[start..end])
}

/// How one column is read, resolved once per format so that parsing does no lookups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reader {
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
const DEFAULT_READERS: [Reader; DEFAULT_FIELDS.len()] = {
    let mut readers = [Reader::Text; DEFAULT_FIELDS.len()];
    let mut index = 0;
    while index < readers.len() {
        readers[index] = Reader::for_field(DEFAULT_FIELDS[index]);
        index += 1;
    }
    readers
};

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

fn text_slot(start: usize, end: usize) -> Slot {
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

/// An address as its bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AddressBits {
    V4(u32),
    V6(u128),
}

/// One parsed record, borrowing the line it came from and the parser's buffer.
#[derive(Clone, Copy, Debug)]
pub struct FlowRecord<'a> {
    format: &'a FlowFormat,
    line: &'a str,
    slots: &'a [Slot],
}

impl<'a> FlowRecord<'a> {
    /// The format the record was read with.
    #[inline(always)]
    pub fn format(&self) -> &'a FlowFormat {
        self.format
    }

    /// The value of a documented field; `None` when the format lacks it or the record
    /// has `-` there.
    pub fn value(&self, field: Field) -> Option<FieldValue<'a>> {
        self.format
            .position(field)
            .and_then(|position| self.column_value(position))
    }

    /// The value in a column (by position), documented or not.
    pub fn column_value(&self, position: usize) -> Option<FieldValue<'a>> {
        match *self.slots.get(position)? {
            Slot::Absent => None,
            Slot::Number(value) => Some(FieldValue::Number(value)),
            Slot::Ipv4(bits) => Some(FieldValue::Address(IpAddr::V4(Ipv4Addr::from_bits(bits)))),
            Slot::Ipv6(v6) => Some(FieldValue::Address(IpAddr::V6(v6))),
            Slot::Text { start, end } => {
                Some(FieldValue::Text(&self.line[start as usize..end as usize]))
            }
            Slot::Action(action) => Some(FieldValue::Action(action)),
            Slot::LogStatus(status) => Some(FieldValue::LogStatus(status)),
        }
    }

    /// The tally reads a dozen fields of every REJECT through here: kept inline.
    #[inline(always)]
    fn slot(&self, field: Field) -> &Slot {
        match self.format.position(field) {
            Some(position) => self.slots.get(position).unwrap_or(&Slot::Absent),
            None => &Slot::Absent,
        }
    }

    /// A numeric field (ports, protocol, counters, timestamps in seconds).
    #[inline(always)]
    pub fn number(&self, field: Field) -> Option<u64> {
        match *self.slot(field) {
            Slot::Number(value) => Some(value),
            _ => None,
        }
    }

    /// An address field (`srcaddr`, `dstaddr`, `pkt-srcaddr`, `pkt-dstaddr`).
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:198.51.100.7`, as dual-stack sockets report
    /// IPv4 peers) is the IPv4 address it maps: one source, one row, one allowlist entry.
    pub fn address(&self, field: Field) -> Option<IpAddr> {
        match *self.slot(field) {
            Slot::Ipv4(bits) => Some(IpAddr::V4(Ipv4Addr::from_bits(bits))),
            Slot::Ipv6(v6) => Some(IpAddr::V6(v6).to_canonical()),
            _ => None,
        }
    }

    /// An address field as its bits, without building an [`IpAddr`]: what the tally keys
    /// on. IPv4-mapped IPv6 addresses come out as IPv4, as from [`FlowRecord::address`].
    #[inline(always)]
    pub(crate) fn address_bits(&self, field: Field) -> Option<AddressBits> {
        match *self.slot(field) {
            Slot::Ipv4(bits) => Some(AddressBits::V4(bits)),
            Slot::Ipv6(v6) => Some(match v6.to_ipv4_mapped() {
                Some(v4) => AddressBits::V4(v4.to_bits()),
                None => AddressBits::V6(v6.to_bits()),
            }),
            _ => None,
        }
    }

    /// A text field (identifiers and enumerations), as written.
    #[inline(always)]
    pub fn text(&self, field: Field) -> Option<&'a str> {
        match *self.slot(field) {
            Slot::Text { start, end } => Some(&self.line[start as usize..end as usize]),
            _ => None,
        }
    }

    /// `ACCEPT` or `REJECT`; `None` for NODATA/SKIPDATA records and formats without `action`.
    #[inline(always)]
    pub fn action(&self) -> Option<Action> {
        match *self.slot(Field::Action) {
            Slot::Action(action) => Some(action),
            _ => None,
        }
    }

    /// The record's log status; `None` when the format lacks `log-status`.
    #[inline(always)]
    pub fn log_status(&self) -> Option<LogStatus> {
        match *self.slot(Field::LogStatus) {
            Slot::LogStatus(status) => Some(status),
            _ => None,
        }
    }

    /// Whether the record describes traffic (not a NODATA or SKIPDATA gap report).
    pub fn has_traffic(&self) -> bool {
        matches!(self.log_status(), None | Some(LogStatus::Ok))
    }
}

impl Serialize for FlowRecord<'_> {
    /// A JSON object keyed by the hyphenated field names; absent values are omitted and
    /// numbers are JSON numbers.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (position, column) in self.format.columns.iter().enumerate() {
            match self.column_value(position) {
                None => {}
                Some(FieldValue::Number(value)) => map.serialize_entry(column.name(), &value)?,
                Some(FieldValue::Address(addr)) => map.serialize_entry(column.name(), &addr)?,
                Some(FieldValue::Text(text)) => map.serialize_entry(column.name(), text)?,
                Some(FieldValue::Action(action)) => {
                    map.serialize_entry(column.name(), action.as_str())?
                }
                Some(FieldValue::LogStatus(status)) => {
                    map.serialize_entry(column.name(), status.as_str())?
                }
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default format as users copy it from the console.
    const DEFAULT_LOG_FORMAT: &str = "${version} ${account-id} ${interface-id} ${srcaddr} \
        ${dstaddr} ${srcport} ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end} \
        ${action} ${log-status}";
    /// "TCP flag sequence" example format (AWS docs), with `bytes` before `packets`.
    const TCP_FLAGS_FORMAT: &str = "version vpc-id subnet-id instance-id interface-id account-id \
        type srcaddr dstaddr srcport dstport pkt-srcaddr pkt-dstaddr protocol bytes packets \
        start end action tcp-flags log-status";
    /// "Traffic through a NAT gateway" example format: no version, action or log-status.
    const NAT_FORMAT: &str = "${instance-id} ${interface-id} ${srcaddr} ${dstaddr} \
        ${pkt-srcaddr} ${pkt-dstaddr}";
    /// "Traffic through a transit gateway" example format (a VPC flow log, version 3).
    const VPC_VIA_TGW_FORMAT: &str = "version interface-id account-id vpc-id subnet-id \
        instance-id srcaddr dstaddr srcport dstport protocol tcp-flags type pkt-srcaddr \
        pkt-dstaddr action log-status";
    /// "Service name, traffic path, and flow direction" example format (version 5).
    const V5_FORMAT: &str = "version srcaddr dstaddr srcport dstport protocol start end type \
        packets bytes account-id vpc-id subnet-id instance-id interface-id region az-id \
        sublocation-type sublocation-id action tcp-flags pkt-srcaddr pkt-dstaddr \
        pkt-src-aws-service pkt-dst-aws-service traffic-path flow-direction log-status";
    /// Transit gateway flow logs' default field order (36 fields, version 6, no `action`).
    const TGW_FORMAT: &str = "${version} ${resource-type} ${account-id} ${tgw-id} \
        ${tgw-attachment-id} ${tgw-src-vpc-account-id} ${tgw-dst-vpc-account-id} \
        ${tgw-src-vpc-id} ${tgw-dst-vpc-id} ${tgw-src-subnet-id} ${tgw-dst-subnet-id} \
        ${tgw-src-eni} ${tgw-dst-eni} ${tgw-src-az-id} ${tgw-dst-az-id} \
        ${tgw-pair-attachment-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} \
        ${packets} ${bytes} ${start} ${end} ${log-status} ${type} ${packets-lost-no-route} \
        ${packets-lost-blackhole} ${packets-lost-mtu-exceeded} ${packets-lost-ttl-expired} \
        ${tcp-flags} ${region} ${flow-direction} ${pkt-src-aws-service} ${pkt-dst-aws-service}";
    /// The format of AWS's VPC Block Public Access example template (version 8).
    const BPA_FORMAT: &str = "${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} \
        ${srcport} ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end} ${action} \
        ${log-status} ${vpc-id} ${subnet-id} ${instance-id} ${tcp-flags} ${type} \
        ${pkt-srcaddr} ${pkt-dstaddr} ${region} ${az-id} ${sublocation-type} \
        ${sublocation-id} ${pkt-src-aws-service} ${pkt-dst-aws-service} ${flow-direction} \
        ${traffic-path} ${reject-reason}";
    /// Default fields followed by the ECS fields (version 7).
    const ECS_FORMAT: &str = "${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} \
        ${srcport} ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end} ${action} \
        ${log-status} ${ecs-cluster-name} ${ecs-cluster-arn} ${ecs-container-instance-id} \
        ${ecs-container-instance-arn} ${ecs-service-name} ${ecs-task-definition-arn} \
        ${ecs-task-id} ${ecs-task-arn} ${ecs-container-id} ${ecs-second-container-id}";

    fn v4(text: &str) -> FieldValue<'static> {
        FieldValue::Address(text.parse().unwrap())
    }

    fn num(value: u64) -> FieldValue<'static> {
        FieldValue::Number(value)
    }

    /// Parses `line` with `format` and checks the listed fields; `None` means absent.
    fn check(format: &str, line: &str, expected: &[(Field, Option<FieldValue<'_>>)]) {
        let format = FlowFormat::from_log_format(format).unwrap();
        let mut parser = RecordParser::new(format);
        let record = parser
            .parse(line)
            .unwrap_or_else(|error| panic!("{line:?}: {error}"));
        for (field, value) in expected {
            assert_eq!(record.value(*field), *value, "field {field} of {line:?}");
        }
    }

    fn parse_error(format: &str, line: &str) -> ParseError {
        let mut parser = RecordParser::new(FlowFormat::from_log_format(format).unwrap());
        parser.parse(line).map(|_| ()).unwrap_err()
    }

    #[test]
    fn default_format_is_the_documented_v2_layout() {
        let format = FlowFormat::default();
        assert_eq!(
            format,
            FlowFormat::from_log_format(DEFAULT_LOG_FORMAT).unwrap()
        );
        assert_eq!(
            format.to_string(),
            DEFAULT_LOG_FORMAT
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert_eq!(
            format.header_line(),
            "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets \
             bytes start end action log-status"
        );
    }

    #[test]
    fn accepted_ssh_record() {
        check(
            DEFAULT_LOG_FORMAT,
            "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK",
            &[
                (Field::Version, Some(num(2))),
                (Field::AccountId, Some(FieldValue::Text("123456789010"))),
                (
                    Field::InterfaceId,
                    Some(FieldValue::Text("eni-1235b8ca123456789")),
                ),
                (Field::SrcAddr, Some(v4("172.31.16.139"))),
                (Field::DstAddr, Some(v4("172.31.16.21"))),
                (Field::SrcPort, Some(num(20641))),
                (Field::DstPort, Some(num(22))),
                (Field::Protocol, Some(num(6))),
                (Field::Packets, Some(num(20))),
                (Field::Bytes, Some(num(4249))),
                (Field::Start, Some(num(1418530010))),
                (Field::End, Some(num(1418530070))),
                (Field::Action, Some(FieldValue::Action(Action::Accept))),
                (Field::LogStatus, Some(FieldValue::LogStatus(LogStatus::Ok))),
            ],
        );
    }

    #[test]
    fn rejected_rdp_record() {
        check(
            DEFAULT_LOG_FORMAT,
            "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK",
            &[
                (Field::SrcAddr, Some(v4("172.31.9.69"))),
                (Field::DstPort, Some(num(3389))),
                (Field::Action, Some(FieldValue::Action(Action::Reject))),
            ],
        );
    }

    #[test]
    fn nodata_record_has_absent_traffic_fields() {
        let line =
            "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA";
        let mut expected: Vec<(Field, Option<FieldValue>)> = [
            Field::SrcAddr,
            Field::DstAddr,
            Field::SrcPort,
            Field::DstPort,
            Field::Protocol,
            Field::Packets,
            Field::Bytes,
            Field::Action,
        ]
        .iter()
        .map(|&field| (field, None))
        .collect();
        expected.push((Field::Start, Some(num(1431280876))));
        expected.push((
            Field::LogStatus,
            Some(FieldValue::LogStatus(LogStatus::NoData)),
        ));
        check(DEFAULT_LOG_FORMAT, line, &expected);
    }

    #[test]
    fn skipdata_record_is_a_gap_report() {
        let mut parser = RecordParser::new(FlowFormat::default());
        let record = parser
            .parse("2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA")
            .unwrap();
        assert_eq!(record.log_status(), Some(LogStatus::SkipData));
        assert_eq!(record.action(), None);
        assert!(!record.has_traffic());
        assert_eq!(
            record.text(Field::InterfaceId),
            Some("eni-11111111aaaaaaaaa")
        );
    }

    #[test]
    fn icmp_ping_pair_has_zero_ports() {
        check(
            DEFAULT_LOG_FORMAT,
            "2 123456789010 eni-1235b8ca123456789 203.0.113.12 172.31.16.139 0 0 1 4 336 1432917027 1432917142 ACCEPT OK",
            &[
                (Field::SrcPort, Some(num(0))),
                (Field::DstPort, Some(num(0))),
                (Field::Protocol, Some(num(1))),
            ],
        );
        check(
            DEFAULT_LOG_FORMAT,
            "2 123456789010 eni-1235b8ca123456789 172.31.16.139 203.0.113.12 0 0 1 4 336 1432917094 1432917142 REJECT OK",
            &[
                (Field::SrcAddr, Some(v4("172.31.16.139"))),
                (Field::Action, Some(FieldValue::Action(Action::Reject))),
            ],
        );
    }

    #[test]
    fn ipv6_record() {
        check(
            DEFAULT_LOG_FORMAT,
            "2 123456789010 eni-1235b8ca123456789 2001:db8:1234:a100:8d6e:3477:df66:f105 2001:db8:1234:a102:3304:8879:34cf:4071 34892 22 6 54 8855 1477913708 1477913820 ACCEPT OK",
            &[
                (
                    Field::SrcAddr,
                    Some(FieldValue::Address(IpAddr::V6(Ipv6Addr::new(
                        0x2001, 0xdb8, 0x1234, 0xa100, 0x8d6e, 0x3477, 0xdf66, 0xf105,
                    )))),
                ),
                (Field::Bytes, Some(num(8855))),
            ],
        );
    }

    #[test]
    fn tcp_flag_sequence_records_parse_in_their_custom_order() {
        let records = [
            "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 52.213.180.42 10.0.0.62 43416 5001 52.213.180.42 10.0.0.62 6 568 8 1566848875 1566848933 ACCEPT 2 OK",
            "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 10.0.0.62 52.213.180.42 5001 43416 10.0.0.62 52.213.180.42 6 376 7 1566848875 1566848933 ACCEPT 18 OK",
            "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 52.213.180.42 10.0.0.62 43418 5001 52.213.180.42 10.0.0.62 6 100701 70 1566848875 1566848933 ACCEPT 2 OK",
            "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 10.0.0.62 52.213.180.42 5001 43418 10.0.0.62 52.213.180.42 6 632 12 1566848875 1566848933 ACCEPT 18 OK",
            "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 10.0.0.62 52.213.180.42 5001 43418 10.0.0.62 52.213.180.42 6 63388 1219 1566848933 1566849113 ACCEPT 1 OK",
            "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 52.213.180.42 10.0.0.62 43418 5001 52.213.180.42 10.0.0.62 6 23294588 15774 1566848933 1566849113 ACCEPT 1 OK",
            "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 52.213.180.42 10.0.0.62 43638 5001 52.213.180.42 10.0.0.62 6 1260 17 1566933133 1566933193 ACCEPT 3 OK",
        ];
        let flags = [2, 18, 2, 18, 1, 1, 3];
        for (line, flag) in records.iter().zip(flags) {
            check(
                TCP_FLAGS_FORMAT,
                line,
                &[
                    (Field::TcpFlags, Some(num(flag))),
                    (Field::Type, Some(FieldValue::Text("IPv4"))),
                ],
            );
        }
        check(
            TCP_FLAGS_FORMAT,
            records[2],
            &[
                (Field::Bytes, Some(num(100701))),
                (Field::Packets, Some(num(70))),
            ],
        );
    }

    #[test]
    fn double_space_record_from_the_aws_documentation_parses() {
        // Verbatim from the "TCP flag sequence" example: two spaces after 43638.
        check(
            TCP_FLAGS_FORMAT,
            "3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 eni-1235b8ca123456789 123456789010 IPv4 10.0.0.62 52.213.180.42 5001 43638  10.0.0.62 52.213.180.42 6 967 14 1566933133 1566933193 ACCEPT 19 OK",
            &[
                (Field::DstPort, Some(num(43638))),
                (Field::PktSrcAddr, Some(v4("10.0.0.62"))),
                (Field::PktDstAddr, Some(v4("52.213.180.42"))),
                (Field::Bytes, Some(num(967))),
                (Field::TcpFlags, Some(num(19))),
                (Field::LogStatus, Some(FieldValue::LogStatus(LogStatus::Ok))),
            ],
        );
    }

    #[test]
    fn nat_gateway_format_has_no_action_and_cannot_count_rejects() {
        let format = FlowFormat::from_log_format(NAT_FORMAT).unwrap();
        assert!(!format.can_count_rejects());
        for line in [
            "- eni-1235b8ca123456789 10.0.1.5 10.0.0.220 10.0.1.5 203.0.113.5",
            "- eni-1235b8ca123456789 10.0.0.220 203.0.113.5 10.0.0.220 203.0.113.5",
            "- eni-1235b8ca123456789 203.0.113.5 10.0.0.220 203.0.113.5 10.0.0.220",
            "- eni-1235b8ca123456789 10.0.0.220 10.0.1.5 203.0.113.5 10.0.1.5",
        ] {
            check(
                NAT_FORMAT,
                line,
                &[(Field::InstanceId, None), (Field::Action, None)],
            );
        }
        check(
            NAT_FORMAT,
            "i-01234567890123456 eni-1111aaaa2222bbbb3 203.0.113.5 10.0.1.5 203.0.113.5 10.0.1.5",
            &[
                (
                    Field::InstanceId,
                    Some(FieldValue::Text("i-01234567890123456")),
                ),
                (Field::PktSrcAddr, Some(v4("203.0.113.5"))),
            ],
        );
    }

    #[test]
    fn vpc_traffic_through_a_transit_gateway_is_an_ordinary_vpc_record() {
        let format = FlowFormat::from_log_format(VPC_VIA_TGW_FORMAT).unwrap();
        assert!(format.can_count_rejects());
        check(
            VPC_VIA_TGW_FORMAT,
            "3 eni-11111111111111111 123456789010 vpc-abcdefab012345678 subnet-11111111aaaaaaaaa - 10.40.1.175 10.40.2.236 39812 80 6 3 IPv4 10.20.33.164 10.40.2.236 ACCEPT OK",
            &[
                (Field::InstanceId, None),
                (Field::SrcAddr, Some(v4("10.40.1.175"))),
                (Field::PktSrcAddr, Some(v4("10.20.33.164"))),
            ],
        );
    }

    #[test]
    fn version_5_ingress_and_egress_records() {
        check(
            V5_FORMAT,
            "5 52.95.128.179 10.0.0.71 80 34210 6 1616729292 1616729349 IPv4 14 15044 123456789012 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-0c50d5961bcb2d47b eni-1235b8ca123456789 ap-southeast-2 apse2-az3 - - ACCEPT 19 52.95.128.179 10.0.0.71 S3 - - ingress OK",
            &[
                (Field::Region, Some(FieldValue::Text("ap-southeast-2"))),
                (Field::AzId, Some(FieldValue::Text("apse2-az3"))),
                (Field::SublocationType, None),
                (Field::PktSrcAwsService, Some(FieldValue::Text("S3"))),
                (Field::PktDstAwsService, None),
                (Field::TrafficPath, None),
                (Field::FlowDirection, Some(FieldValue::Text("ingress"))),
            ],
        );
        check(
            V5_FORMAT,
            "5 10.0.0.71 52.95.128.179 34210 80 6 1616729292 1616729349 IPv4 7 471 123456789012 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-0c50d5961bcb2d47b eni-1235b8ca123456789 ap-southeast-2 apse2-az3 - - ACCEPT 3 10.0.0.71 52.95.128.179 - S3 8 egress OK",
            &[
                (Field::PktDstAwsService, Some(FieldValue::Text("S3"))),
                (Field::TrafficPath, Some(num(8))),
                (Field::FlowDirection, Some(FieldValue::Text("egress"))),
            ],
        );
    }

    #[test]
    fn transit_gateway_flow_log_record_is_recognised_and_not_countable() {
        // AWS publishes no transit gateway record; this one follows the documented 36-field
        // default order and value types.
        let line = "6 TransitGateway 123456789010 tgw-0123456789abcdef0 tgw-attach-0123456789abcdef0 \
            123456789010 123456789011 vpc-0123456789abcdef0 vpc-0123456789abcdef1 \
            subnet-0123456789abcdef0 subnet-0123456789abcdef1 eni-0123456789abcdef0 \
            eni-0123456789abcdef1 use1-az1 use1-az2 tgw-attach-0123456789abcdef1 10.0.1.5 \
            10.1.1.7 43416 443 6 10 840 1700000000 1700000060 OK IPv4 0 0 0 0 2 us-east-1 \
            ingress - -";
        let format = FlowFormat::from_log_format(TGW_FORMAT).unwrap();
        assert_eq!(format.width(), 36);
        assert!(format.is_transit_gateway());
        assert!(!format.can_count_rejects());
        check(
            TGW_FORMAT,
            line,
            &[
                (
                    Field::ResourceType,
                    Some(FieldValue::Text("TransitGateway")),
                ),
                (
                    Field::TgwId,
                    Some(FieldValue::Text("tgw-0123456789abcdef0")),
                ),
                (Field::PacketsLostNoRoute, Some(num(0))),
                (Field::DstPort, Some(num(443))),
                (Field::PktSrcAwsService, None),
            ],
        );
    }

    #[test]
    fn ecs_fields_are_text_and_may_be_absent() {
        let line = "7 123456789010 eni-1235b8ca123456789 10.0.1.9 10.0.2.4 51000 8080 6 3 180 \
            1700000000 1700000050 REJECT OK web arn:aws:ecs:us-east-1:123456789010:cluster/web - - \
            web-svc arn:aws:ecs:us-east-1:123456789010:task-definition/web:7 \
            0a1b2c3d4e5f67890a1b2c3d4e5f6789 \
            arn:aws:ecs:us-east-1:123456789010:task/web/0a1b2c3d4e5f67890a1b2c3d4e5f6789 \
            3f4e5d6c7b8a - ";
        check(
            ECS_FORMAT,
            line,
            &[
                (Field::EcsClusterName, Some(FieldValue::Text("web"))),
                (Field::EcsContainerInstanceArn, None),
                (Field::EcsServiceName, Some(FieldValue::Text("web-svc"))),
                (Field::EcsSecondContainerId, None),
                (Field::Action, Some(FieldValue::Action(Action::Reject))),
            ],
        );
    }

    #[test]
    fn reject_reason_bpa_with_bytes_absent() {
        // VPC Block Public Access rejects carry reject-reason BPA and never `bytes`.
        let line = "8 123456789010 eni-1235b8ca123456789 198.51.100.7 10.0.0.71 51515 22 6 1 - \
            1700000000 1700000030 REJECT OK vpc-abcdefab012345678 subnet-aaaaaaaa012345678 \
            i-0c50d5961bcb2d47b 2 IPv4 198.51.100.7 10.0.0.71 us-east-1 use1-az1 - - - - \
            ingress - BPA";
        check(
            BPA_FORMAT,
            line,
            &[
                (Field::Bytes, None),
                (Field::RejectReason, Some(FieldValue::Text("BPA"))),
                (Field::Version, Some(num(8))),
            ],
        );
    }

    #[test]
    fn version_value_does_not_decide_the_layout() {
        // A version-2 record read with a format that lists fields in another order.
        check(
            "${srcaddr} ${version} ${action}",
            "10.0.0.1 5 REJECT",
            &[
                (Field::SrcAddr, Some(v4("10.0.0.1"))),
                (Field::Version, Some(num(5))),
            ],
        );
    }

    #[test]
    fn unknown_fields_are_kept_as_text() {
        let format =
            FlowFormat::from_log_format("${version} ${encryption-status} ${srcaddr}").unwrap();
        assert_eq!(
            format.columns()[1],
            Column::Unknown("encryption-status".into())
        );
        let mut parser = RecordParser::new(format);
        let record = parser.parse("10 2 10.0.0.1").unwrap();
        assert_eq!(record.column_value(1), Some(FieldValue::Text("2")));
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"version":10,"encryption-status":"2","srcaddr":"10.0.0.1"}"#
        );
    }

    #[test]
    fn any_braced_unknown_name_is_an_opaque_text_column() {
        let format =
            FlowFormat::from_log_format("${Srcaddr} ${custom.field:v2} ${x=1} ${action}").unwrap();
        assert_eq!(
            format.columns(),
            &[
                Column::Unknown("Srcaddr".into()),
                Column::Unknown("custom.field:v2".into()),
                Column::Unknown("x=1".into()),
                Column::Known(Field::Action),
            ]
        );
        assert_eq!(
            format.to_string(),
            "${Srcaddr} ${custom.field:v2} ${x=1} ${action}"
        );
        let mut parser = RecordParser::new(format);
        let record = parser.parse("10.0.0.1 a:b - REJECT").unwrap();
        assert_eq!(record.column_value(0), Some(FieldValue::Text("10.0.0.1")));
        assert_eq!(record.column_value(1), Some(FieldValue::Text("a:b")));
        assert_eq!(record.column_value(2), None);
        assert_eq!(record.action(), Some(Action::Reject));
    }

    #[test]
    fn account_id_may_be_unknown_and_tcp_flags_absent() {
        check(
            "${account-id} ${tcp-flags} ${action}",
            "unknown - REJECT",
            &[
                (Field::AccountId, Some(FieldValue::Text("unknown"))),
                (Field::TcpFlags, None),
            ],
        );
    }

    #[test]
    fn underscore_names_are_accepted_as_hyphenated() {
        let format = FlowFormat::from_log_format("${log_status} ${pkt_srcaddr}").unwrap();
        assert_eq!(
            format.columns(),
            &[
                Column::Known(Field::LogStatus),
                Column::Known(Field::PktSrcAddr)
            ]
        );
    }

    #[test]
    fn every_documented_name_round_trips() {
        for &field in Field::ALL {
            assert_eq!(Field::from_name(field.name()), Some(field));
        }
        assert_eq!(Field::ALL.len(), 58);
    }

    #[test]
    fn format_errors_name_the_token() {
        assert_eq!(FlowFormat::from_log_format(""), Err(FormatError::Empty));
        assert_eq!(
            FlowFormat::from_log_format("${version} ${srcaddr"),
            Err(FormatError::BadToken {
                token: "${srcaddr".into()
            })
        );
        for bad in ["${}", "${a}b}", "${a{b}", "${$a}", "Srcaddr", "srcaddr}"] {
            assert_eq!(
                FlowFormat::from_log_format(&format!("${{version}} {bad}")),
                Err(FormatError::BadToken { token: bad.into() }),
                "{bad}"
            );
        }
        assert_eq!(
            FlowFormat::from_log_format("${srcaddr} ${version} ${srcaddr}"),
            Err(FormatError::Duplicate {
                name: "srcaddr".into()
            })
        );
    }

    #[test]
    fn header_lines_are_told_apart_from_records() {
        assert!(FlowFormat::is_header_line(
            &FlowFormat::default().header_line()
        ));
        assert!(FlowFormat::is_header_line(
            "instance-id interface-id srcaddr dstaddr pkt-srcaddr pkt-dstaddr"
        ));
        assert!(!FlowFormat::is_header_line(
            "- eni-1235b8ca123456789 10.0.1.5 10.0.0.220 10.0.1.5 203.0.113.5"
        ));
        assert!(!FlowFormat::is_header_line(
            "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK"
        ));
        assert!(!FlowFormat::is_header_line("eni-abc vpc-def"));
    }

    #[test]
    fn too_few_fields_is_malformed() {
        assert_eq!(
            parse_error(
                DEFAULT_LOG_FORMAT,
                "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT"
            ),
            ParseError::FieldCount {
                expected: 14,
                found: 13,
                excerpt: "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 3389 6 20 424".into()
            }
        );
    }

    #[test]
    fn an_interface_id_too_long_to_store_is_malformed() {
        let long = format!("eni-{}", "a".repeat(61));
        let line = format!(
            "2 123456789010 {long} 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK"
        );
        assert_eq!(
            parse_error(DEFAULT_LOG_FORMAT, &line),
            ParseError::TooLongValue {
                field: Field::InterfaceId,
                length: 65,
                max: 64,
                value: quoted(&long),
            }
        );
        // 64 bytes are stored as they are, on the fast path and the general one alike.
        let fits = &long[..64];
        let line = line.replace(&long, fits);
        let mut parser = RecordParser::new(FlowFormat::default());
        assert_eq!(
            parser.parse(&line).unwrap().text(Field::InterfaceId),
            Some(fits)
        );
        // Reject reasons name attributes: bounded too.
        assert!(matches!(
            parse_error(
                "${srcaddr} ${action} ${reject-reason}",
                &format!("198.51.100.7 REJECT {}", "B".repeat(65))
            ),
            ParseError::TooLongValue {
                field: Field::RejectReason,
                ..
            }
        ));
        // A NODATA record's interface becomes a sort key: bounded the same way.
        let nodata = format!("2 123456789010 {long} - - - - - - - 1418530010 1418530070 - NODATA");
        assert!(matches!(
            parse_error(DEFAULT_LOG_FORMAT, &nodata),
            ParseError::TooLongValue { .. }
        ));
    }

    #[test]
    fn an_ipv4_mapped_ipv6_address_reads_as_ipv4() {
        let mut parser = RecordParser::new(FlowFormat::default());
        let record = parser
            .parse("2 123456789010 eni-1 ::ffff:198.51.100.7 ::ffff:10.0.0.5 49761 22 6 1 40 1418530010 1418530070 REJECT OK")
            .unwrap();
        assert_eq!(
            record.address(Field::SrcAddr),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            record.address(Field::DstAddr),
            Some("10.0.0.5".parse().unwrap())
        );
        assert_eq!(
            record.address_bits(Field::SrcAddr),
            Some(AddressBits::V4(u32::from(Ipv4Addr::new(198, 51, 100, 7))))
        );
        // Other IPv6 addresses stay as they are, the IPv4-compatible form (::a.b.c.d) too.
        let record = parser
            .parse("2 123456789010 eni-1 ::198.51.100.7 2001:db8::1 49761 22 6 1 40 1418530010 1418530070 REJECT OK")
            .unwrap();
        assert_eq!(
            record.address(Field::SrcAddr),
            Some("::198.51.100.7".parse().unwrap())
        );
    }

    #[test]
    fn too_many_fields_is_malformed() {
        assert_eq!(
            parse_error(
                DEFAULT_LOG_FORMAT,
                "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK extra"
            ),
            ParseError::FieldCount {
                expected: 14,
                found: 15,
                excerpt: "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 3389 6 20 424".into()
            }
        );
    }

    #[test]
    fn a_missing_field_is_reported_as_a_count_not_as_the_shifted_value() {
        // dstport is missing, so "6" lands in dstport and "20" in protocol... and the
        // first value error would be misleading.
        assert_eq!(
            parse_error(
                DEFAULT_LOG_FORMAT,
                "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 6 20 4249 1418530010 1418530070 REJECT OK"
            ),
            ParseError::FieldCount {
                expected: 14,
                found: 13,
                excerpt: "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 6 20 4249 141".into()
            }
        );
    }

    #[test]
    fn non_numeric_port_names_field_and_value() {
        let error = parse_error(
            DEFAULT_LOG_FORMAT,
            "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 ssh 6 20 4249 1418530010 1418530070 REJECT OK",
        );
        assert_eq!(
            error,
            ParseError::NotANumber {
                field: Field::DstPort,
                value: "ssh".into()
            }
        );
        let reason = MalformedLine {
            line_number: 7,
            error,
        }
        .to_string();
        assert_eq!(reason, r#"line 7: dstport: "ssh" is not a number"#);
    }

    #[test]
    fn port_out_of_range_is_malformed() {
        assert_eq!(
            parse_error(
                DEFAULT_LOG_FORMAT,
                "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 70000 6 20 4249 1418530010 1418530070 REJECT OK"
            ),
            ParseError::OutOfRange {
                field: Field::DstPort,
                value: "70000".into(),
                max: 65535
            }
        );
        assert_eq!(
            parse_error("${packets}", "99999999999999999999999"),
            ParseError::OutOfRange {
                field: Field::Packets,
                value: "99999999999999999999999".into(),
                max: u64::MAX
            }
        );
    }

    #[test]
    fn bad_address_is_malformed() {
        for bad in [
            "172.31.9",
            "172.31.9.256",
            "172.31.09.1",
            "host.example",
            "1.2.3.4.5",
            "2001:db8::g",
        ] {
            assert_eq!(
                parse_error("${srcaddr}", bad),
                ParseError::NotAnAddress {
                    field: Field::SrcAddr,
                    value: bad.into()
                },
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_action_and_status_are_malformed() {
        assert!(matches!(
            parse_error("${action}", "DROP"),
            ParseError::UnknownKeyword {
                field: Field::Action,
                ..
            }
        ));
        assert!(matches!(
            parse_error("${log-status}", "ok"),
            ParseError::UnknownKeyword {
                field: Field::LogStatus,
                ..
            }
        ));
    }

    #[test]
    fn cloudwatch_export_timestamp_is_stripped() {
        check(
            DEFAULT_LOG_FORMAT,
            "2024-05-01T12:00:00.000Z 2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK",
            &[
                (Field::Version, Some(num(2))),
                (Field::SrcAddr, Some(v4("172.31.9.69"))),
            ],
        );
    }

    #[test]
    fn cloudwatch_export_timestamp_with_wrong_count_is_rejected_not_shifted() {
        // One field short after the timestamp: the timestamp must not fill column one.
        assert_eq!(
            parse_error(
                "${account-id} ${interface-id} ${action}",
                "2024-05-01T12:00:00.000Z 123456789010 REJECT"
            ),
            ParseError::ExportTimestamp {
                expected: 3,
                found: 2,
                excerpt: "2024-05-01T12:00:00.000Z 123456789010 REJECT".into()
            }
        );
    }

    #[test]
    fn millisecond_times_are_normalised_to_seconds() {
        check(
            "${start} ${end}",
            "1418530010000 1418530070999",
            &[
                (Field::Start, Some(num(1418530010))),
                (Field::End, Some(num(1418530070))),
            ],
        );
    }

    #[test]
    fn crlf_and_surrounding_spaces_are_ignored() {
        check(
            "${srcaddr} ${action}",
            "  10.0.0.1   REJECT \r",
            &[(Field::Action, Some(FieldValue::Action(Action::Reject)))],
        );
    }

    #[test]
    fn records_serialise_as_json_keyed_by_field_name() {
        let mut parser = RecordParser::new(FlowFormat::default());
        let record = parser
            .parse(
                "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA",
            )
            .unwrap();
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"version":2,"account-id":"123456789010","interface-id":"eni-1235b8ca123456789","start":1431280876,"end":1431280934,"log-status":"NODATA"}"#
        );
    }

    #[test]
    fn count_errors_quote_the_start_of_the_line() {
        let reason = |format: &str, line: &str| {
            MalformedLine {
                line_number: 3,
                error: parse_error(format, line),
            }
            .to_string()
        };
        assert_eq!(
            reason(DEFAULT_LOG_FORMAT, "2 x y"),
            r#"line 3: expected 14 fields, found 3: "2 x y""#
        );
        assert_eq!(
            reason("${action} ${srcaddr}", "2024-05-01T12:00:00Z REJECT"),
            r#"line 3: line starts with a timestamp (a CloudWatch Logs export?) followed by 1 fields; expected 2: "2024-05-01T12:00:00Z REJECT""#
        );
        let long = format!("{} end", "1 ".repeat(200));
        match parse_error(DEFAULT_LOG_FORMAT, &long) {
            ParseError::FieldCount { found, excerpt, .. } => {
                assert_eq!(found, 201);
                assert_eq!(excerpt, "1 ".repeat(32));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_long_quotes_the_start_of_the_line_whatever_its_bytes() {
        assert_eq!(
            ParseError::too_long(5000, &[b'9'; 300]).to_string(),
            format!(
                "line is 5000 bytes long, over the line length limit: \"{}\"",
                "9".repeat(64)
            )
        );
        let four_byte_chars = "\u{1f4a9}".repeat(100);
        match ParseError::too_long(400, four_byte_chars.as_bytes()) {
            ParseError::TooLong { excerpt, .. } => {
                assert_eq!(excerpt, "\u{1f4a9}".repeat(MAX_QUOTED_VALUE));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ParseError::too_long(9, b"ab\xff\xc3"),
            ParseError::TooLong {
                length: 9,
                excerpt: "ab\u{fffd}\u{fffd}".into()
            }
        );
    }

    #[test]
    fn quoted_values_are_cut_short() {
        let long = "x".repeat(500);
        match parse_error("${srcport}", &long) {
            ParseError::NotANumber { value, .. } => assert_eq!(value.len(), MAX_QUOTED_VALUE),
            other => panic!("{other:?}"),
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use proptest::sample::subsequence;

        /// Text to write, and the value expected back (`None`: absent).
        type Written = (String, Option<FieldValue<'static>>);

        /// A value of the field's kind, or absent.
        fn value_for(field: Field) -> BoxedStrategy<Written> {
            let present = match field.kind() {
                FieldKind::Number { max } => (0..=max)
                    .prop_map(|n| (n.to_string(), Some(FieldValue::Number(n))))
                    .boxed(),
                FieldKind::Timestamp => (0u64..100_000_000_000)
                    .prop_map(|n| (n.to_string(), Some(FieldValue::Number(n))))
                    .boxed(),
                FieldKind::Address => prop_oneof![
                    any::<[u8; 4]>().prop_map(IpAddr::from),
                    any::<[u16; 8]>().prop_map(IpAddr::from),
                ]
                .prop_map(|addr| (addr.to_string(), Some(FieldValue::Address(addr))))
                .boxed(),
                FieldKind::Action => prop_oneof![Just(Action::Accept), Just(Action::Reject)]
                    .prop_map(|a| (a.as_str().to_owned(), Some(FieldValue::Action(a))))
                    .boxed(),
                FieldKind::LogStatus => prop_oneof![
                    Just(LogStatus::Ok),
                    Just(LogStatus::NoData),
                    Just(LogStatus::SkipData)
                ]
                .prop_map(|s| (s.as_str().to_owned(), Some(FieldValue::LogStatus(s))))
                .boxed(),
                FieldKind::Text => "[a-zA-Z0-9:/_.-]{2,40}"
                    .prop_map(|text| {
                        let leaked: &'static str = Box::leak(text.clone().into_boxed_str());
                        (text, Some(FieldValue::Text(leaked)))
                    })
                    .boxed(),
            };
            prop_oneof![1 => Just(("-".to_owned(), None)), 6 => present].boxed()
        }

        fn shuffled_fields() -> impl Strategy<Value = Vec<Field>> {
            subsequence(Field::ALL.to_vec(), 1..=Field::ALL.len()).prop_shuffle()
        }

        /// Fields in some order, their written values, and the line they make.
        fn record_in_any_order() -> impl Strategy<Value = (Vec<Field>, Vec<Written>, String)> {
            shuffled_fields().prop_flat_map(|fields| {
                let values: Vec<_> = fields.iter().map(|&f| value_for(f)).collect();
                let separators = proptest::collection::vec(1usize..4, fields.len());
                (Just(fields), values, separators).prop_map(|(fields, values, separators)| {
                    let mut line = String::new();
                    for ((text, _), spaces) in values.iter().zip(&separators) {
                        line.push_str(text);
                        line.push_str(&" ".repeat(*spaces));
                    }
                    (fields, values, line)
                })
            })
        }

        proptest! {
            #[test]
            fn a_record_in_any_field_order_parses_back_to_its_values(
                (fields, values, line) in record_in_any_order()
            ) {
                let mut parser = RecordParser::new(FlowFormat::from_fields(&fields));
                let record = parser.parse(&line).map_err(|e| TestCaseError::fail(format!("{line:?}: {e}")))?;
                for (field, (_, expected)) in fields.iter().zip(&values) {
                    prop_assert_eq!(record.value(*field), *expected, "field {}", field);
                }
            }

            #[test]
            fn the_log_format_string_round_trips(fields in shuffled_fields()) {
                let format = FlowFormat::from_fields(&fields);
                prop_assert_eq!(FlowFormat::from_log_format(&format.to_string()).unwrap(), format.clone());
                prop_assert_eq!(FlowFormat::from_header(&format.header_line()).unwrap(), format);
            }

            #[test]
            fn arbitrary_lines_never_panic(line in "\\PC{0,200}") {
                let mut parser = RecordParser::new(FlowFormat::default());
                let _ = parser.parse(&line);
            }
        }
    }
}

#[cfg(test)]
mod address_tests {
    use super::*;
    use proptest::prelude::*;

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

#[cfg(test)]
mod tokenize_tests {
    use super::*;
    use proptest::prelude::*;

    fn tokens_of(text: &str) -> Vec<&str> {
        let mut tokens = vec![(0, 0); 64];
        let found = tokenize(text.as_bytes(), &mut tokens);
        tokens[..found.min(64)]
            .iter()
            .map(|&(start, end)| &text[start as usize..end as usize])
            .collect()
    }

    #[test]
    fn splits_at_runs_of_spaces_across_word_boundaries() {
        assert_eq!(tokens_of(""), Vec::<&str>::new());
        assert_eq!(tokens_of("        "), Vec::<&str>::new());
        assert_eq!(tokens_of("a"), vec!["a"]);
        assert_eq!(tokens_of("abcdefgh"), vec!["abcdefgh"]);
        assert_eq!(tokens_of("abcdefg h"), vec!["abcdefg", "h"]);
        assert_eq!(tokens_of("  1234567  89  "), vec!["1234567", "89"]);
    }

    proptest! {
        #[test]
        fn agrees_with_splitting_on_spaces(text in "[ a-z0-9\\t.:-]{0,100}") {
            let expected: Vec<&str> = text.split(' ').filter(|token| !token.is_empty()).collect();
            prop_assert_eq!(tokens_of(&text), expected);
        }

        #[test]
        fn counts_every_token_even_beyond_the_buffer(words in 0usize..40) {
            let text = vec!["x"; words].join("  ");
            let mut tokens = vec![(0, 0); 3];
            prop_assert_eq!(tokenize(text.as_bytes(), &mut tokens), words);
        }
    }
}

#[cfg(test)]
mod fast_reader_tests {
    use super::*;
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
