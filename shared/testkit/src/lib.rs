//! RejectWatch's test kit: what tests, benches, the local demo and the CLI's `generate`
//! command use in place of AWS and real traffic.
//!
//! - [`fakes`]: in-memory implementations of the core's ports, with the same semantics as
//!   the DynamoDB, S3 and SNS adapters (moto tests compare the two).
//! - [`generate`]: seedable synthetic flow logs (text, gzip, CloudWatch Logs payloads and,
//!   with feature `parquet`, Parquet) with planted scanners.
//! - [`scenarios`]: the labelled scenario suite (planted scans and look-alikes).
//!
//! It depends on the core only; never on the AWS SDK, and no Lambda function links it
//! outside its tests.

pub mod fakes;
pub mod generate;
pub mod scenarios;
