//! Publishes alert digests to an SNS topic: the only file that knows the SNS SDK.
//!
//! Email subscribers get the readable text, every other protocol the JSON (one
//! `MessageStructure: json` message); message attributes carry the digest id (the same on
//! every repeat of one digest), severity, rules and the source count for subscription
//! filter policies.

use aws_sdk_sns::Client;
use aws_sdk_sns::config::http::HttpResponse;
use aws_sdk_sns::error::SdkError;
use aws_sdk_sns::types::MessageAttributeValue;

use rejectwatch_core::alert::Digest;
use rejectwatch_core::ports::{AlertPublisher, PublishError};

/// An SNS topic.
#[derive(Clone, Debug)]
pub struct SnsAlertPublisher {
    client: Client,
    topic_arn: String,
}

impl SnsAlertPublisher {
    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        SnsAlertPublisher {
            client,
            topic_arn: topic_arn.into(),
        }
    }
}

/// Whether SNS may have accepted a publish that failed: anything but an answered refusal
/// (a 4xx) or a request never built.
fn is_ambiguous<E>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::ConstructionFailure(_) => false,
        SdkError::ServiceError(service) => service.raw().status().is_server_error(),
        _ => true,
    }
}

fn attribute(data_type: &str, value: String) -> MessageAttributeValue {
    // Both fields are set, so the builder cannot fail.
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()
        .unwrap_or_else(|_| unreachable!("data type and value are set"))
}

impl AlertPublisher for SnsAlertPublisher {
    async fn publish(&self, digest: &Digest) -> Result<(), PublishError> {
        let rules: Vec<&str> = digest.rules.iter().map(|rule| rule.name()).collect();
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(&digest.subject)
            .message(digest.message_structure())
            .message_structure("json")
            .message_attributes("digest_id", attribute("String", digest.digest_id.clone()))
            .message_attributes(
                "severity",
                attribute("String", digest.severity.name().to_owned()),
            )
            .message_attributes(
                "rules",
                attribute("String.Array", serde_json::json!(rules).to_string()),
            )
            .message_attributes(
                "source_count",
                attribute("Number", digest.source_count.to_string()),
            )
            .message_attributes(
                "internal_count",
                attribute("Number", digest.internal_count.to_string()),
            )
            .send()
            .await
            .map_err(|error| PublishError {
                topic: self.topic_arn.clone(),
                ambiguous: is_ambiguous(&error),
                source: Box::new(error),
            })?;
        Ok(())
    }
}
