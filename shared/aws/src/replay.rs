//! What `rejectwatch replay` asks of AWS (feature `replay`): a bucket's listing and
//! versioning (S3), notifications sent to the ingest queue (SQS), synchronous invocations
//! of the ingest function (Lambda). Translation only: which objects to send, retries and
//! reports are the CLI's. Errors are the SDK's full text (`DisplayErrorContext`); the
//! caller adds what it was doing.

use std::future::Future;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_s3::error::SdkError;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::sdk::SdkConfig;

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    /// As S3 lists it, in quotes.
    pub etag: String,
    /// Unix seconds.
    pub last_modified: u64,
}

/// One `ListObjectsV2` page, and the token of the next when there is one.
#[derive(Clone, Debug, Default)]
pub struct ListingPage {
    pub objects: Vec<ListedObject>,
    pub next: Option<String>,
}

/// Where the next page starts: after a key (the first page only), or at a token.
#[derive(Clone, Copy, Debug)]
pub enum PageStart<'a> {
    After(Option<&'a str>),
    Continue(&'a str),
}

/// A bucket to list.
pub struct Bucket {
    client: aws_sdk_s3::Client,
    name: String,
}

impl Bucket {
    pub fn new(sdk: &SdkConfig, name: impl Into<String>) -> Self {
        Bucket {
            client: aws_sdk_s3::Client::new(sdk),
            name: name.into(),
        }
    }

    /// One page of the keys under `prefix`, in key order.
    pub async fn list_page(
        &self,
        prefix: &str,
        start: PageStart<'_>,
    ) -> Result<ListingPage, String> {
        let request = self
            .client
            .list_objects_v2()
            .bucket(&self.name)
            .prefix(prefix);
        let request = match start {
            PageStart::After(key) => request.set_start_after(key.map(str::to_owned)),
            PageStart::Continue(token) => request.continuation_token(token),
        };
        let page = request
            .send()
            .await
            .map_err(|error| aws_sdk_s3::error::DisplayErrorContext(&error).to_string())?;
        let objects = page
            .contents()
            .iter()
            .map(|object| ListedObject {
                key: object.key().unwrap_or_default().to_owned(),
                size: object.size().map_or(0, |size| size.max(0) as u64),
                etag: object.e_tag().unwrap_or_default().to_owned(),
                last_modified: object
                    .last_modified()
                    .map_or(0, |time| time.secs().max(0) as u64),
            })
            .collect();
        let next = page
            .next_continuation_token()
            .filter(|_| page.is_truncated() == Some(true))
            .map(str::to_owned);
        Ok(ListingPage { objects, next })
    }

    /// The bucket's versioning status (`Enabled`, `Suspended`), `None` if it never had
    /// versioning.
    pub async fn versioning_status(&self) -> Result<Option<String>, String> {
        match self
            .client
            .get_bucket_versioning()
            .bucket(&self.name)
            .send()
            .await
        {
            Ok(output) => Ok(output.status().map(|status| status.as_str().to_owned())),
            Err(error) => status_in_raw_answer(&error)
                .ok_or_else(|| aws_sdk_s3::error::DisplayErrorContext(&error).to_string()),
        }
    }
}

/// moto answers `GetBucketVersioning` with a `GetBucketVersioningResponse` element where S3
/// has `VersioningConfiguration`, which the SDK does not parse: from a successful answer,
/// the text of its `Status` element, if it has one.
fn status_in_raw_answer<E>(
    error: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Option<Option<String>> {
    let raw = error.raw_response()?;
    let body = std::str::from_utf8(raw.body().bytes()?).ok()?;
    if !raw.status().is_success() {
        return None;
    }
    Some(
        body.split_once("<Status>")
            .and_then(|(_, rest)| rest.split_once("</Status>"))
            .map(|(status, _)| status.to_owned()),
    )
}

/// An entry of a batch that SQS did not accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedEntry {
    /// The id the entry was sent with.
    pub id: String,
    pub code: String,
    pub message: String,
    /// The request was at fault (sending it again will not help).
    pub sender_fault: bool,
}

/// An SQS queue to send to.
pub struct Queue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl Queue {
    pub fn new(sdk: &SdkConfig, url: impl Into<String>) -> Self {
        Queue {
            client: aws_sdk_sqs::Client::new(sdk),
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One `SendMessageBatch` of `(id, body)` entries (at most ten, an SQS limit); the
    /// entries it refused.
    pub async fn send_batch(
        &self,
        entries: &[(String, String)],
    ) -> Result<Vec<RefusedEntry>, String> {
        let entries = entries
            .iter()
            .map(|(id, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(id)
                    .message_body(body)
                    .build()
                    .map_err(|error| format!("entry {id}: {error}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|error| aws_sdk_sqs::error::DisplayErrorContext(&error).to_string())?;
        Ok(output
            .failed()
            .iter()
            .map(|entry| RefusedEntry {
                id: entry.id().to_owned(),
                code: entry.code().to_owned(),
                message: entry.message().unwrap_or_default().to_owned(),
                sender_fault: entry.sender_fault(),
            })
            .collect())
    }
}

/// What a synchronous invocation answered.
#[derive(Clone, Debug, Default)]
pub struct Invocation {
    /// Set when the function failed (`Unhandled`); the payload then holds its error.
    pub function_error: Option<String>,
    pub payload: Vec<u8>,
}

/// A Lambda function to invoke.
pub struct Function {
    client: aws_sdk_lambda::Client,
    name: String,
}

impl Function {
    pub fn new(sdk: &SdkConfig, name: impl Into<String>) -> Self {
        Function {
            client: aws_sdk_lambda::Client::new(sdk),
            name: name.into(),
        }
    }

    /// A synchronous invocation with `payload`; the future owns what it needs, so many can
    /// run at once on their own tasks.
    pub fn invoke(
        &self,
        payload: String,
    ) -> impl Future<Output = Result<Invocation, String>> + Send + 'static {
        let request = self
            .client
            .invoke()
            .function_name(&self.name)
            .payload(Blob::new(payload));
        async move {
            let output = request
                .send()
                .await
                .map_err(|error| aws_sdk_lambda::error::DisplayErrorContext(&error).to_string())?;
            Ok(Invocation {
                function_error: output.function_error().map(str::to_owned),
                payload: output
                    .payload()
                    .map(|blob| blob.as_ref().to_vec())
                    .unwrap_or_default(),
            })
        }
    }
}
