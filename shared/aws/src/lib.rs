//! RejectWatch's AWS adapters: each module implements ports of `rejectwatch_core::ports`
//! over one AWS service, and only translates between domain types and SDK calls.
//!
//! - [`dynamodb`]: the counter store, the alert state and the CLI's counter queries, over
//!   one DynamoDB table (its key schema lives here and nowhere else).
//! - [`s3`]: the object source (whole and ranged GETs).
//! - [`sns`]: the alert publisher.
//!
//! This is the only crate of the workspace that depends on `aws-sdk-*`. It may not hold
//! decisions (what to count, when to alert, what an alert says): those live in the core.

pub mod dynamodb;
pub mod s3;
pub mod sns;
