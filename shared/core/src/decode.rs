//! Turns delivered bytes into flow-log records: S3 objects (plain text or gzip, streamed)
//! and CloudWatch Logs subscription payloads.
//!
//! Push-based so the same code serves a file, stdin and an S3 `GetObject` body arriving in
//! chunks: [`ObjectDecoder::write`] takes bytes as they come, and memory stays bounded by
//! the gzip window, one chunk, the index of one 64 KiB piece of decoded text and the
//! longest allowed line. Lines are found a piece at a time and read in place (see
//! [`LineBatch`]). No I/O here.

use std::io::{self, Write};

use flate2::write::MultiGzDecoder;

#[cfg(target_arch = "x86_64")]
use crate::flow_log::read_lines_with_avx2;
use crate::flow_log::{
    EXCERPT_BYTES, FlowFormat, FlowRecord, MalformedLine, ParseError, RecordParser, read_lines,
};
use crate::scan::{TextIndex, with_kernels};

/// Limits that keep a hostile or broken object from exhausting memory or time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Stop with [`DecodeError::TooLarge`] after this many decompressed bytes (gzip bombs).
    pub max_decompressed_bytes: u64,
    /// Longer lines are skipped as malformed without being buffered.
    pub max_line_bytes: usize,
}

/// The default cap on decompressed bytes: 4 GiB. AWS rolls flow-log objects at 75 MB of
/// gzip, which is about 1 GB of text at the usual compression ratio.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: u64 = 4 << 30;
/// The default longest line: 16 KiB. A record with every documented field, ECS ARNs
/// included, is under 2 KiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 10;

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// Why an object or payload as a whole cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "object is Apache Parquet but is not named `.parquet`: Parquet objects are read \
         only under their AWS name (`....log.parquet`)"
    )]
    UnexpectedParquet,
    #[error("Parquet data is corrupt or cannot be read")]
    ParquetFile(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("Parquet column {column:?} has type {data_type}, not an integer or a string")]
    ParquetColumnType { column: String, data_type: String },
    #[error("Parquet object has none of the flow-log columns that are read")]
    ParquetNoFlowLogColumns,
    #[error("Parquet footer of {bytes} bytes is over the limit of {limit}")]
    ParquetFooterTooLarge { bytes: u64, limit: u64 },
    #[error(
        "Parquet row group {row_group} needs {bytes} bytes of column chunks, over the \
         limit of {limit}"
    )]
    ParquetRowGroupTooLarge {
        row_group: usize,
        bytes: u64,
        limit: u64,
    },
    #[error("gzip data is corrupt or truncated")]
    Gzip(#[source] io::Error),
    #[error("decompressed data exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("header line does not describe a flow-log format")]
    BadHeader(#[source] crate::flow_log::FormatError),
    #[error("not a CloudWatch Logs subscription event")]
    SubscriptionEvent(#[source] serde_json::Error),
    #[error("awslogs.data is not valid base64: {0}")]
    SubscriptionData(String),
    #[error("CloudWatch Logs message type {0:?} is neither DATA_MESSAGE nor CONTROL_MESSAGE")]
    UnknownMessageType(String),
}

/// Receives the lines of a decoded object, in order, without their `\n`.
pub trait LineSink {
    /// One complete line (1-based number). A `\r` before the `\n` is left in place.
    fn line(&mut self, line_number: u64, line: &[u8]) -> Result<(), DecodeError>;
    /// Complete lines found together in one stretch of decoded text, with an index of
    /// where their values are separated. The default hands them to [`LineSink::line`] one
    /// by one.
    fn lines(&mut self, lines: &LineBatch<'_>) -> Result<(), DecodeError> {
        for (line_number, line) in lines.iter() {
            self.line(line_number, line)?;
        }
        Ok(())
    }
    /// A line longer than [`DecodeLimits::max_line_bytes`]; its bytes were dropped except
    /// `head`, its first [`EXCERPT_BYTES`] (which may end inside a character).
    fn oversized_line(&mut self, line_number: u64, length: usize, head: &[u8]);
}

/// Consecutive complete lines of decoded text, none longer than the line limit, and the
/// index of their text (newlines, value separators, unusual bytes).
pub struct LineBatch<'a> {
    /// Starts with the first line; goes on past the last one with whatever the decoded
    /// buffer holds after it (the start of the next line), which readers may look at.
    pub(crate) text: &'a [u8],
    pub(crate) index: &'a TextIndex,
    pub(crate) first_line_number: u64,
}

impl LineBatch<'_> {
    /// Each line with its number, without its `\n`.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let mut start = 0;
        self.index
            .newlines()
            .iter()
            .zip(self.first_line_number..)
            .map(move |(&newline, line_number)| {
                let line = &self.text[start..newline as usize];
                start = newline as usize + 1;
                (line_number, line)
            })
    }
}

/// Receives parsed records and the lines that were skipped.
pub trait RecordSink {
    /// A record that parsed. It borrows the line, so copy what must outlive the call.
    fn record(&mut self, record: &FlowRecord<'_>);
    /// A line that was skipped, with its reason.
    fn malformed(&mut self, line: MalformedLine);
}

impl<R: RecordSink + ?Sized> RecordSink for &mut R {
    fn record(&mut self, record: &FlowRecord<'_>) {
        (**self).record(record);
    }

    fn malformed(&mut self, line: MalformedLine) {
        (**self).malformed(line);
    }
}

/// Why an S3 key from an event notification could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("S3 key {key:?} has a malformed percent escape")]
    BadEscape { key: String },
    #[error("S3 key {key:?} is not UTF-8 once decoded")]
    NotUtf8 { key: String },
}

/// Decodes a key as S3 event notifications write it: `+` for a space and `%XX` for any
/// other escaped byte (so Hive-style prefixes arrive as `year%3D2024`).
pub fn decode_s3_key(raw: &str) -> Result<String, KeyError> {
    let bad_escape = || KeyError::BadEscape {
        key: raw.chars().take(200).collect(),
    };
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut position = 0;
    while let Some(&byte) = bytes.get(position) {
        match byte {
            b'+' => decoded.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(position + 1..position + 3)
                    .ok_or_else(bad_escape)?;
                let text = std::str::from_utf8(hex).map_err(|_| bad_escape())?;
                decoded.push(u8::from_str_radix(text, 16).map_err(|_| bad_escape())?);
                position += 2;
            }
            other => decoded.push(other),
        }
        position += 1;
    }
    String::from_utf8(decoded).map_err(|_| KeyError::NotUtf8 {
        key: raw.chars().take(200).collect(),
    })
}

/// Whether an S3 key names a Parquet flow-log object (`....log.parquet`).
pub fn is_parquet_key(key: &str) -> bool {
    key.ends_with(".parquet")
}

/// Whether bytes begin as a Parquet file does.
pub fn starts_as_parquet(bytes: &[u8]) -> bool {
    bytes.starts_with(&PARQUET_MAGIC)
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const PARQUET_MAGIC: [u8; 4] = *b"PAR1";

/// Streams an S3 flow-log object into a [`LineSink`]: sniffs gzip and Parquet by their
/// magic bytes, decompresses every gzip member, splits lines and enforces [`DecodeLimits`].
pub struct ObjectDecoder<S: LineSink> {
    stage: Stage<S>,
}

enum Stage<S: LineSink> {
    /// Fewer bytes than a magic number have arrived so far.
    Sniffing {
        head: Vec<u8>,
        splitter: LineSplitter<S>,
    },
    Plain(LineSplitter<S>),
    Gzip(Box<MultiGzDecoder<LineSplitter<S>>>),
    /// A previous call failed; the decoder must not be used further.
    Failed,
}

impl<S: LineSink> ObjectDecoder<S> {
    /// A decoder feeding `sink`.
    pub fn new(sink: S, limits: DecodeLimits) -> Self {
        ObjectDecoder {
            stage: Stage::Sniffing {
                head: Vec::with_capacity(PARQUET_MAGIC.len()),
                splitter: LineSplitter::new(sink, limits),
            },
        }
    }

    /// The sink, unless an earlier call failed.
    pub fn sink(&self) -> Option<&S> {
        match &self.stage {
            Stage::Sniffing { splitter, .. } | Stage::Plain(splitter) => Some(&splitter.sink),
            Stage::Gzip(gzip) => Some(&gzip.get_ref().sink),
            Stage::Failed => None,
        }
    }

    /// Feeds the next chunk of the object.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), DecodeError> {
        let result = self.write_inner(chunk);
        if result.is_err() {
            self.stage = Stage::Failed;
        }
        result
    }

    fn write_inner(&mut self, chunk: &[u8]) -> Result<(), DecodeError> {
        if let Stage::Sniffing { head, .. } = &mut self.stage {
            let wanted = PARQUET_MAGIC.len() - head.len();
            let taken = wanted.min(chunk.len());
            head.extend_from_slice(&chunk[..taken]);
            if head.len() < PARQUET_MAGIC.len() {
                return Ok(());
            }
            let head = std::mem::take(head);
            self.choose_stage(&head)?;
            self.write_decoded(&head)?;
            return self.write_decoded(&chunk[taken..]);
        }
        self.write_decoded(chunk)
    }

    fn choose_stage(&mut self, head: &[u8]) -> Result<(), DecodeError> {
        let Stage::Sniffing { splitter, .. } = std::mem::replace(&mut self.stage, Stage::Failed)
        else {
            return Ok(());
        };
        if starts_as_parquet(head) {
            return Err(DecodeError::UnexpectedParquet);
        }
        self.stage = if head.starts_with(&GZIP_MAGIC) {
            Stage::Gzip(Box::new(MultiGzDecoder::new(splitter)))
        } else {
            Stage::Plain(splitter)
        };
        Ok(())
    }

    fn write_decoded(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        match &mut self.stage {
            Stage::Plain(splitter) => splitter.accept(bytes),
            Stage::Gzip(gzip) => match gzip.write_all(bytes) {
                Ok(()) => Ok(()),
                Err(error) => Err(gzip
                    .get_mut()
                    .take_failure()
                    .unwrap_or(DecodeError::Gzip(error))),
            },
            Stage::Sniffing { .. } | Stage::Failed => Ok(()),
        }
    }

    /// Ends the object: checks the gzip trailer, delivers a last line without `\n`, and
    /// returns the sink.
    pub fn finish(mut self) -> Result<S, DecodeError> {
        if let Stage::Sniffing { head, .. } = &mut self.stage {
            // Objects shorter than a magic number: decide on what there is.
            let head = std::mem::take(head);
            self.choose_stage(&head)?;
            self.write_decoded(&head)?;
        }
        let mut splitter = match std::mem::replace(&mut self.stage, Stage::Failed) {
            Stage::Plain(splitter) => splitter,
            Stage::Gzip(mut gzip) => {
                // The decoder holds back up to 32 KiB of output until the end, so the
                // splitter may fail only now (a bad header line, the size limit): its own
                // error says more than "corrupt gzip".
                if let Err(error) = gzip.try_finish() {
                    return Err(gzip
                        .get_mut()
                        .take_failure()
                        .unwrap_or(DecodeError::Gzip(error)));
                }
                gzip.finish().map_err(DecodeError::Gzip)?
            }
            Stage::Sniffing { .. } | Stage::Failed => {
                return Err(DecodeError::Gzip(io::Error::other(
                    "decoder used after an earlier error",
                )));
            }
        };
        splitter.finish()?;
        Ok(splitter.sink)
    }
}

/// Decoded bytes are indexed and handed on in pieces of at most this many bytes, so that
/// the index stays small whatever size of chunk a caller writes.
const PIECE_BYTES: usize = 64 << 10;

/// Splits decoded bytes into lines, counting bytes against the limits.
struct LineSplitter<S> {
    sink: S,
    limits: DecodeLimits,
    index: TextIndex,
    partial: Vec<u8>,
    /// Length so far of a line that is being dropped for being too long.
    oversized: Option<usize>,
    /// The first [`EXCERPT_BYTES`] of the line being dropped, for its error message.
    oversized_head: Vec<u8>,
    line_number: u64,
    decompressed_bytes: u64,
    failure: Option<DecodeError>,
}

impl<S: LineSink> LineSplitter<S> {
    fn new(sink: S, limits: DecodeLimits) -> Self {
        LineSplitter {
            sink,
            limits,
            index: TextIndex::default(),
            partial: Vec::new(),
            oversized: None,
            oversized_head: Vec::new(),
            line_number: 0,
            decompressed_bytes: 0,
            failure: None,
        }
    }

    fn take_failure(&mut self) -> Option<DecodeError> {
        self.failure.take()
    }

    fn accept(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        self.decompressed_bytes += bytes.len() as u64;
        if self.decompressed_bytes > self.limits.max_decompressed_bytes {
            return Err(DecodeError::TooLarge {
                limit: self.limits.max_decompressed_bytes,
            });
        }
        for piece in bytes.chunks(PIECE_BYTES) {
            self.accept_piece(piece)?;
        }
        Ok(())
    }

    fn accept_piece(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let mut rest = bytes;
        if !self.partial.is_empty() || self.oversized.is_some() {
            let Some(newline) = memchr::memchr(b'\n', bytes) else {
                self.carry(bytes);
                return Ok(());
            };
            self.finish_carried(&bytes[..newline])?;
            rest = &bytes[newline + 1..];
        }
        self.index.build(rest);
        let newlines = self.index.newlines();
        let Some(&last) = newlines.last() else {
            self.carry(rest);
            return Ok(());
        };
        let count = newlines.len() as u64;
        let mut start = 0;
        let longest = newlines.iter().fold(0, |longest, &newline| {
            let length = newline as usize - start;
            start = newline as usize + 1;
            longest.max(length)
        });
        if longest <= self.limits.max_line_bytes {
            let batch = LineBatch {
                text: rest,
                index: &self.index,
                first_line_number: self.line_number + 1,
            };
            self.sink.lines(&batch)?;
            self.line_number += count;
        } else {
            self.split_with_long_lines(rest)?;
        }
        self.carry(&rest[last as usize + 1..]);
        Ok(())
    }

    /// The complete lines of `text` one by one, dropping those over the limit: the rare
    /// case of a piece holding a line too long to read.
    #[cold]
    fn split_with_long_lines(&mut self, text: &[u8]) -> Result<(), DecodeError> {
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', text) {
            let line = &text[start..newline];
            self.line_number += 1;
            if line.len() > self.limits.max_line_bytes {
                keep_head(&mut self.oversized_head, &[], line);
                let head = &self.oversized_head;
                self.sink.oversized_line(self.line_number, line.len(), head);
            } else {
                self.sink.line(self.line_number, line)?;
            }
            start = newline + 1;
        }
        Ok(())
    }

    /// Ends the line carried over from earlier pieces with `piece`.
    fn finish_carried(&mut self, piece: &[u8]) -> Result<(), DecodeError> {
        self.line_number += 1;
        let sink = &mut self.sink;
        if let Some(length) = self.oversized.take() {
            sink.oversized_line(self.line_number, length + piece.len(), &self.oversized_head);
        } else if self.partial.len() + piece.len() > self.limits.max_line_bytes {
            let length = self.partial.len() + piece.len();
            keep_head(&mut self.oversized_head, &self.partial, piece);
            sink.oversized_line(self.line_number, length, &self.oversized_head);
            self.partial.clear();
        } else {
            self.partial.extend_from_slice(piece);
            sink.line(self.line_number, &self.partial)?;
            self.partial.clear();
        }
        Ok(())
    }

    /// Keeps the start of a line that goes on in the next piece (or only its length and
    /// head, once it is over the limit).
    fn carry(&mut self, tail: &[u8]) {
        if let Some(length) = self.oversized.as_mut() {
            *length += tail.len();
        } else if self.partial.len() + tail.len() > self.limits.max_line_bytes {
            self.oversized = Some(self.partial.len() + tail.len());
            keep_head(&mut self.oversized_head, &self.partial, tail);
            self.partial.clear();
        } else {
            self.partial.extend_from_slice(tail);
        }
    }

    fn finish(&mut self) -> Result<(), DecodeError> {
        let sink = &mut self.sink;
        if let Some(length) = self.oversized.take() {
            self.line_number += 1;
            sink.oversized_line(self.line_number, length, &self.oversized_head);
        } else if !self.partial.is_empty() {
            self.line_number += 1;
            sink.line(self.line_number, &self.partial)?;
            self.partial.clear();
        }
        Ok(())
    }
}

/// Keeps in `head` the first [`EXCERPT_BYTES`] of a line that starts with `partial` and
/// goes on with `piece`. Only dropped lines come here, so copying is of no concern.
#[cold]
fn keep_head(head: &mut Vec<u8>, partial: &[u8], piece: &[u8]) {
    head.clear();
    for part in [partial, piece] {
        let room = EXCERPT_BYTES - head.len();
        head.extend_from_slice(&part[..part.len().min(room)]);
    }
}

impl<S: LineSink> Write for LineSplitter<S> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self.accept(bytes) {
            Ok(()) => Ok(bytes.len()),
            Err(failure) => {
                let message = failure.to_string();
                self.failure = Some(failure);
                Err(io::Error::other(message))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The lines of a flow-log text object: the first line is the format when it is a header
/// (S3 objects always have one); otherwise every line is a record of the fallback format.
///
/// Blank lines are ignored. A header line met later (objects joined from several files)
/// switches the format from there on.
pub struct ObjectLines<R> {
    fallback: FlowFormat,
    pub(crate) parser: Option<RecordParser>,
    pub(crate) records: R,
}

impl<R: RecordSink> ObjectLines<R> {
    /// Lines parsed with the object's header, or with `fallback` when it has none.
    pub fn new(fallback: FlowFormat, records: R) -> Self {
        ObjectLines {
            fallback,
            parser: None,
            records,
        }
    }

    /// The record sink.
    pub fn records(&self) -> &R {
        &self.records
    }

    /// The record sink, with everything it received.
    pub fn into_records(self) -> R {
        self.records
    }

    /// The format in use: the header's once one was read, else the fallback.
    pub fn format(&self) -> &FlowFormat {
        self.parser
            .as_ref()
            .map_or(&self.fallback, RecordParser::format)
    }
}

impl<R: RecordSink> ObjectLines<R> {
    fn text_line(&mut self, line_number: u64, text: &str) -> Result<(), DecodeError> {
        let is_blank = || text.trim_ascii().is_empty();
        let parser = match &mut self.parser {
            Some(parser) => parser,
            None if is_blank() => return Ok(()),
            None if FlowFormat::is_header_line(text) => {
                let format = FlowFormat::from_header(text).map_err(DecodeError::BadHeader)?;
                self.parser = Some(RecordParser::new(format));
                return Ok(());
            }
            None => self.parser.insert(RecordParser::new(self.fallback.clone())),
        };
        match parser.parse(text) {
            Ok(record) => self.records.record(&record),
            // Blank lines never parse, so they are only looked for among the failures.
            Err(_) if is_blank() => {}
            Err(_) if FlowFormat::is_header_line(text) => {
                let format = FlowFormat::from_header(text).map_err(DecodeError::BadHeader)?;
                *parser = RecordParser::new(format);
            }
            Err(error) => self.records.malformed(MalformedLine { line_number, error }),
        }
        Ok(())
    }
}

impl<R: RecordSink> LineSink for ObjectLines<R> {
    fn line(&mut self, line_number: u64, line: &[u8]) -> Result<(), DecodeError> {
        match std::str::from_utf8(line) {
            Ok(text) => self.text_line(line_number, text),
            Err(_) => {
                self.records.malformed(MalformedLine {
                    line_number,
                    error: ParseError::NotUtf8,
                });
                Ok(())
            }
        }
    }

    fn lines(&mut self, lines: &LineBatch<'_>) -> Result<(), DecodeError> {
        with_kernels!(read_lines_with_avx2, read_lines, (self, lines))
    }

    fn oversized_line(&mut self, line_number: u64, length: usize, head: &[u8]) {
        self.records.malformed(MalformedLine {
            line_number,
            error: ParseError::too_long(length, head),
        });
    }
}

/// The decoded contents of a CloudWatch Logs subscription delivery.
pub use aws_lambda_events::cloudwatch_logs::{LogData, LogEntry};

/// What a CloudWatch Logs subscription delivery contains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    /// Log events; each one is a flow-log record.
    Data,
    /// CloudWatch Logs checking that the destination is reachable; no records.
    Control,
}

/// Classifies a decoded batch by its `messageType`.
pub fn message_type(data: &LogData) -> Result<MessageType, DecodeError> {
    match data.message_type.as_str() {
        "DATA_MESSAGE" => Ok(MessageType::Data),
        "CONTROL_MESSAGE" => Ok(MessageType::Control),
        other => Err(DecodeError::UnknownMessageType(
            other.chars().take(64).collect(),
        )),
    }
}

/// The most decompressed bytes a CloudWatch Logs payload may hold. A Lambda payload is at
/// most 6 MB, and CloudWatch batches at most 1 MB of events; this leaves room and still
/// stops a gzip bomb.
pub const MAX_SUBSCRIPTION_DATA_BYTES: u64 = 64 << 20;

/// Decodes a Lambda payload from a CloudWatch Logs subscription (`{"awslogs": {"data":
/// base64(gzip(json))}}`) into its log data.
///
/// Decodes `data` here rather than through the event type's own deserialiser, to bound the
/// decompressed size and to report which step failed.
pub fn decode_subscription_event(payload: &[u8]) -> Result<LogData, DecodeError> {
    serde_json::from_slice::<SubscriptionEvent>(payload)
        .map_err(DecodeError::SubscriptionEvent)?
        .decode()
}

/// The Lambda event of a CloudWatch Logs subscription, before `awslogs.data` is decoded.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct SubscriptionEvent {
    pub awslogs: AwsLogsData,
}

/// The `awslogs` member of a [`SubscriptionEvent`].
#[derive(Clone, Debug, serde::Deserialize)]
pub struct AwsLogsData {
    /// base64 of gzip of the [`LogData`] JSON.
    pub data: String,
}

impl SubscriptionEvent {
    /// Decodes `awslogs.data` into the batch it carries.
    pub fn decode(&self) -> Result<LogData, DecodeError> {
        decode_subscription_data(&self.awslogs.data)
    }
}

/// Decodes the `awslogs.data` string of a subscription payload: base64, then gzip, then JSON.
pub fn decode_subscription_data(data: &str) -> Result<LogData, DecodeError> {
    use base64::Engine;
    use std::io::Read;

    let compressed = base64::engine::general_purpose::STANDARD
        .decode(data.trim_ascii())
        .map_err(|error| DecodeError::SubscriptionData(error.to_string()))?;
    let mut json = Vec::new();
    flate2::read::MultiGzDecoder::new(compressed.as_slice())
        .take(MAX_SUBSCRIPTION_DATA_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(DecodeError::Gzip)?;
    if json.len() as u64 > MAX_SUBSCRIPTION_DATA_BYTES {
        return Err(DecodeError::TooLarge {
            limit: MAX_SUBSCRIPTION_DATA_BYTES,
        });
    }
    serde_json::from_slice(&json).map_err(DecodeError::SubscriptionEvent)
}

/// Encodes log data the way CloudWatch Logs delivers it to Lambda: the JSON event
/// `{"awslogs": {"data": base64(gzip(json))}}`, with padded base64.
///
/// For tests, fixtures and the generator; the inverse of [`decode_subscription_event`].
pub fn encode_subscription_event(data: &LogData) -> Vec<u8> {
    use base64::Engine;

    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail, and LogData always serialises.
    let _ = serde_json::to_writer(&mut gzip, data);
    let compressed = gzip.finish().unwrap_or_default();
    let encoded = base64::engine::general_purpose::STANDARD.encode(compressed);
    serde_json::json!({ "awslogs": { "data": encoded } })
        .to_string()
        .into_bytes()
}

/// Parses the records of a decoded batch into `records`: one record per log event of a
/// `DATA_MESSAGE`, nothing for a `CONTROL_MESSAGE`. Returns the message type.
///
/// CloudWatch events carry no header, so `parser` holds the format the flow log was
/// created with. Skipped events are numbered by their 1-based position in the batch.
pub fn parse_log_data<R: RecordSink>(
    data: &LogData,
    parser: &mut RecordParser,
    records: &mut R,
) -> Result<MessageType, DecodeError> {
    let kind = message_type(data)?;
    if kind == MessageType::Data {
        for (index, event) in data.log_events.iter().enumerate() {
            match parser.parse(&event.message) {
                Ok(record) => records.record(&record),
                Err(error) => records.malformed(MalformedLine {
                    line_number: index as u64 + 1,
                    error,
                }),
            }
        }
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow_log::{Action, Field};
    use flate2::Compression;
    use flate2::write::GzEncoder;

    const HEADER: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status";
    const REJECT: &str = "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK";
    const ACCEPT: &str = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK";

    /// Keeps what it is given, as (line number or 0, summary).
    #[derive(Default)]
    struct Collected {
        actions: Vec<Option<Action>>,
        dst_ports: Vec<Option<u64>>,
        malformed: Vec<MalformedLine>,
    }

    impl RecordSink for Collected {
        fn record(&mut self, record: &FlowRecord<'_>) {
            self.actions.push(record.action());
            self.dst_ports.push(record.number(Field::DstPort));
        }

        fn malformed(&mut self, line: MalformedLine) {
            self.malformed.push(line);
        }
    }

    fn gzip(text: &str) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    }

    fn decode_with(
        bytes: &[u8],
        chunk: usize,
        limits: DecodeLimits,
    ) -> Result<Collected, DecodeError> {
        let lines = ObjectLines::new(FlowFormat::default(), Collected::default());
        let mut decoder = ObjectDecoder::new(lines, limits);
        for piece in bytes.chunks(chunk.max(1)) {
            decoder.write(piece)?;
        }
        Ok(decoder.finish()?.into_records())
    }

    fn decode(bytes: &[u8]) -> Result<Collected, DecodeError> {
        decode_with(bytes, 64 << 10, DecodeLimits::default())
    }

    #[test]
    fn plain_object_with_header_yields_its_records() {
        let text = format!("{HEADER}\n{REJECT}\n{ACCEPT}\n");
        let collected = decode(text.as_bytes()).unwrap();
        assert_eq!(
            collected.actions,
            vec![Some(Action::Reject), Some(Action::Accept)]
        );
        assert!(collected.malformed.is_empty());
    }

    #[test]
    fn header_sets_the_format_over_the_fallback() {
        let text = "action dstport\nREJECT 22\nACCEPT 443\n";
        let collected = decode(text.as_bytes()).unwrap();
        assert_eq!(collected.dst_ports, vec![Some(22), Some(443)]);
    }

    #[test]
    fn object_without_header_uses_the_fallback_format() {
        let collected = decode(format!("{REJECT}\n").as_bytes()).unwrap();
        assert_eq!(collected.actions, vec![Some(Action::Reject)]);
    }

    #[test]
    fn gzip_object_is_decompressed() {
        let collected = decode(&gzip(&format!("{HEADER}\n{REJECT}\n{ACCEPT}\n"))).unwrap();
        assert_eq!(collected.actions.len(), 2);
    }

    #[test]
    fn concatenated_gzip_members_are_all_read() {
        let mut bytes = gzip(&format!("{HEADER}\n{REJECT}\n"));
        bytes.extend(gzip(&format!("{ACCEPT}\n{REJECT}\n")));
        let collected = decode(&bytes).unwrap();
        assert_eq!(
            collected.actions,
            vec![
                Some(Action::Reject),
                Some(Action::Accept),
                Some(Action::Reject)
            ]
        );
    }

    #[test]
    fn a_header_in_a_later_member_switches_the_format() {
        let mut bytes = gzip(&format!("{HEADER}\n{REJECT}\n"));
        bytes.extend(gzip("action dstport\nACCEPT 443\n"));
        let collected = decode(&bytes).unwrap();
        assert_eq!(collected.dst_ports, vec![Some(3389), Some(443)]);
        assert!(collected.malformed.is_empty());
    }

    #[test]
    fn any_chunking_gives_the_same_records() {
        let mut bytes = gzip(&format!("{HEADER}\n{REJECT}\n{ACCEPT}"));
        bytes.extend(gzip(&format!("\n{REJECT}\n")));
        for chunk in [1, 2, 3, 5, 7, 16, 100] {
            let collected = decode_with(&bytes, chunk, DecodeLimits::default()).unwrap();
            assert_eq!(
                collected.actions,
                vec![
                    Some(Action::Reject),
                    Some(Action::Accept),
                    Some(Action::Reject)
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn last_line_without_newline_is_read() {
        let collected = decode(format!("{HEADER}\n{REJECT}").as_bytes()).unwrap();
        assert_eq!(collected.actions.len(), 1);
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let bytes = gzip(&format!("{HEADER}\n{REJECT}\n{ACCEPT}\n"));
        for cut in [3, 10, bytes.len() / 2, bytes.len() - 4, bytes.len() - 1] {
            assert!(
                matches!(decode(&bytes[..cut]), Err(DecodeError::Gzip(_))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let mut bytes = gzip(&format!("{HEADER}\n{REJECT}\n{ACCEPT}\n"));
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        bytes[middle + 1] ^= 0x55;
        assert!(matches!(decode(&bytes), Err(DecodeError::Gzip(_))));
    }

    #[test]
    fn garbage_after_a_gzip_member_is_an_error() {
        let mut bytes = gzip(&format!("{HEADER}\n{REJECT}\n"));
        bytes.extend_from_slice(b"not gzip at all");
        assert!(matches!(decode(&bytes), Err(DecodeError::Gzip(_))));
    }

    #[test]
    fn gzip_bomb_stops_at_the_decompressed_limit() {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(&vec![b' '; 10 << 20]).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        let limits = DecodeLimits {
            max_decompressed_bytes: 1 << 20,
            ..DecodeLimits::default()
        };
        let error = decode_with(&bomb, 4096, limits).map(|_| ()).unwrap_err();
        assert!(
            matches!(error, DecodeError::TooLarge { limit } if limit == 1 << 20),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "decompressed data exceeds the limit of 1048576 bytes"
        );
    }

    #[test]
    fn plain_objects_count_against_the_limit_too() {
        let limits = DecodeLimits {
            max_decompressed_bytes: 100,
            ..DecodeLimits::default()
        };
        let text = format!("{HEADER}\n{REJECT}\n");
        assert!(matches!(
            decode_with(text.as_bytes(), 4096, limits),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn s3_keys_are_url_decoded() {
        assert_eq!(
            decode_s3_key("AWSLogs/aws-account-id%3D123456789012/aws-service%3Dvpcflowlogs/aws-region%3Dus-east-1/year%3D2024/x.log.gz"),
            Ok("AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=us-east-1/year=2024/x.log.gz".into())
        );
        assert_eq!(
            decode_s3_key("my+prefix/a%2Bb%20c%C3%A9"),
            Ok("my prefix/a+b cé".into())
        );
        assert_eq!(
            decode_s3_key("plain/key.log.gz"),
            Ok("plain/key.log.gz".into())
        );
        assert!(matches!(
            decode_s3_key("bad%2"),
            Err(KeyError::BadEscape { .. })
        ));
        assert!(matches!(
            decode_s3_key("bad%zz"),
            Err(KeyError::BadEscape { .. })
        ));
        assert!(matches!(
            decode_s3_key("bad%ff"),
            Err(KeyError::NotUtf8 { .. })
        ));
    }

    #[test]
    fn parquet_is_told_by_magic_and_by_key() {
        // The text decoder never reads Parquet as text; Parquet is read by its own path.
        let error = decode(b"PAR1\x15\x04\x15\x10").map(|_| ()).unwrap_err();
        assert!(matches!(error, DecodeError::UnexpectedParquet));
        assert!(error.to_string().contains(".parquet"));
        assert!(starts_as_parquet(b"PAR1\x15"));
        assert!(!starts_as_parquet(b"version account-id"));
        assert!(is_parquet_key(
            "AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/01/x_fe123456.log.parquet"
        ));
        assert!(!is_parquet_key(
            "AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/01/x_fe123456.log.gz"
        ));
    }

    #[test]
    fn overlong_line_is_skipped_and_the_next_one_read() {
        let limits = DecodeLimits {
            max_line_bytes: 200,
            ..DecodeLimits::default()
        };
        let digits: String = (0..5000)
            .map(|i| char::from(b'0' + (i % 10) as u8))
            .collect();
        let text = format!("{HEADER}\n{digits}\n{REJECT}\n");
        for chunk in [1, 7, 64, 150, 4096] {
            let collected = decode_with(text.as_bytes(), chunk, limits).unwrap();
            assert_eq!(collected.actions, vec![Some(Action::Reject)]);
            assert_eq!(
                collected.malformed,
                vec![MalformedLine {
                    line_number: 2,
                    error: ParseError::TooLong {
                        length: 5000,
                        excerpt: digits[..64].into()
                    }
                }],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn malformed_lines_are_counted_with_line_numbers_and_the_batch_goes_on() {
        let text = format!("{HEADER}\n{REJECT}\nnot a record\n\n{ACCEPT}\n\u{ff}\n");
        let mut bytes = text.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = 0xff;
        bytes.truncate(last + 1);
        bytes.push(b'\n');
        let collected = decode(&bytes).unwrap();
        assert_eq!(collected.actions.len(), 2);
        let numbers: Vec<u64> = collected.malformed.iter().map(|m| m.line_number).collect();
        assert_eq!(numbers, vec![3, 6]);
        assert_eq!(
            collected.malformed[0].error,
            ParseError::FieldCount {
                expected: 14,
                found: 3,
                excerpt: "not a record".into()
            }
        );
        assert_eq!(collected.malformed[1].error, ParseError::NotUtf8);
    }

    #[test]
    fn lines_with_unusual_bytes_take_the_line_path_and_keep_their_numbers() {
        // A CRLF line, a tab (which does not separate values), valid and invalid UTF-8,
        // among ordinary lines: every line keeps its number and its fate.
        let crlf = format!("{REJECT}\r");
        let tab = REJECT.replace(" 6 ", "\t6 ");
        let accented = REJECT.replace("eni-1235b8ca123456789", "eni-é");
        let mut bytes = Vec::new();
        for line in [HEADER, REJECT, &crlf, &tab, &accented, ACCEPT] {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(b"\xff\xfe\n");
        bytes.extend_from_slice(format!("{REJECT}\n").as_bytes());
        for chunk in [1, 13, 200, 64 << 10] {
            let collected = decode_with(&bytes, chunk, DecodeLimits::default()).unwrap();
            assert_eq!(collected.actions.len(), 5, "chunk {chunk}");
            assert_eq!(
                collected.malformed,
                vec![
                    MalformedLine {
                        line_number: 4,
                        error: ParseError::FieldCount {
                            expected: 14,
                            found: 13,
                            excerpt: tab[..64].into()
                        }
                    },
                    MalformedLine {
                        line_number: 7,
                        error: ParseError::NotUtf8
                    },
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn export_timestamps_are_refused_whatever_the_chunking_when_text_comes_first() {
        // A text first column would take the timestamp as its value; the line has the
        // format's width only with it, so it is refused, in place as line by line.
        let filler = format!("{}\n", "vpc-1 subnet-1");
        let text = format!(
            "vpc-id subnet-id\n2024-05-01T12:00:00.000Z abc\n{}",
            filler.repeat(64)
        );
        for chunk in [1, 7, 64 << 10] {
            let collected = decode_with(text.as_bytes(), chunk, DecodeLimits::default()).unwrap();
            assert_eq!(
                collected.malformed,
                vec![MalformedLine {
                    line_number: 2,
                    error: ParseError::ExportTimestamp {
                        expected: 2,
                        found: 1,
                        excerpt: "2024-05-01T12:00:00.000Z abc".into()
                    }
                }],
                "chunk {chunk}"
            );
            assert_eq!(collected.actions.len(), 64);
        }
    }

    #[test]
    fn a_wide_header_over_short_lines_reports_each_line_and_ends() {
        // Short lines at the end of a piece, read with a 255-column format: the reader
        // runs out of text looking for values and must still stop.
        let header: Vec<String> = (0..crate::flow_log::MAX_COLUMNS)
            .map(|index| format!("x{index}"))
            .collect();
        let text = format!("version {}\n1 2\n3\n", header[1..].join(" "));
        for chunk in [1, 5, 64 << 10] {
            let collected = decode_with(text.as_bytes(), chunk, DecodeLimits::default()).unwrap();
            let numbers: Vec<u64> = collected.malformed.iter().map(|m| m.line_number).collect();
            assert_eq!(numbers, vec![2, 3], "chunk {chunk}");
        }
    }

    #[test]
    fn empty_and_tiny_objects_are_fine() {
        assert!(decode(b"").unwrap().actions.is_empty());
        assert_eq!(decode(b"\n\n").unwrap().malformed.len(), 0);
        let tiny = decode(b"2\n").unwrap();
        assert_eq!(tiny.malformed.len(), 1);
    }

    #[test]
    fn bad_header_fails_the_object() {
        assert!(matches!(
            decode(b"version srcaddr version\n"),
            Err(DecodeError::BadHeader(_))
        ));
    }

    #[test]
    fn bad_header_in_a_small_gzip_object_is_reported_as_a_header_error() {
        // All of a small object's output is still inside the gzip decoder when the input
        // ends, so the header is only read while finishing.
        for text in ["version srcaddr version\n", "version srcaddr version"] {
            for chunk in [1, 5, 4096] {
                let error = decode_with(&gzip(text), chunk, DecodeLimits::default())
                    .map(|_| ())
                    .unwrap_err();
                assert!(
                    matches!(error, DecodeError::BadHeader(_)),
                    "{text:?}, chunk {chunk}: {error:?}"
                );
            }
        }
    }

    #[test]
    fn small_gzip_object_over_the_limit_is_too_large_not_corrupt() {
        let limits = DecodeLimits {
            max_decompressed_bytes: 100,
            ..DecodeLimits::default()
        };
        let object = gzip(&format!("{HEADER}\n{REJECT}\n"));
        for chunk in [1, 5, 4096] {
            let error = decode_with(&object, chunk, limits).map(|_| ()).unwrap_err();
            assert!(
                matches!(error, DecodeError::TooLarge { limit: 100 }),
                "chunk {chunk}: {error:?}"
            );
        }
    }

    fn subscription_event(message_type: &str, messages: &[&str]) -> Vec<u8> {
        let mut data = LogData::default();
        data.message_type = message_type.into();
        data.owner = "123456789010".into();
        data.log_group = "/vpc/flow-logs".into();
        data.log_stream = "eni-1235b8ca123456789-all".into();
        data.log_events = messages
            .iter()
            .enumerate()
            .map(|(index, message)| {
                let mut entry = LogEntry::default();
                entry.id = format!("3695307386296600000000000000000000000000000000000{index}");
                entry.timestamp = 1_418_530_010_000;
                entry.message = (*message).to_owned();
                entry
            })
            .collect();
        encode_subscription_event(&data)
    }

    #[test]
    fn data_message_yields_one_record_per_event() {
        let payload = subscription_event("DATA_MESSAGE", &[REJECT, ACCEPT, "garbage"]);
        let data = decode_subscription_event(&payload).unwrap();
        assert_eq!(data.log_group, "/vpc/flow-logs");
        let mut parser = RecordParser::new(FlowFormat::default());
        let mut collected = Collected::default();
        let kind = parse_log_data(&data, &mut parser, &mut collected).unwrap();
        assert_eq!(kind, MessageType::Data);
        assert_eq!(
            collected.actions,
            vec![Some(Action::Reject), Some(Action::Accept)]
        );
        assert_eq!(collected.malformed[0].line_number, 3);
    }

    #[test]
    fn control_message_yields_nothing() {
        let payload = subscription_event(
            "CONTROL_MESSAGE",
            &["CWL CONTROL MESSAGE: Checking health of destination Firehose."],
        );
        let data = decode_subscription_event(&payload).unwrap();
        let mut parser = RecordParser::new(FlowFormat::default());
        let mut collected = Collected::default();
        assert_eq!(
            parse_log_data(&data, &mut parser, &mut collected).unwrap(),
            MessageType::Control
        );
        assert!(collected.actions.is_empty() && collected.malformed.is_empty());
    }

    #[test]
    fn unknown_message_type_is_an_error() {
        let data = decode_subscription_event(&subscription_event("SURPRISE", &[])).unwrap();
        assert!(
            matches!(message_type(&data), Err(DecodeError::UnknownMessageType(kind)) if kind == "SURPRISE")
        );
    }

    #[test]
    fn payload_that_is_not_a_subscription_event_is_an_error() {
        for payload in [&b"{}"[..], b"[1,2]", b"{\"awslogs\":{}}"] {
            assert!(matches!(
                decode_subscription_event(payload),
                Err(DecodeError::SubscriptionEvent(_))
            ));
        }
        let not_base64 = decode_subscription_event(b"{\"awslogs\":{\"data\":\"not base64!\"}}");
        assert!(matches!(not_base64, Err(DecodeError::SubscriptionData(_))));
        let not_gzip = decode_subscription_event(b"{\"awslogs\":{\"data\":\"aGVsbG8=\"}}");
        assert!(matches!(not_gzip, Err(DecodeError::Gzip(_))));
    }
}

#[cfg(test)]
mod in_place_tests {
    use super::*;
    use crate::flow_log::{FlowFormat, RecordParser};
    use proptest::prelude::*;
    use proptest::sample::select;

    /// What happened to each line, as text: a record's JSON or a malformed line's reason.
    #[derive(Default)]
    struct Outcomes(Vec<String>);

    impl RecordSink for Outcomes {
        fn record(&mut self, record: &FlowRecord<'_>) {
            self.0
                .push(serde_json::to_string(record).unwrap_or_default());
        }

        fn malformed(&mut self, line: MalformedLine) {
            self.0.push(line.to_string());
        }
    }

    /// Values of every kind for the default format's columns, tricky ones included.
    const TOKENS: &[&str] = &[
        "2",
        "123456789010",
        "eni-1235b8ca123456789",
        "172.31.9.69",
        "10.0.0.1",
        "01.2.3.4",
        "256.1.1.1",
        "2001:db8::1",
        "::ffff:1.2.3.4",
        "49761",
        "65536",
        "6",
        "256",
        "20",
        "4249",
        "1418530010",
        "1418530010000",
        "12345678",
        "123456789",
        "9999999999999999",
        "99999999999999999",
        "18446744073709551616",
        "REJECT",
        "ACCEPT",
        "OK",
        "NODATA",
        "SKIPDATA",
        "-",
        "x",
        "é",
        "a\tb",
        "2024-05-01T12:00:00.000Z",
    ];

    const RECORD: [&str; 14] = [
        "2",
        "123456789010",
        "eni-1235b8ca123456789",
        "172.31.9.69",
        "172.31.9.12",
        "49761",
        "3389",
        "6",
        "20",
        "4249",
        "1418530010",
        "1418530070",
        "REJECT",
        "OK",
    ];

    /// A line: mostly a documented record with a few values swapped, dropped or added, and
    /// sometimes extra spaces, a carriage return or an export timestamp in front.
    /// With `text_first`, the record's first two values trade places, as the format's do.
    fn line(text_first: bool) -> impl Strategy<Value = String> {
        (
            proptest::collection::vec((0usize..16, select(TOKENS)), 0..3),
            0usize..8,
            select(&["", " ", "\r", "2024-05-01T12:00:00.000Z "][..]),
        )
            .prop_map(move |(swaps, shape, affix)| {
                let mut tokens: Vec<&str> = RECORD.to_vec();
                if text_first {
                    tokens.swap(0, 1);
                }
                for (at, token) in swaps {
                    match (at, tokens.get_mut(at)) {
                        (0..=13, Some(slot)) => *slot = token,
                        (14, _) => tokens.push(token),
                        _ => drop(tokens.pop()),
                    }
                }
                let separator = if shape == 0 { "  " } else { " " };
                let line = tokens.join(separator);
                match affix {
                    "\r" => format!("{line}\r"),
                    "" => line,
                    prefix => format!("{prefix}{line}"),
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// An object decoded in pieces reads every line as `RecordParser::parse` does,
        /// whichever way the bytes were chunked.
        #[test]
        fn objects_read_in_place_as_line_by_line(
            (text_first, lines) in any::<bool>().prop_flat_map(|text_first| {
                (Just(text_first), proptest::collection::vec(line(text_first), 1..60))
            }),
            chunk in prop_oneof![1usize..300, Just(64 << 10)],
        ) {
            // The default format, or the same with `account-id` (text) first, which an
            // export timestamp could be taken for.
            let mut fields = crate::flow_log::DEFAULT_FIELDS;
            if text_first {
                fields.swap(0, 1);
            }
            let format = FlowFormat::from_fields(&fields);
            let lines: Vec<String> = lines
                .into_iter()
                .filter(|line| !FlowFormat::is_header_line(line))
                .collect();
            let mut parser = RecordParser::new(format.clone());
            let mut expected = Outcomes::default();
            for (number, line) in lines.iter().enumerate() {
                if line.trim_ascii().is_empty() {
                    continue;
                }
                match parser.parse(line) {
                    Ok(record) => expected.record(&record),
                    Err(error) => expected.malformed(MalformedLine {
                        line_number: number as u64 + 1,
                        error,
                    }),
                }
            }
            let text = lines.join("\n") + "\n";
            let object = ObjectLines::new(format, Outcomes::default());
            let mut decoder = ObjectDecoder::new(object, DecodeLimits::default());
            for piece in text.as_bytes().chunks(chunk) {
                decoder.write(piece).unwrap();
            }
            let outcomes = decoder.finish().unwrap().into_records();
            prop_assert_eq!(outcomes.0, expected.0);
        }
    }
}
