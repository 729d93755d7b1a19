//! The capabilities the handlers need from outside, in domain types only: the AWS adapters
//! in [`crate::aws`] implement them, and [`crate::testing`] has in-memory fakes.

use std::error::Error as StdError;
use std::future::Future;

use crate::counters::{BatchId, CounterBatch};

/// An error from a service call, with the SDK error kept as its source.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// An error and its causes, `: `-separated, for one log line or message.
pub fn error_chain(error: &dyn StdError) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Why the counter store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} in table {table}")]
    Service {
        /// What was being attempted, such as "updating counters of 203.0.113.9".
        action: String,
        table: String,
        /// Throttling, timeouts and 5xx: a later attempt may succeed.
        retryable: bool,
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Service { retryable, .. } => *retryable,
        }
    }
}

/// What applying a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Counter and gap rows this call changed.
    pub applied: u64,
    /// Rows an earlier delivery of the same batch had already changed (left alone).
    pub already_applied: u64,
    /// Write requests sent.
    pub requests: u64,
}

/// Where REJECT counters are kept.
pub trait CounterStore {
    /// Whether an earlier delivery of this batch finished applying it.
    fn is_done(&self, batch: &BatchId) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Adds the batch's updates, each row at most once per batch id however often this is
    /// called, including concurrently and after a failure part-way through.
    fn apply(
        &self,
        batch: &CounterBatch,
    ) -> impl Future<Output = Result<ApplyReport, StoreError>> + Send;

    /// Records that the batch is fully applied, so later deliveries can skip it unread;
    /// the record may be forgotten after `expires_at` (unix seconds).
    fn mark_done(
        &self,
        batch: &BatchId,
        expires_at: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// An S3 object to read, as named by an event notification (key already URL-decoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub etag: Option<String>,
}

/// Why an object could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("s3://{bucket}/{key} does not exist (deleted since the notification)")]
    NotFound { bucket: String, key: String },
    #[error("s3://{bucket}/{key} was replaced since the notification (its ETag differs)")]
    Changed { bucket: String, key: String },
    #[error("reading s3://{bucket}/{key}")]
    Service {
        bucket: String,
        key: String,
        retryable: bool,
        #[source]
        source: BoxError,
    },
}

/// A body being streamed.
pub trait ObjectBody: Send {
    /// The next chunk of bytes, or `None` at the end.
    fn next_chunk(
        &mut self,
    ) -> impl Future<Output = Result<Option<bytes::Bytes>, FetchError>> + Send;
}

/// Which bytes of an object to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// The last `n` bytes (all of them when the object is shorter).
    Suffix(u64),
    /// The bytes from `start` up to, not including, `end`.
    Span { start: u64, end: u64 },
}

/// Bytes read from part of an object.
#[derive(Clone, Debug)]
pub struct ObjectRange {
    pub bytes: bytes::Bytes,
    /// The size of the whole object.
    pub object_size: u64,
}

/// Where flow-log objects are read from.
pub trait ObjectSource {
    type Body: ObjectBody;

    /// Starts streaming an object; nothing is buffered whole.
    fn open(
        &self,
        object: &ObjectRef,
    ) -> impl Future<Output = Result<Self::Body, FetchError>> + Send;

    /// Reads part of an object (Parquet objects are read footer first, then the column
    /// chunks they need), under the same version or ETag condition as [`Self::open`].
    fn read_range(
        &self,
        object: &ObjectRef,
        range: ByteRange,
    ) -> impl Future<Output = Result<ObjectRange, FetchError>> + Send;
}

/// Reads counters back: what the evaluator needs each run.
pub trait CounterReader {
    /// The rows of one window with at least `min_rejects` REJECTs (never a full scan).
    fn window_counters(
        &self,
        window_start: u64,
        min_rejects: u64,
    ) -> impl Future<Output = Result<Vec<crate::counters::StoredCounter>, StoreError>> + Send;

    /// Every row of one source with a window starting in `from..=to` (a `Query` of the
    /// source's own partition).
    fn source_counters(
        &self,
        source: std::net::IpAddr,
        from: u64,
        to: u64,
    ) -> impl Future<Output = Result<Vec<crate::counters::StoredCounter>, StoreError>> + Send;

    /// The interfaces of one window that reported NODATA or SKIPDATA.
    fn window_gaps(
        &self,
        window_start: u64,
    ) -> impl Future<Output = Result<Vec<crate::counters::GapUpdate>, StoreError>> + Send;
}

/// One evaluator run's claim on alerting a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Identifies the run (the Lambda request id, which Lambda's retries keep).
    pub run_id: String,
    /// Unix seconds of the evaluation (the scheduled time): cooldowns count from it.
    pub now: u64,
    /// Unix seconds on the wall clock when claiming.
    pub wall_now: u64,
    /// Wall-clock unix seconds after which the claim, if still unpublished, is abandoned:
    /// the claiming run's deadline (Lambda stops it then) plus a grace for clock skew. So
    /// a run that is still alive, however late its scheduled time, is never taken over.
    pub held_until: u64,
    /// A published alert holds the source this long, unless its severity rises.
    pub cooldown_seconds: u64,
    /// When the state may be forgotten.
    pub expires_at: u64,
}

/// What claiming a source's alert came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This run may publish the alert (and must confirm or release the claim).
    Won,
    /// An earlier published alert holds the source: its cooldown, at this level or above.
    Cooldown,
    /// Another run claimed the source and has not published yet; it will publish, or
    /// give the claim back for a later run.
    ClaimedElsewhere,
    /// The run `holder` claimed the source, never confirmed, and is past its deadline. It may have died after publishing: see [`DigestLog::is_published`]
    /// before [`AlertStateStore::take_over`].
    Abandoned { holder: String },
}

/// Per-source alert state, changed conditionally so concurrent runs alert once (the
/// rule is [`crate::alert::decide_claim`]).
pub trait AlertStateStore {
    /// Claims the right to alert `source` at `level` now, for activity up to
    /// `activity_end` (the end of the finding's newest window).
    fn claim(
        &self,
        source: std::net::IpAddr,
        level: u8,
        activity_end: u64,
        claim: &Claim,
    ) -> impl Future<Output = Result<ClaimOutcome, StoreError>> + Send;

    /// Takes over an abandoned claim of the run `holder` (only if it still holds it
    /// unpublished, and still past its `held_until`: its own retry may have taken it up
    /// again), keeping the state from before that claim for a release: `Won`, or
    /// `ClaimedElsewhere` when another run was quicker.
    fn take_over(
        &self,
        source: std::net::IpAddr,
        level: u8,
        claim: &Claim,
        holder: &str,
    ) -> impl Future<Output = Result<ClaimOutcome, StoreError>> + Send;

    /// Records that the claim of run `run_id` on `source` was published (a no-op when
    /// that run no longer holds an unpublished claim).
    fn confirm(
        &self,
        source: std::net::IpAddr,
        run_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives a claim back after a failed publish, restoring the state from before it (an
    /// earlier alert's cooldown still holds), so the next run alerts instead.
    fn release(
        &self,
        source: std::net::IpAddr,
        claim: &Claim,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// How far the evaluator has got: one mark, kept apart from the per-source claims above.
pub trait EvaluationProgress {
    /// The start of the latest settled window whose findings were all alerted or held,
    /// if any run recorded one: the next run evaluates every window after it.
    fn evaluated_through(&self) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Records that every window up to `window_start` was evaluated; never moves back.
    fn mark_evaluated_through(
        &self,
        window_start: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Which runs published their digest: written right after a publish succeeds, in one
/// write, so that a run that then dies before confirming each source is not published
/// again, neither by its own retry nor by a run taking over its claims.
pub trait DigestLog {
    /// Whether run `run_id` published its digest.
    fn is_published(&self, run_id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records that run `run_id` published its digest of `source_count` sources at
    /// `published_at`; the record may be forgotten after `expires_at`.
    fn record_published(
        &self,
        run_id: &str,
        source_count: u64,
        published_at: u64,
        expires_at: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Why a digest was not published.
#[derive(Debug, thiserror::Error)]
#[error("publishing the alert to {topic}")]
pub struct PublishError {
    pub topic: String,
    /// The topic may have accepted the digest all the same: the answer was lost (a
    /// timeout, a dropped connection) or was a server error. A refusal (throttling,
    /// validation, authorisation) is not ambiguous.
    pub ambiguous: bool,
    #[source]
    pub source: BoxError,
}

/// Where alerts go.
pub trait AlertPublisher {
    /// Publishes one digest.
    fn publish(
        &self,
        digest: &crate::alert::Digest,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}
