//! The ingest handler: unwraps the AWS envelope, runs the core over each delivery, and
//! hands the resulting counter batch to the store. One summary line and one metrics line
//! are logged per invocation.
//!
//! Every delivery (an S3 object version, or a CloudWatch Logs batch) gets a [`BatchId`];
//! the store applies each row of a batch at most once, so Lambda's retries and S3's
//! duplicate notifications never count a record twice. Errors that a retry can fix (the
//! store, S3 reads, a corrupt object) fail the invocation; everything else is a counted,
//! logged skip.
//!
//! [`handle`] takes a typed [`IngestEvent`] and answers an [`IngestResponse`];
//! [`handle_payload`] is what the runtime calls with the raw JSON; [`invoke`] is the same
//! with a JSON answer, for tests and the replay tool.
//!
//! It may not hold decisions of its own (what a record, an object or a notification
//! counts for is decided by `rejectwatch-core`, with table tests there) nor call AWS except
//! through the core's ports; `main.rs` alone builds the `rejectwatch-aws` adapters. The
//! test kit is a dev-dependency only.

pub mod config;
pub mod event;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rejectwatch_core::counters::{BatchId, CounterBatch};
use rejectwatch_core::decode::{
    DecodeError, DecodeLimits, KeyError, MessageType, ObjectDecoder, ObjectLines,
    SubscriptionEvent, decode_s3_key, is_parquet_key, parse_log_data,
};
use rejectwatch_core::flow_log::RecordParser;
use rejectwatch_core::metrics::{emf_line, summary_line};
use rejectwatch_core::object_key::{S3RecordSkip, s3_record_skip};
use rejectwatch_core::parquet_object::{Columns, ParquetObjectError, read_parquet_object};
use rejectwatch_core::ports::{
    CounterStore, FetchError, ObjectBody, ObjectRef, ObjectSource, StoreError,
};
use rejectwatch_core::tally::{RejectTally, TallyOptions, Totals};
use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};

use crate::config::Config;
pub use crate::event::{BatchItemFailure, IngestEvent, SqsBatchResponse};
use crate::event::{EventError, S3Record, SqsBody, SqsMessage};

/// What the handler needs from outside.
pub struct Deps<S, O> {
    pub store: S,
    pub objects: O,
    pub config: Config,
    /// Unix seconds now: which rows arrived late, and the metrics' timestamp.
    pub wall_clock: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl<S, O> Deps<S, O> {
    /// Dependencies that read the system clock.
    pub fn new(store: S, objects: O, config: Config) -> Self {
        Deps {
            store,
            objects,
            config,
            wall_clock: Box::new(unix_now),
        }
    }
}

/// Why an invocation failed. Lambda (or SQS) then retries, which the batch ids make safe.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("s3://{bucket}/{key}: bad key")]
    Key {
        bucket: String,
        key: String,
        #[source]
        source: KeyError,
    },
    #[error("{location}: cannot be read as flow logs")]
    Decode {
        location: String,
        #[source]
        source: DecodeError,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("message {message_id}: not finished before the invocation's deadline")]
    Deadline { message_id: String },
}

/// Time kept back from the invocation's deadline to answer SQS with the messages still
/// unfinished; otherwise a timeout returns nothing and SQS redelivers the whole batch.
pub const DEADLINE_RESERVE: Duration = Duration::from_secs(5);

impl IngestError {
    /// A stable name for searches and alarms, independent of Rust type names.
    pub fn error_type(&self) -> &'static str {
        match self {
            IngestError::Event(_) | IngestError::Key { .. } => "Ingest.Event",
            IngestError::Decode { .. } => "Ingest.Decode",
            IngestError::Fetch(_) => "Ingest.Fetch",
            IngestError::Store(_) => "Ingest.Store",
            IngestError::Deadline { .. } => "Ingest.Deadline",
        }
    }
}

impl From<IngestError> for lambda_runtime::Diagnostic {
    fn from(error: IngestError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.error_type().to_owned(),
            error_message: error_chain(&error),
        }
    }
}

pub use rejectwatch_core::ports::error_chain;

/// How many malformed lines an invocation logs with their reasons.
const LOGGED_MALFORMED: usize = 5;

/// Counts for one invocation: logged as one JSON line and returned for direct invocations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub trigger: &'static str,
    /// Objects or batches tallied and written.
    pub deliveries: u64,
    /// Deliveries already applied by an earlier attempt (their manifest marked done).
    pub duplicates: u64,
    /// Deliveries skipped by policy: S3 keys outside the flow-log pattern, buckets or log
    /// groups not counted, S3 test events, objects gone since the notification.
    pub skipped: u64,
    pub control_messages: u64,
    /// The tallies' totals, added up over the deliveries (`sources` sums each delivery's
    /// distinct sources). Like `tally --json`, the line leaves `ignored` out when it is 0.
    #[serde(flatten)]
    pub totals: Totals,
    /// (source, window) and (interface, window) rows in the batches.
    pub rows: u64,
    /// Write requests sent to the store.
    pub writes: u64,
    /// Rows an earlier attempt had already applied.
    pub already_applied: u64,
    /// Rows of windows that had settled (`SETTLE_MINUTES` after they ended) before this
    /// delivery: counted, but the evaluator may have stopped reading their windows.
    pub late_rows: u64,
    pub malformed_samples: Vec<String>,
    pub skip_reasons: Vec<String>,
    /// SQS messages reported back as failed.
    pub failed_messages: u64,
    pub duration_ms: u64,
    /// Time left before the invocation's deadline when it answered, if it has one.
    pub time_left_ms: Option<u64>,
}

impl Summary {
    fn skip(&mut self, reason: String) {
        self.skipped += 1;
        info!(reason = %reason, "delivery skipped");
        if self.skip_reasons.len() < LOGGED_MALFORMED {
            self.skip_reasons.push(reason);
        }
    }

    fn add_tally(&mut self, tally: &RejectTally, location: &str) {
        self.totals.add(&tally.totals());
        for line in tally.malformed_samples() {
            if self.malformed_samples.len() < LOGGED_MALFORMED {
                self.malformed_samples.push(format!("{location} {line}"));
            }
        }
    }

    /// The Embedded Metric Format line with the same counts.
    pub fn metrics_line(&self, timestamp_millis: u64) -> String {
        emf_line(
            timestamp_millis,
            &[
                ("Function", "ingest-flow-logs"),
                // CloudWatch refuses empty dimension values.
                (
                    "Trigger",
                    if self.trigger.is_empty() {
                        "unknown"
                    } else {
                        self.trigger
                    },
                ),
            ],
            &[
                ("Deliveries", self.deliveries),
                ("Duplicates", self.duplicates),
                ("Skipped", self.skipped),
                ("ControlMessages", self.control_messages),
                ("Records", self.totals.records),
                ("Rejects", self.totals.rejects),
                ("Sources", self.totals.sources),
                ("Malformed", self.totals.malformed),
                ("Nodata", self.totals.nodata),
                ("Skipdata", self.totals.skipdata),
                ("Uncountable", self.totals.uncountable),
                ("Ignored", self.totals.ignored),
                ("Rows", self.rows),
                ("Writes", self.writes),
                ("AlreadyApplied", self.already_applied),
                ("LateRows", self.late_rows),
                ("FailedMessages", self.failed_messages),
                ("DurationMs", self.duration_ms),
            ],
        )
    }
}

/// Unix seconds now, on the system clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// What an invocation answers: its summary, or for SQS batches the partial-failure
/// response (`batchItemFailures`) that makes SQS redeliver only the failed messages.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum IngestResponse {
    Summary(Summary),
    Sqs(SqsBatchResponse),
}

/// Handles one invocation; logs its summary whether it succeeds or fails.
///
/// For an invocation that must answer by `deadline` (Lambda's), SQS messages not
/// finished [`DEADLINE_RESERVE`] before it are reported as failed, so SQS redelivers only
/// those (what they already wrote is not counted again).
pub async fn handle(
    event: IngestEvent,
    deps: &Deps<impl CounterStore + Sync, impl ObjectSource + Sync>,
    deadline: Option<Instant>,
) -> Result<IngestResponse, IngestError> {
    let started = Instant::now();
    let mut summary = Summary::default();
    let result = dispatch(event, deps, deadline, &mut summary).await;
    log_invocation(result, summary, started, deadline, deps)
}

/// [`handle`] for the payload as Lambda delivers it. A payload of no known shape fails
/// as `Ingest.Event` with its summary and metrics lines logged, like any other failed
/// invocation; the runtime's own deserialisation into [`IngestEvent`] could do neither.
pub async fn handle_payload(
    payload: Value,
    deps: &Deps<impl CounterStore + Sync, impl ObjectSource + Sync>,
    deadline: Option<Instant>,
) -> Result<IngestResponse, IngestError> {
    match IngestEvent::classify(payload) {
        Ok(event) => handle(event, deps, deadline).await,
        Err(error) => log_invocation(
            Err(error.into()),
            Summary::default(),
            Instant::now(),
            deadline,
            deps,
        ),
    }
}

/// A direct invocation with no deadline, JSON in and JSON out as Lambda sees it: what the
/// tests and the replay tool call.
pub async fn invoke(
    payload: Value,
    deps: &Deps<impl CounterStore + Sync, impl ObjectSource + Sync>,
) -> Result<Value, IngestError> {
    invoke_until(payload, deps, None).await
}

/// [`invoke`] with a deadline.
pub async fn invoke_until(
    payload: Value,
    deps: &Deps<impl CounterStore + Sync, impl ObjectSource + Sync>,
    deadline: Option<Instant>,
) -> Result<Value, IngestError> {
    let response = handle_payload(payload, deps, deadline).await?;
    Ok(serde_json::to_value(response).expect("the response serialises"))
}

/// Completes the summary, logs it and its metrics line, and answers.
fn log_invocation<S, O>(
    result: Result<Option<SqsBatchResponse>, IngestError>,
    mut summary: Summary,
    started: Instant,
    deadline: Option<Instant>,
    deps: &Deps<S, O>,
) -> Result<IngestResponse, IngestError> {
    summary.duration_ms = started.elapsed().as_millis() as u64;
    summary.time_left_ms = deadline.map(|deadline| {
        deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64
    });
    println!("{}", summary_line("invocation summary", &result, &summary));
    println!("{}", summary.metrics_line((deps.wall_clock)() * 1000));
    result.map(|response| match response {
        Some(batch) => IngestResponse::Sqs(batch),
        None => IngestResponse::Summary(summary),
    })
}

async fn dispatch(
    event: IngestEvent,
    deps: &Deps<impl CounterStore + Sync, impl ObjectSource + Sync>,
    deadline: Option<Instant>,
    summary: &mut Summary,
) -> Result<Option<SqsBatchResponse>, IngestError> {
    match event {
        IngestEvent::CloudWatchLogs(event) => {
            summary.trigger = "cloudwatch";
            ingest_subscription(&event, deps, summary).await?;
            Ok(None)
        }
        IngestEvent::S3(records) => {
            summary.trigger = "s3";
            for record in &records {
                ingest_s3_record(record, deps, summary).await?;
            }
            Ok(None)
        }
        IngestEvent::Sqs(messages) => {
            summary.trigger = "sqs";
            let failures = ingest_sqs_messages(&messages, deps, deadline, summary).await;
            summary.failed_messages = failures.len() as u64;
            Ok(Some(SqsBatchResponse {
                batch_item_failures: failures
                    .into_iter()
                    .map(|item_identifier| BatchItemFailure { item_identifier })
                    .collect(),
            }))
        }
    }
}

async fn ingest_sqs_messages(
    messages: &[SqsMessage],
    deps: &Deps<impl CounterStore + Sync, impl ObjectSource + Sync>,
    deadline: Option<Instant>,
    summary: &mut Summary,
) -> Vec<String> {
    let mut failures = Vec::new();
    for message in messages {
        let budget = deadline.map(|deadline| {
            deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(DEADLINE_RESERVE)
        });
        let out_of_time = || IngestError::Deadline {
            message_id: message.message_id.clone(),
        };
        let work = ingest_sqs_message(message, deps, summary);
        let result = match budget {
            None => work.await,
            // No time left: do not start what could not finish.
            Some(Duration::ZERO) => Err(out_of_time()),
            Some(budget) => tokio::time::timeout(budget, work)
                .await
                .unwrap_or_else(|_| Err(out_of_time())),
        };
        if let Err(error) = result {
            // Only this message is redelivered; the others are done.
            warn!(message_id = %message.message_id, error_type = error.error_type(), error = %error_chain(&error), "message failed");
            failures.push(message.message_id.clone());
        }
    }
    failures
}

async fn ingest_sqs_message(
    message: &SqsMessage,
    deps: &Deps<impl CounterStore + Sync, impl ObjectSource + Sync>,
    summary: &mut Summary,
) -> Result<(), IngestError> {
    match SqsBody::parse(&message.body) {
        Ok(SqsBody::TestEvent) => {
            summary.skip("S3 test event".into());
            Ok(())
        }
        Ok(SqsBody::S3(records)) => {
            for record in &records {
                ingest_s3_record(record, deps, summary).await?;
            }
            Ok(())
        }
        Err(error) => Err(IngestError::Event(error)),
    }
}

async fn ingest_subscription<S, O>(
    event: &SubscriptionEvent,
    deps: &Deps<S, O>,
    summary: &mut Summary,
) -> Result<(), IngestError>
where
    S: CounterStore + Sync,
{
    let data = event.decode().map_err(|source| IngestError::Decode {
        location: "CloudWatch Logs subscription event".into(),
        source,
    })?;
    let location = format!("{}/{}", data.log_group, data.log_stream);
    let config = &deps.config;
    let decode_error = |source| IngestError::Decode {
        location: location.clone(),
        source,
    };
    if rejectwatch_core::decode::message_type(&data).map_err(decode_error)? == MessageType::Control
    {
        summary.control_messages += 1;
        return Ok(());
    }
    if !config.count_log_groups.includes(&data.log_group) {
        summary.skip(format!(
            "log group {} is not counted (COUNT_CLOUDWATCH_LOG_GROUPS)",
            data.log_group
        ));
        return Ok(());
    }
    let id = BatchId::for_cloudwatch_batch(
        &data.log_group,
        &data.log_stream,
        data.log_events.iter().map(|event| event.id.as_str()),
    );
    if deps.store.is_done(&id).await? {
        summary.duplicates += 1;
        return Ok(());
    }
    let mut parser = RecordParser::new(config.format_for(&data.log_group).clone());
    let mut tally = new_tally(config);
    parse_log_data(&data, &mut parser, &mut tally).map_err(decode_error)?;
    summary.add_tally(&tally, &location);
    write_batch(id, &tally, &location, deps, summary).await
}

async fn ingest_s3_record(
    record: &S3Record,
    deps: &Deps<impl CounterStore + Sync, impl ObjectSource + Sync>,
    summary: &mut Summary,
) -> Result<(), IngestError> {
    let config = &deps.config;
    let bucket = &record.s3.bucket.name;
    let key = decode_s3_key(&record.s3.object.key).map_err(|source| IngestError::Key {
        bucket: bucket.clone(),
        key: record.s3.object.key.clone(),
        source,
    })?;
    let skip = s3_record_skip(
        record.event_name.as_deref(),
        config.key_pattern.is_match(&key),
        config.count_buckets.includes(bucket),
    );
    if let Some(skip) = skip {
        summary.skip(match skip {
            S3RecordSkip::NotObjectCreation => format!(
                "s3://{bucket}/{key}: event {:?} is not an object creation",
                record.event_name
            ),
            S3RecordSkip::NotFlowLogKey => {
                format!("s3://{bucket}/{key}: not a flow-log key (FLOW_LOG_KEY_PATTERN)")
            }
            S3RecordSkip::BucketNotCounted => {
                format!("s3://{bucket}/{key}: bucket is not counted (COUNT_S3_BUCKETS)")
            }
        });
        return Ok(());
    }
    let location = format!("s3://{bucket}/{key}");
    let object = ObjectRef {
        bucket: bucket.clone(),
        key: key.clone(),
        version_id: record.s3.object.version_id.clone(),
        etag: record.s3.object.e_tag.clone(),
    };
    let id = BatchId::for_s3_object(
        bucket,
        &key,
        object.version_id.as_deref(),
        object.etag.as_deref(),
    );
    if deps.store.is_done(&id).await? {
        summary.duplicates += 1;
        return Ok(());
    }
    let tally = match read_object(&object, deps).await {
        Ok(tally) => tally,
        // Nothing to count any more; a newer notification covers a replacement.
        Err(IngestError::Fetch(
            error @ (FetchError::NotFound { .. } | FetchError::Changed { .. }),
        )) => {
            summary.skip(error.to_string());
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    summary.add_tally(&tally, &location);
    write_batch(id, &tally, &location, deps, summary).await
}

/// Streams an object through the decoder into a tally, chunk by chunk.
async fn read_object<S, O>(
    object: &ObjectRef,
    deps: &Deps<S, O>,
) -> Result<RejectTally, IngestError>
where
    O: ObjectSource + Sync,
{
    let config = &deps.config;
    let decode_error = |source| IngestError::Decode {
        location: format!("s3://{}/{}", object.bucket, object.key),
        source,
    };
    let limits = DecodeLimits {
        max_decompressed_bytes: config.max_decompressed_bytes,
        ..DecodeLimits::default()
    };
    let lines = ObjectLines::new(config.default_format.clone(), new_tally(config));
    let mut decoder = ObjectDecoder::new(lines, limits);
    if is_parquet_key(&object.key) {
        let read = read_parquet_object(&deps.objects, object, Columns::Tally, |text| {
            decoder.write(text)
        });
        match read.await {
            Ok(_) => {}
            Err(ParquetObjectError::Fetch(error)) => return Err(error.into()),
            Err(ParquetObjectError::Decode(error)) => return Err(decode_error(error)),
        }
        return Ok(decoder.finish().map_err(decode_error)?.into_records());
    }
    let mut body = deps.objects.open(object).await?;
    while let Some(chunk) = body.next_chunk().await? {
        decoder.write(&chunk).map_err(decode_error)?;
    }
    Ok(decoder.finish().map_err(decode_error)?.into_records())
}

fn new_tally(config: &Config) -> RejectTally {
    let mut tally = RejectTally::new(TallyOptions {
        window_seconds: config.window_seconds,
        attribution: config.attribution,
    });
    tally.ignore_dst_ports(config.ignored_dst_ports.iter().copied());
    tally
}

/// Applies a delivery's batch, then marks it done so later duplicates are skipped unread.
async fn write_batch<S, O>(
    id: BatchId,
    tally: &RejectTally,
    location: &str,
    deps: &Deps<S, O>,
    summary: &mut Summary,
) -> Result<(), IngestError>
where
    S: CounterStore + Sync,
{
    let config = &deps.config;
    let batch = CounterBatch::from_tally(id, tally, config.index_shards);
    summary.deliveries += 1;
    summary.rows += (batch.updates.len() + batch.gaps.len()) as u64;
    if batch.is_empty() {
        return Ok(());
    }
    let report = deps.store.apply(&batch).await?;
    summary.writes += report.requests;
    summary.already_applied += report.already_applied;
    // Judged once the rows are written, which is when the evaluator can first see them;
    // rows an earlier attempt wrote (on time or not) were judged by that attempt.
    let now = (deps.wall_clock)();
    let late = batch.late_rows(config.settle_seconds, now);
    if let Some(&oldest) = late.windows.first()
        && report.applied > 0
    {
        let late_rows = late.rows.min(report.applied);
        summary.late_rows += late_rows;
        // Counted all the same; the operator learns that an alert may be missing.
        warn!(
            location,
            late_rows,
            oldest_window = oldest,
            settle_seconds = config.settle_seconds,
            "rows arrived after their window settled"
        );
    }
    deps.store
        .mark_done(&batch.id, now + config.retention_seconds)
        .await?;
    summary.writes += 1;
    Ok(())
}
