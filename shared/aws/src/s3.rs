//! Reads flow-log objects from S3 as a stream of chunks: the only file that knows the S3
//! SDK. The object is never held whole in memory.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use rejectwatch_core::ports::{
    ByteRange, FetchError, ObjectBody, ObjectRange, ObjectRef, ObjectSource,
};

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
        let output = match self.get(object, Some(header)).await {
            Ok(output) => output,
            // S3 answers 416 to a suffix of an empty object: there are no bytes to read.
            Err(error)
                if matches!(range, ByteRange::Suffix(_))
                    && error.raw_response().map(|raw| raw.status().as_u16()) == Some(416) =>
            {
                return Ok(ObjectRange {
                    bytes: Bytes::new(),
                    object_size: 0,
                });
            }
            Err(error) => return Err(fetch_error(object, error)),
        };
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
        ranged_answer(&range, content_range.as_deref(), body).map_err(|problem| {
            FetchError::Service {
                bucket: object.bucket.clone(),
                key: object.key.clone(),
                retryable: false,
                source: problem.into(),
            }
        })
    }
}

/// The bytes asked for, from a `GetObject` answer to a ranged request: with its
/// `Content-Range` (`bytes 100-199/1234`), which must be the range asked for, or without
/// one, from a server that ignored the range and sent the whole object.
fn ranged_answer(
    range: &ByteRange,
    content_range: Option<&str>,
    body: Bytes,
) -> Result<ObjectRange, String> {
    let Some(content_range) = content_range else {
        let size = body.len() as u64;
        let (start, end) = match *range {
            ByteRange::Suffix(length) => (size.saturating_sub(length), size),
            ByteRange::Span { start, end } => (start.min(size), end.min(size)),
        };
        return Ok(ObjectRange {
            bytes: body.slice(start as usize..end.max(start) as usize),
            object_size: size,
        });
    };
    let parsed = content_range
        .strip_prefix("bytes ")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(span, size)| {
            let (first, last) = span.split_once('-')?;
            Some((
                first.parse::<u64>().ok()?,
                last.parse::<u64>().ok()?,
                size.parse::<u64>().ok()?,
            ))
        });
    let Some((first, last, size)) = parsed else {
        return Err(format!("unreadable Content-Range {content_range:?}"));
    };
    let (start, end) = match *range {
        ByteRange::Suffix(length) => (size.saturating_sub(length), size),
        ByteRange::Span { start, end } => (start, end.min(size)),
    };
    if first != start || last + 1 != end || body.len() as u64 != end - start {
        return Err(format!(
            "asked for bytes {start}..{end}, got {} bytes as {content_range:?}",
            body.len()
        ));
    }
    Ok(ObjectRange {
        bytes: body,
        object_size: size,
    })
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
    use bytes::Bytes;

    use super::{ByteRange, quoted_etag, ranged_answer};

    #[test]
    fn a_ranged_answer_must_be_the_range_asked_for() {
        let span = ByteRange::Span { start: 10, end: 20 };
        let ten = Bytes::from(vec![7u8; 10]);
        let read = ranged_answer(&span, Some("bytes 10-19/100"), ten.clone()).unwrap();
        assert_eq!((read.bytes.len(), read.object_size), (10, 100));
        // A suffix longer than the object is the whole object.
        let read = ranged_answer(&ByteRange::Suffix(64), Some("bytes 0-9/10"), ten.clone());
        assert_eq!(read.unwrap().object_size, 10);
        for wrong in [
            "bytes 0-9/100",
            "bytes 10-29/100",
            "bytes */100",
            "10-19/100",
        ] {
            assert!(
                ranged_answer(&span, Some(wrong), ten.clone()).is_err(),
                "{wrong}"
            );
        }
        // A server that ignored the range sent the whole object: the span is cut from it.
        let whole = Bytes::from((0u8..100).collect::<Vec<_>>());
        let read = ranged_answer(&span, None, whole.clone()).unwrap();
        assert_eq!(
            (read.bytes[0], read.bytes.len(), read.object_size),
            (10, 10, 100)
        );
        let read = ranged_answer(&ByteRange::Suffix(5), None, whole).unwrap();
        assert_eq!(&read.bytes[..], &[95, 96, 97, 98, 99]);
    }

    #[test]
    fn etags_are_quoted_once() {
        assert_eq!(quoted_etag("0123abc"), "\"0123abc\"");
        assert_eq!(quoted_etag("\"0123abc\""), "\"0123abc\"");
    }
}
