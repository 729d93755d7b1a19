//! RejectWatch's core: the pure flow-log logic both Lambdas and the CLI stand on.
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
//! - [`ports`]: the traits the AWS adapters (`rejectwatch-aws`) and the fakes
//!   (`rejectwatch-testkit`) implement: counter store, alert state, object source, publisher.
//! - [`time`], [`metrics`], [`settings`]: windows and timestamps, CloudWatch EMF lines, and
//!   typed settings from an environment-style lookup.
//! - `parquet_object` (feature `parquet`): Parquet flow-log objects, read a row group at a
//!   time (through the [`ports::ObjectSource`] port's ranged reads) into the text decoder.
//! - `scan` (internal): finds newlines and value separators in decoded text, 64 bytes at a
//!   time, with AVX2 or NEON where the processor has it.
//!
//! What it may not depend on: the AWS SDK (`aws-sdk-*`), an async runtime, the network,
//! the file system or the clock. Callers pass bytes and times in; I/O happens behind the
//! [`ports`] traits, implemented elsewhere. The crate's dependencies are what enforce it.

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

#[cfg(feature = "parquet")]
pub mod parquet_object;
