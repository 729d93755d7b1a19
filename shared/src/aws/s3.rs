//! Reads flow-log objects from S3 as a stream of chunks: the only file that knows the S3
//! SDK. The object is never held whole in memory.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use crate::ports::{ByteRange, FetchError, ObjectBody, ObjectRange, ObjectRef, ObjectSource};

type HttpResponse = aws_sdk_s3::config::http::HttpResponse;

/// Objects in S3.
#[derive(Clone, Debug)]
pub struct S3ObjectSource {
    client: Client,
}

impl S3ObjectSource {
    pub fn new(client: Client) -> Self {
        S3ObjectSource { client }
    }
}

/// A `GetObject` body being read.
pub struct S3Body {
    body: ByteStream,
    bucket: String,
    key: String,
}

impl ObjectSource for S3ObjectSource {
    type Body = S3Body;

    async fn open(&self, object: &ObjectRef) -> Result<S3Body, FetchError> {
        let output = self
            .get(object, None)
            .await
            .map_err(|error| fetch_error(object, error))?;
        Ok(S3Body {
            body: output.body,
            bucket: object.bucket.clone(),
            key: object.key.clone(),
        })
    }

    async fn read_range(
        &self,
        object: &ObjectRef,
        range: ByteRange,
    ) -> Result<ObjectRange, FetchError> {
        let header = match range {
            ByteRange::Suffix(length) => format!("bytes=-{length}"),
            // An empty span cannot be asked for; S3 would answer with the whole object.
            ByteRange::Span { start, end } if end <= start => {
                return Err(FetchError::Service {
                    bucket: object.bucket.clone(),
                    key: object.key.clone(),
                    retryable: false,
                    source: format!("empty byte range {start}..{end}").into(),
                });
            }
            ByteRange::Span { start, end } => format!("bytes={start}-{}", end - 1),
        };
        let output = self
            .get(object, Some(header))
            .await
            .map_err(|error| fetch_error(object, error))?;
        let content_range = output.content_range.clone();
        let body = output
            .body
            .collect()
            .await
            .map_err(|error| FetchError::Service {
                bucket: object.bucket.clone(),
                key: object.key.clone(),
                retryable: true,
                source: Box::new(error),
            })?
            .into_bytes();
        // `bytes 100-199/1234`: the size after the slash. Without a Content-Range (a
        // server that ignored the range) the body is the whole object.
        let object_size = content_range
            .as_deref()
            .and_then(|range| range.rsplit_once('/'))
            .and_then(|(_, size)| size.parse().ok())
            .unwrap_or(body.len() as u64);
        Ok(ObjectRange {
            bytes: body,
            object_size,
        })
    }
}

impl S3ObjectSource {
    async fn get(
        &self,
        object: &ObjectRef,
        range: Option<String>,
    ) -> Result<GetObjectOutput, SdkError<GetObjectError, HttpResponse>> {
        let mut request = self
            .client
            .get_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .set_range(range);
        match (&object.version_id, &object.etag) {
            (Some(version), _) => request = request.version_id(version),
            // Without versioning, read only the object the notification named: its ETag is
            // part of the batch id, so a replaced object must not be counted under it.
            (None, Some(etag)) => request = request.if_match(quoted_etag(etag)),
            (None, None) => {}
        }
        request.send().await
    }
}

fn fetch_error(object: &ObjectRef, error: SdkError<GetObjectError, HttpResponse>) -> FetchError {
    let code = error
        .as_service_error()
        .and_then(|e| e.code())
        .unwrap_or_default()
        .to_owned();
    let status = error.raw_response().map(|raw| raw.status().as_u16());
    match (code.as_str(), status) {
        ("NoSuchKey" | "NoSuchVersion", _) | (_, Some(404)) => FetchError::NotFound {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
        },
        ("PreconditionFailed", _) | (_, Some(412)) => FetchError::Changed {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
        },
        _ => FetchError::Service {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            retryable: is_retryable(&error),
            source: Box::new(error),
        },
    }
}

impl ObjectBody for S3Body {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        self.body
            .try_next()
            .await
            .map_err(|error| FetchError::Service {
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                // A connection dropped mid-body: the next attempt reads it again.
                retryable: true,
                source: Box::new(error),
            })
    }
}

/// S3 notifications carry the ETag without quotes; `If-Match` wants it quoted.
fn quoted_etag(etag: &str) -> String {
    if etag.starts_with('"') {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    }
}

fn is_retryable<E>(error: &SdkError<E>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            status >= 500 || status == 429 || status == 503
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::quoted_etag;

    #[test]
    fn etags_are_quoted_once() {
        assert_eq!(quoted_etag("0123abc"), "\"0123abc\"");
        assert_eq!(quoted_etag("\"0123abc\""), "\"0123abc\"");
    }
}
