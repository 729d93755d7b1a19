//! The SDK's shared configuration and the clients built from it, so the binaries (the two
//! functions, the CLI) wire adapters without depending on an SDK crate themselves.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;

pub use aws_config::SdkConfig;

/// The configuration from the usual AWS sources (environment, profile, instance role),
/// with every service at `endpoint_url` when one is given (moto, LocalStack); without
/// one, `AWS_ENDPOINT_URL` still applies.
pub async fn load_config(endpoint_url: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(endpoint) = endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// A DynamoDB client whose requests are tried up to `max_attempts` times (the SDK's
/// standard retry: throttling and transient errors, with backoff); `None` keeps the
/// shared configuration's retries (3 attempts, or `AWS_MAX_ATTEMPTS`).
pub fn dynamodb_client(sdk: &SdkConfig, max_attempts: Option<u32>) -> aws_sdk_dynamodb::Client {
    let mut config = aws_sdk_dynamodb::config::Builder::from(sdk);
    if let Some(attempts) = max_attempts {
        config = config.retry_config(RetryConfig::standard().with_max_attempts(attempts));
    }
    aws_sdk_dynamodb::Client::from_conf(config.build())
}

/// An S3 client with the SDK's default retries.
pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::new(sdk)
}

/// An SNS client with the SDK's default retries.
pub fn sns_client(sdk: &SdkConfig) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(sdk)
}
