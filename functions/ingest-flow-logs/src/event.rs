//! The payloads the function receives, told apart explicitly rather than by trial
//! deserialisation: a CloudWatch Logs subscription (`awslogs`), S3 event notifications
//! (`Records[].eventSource == "aws:s3"`), or SQS messages carrying S3 notifications
//! (`Records[].eventSource == "aws:sqs"`), possibly wrapped in an SNS envelope.
//!
//! The S3 record type here reads only the fields this function uses, so it accepts real
//! notifications and the leaner ones local emulators send alike. The SQS partial-failure
//! response lives here too, beside the batch it answers.

use rejectwatch_core::decode::SubscriptionEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One invocation's payload.
#[derive(Debug)]
pub enum IngestEvent {
    CloudWatchLogs(SubscriptionEvent),
    S3(Vec<S3Record>),
    Sqs(Vec<SqsMessage>),
}

/// One S3 event notification record.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Record {
    #[serde(default)]
    pub event_name: Option<String>,
    pub s3: S3Entity,
}

#[derive(Clone, Debug, Deserialize)]
pub struct S3Entity {
    pub bucket: S3Bucket,
    pub object: S3Object,
}

#[derive(Clone, Debug, Deserialize)]
pub struct S3Bucket {
    pub name: String,
}

/// The object of a notification; `key` is URL-encoded as S3 sends it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Object {
    pub key: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub version_id: Option<String>,
    #[serde(default, rename = "eTag")]
    pub e_tag: Option<String>,
}

/// One SQS message of an event source mapping batch.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsMessage {
    pub message_id: String,
    pub body: String,
}

/// The answer to an SQS batch under `ReportBatchItemFailures`: the messages SQS should
/// deliver again. (aws_lambda_events has it behind its `sqs` feature, which would bring
/// serde_with and its proc macros into the build for these two fields.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsBatchResponse {
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// One message to deliver again, by its SQS message id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    pub item_identifier: String,
}

/// What an SQS message body holds.
#[derive(Debug)]
pub enum SqsBody {
    S3(Vec<S3Record>),
    /// The `s3:TestEvent` S3 sends when a notification is configured; nothing to do.
    TestEvent,
}

/// Why a payload is not one this function handles.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event is not a JSON object")]
    NotAnObject,
    #[error("event has neither `awslogs` nor `Records` (top-level keys: {keys})")]
    UnknownShape { keys: String },
    #[error("event records come from {origin:?}; expected aws:s3 or aws:sqs")]
    UnsupportedSource { origin: String },
    #[error("event records mix sources {first:?} and {other:?}")]
    MixedSources { first: String, other: String },
    #[error("malformed {shape}")]
    Malformed {
        shape: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl IngestEvent {
    /// Decides the payload's shape from its keys, then reads it as that shape.
    pub fn classify(event: Value) -> Result<IngestEvent, EventError> {
        let Value::Object(mut fields) = event else {
            return Err(EventError::NotAnObject);
        };
        if fields.contains_key("awslogs") {
            return serde_json::from_value(Value::Object(fields))
                .map(IngestEvent::CloudWatchLogs)
                .map_err(|source| EventError::Malformed {
                    shape: "CloudWatch Logs subscription event",
                    source,
                });
        }
        let Some(records) = fields.remove("Records") else {
            let mut keys: Vec<&str> = fields.keys().map(String::as_str).take(10).collect();
            keys.sort_unstable();
            return Err(EventError::UnknownShape {
                keys: keys.join(", "),
            });
        };
        let sources: Vec<String> = records
            .as_array()
            .map(|records| {
                records
                    .iter()
                    .map(|record| {
                        record
                            .get("eventSource")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(other) = sources.iter().find(|source| **source != sources[0]) {
            return Err(EventError::MixedSources {
                first: sources[0].clone(),
                other: other.clone(),
            });
        }
        match sources.first().map(String::as_str) {
            None | Some("aws:s3") => serde_json::from_value(records)
                .map(IngestEvent::S3)
                .map_err(|source| EventError::Malformed {
                    shape: "S3 event notification",
                    source,
                }),
            Some("aws:sqs") => serde_json::from_value(records)
                .map(IngestEvent::Sqs)
                .map_err(|source| EventError::Malformed {
                    shape: "SQS event",
                    source,
                }),
            Some(other) => Err(EventError::UnsupportedSource {
                origin: other.to_owned(),
            }),
        }
    }
}

impl SqsBody {
    /// Reads an SQS message body: an S3 notification, S3's test event, or either inside
    /// an SNS notification envelope (S3 -> SNS -> SQS fan-out).
    pub fn parse(body: &str) -> Result<SqsBody, EventError> {
        let malformed = |source| EventError::Malformed {
            shape: "SQS message body (expected an S3 event notification)",
            source,
        };
        let mut value: Value = serde_json::from_str(body).map_err(malformed)?;
        if value.get("Type").and_then(Value::as_str) == Some("Notification")
            && let Some(message) = value.get("Message").and_then(Value::as_str)
        {
            value = serde_json::from_str(message).map_err(malformed)?;
        }
        if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
            return Ok(SqsBody::TestEvent);
        }
        match IngestEvent::classify(value)? {
            IngestEvent::S3(records) => Ok(SqsBody::S3(records)),
            IngestEvent::CloudWatchLogs(_) | IngestEvent::Sqs(_) => {
                Err(EventError::UnsupportedSource {
                    origin: "a non-S3 payload inside an SQS message".into(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cloudwatch_subscription_is_recognised_by_awslogs() {
        let event = IngestEvent::classify(json!({"awslogs": {"data": "H4sI"}})).unwrap();
        assert!(matches!(event, IngestEvent::CloudWatchLogs(_)));
    }

    #[test]
    fn s3_notification_is_read_leniently() {
        // The shape local emulators send: no userIdentity, no requestParameters.
        let event = json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "eventTime": "2024-05-01T12:00:00", "s3": {"bucket": {"name": "logs"},
            "object": {"key": "AWSLogs%2F1.log.gz", "size": 12, "eTag": "abc"}}}]});
        let IngestEvent::S3(records) = IngestEvent::classify(event).unwrap() else {
            panic!("not S3");
        };
        assert_eq!(records[0].s3.object.key, "AWSLogs%2F1.log.gz");
        assert_eq!(records[0].s3.object.e_tag.as_deref(), Some("abc"));
    }

    #[test]
    fn sqs_batches_are_recognised_and_bodies_unwrapped() {
        let s3 = json!({"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}}}]});
        let sns = json!({"Type": "Notification", "Message": s3.to_string()});
        let event = json!({"Records": [
            {"eventSource": "aws:sqs", "messageId": "1", "body": s3.to_string()},
            {"eventSource": "aws:sqs", "messageId": "2", "body": sns.to_string()},
        ]});
        let IngestEvent::Sqs(messages) = IngestEvent::classify(event).unwrap() else {
            panic!("not SQS");
        };
        for message in &messages {
            assert!(
                matches!(SqsBody::parse(&message.body).unwrap(), SqsBody::S3(records) if records.len() == 1)
            );
        }
        let test_event = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-05-01T12:00:00.000Z","Bucket":"b"}"#;
        assert!(matches!(
            SqsBody::parse(test_event).unwrap(),
            SqsBody::TestEvent
        ));
    }

    #[test]
    fn unknown_shapes_are_clear_errors() {
        assert_eq!(
            IngestEvent::classify(
                json!({"detail-type": "Scheduled Event", "source": "aws.events"})
            )
            .unwrap_err()
            .to_string(),
            "event has neither `awslogs` nor `Records` (top-level keys: detail-type, source)"
        );
        assert_eq!(
            IngestEvent::classify(json!({"Records": [{"eventSource": "aws:kinesis"}]}))
                .unwrap_err()
                .to_string(),
            "event records come from \"aws:kinesis\"; expected aws:s3 or aws:sqs"
        );
        assert!(matches!(
            IngestEvent::classify(json!([1])),
            Err(EventError::NotAnObject)
        ));
        assert!(matches!(
            IngestEvent::classify(
                json!({"Records": [{"eventSource": "aws:s3"}, {"eventSource": "aws:sqs"}]})
            ),
            Err(EventError::MixedSources { .. })
        ));
        assert!(matches!(
            IngestEvent::classify(json!({"Records": [{"eventSource": "aws:s3", "s3": {}}]})),
            Err(EventError::Malformed { .. })
        ));
    }
}
