//! RejectWatch's AWS adapters: each module implements ports of `rejectwatch_core::ports`
//! over one AWS service, and only translates between domain types and SDK calls.
//!
//! - [`dynamodb`]: the counter store, the alert state and the CLI's counter queries, over
//!   one DynamoDB table (its key schema lives here and nowhere else).
//! - [`s3`]: the object source (whole and ranged GETs).
//! - [`sns`]: the alert publisher.
//! - [`sdk`]: the SDK's shared configuration and the clients the binaries wire.
//! - `replay` (feature `replay`): what the CLI's `replay` asks of S3, SQS and Lambda.
//!
//! This is the only shipped crate that depends on `aws-sdk-*` (the functions and the CLI
//! reach AWS through it; tests use the SDK directly to set up moto). It may not hold
//! decisions (what to count, when to alert, what an alert says): those live in the core.

pub mod dynamodb;
#[cfg(feature = "replay")]
pub mod replay;
pub mod s3;
pub mod sdk;
pub mod sns;
