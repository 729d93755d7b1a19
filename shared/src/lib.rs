//! RejectWatch's shared library: the pure flow-log core both Lambdas and the CLI stand on.
//!
//! - [`flow_log`]: field names, formats and the record parser.
//! - [`decode`]: S3 objects (plain or gzip, streamed) and CloudWatch Logs payloads to records.
//! - [`tally`]: REJECT aggregates per (source, window).
//! - [`object_key`]: flow-log object keys: which keys hold flow logs, their time, their
//!   encoding in S3 notifications.
//! - [`counters`]: what one delivery adds to the stored counters, and the stored rows.
//! - [`sketch`]: mergeable distinct counts for stored rows.
//! - [`alert`]: which sources deserve an alert, and its text.
//! - [`settle`]: when a window stops changing, and which windows an evaluation reads.
//! - `parquet_object` (feature `parquet`): Parquet flow-log objects, read a row group at a
//!   time (through the [`ports::ObjectSource`] port's ranged reads) into the text decoder.
//! - `generate`, `scenarios` (feature `generator`): realistic traffic with planted
//!   scanners, and the labelled scenario suite.
//! - `scan` (internal): finds newlines and value separators in decoded text, 64 bytes at a
//!   time, with AVX2 where the processor has it.
//!
//! Nothing here performs I/O or reads the clock; callers pass bytes and times in.

pub mod alert;
pub mod counters;
pub mod decode;
pub mod flow_log;
pub mod metrics;
pub mod object_key;
pub mod ports;
mod scan;
pub mod settings;
pub mod settle;
pub mod sketch;
pub mod tally;
pub mod time;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "generator")]
pub mod generate;
#[cfg(feature = "parquet")]
pub mod parquet_object;
#[cfg(feature = "generator")]
pub mod scenarios;
#[cfg(feature = "testing")]
pub mod testing;
