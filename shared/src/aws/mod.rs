//! AWS adapters: the only modules that import `aws_sdk_*`. Each implements a port from
//! [`crate::ports`] and only translates between domain types and SDK calls.

pub mod dynamodb;
pub mod s3;
pub mod sns;
