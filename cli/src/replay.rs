//! `rejectwatch replay`: hands flow-log objects already in a bucket to the ingest function
//! as S3 event notifications, through its queue (`--queue`) or by invoking it (`--function`):
//! the backfill after a first deploy, an outage, or a dead-letter queue of lost
//! notifications.
//!
//! Counting stays exactly-once: the ingest function marks each object version's batch done
//! in the counters table, under the same batch id a notification from S3 gives it, so an
//! object sent again is a duplicate there. With the table known, objects already counted are
//! not even sent. Keys are listed in order and the last one dealt with can be kept in a
//! checkpoint file, so an interrupted replay resumes where it stopped.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use regex_lite::Regex;
use rejectwatch_aws::dynamodb::DynamoCounterStore;
use rejectwatch_aws::replay::{Bucket, Function, PageStart, Queue, RefusedEntry};
use rejectwatch_aws::sdk;
use rejectwatch_core::counters::BatchId;
use rejectwatch_core::object_key::{FLOW_LOG_KEY_PATTERN, encode_s3_key, key_time};
use rejectwatch_core::ports::{CounterStore, error_chain};
use rejectwatch_core::time::format_utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::CliError;
use crate::query::{parse_time, reader, runtime};

/// Notifications a `SendMessageBatch` request carries at most (an SQS limit).
const SQS_BATCH: usize = 10;

/// Attempts at sending a batch entry SQS refused for a reason of its own (throttling, an
/// internal error) before the replay stops.
const SQS_ATTEMPTS: u32 = 3;

/// What to replay and where to.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["queue", "function"])))]
pub struct ReplayArgs {
    /// The bucket the flow logs are in.
    #[arg(long)]
    bucket: String,
    /// Only keys under this prefix, such as `AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/`.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Only objects whose file-name time is at or after this: unix seconds, an RFC 3339 UTC
    /// time, or a duration back like 24h.
    #[arg(long, value_parser = parse_time)]
    since: Option<u64>,
    /// Only objects whose file-name time is before this (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    until: Option<u64>,
    /// Send each object's notification to this SQS queue URL (the stack's
    /// `FlowLogObjectQueueUrl`), ten to a request.
    #[arg(long)]
    queue: Option<String>,
    /// Invoke this ingest function with each object's notification, one object to an
    /// invocation, and add up the counts it returns.
    #[arg(long)]
    function: Option<String>,
    /// Invocations in flight at once with --function (keep it below the function's reserved
    /// concurrency, or the extra ones are throttled).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=10))]
    concurrency: u8,
    /// List what would be sent and what is already counted; send nothing, write no
    /// checkpoint.
    #[arg(long)]
    dry_run: bool,
    /// Resume after the key this file records, and record in it the last key dealt with
    /// after every batch.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// The counters table: objects it marks counted are not sent again.
    #[arg(long, env = "COUNTERS_TABLE_NAME")]
    table: Option<String>,
    /// Regular expression a key must match to be a flow-log object (the ingest function's
    /// `FLOW_LOG_KEY_PATTERN`).
    #[arg(long, env = "FLOW_LOG_KEY_PATTERN", default_value = FLOW_LOG_KEY_PATTERN)]
    key_pattern: String,
    /// An endpoint for every AWS service other than AWS's (such as a local moto server); the
    /// SDK also reads `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>`.
    #[arg(long)]
    endpoint_url: Option<String>,
    /// Print the summary as one JSON document.
    #[arg(long)]
    json: bool,
}

/// One listed object, as a notification describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// Without the quotes S3's listing puts around it: notifications carry it bare, and the
    /// ingest function's batch id is made from it as the notification carries it.
    pub etag: String,
    /// Unix seconds.
    pub last_modified: u64,
}

/// What the ingest function reported for the objects it was handed (`--function`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCounts {
    /// Objects tallied and written.
    #[serde(default)]
    pub deliveries: u64,
    /// Objects it had already counted.
    #[serde(default)]
    pub duplicates: u64,
    /// Objects it skipped by its own settings, or deleted since they were listed.
    #[serde(default)]
    pub skipped: u64,
    #[serde(default)]
    pub records: u64,
    #[serde(default)]
    pub rejects: u64,
    /// Rows of windows that had already settled: counted, but possibly never evaluated.
    #[serde(default)]
    pub late_rows: u64,
}

impl FunctionCounts {
    fn add(&mut self, other: &FunctionCounts) {
        self.deliveries += other.deliveries;
        self.duplicates += other.duplicates;
        self.skipped += other.skipped;
        self.records += other.records;
        self.rejects += other.rejects;
        self.late_rows += other.late_rows;
    }
}

/// An object of a dry run and what the replay would do with it.
#[derive(Clone, Debug, Serialize)]
struct PlannedObject {
    key: String,
    size: u64,
    action: &'static str,
}

/// The outcome of a replay: printed at the end, as text or JSON.
#[derive(Debug, Default, Serialize)]
struct Report {
    bucket: String,
    prefix: String,
    target: String,
    dry_run: bool,
    /// The checkpoint's key the listing started after.
    started_after: Option<String>,
    listed: u64,
    not_flow_logs: u64,
    skipped_by_time: u64,
    already_counted: u64,
    handed_over: u64,
    bytes_handed_over: u64,
    /// The last key dealt with (what the checkpoint holds).
    last_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function: Option<FunctionCounts>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    objects: Vec<PlannedObject>,
    seconds: f64,
}

/// Where the notifications go.
enum Target {
    Queue(Queue),
    Function {
        function: Function,
        name: String,
        concurrency: usize,
    },
}

/// `rejectwatch replay`.
pub fn run(args: ReplayArgs) -> Result<(), CliError> {
    let pattern = Regex::new(&args.key_pattern).map_err(|error| {
        CliError::Usage(format!("--key-pattern {:?}: {error}", args.key_pattern))
    })?;
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since >= until
    {
        return Err(CliError::Usage(format!(
            "--since {} is not before --until {}",
            format_utc(since),
            format_utc(until)
        )));
    }
    let started_after = match &args.checkpoint {
        Some(path) => Checkpoint::read(path)?
            .map(|checkpoint| checkpoint.resume_key(path, &Checkpoint::of(&args, "")))
            .transpose()?,
        None => None,
    };
    let report = runtime()?.block_on(replay(&args, &pattern, started_after))?;
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
            .map_err(CliError::from_write)
    } else {
        write_report(&mut out, &report, &args).map_err(CliError::from_write)
    }
}

async fn replay(
    args: &ReplayArgs,
    pattern: &Regex,
    started_after: Option<String>,
) -> Result<Report, CliError> {
    let started = Instant::now();
    let sdk_config = sdk::load_config(args.endpoint_url.as_deref()).await;
    let bucket = Bucket::new(&sdk_config, &args.bucket);
    let store = args
        .table
        .as_deref()
        .map(|table| reader(&sdk_config, table));
    let target = match (&args.queue, &args.function) {
        (Some(url), _) => Target::Queue(Queue::new(&sdk_config, url)),
        (None, Some(name)) => Target::Function {
            function: Function::new(&sdk_config, name),
            name: name.clone(),
            concurrency: usize::from(args.concurrency),
        },
        (None, None) => return Err(CliError::Usage("--queue or --function is needed".into())),
    };
    refuse_versioned_bucket(&bucket, &args.bucket).await?;
    let region = sdk_config
        .region()
        .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
    let mut report = Report {
        bucket: args.bucket.clone(),
        prefix: args.prefix.clone(),
        target: args
            .queue
            .clone()
            .or(args.function.clone())
            .unwrap_or_default(),
        dry_run: args.dry_run,
        started_after: started_after.clone(),
        function: matches!(target, Target::Function { .. }).then(FunctionCounts::default),
        ..Report::default()
    };
    let progress = Progress::new();
    let mut batch: Vec<Listed> = Vec::with_capacity(SQS_BATCH);
    let mut continuation: Option<String> = None;
    loop {
        // StartAfter on the first page only; the continuation token carries it on.
        let start = match &continuation {
            Some(token) => PageStart::Continue(token),
            None => PageStart::After(started_after.as_deref()),
        };
        let page = bucket
            .list_page(&args.prefix, start)
            .await
            .map_err(|error| {
                CliError::Service(format!(
                    "listing s3://{}/{}: {error}",
                    args.bucket, args.prefix
                ))
            })?;
        for object in page.objects {
            let listed = Listed {
                etag: unquoted_etag(&object.etag).to_owned(),
                key: object.key,
                size: object.size,
                last_modified: object.last_modified,
            };
            report.listed += 1;
            report.last_key = Some(listed.key.clone());
            match admit(&listed, pattern, args.since, args.until) {
                Admission::NotFlowLog => report.not_flow_logs += 1,
                Admission::OutOfRange => report.skipped_by_time += 1,
                Admission::Candidate => {
                    if is_counted(store.as_ref(), args, &listed).await? {
                        report.already_counted += 1;
                        if args.dry_run {
                            report.objects.push(planned(&listed, "already_counted"));
                            print_planned(args, &listed, "already counted")?;
                        }
                    } else if args.dry_run {
                        report.handed_over += 1;
                        report.bytes_handed_over += listed.size;
                        report.objects.push(planned(&listed, "send"));
                        print_planned(args, &listed, "would send")?;
                    } else {
                        batch.push(listed);
                    }
                }
            }
            if batch.len() == SQS_BATCH {
                hand_over(&target, &args.bucket, &region, &batch, &mut report).await?;
                batch.clear();
                save_checkpoint(args, &report)?;
            }
            progress.show(&report);
        }
        continuation = page.next;
        if continuation.is_none() {
            break;
        }
    }
    if !batch.is_empty() {
        hand_over(&target, &args.bucket, &region, &batch, &mut report).await?;
    }
    save_checkpoint(args, &report)?;
    progress.finish();
    report.seconds = (started.elapsed().as_millis() as f64) / 1000.0;
    Ok(report)
}

/// Where a listed key stands before anything is asked of the table.
#[derive(Debug, PartialEq, Eq)]
enum Admission {
    /// Not a key the ingest function would read.
    NotFlowLog,
    /// Its time is outside `--since`/`--until`.
    OutOfRange,
    Candidate,
}

/// Judges a key by its name alone: the flow-log pattern, then its file-name time (the
/// upload time when the name carries none) against `since` (inclusive) and `until`
/// (exclusive).
fn admit(listed: &Listed, pattern: &Regex, since: Option<u64>, until: Option<u64>) -> Admission {
    if !pattern.is_match(&listed.key) {
        return Admission::NotFlowLog;
    }
    let time = key_time(&listed.key).unwrap_or(listed.last_modified);
    if since.is_some_and(|since| time < since) || until.is_some_and(|until| time >= until) {
        return Admission::OutOfRange;
    }
    Admission::Candidate
}

/// ListObjectsV2 returns ETags quoted (`"9b2c..."`); notifications carry them bare.
fn unquoted_etag(etag: &str) -> &str {
    etag.strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(etag)
}

/// The batch id the ingest function gives the object when a notification without a
/// version id names it.
fn batch_id(bucket: &str, listed: &Listed) -> BatchId {
    BatchId::for_s3_object(bucket, &listed.key, None, Some(&listed.etag))
}

async fn is_counted(
    store: Option<&DynamoCounterStore>,
    args: &ReplayArgs,
    listed: &Listed,
) -> Result<bool, CliError> {
    let Some(store) = store else {
        return Ok(false);
    };
    store
        .is_done(&batch_id(&args.bucket, listed))
        .await
        .map_err(|error| {
            CliError::Service(format!(
                "reading table {} for s3://{}/{}: {}",
                args.table.as_deref().unwrap_or_default(),
                args.bucket,
                listed.key,
                error_chain(&error)
            ))
        })
}

/// The S3 event notification S3 would have sent for the object's creation: what the
/// ingest function reads from an SQS message body or a direct invocation.
pub fn s3_notification(bucket: &str, region: &str, listed: &Listed) -> Value {
    let event_time = format_utc(listed.last_modified).replace('Z', ".000Z");
    json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": event_time,
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            // Tells a replayed notification from S3's own in the function's logs.
            "configurationId": "rejectwatch-replay",
            "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
            "object": {
                "key": encode_s3_key(&listed.key),
                "size": listed.size,
                "eTag": listed.etag,
            },
        },
    }]})
}

async fn hand_over(
    target: &Target,
    bucket: &str,
    region: &str,
    batch: &[Listed],
    report: &mut Report,
) -> Result<(), CliError> {
    match target {
        Target::Queue(queue) => send_to_queue(queue, bucket, region, batch).await?,
        Target::Function {
            function,
            name,
            concurrency,
        } => {
            for chunk in batch.chunks(*concurrency) {
                let counts = invoke_function(function, name, bucket, region, chunk).await?;
                if let Some(total) = report.function.as_mut() {
                    total.add(&counts);
                }
            }
        }
    }
    report.handed_over += batch.len() as u64;
    report.bytes_handed_over += batch.iter().map(|listed| listed.size).sum::<u64>();
    Ok(())
}

/// One `SendMessageBatch` for up to ten objects, one notification a message as S3 sends
/// them; entries SQS refuses for its own reasons are sent again, a few times.
async fn send_to_queue(
    queue: &Queue,
    bucket: &str,
    region: &str,
    batch: &[Listed],
) -> Result<(), CliError> {
    let url = queue.url();
    let mut pending: Vec<usize> = (0..batch.len()).collect();
    for attempt in 1..=SQS_ATTEMPTS {
        let entries: Vec<(String, String)> = pending
            .iter()
            .map(|&index| {
                let body = s3_notification(bucket, region, &batch[index]).to_string();
                (index.to_string(), body)
            })
            .collect();
        let failed = queue.send_batch(&entries).await.map_err(|error| {
            CliError::Service(format!(
                "sending {} notifications (s3://{bucket}/{} ...) to queue {url}: {error}",
                pending.len(),
                batch[pending[0]].key,
            ))
        })?;
        if failed.is_empty() {
            return Ok(());
        }
        let refused = |entry: &RefusedEntry| {
            let key = entry
                .id
                .parse::<usize>()
                .ok()
                .and_then(|index| batch.get(index))
                .map_or("?", |listed| listed.key.as_str());
            CliError::Service(format!(
                "queue {url} refused the notification of s3://{bucket}/{key}: {} {}",
                entry.code, entry.message
            ))
        };
        if let Some(entry) = failed.iter().find(|entry| entry.sender_fault) {
            return Err(refused(entry));
        }
        if attempt == SQS_ATTEMPTS {
            return Err(refused(&failed[0]));
        }
        pending = failed
            .iter()
            .filter_map(|entry| entry.id.parse().ok())
            .collect();
        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
    }
    Ok(())
}

/// Invokes the function once per object, all of `chunk` at once, and adds up the summaries
/// it returns.
async fn invoke_function(
    function: &Function,
    name: &str,
    bucket: &str,
    region: &str,
    chunk: &[Listed],
) -> Result<FunctionCounts, CliError> {
    let mut invocations = tokio::task::JoinSet::new();
    for listed in chunk {
        let invocation = function.invoke(s3_notification(bucket, region, listed).to_string());
        let location = format!("s3://{bucket}/{}", listed.key);
        invocations.spawn(async move { (location, invocation.await) });
    }
    let mut total = FunctionCounts::default();
    let mut first_error = None;
    while let Some(joined) = invocations.join_next().await {
        let (location, result) = joined.map_err(|error| {
            CliError::Service(format!("invoking function {name}: task failed: {error}"))
        })?;
        let outcome = result.and_then(|answer| {
            read_invocation(answer.function_error.as_deref(), Some(&answer.payload))
        });
        match outcome {
            Ok(counts) => total.add(&counts),
            Err(reason) => {
                first_error.get_or_insert_with(|| {
                    CliError::Service(format!("invoking function {name} for {location}: {reason}"))
                });
            }
        }
    }
    first_error.map_or(Ok(total), Err)
}

/// Reads a synchronous invocation's answer: the ingest summary, or the error the function
/// reported (`{"errorType": "Ingest.Fetch", "errorMessage": ...}`).
fn read_invocation(
    function_error: Option<&str>,
    payload: Option<&[u8]>,
) -> Result<FunctionCounts, String> {
    let payload = payload.unwrap_or_default();
    if let Some(kind) = function_error {
        let detail: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        return Err(format!(
            "function error ({kind}): {}: {}",
            detail["errorType"].as_str().unwrap_or("?"),
            detail["errorMessage"].as_str().map_or_else(
                || String::from_utf8_lossy(payload).into_owned(),
                str::to_owned
            )
        ));
    }
    serde_json::from_slice(payload).map_err(|error| {
        format!(
            "the answer is not an ingest summary ({error}): {}",
            String::from_utf8_lossy(&payload[..payload.len().min(200)])
        )
    })
}

/// A bucket with versioning has notifications that name object versions, and the ingest
/// function counts a version under an id with its version id in it: a notification
/// without one would count the object again.
async fn refuse_versioned_bucket(bucket: &Bucket, name: &str) -> Result<(), CliError> {
    let status = bucket.versioning_status().await.map_err(|error| {
        CliError::Service(format!("reading the versioning of s3://{name}: {error}"))
    })?;
    match status {
        Some(status) => Err(CliError::Usage(format!(
            "s3://{name}: versioning is {status}; its notifications name object versions, \
             which replay does not send (the stack's own flow-log bucket is unversioned)"
        ))),
        None => Ok(()),
    }
}

fn planned(listed: &Listed, action: &'static str) -> PlannedObject {
    PlannedObject {
        key: listed.key.clone(),
        size: listed.size,
        action,
    }
}

/// A dry run's line for one object (text output only; JSON lists them in the report).
fn print_planned(args: &ReplayArgs, listed: &Listed, action: &str) -> Result<(), CliError> {
    if args.json {
        return Ok(());
    }
    writeln!(
        io::stdout().lock(),
        "{action:<16} s3://{}/{} ({})",
        args.bucket,
        listed.key,
        HumanBytes(listed.size)
    )
    .map_err(CliError::from_write)
}

/// The checkpoint file: the last key a replay of one bucket, prefix and selection dealt with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub bucket: String,
    pub prefix: String,
    /// The selection the run made: a resume must make the same one, or the keys passed
    /// over as out of range or not flow logs would never be looked at again.
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub key_pattern: String,
    pub last_key: String,
}

impl Checkpoint {
    /// The checkpoint of this run, at `last_key`.
    fn of(args: &ReplayArgs, last_key: &str) -> Checkpoint {
        Checkpoint {
            bucket: args.bucket.clone(),
            prefix: args.prefix.clone(),
            since: args.since,
            until: args.until,
            key_pattern: args.key_pattern.clone(),
            last_key: last_key.to_owned(),
        }
    }

    /// The file's checkpoint; `None` when there is no file yet.
    fn read(path: &Path) -> Result<Option<Checkpoint>, CliError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CliError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        serde_json::from_str(&text).map(Some).map_err(|error| {
            CliError::Usage(format!(
                "checkpoint {}: not a replay checkpoint ({error}); delete it to start over",
                path.display()
            ))
        })
    }

    /// The key to resume after, if the checkpoint is of this bucket and prefix and made
    /// the same selection.
    fn resume_key(self, path: &Path, run: &Checkpoint) -> Result<String, CliError> {
        let (bucket, prefix) = (&run.bucket, &run.prefix);
        if &self.bucket != bucket || &self.prefix != prefix {
            return Err(CliError::Usage(format!(
                "checkpoint {} is of s3://{}/{}, not s3://{bucket}/{prefix}; use another file \
                 or delete it to start over",
                path.display(),
                self.bucket,
                self.prefix
            )));
        }
        if (self.since, self.until) != (run.since, run.until) || self.key_pattern != run.key_pattern
        {
            let time = |time: Option<u64>| time.map_or_else(|| "-".to_owned(), format_utc);
            return Err(CliError::Usage(format!(
                "checkpoint {} was made with --since {} --until {} --key-pattern {:?}; resume \
                 with the same (absolute times), or delete it to start over",
                path.display(),
                time(self.since),
                time(self.until),
                self.key_pattern
            )));
        }
        Ok(self.last_key)
    }

    /// Replaces the file whole: written beside it, then renamed over it, so an interrupted
    /// write leaves the previous checkpoint.
    fn write(&self, path: &Path) -> io::Result<()> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        {
            let mut file = std::fs::File::create(&temporary)?;
            serde_json::to_writer(&mut file, self)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, path)
    }
}

fn save_checkpoint(args: &ReplayArgs, report: &Report) -> Result<(), CliError> {
    let (Some(path), Some(last_key), false) = (&args.checkpoint, &report.last_key, args.dry_run)
    else {
        return Ok(());
    };
    Checkpoint::of(args, last_key)
        .write(path)
        .map_err(|error| CliError::Usage(format!("writing checkpoint {}: {error}", path.display())))
}

/// A progress bar on standard error when it is a terminal; nothing otherwise.
struct Progress(Option<ProgressBar>);

impl Progress {
    fn new() -> Progress {
        if !io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed} {msg}: {bytes} ({binary_bytes_per_sec})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress(Some(bar))
    }

    fn show(&self, report: &Report) {
        if let Some(bar) = &self.0 {
            bar.set_position(report.bytes_handed_over);
            bar.set_message(format!(
                "{} listed, {} skipped, {} already counted, {} handed over",
                report.listed,
                report.not_flow_logs + report.skipped_by_time,
                report.already_counted,
                report.handed_over
            ));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

fn write_report(out: &mut impl Write, report: &Report, args: &ReplayArgs) -> io::Result<()> {
    let target = match (&args.queue, &args.function) {
        (Some(url), _) => format!("queue {url}"),
        (None, Some(name)) => format!("function {name}"),
        (None, None) => String::new(),
    };
    let source = format!("s3://{}/{}", report.bucket, report.prefix);
    if report.dry_run {
        writeln!(out, "dry run: {source} to {target}, nothing sent")?;
    } else {
        writeln!(out, "replayed {source} to {target}")?;
    }
    if let Some(key) = &report.started_after {
        writeln!(out, "  resumed after     {key}")?;
    }
    let range = match (args.since, args.until) {
        (None, None) => String::new(),
        (since, until) => format!(
            " (outside {} .. {})",
            since.map_or_else(|| "-".to_owned(), format_utc),
            until.map_or_else(|| "-".to_owned(), format_utc)
        ),
    };
    let already = if args.table.is_some() {
        report.already_counted.to_string()
    } else {
        "not checked (no --table)".to_owned()
    };
    let verb = if report.dry_run {
        "would hand over"
    } else {
        "handed over"
    };
    writeln!(out, "  listed            {} objects", report.listed)?;
    writeln!(out, "  not flow logs     {}", report.not_flow_logs)?;
    writeln!(out, "  skipped by time   {}{range}", report.skipped_by_time)?;
    writeln!(out, "  already counted   {already}")?;
    writeln!(
        out,
        "  {verb:<17} {} objects, {}",
        report.handed_over,
        HumanBytes(report.bytes_handed_over)
    )?;
    if let Some(counts) = &report.function {
        writeln!(
            out,
            "  function counted  {} objects: {} records, {} REJECTs ({} it had already \
             counted, {} it skipped, {} late rows)",
            counts.deliveries,
            counts.records,
            counts.rejects,
            counts.duplicates,
            counts.skipped,
            counts.late_rows
        )?;
    }
    if let (Some(path), false) = (&args.checkpoint, report.dry_run) {
        writeln!(
            out,
            "  checkpoint        {} (last key {})",
            path.display(),
            report.last_key.as_deref().unwrap_or("-")
        )?;
    }
    writeln!(out, "  took              {:.1} s", report.seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(key: &str) -> Listed {
        Listed {
            key: key.to_owned(),
            size: 1234,
            etag: "9b2cf535f27731c974343645a3985328".to_owned(),
            last_modified: 1_714_566_321,
        }
    }

    const KEY: &str = "AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/01/123456789012_vpcflowlogs_us-east-1_fl-1234abcd_20240501T1220Z_fe123456.log.gz";

    fn check_admit(key: &str, since: Option<u64>, until: Option<u64>, expected: Admission) {
        let pattern = Regex::new(FLOW_LOG_KEY_PATTERN).unwrap();
        assert_eq!(
            admit(&listed(key), &pattern, since, until),
            expected,
            "{key}"
        );
    }

    // 2024-05-01T12:20:00Z, the time in KEY's name.
    const STAMP: u64 = 1_714_566_000;

    #[test]
    fn a_flow_log_key_in_range_is_a_candidate() {
        check_admit(KEY, None, None, Admission::Candidate);
        check_admit(KEY, Some(STAMP), Some(STAMP + 1), Admission::Candidate);
    }

    #[test]
    fn since_is_inclusive_and_until_exclusive() {
        check_admit(KEY, Some(STAMP + 1), None, Admission::OutOfRange);
        check_admit(KEY, None, Some(STAMP), Admission::OutOfRange);
    }

    #[test]
    fn a_key_without_a_stamp_is_judged_by_its_upload_time() {
        let renamed = "AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/01/renamed.log.gz";
        check_admit(renamed, Some(1_714_566_321), None, Admission::Candidate);
        check_admit(renamed, Some(1_714_566_322), None, Admission::OutOfRange);
    }

    #[test]
    fn other_keys_are_not_flow_logs() {
        check_admit(
            "AWSLogs/123456789012/CloudTrail/us-east-1/2024/05/01/x.json.gz",
            None,
            None,
            Admission::NotFlowLog,
        );
    }

    #[test]
    fn listed_etags_lose_their_quotes() {
        assert_eq!(unquoted_etag("\"abc-2\""), "abc-2");
        assert_eq!(unquoted_etag("abc"), "abc");
        assert_eq!(unquoted_etag("\""), "\"");
    }

    #[test]
    fn the_notification_is_an_s3_object_created_event_with_an_encoded_key() {
        let key = "AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/x y.log.gz";
        let event = s3_notification("flow-logs", "eu-west-1", &listed(key));
        let record = &event["Records"][0];
        assert_eq!(record["eventSource"], "aws:s3");
        assert_eq!(record["eventName"], "ObjectCreated:Put");
        assert_eq!(record["awsRegion"], "eu-west-1");
        assert_eq!(record["eventTime"], "2024-05-01T12:25:21.000Z");
        assert_eq!(record["s3"]["bucket"]["arn"], "arn:aws:s3:::flow-logs");
        assert_eq!(
            record["s3"]["object"],
            json!({
                "key": "AWSLogs/aws-account-id%3D123456789012/aws-service%3Dvpcflowlogs/x+y.log.gz",
                "size": 1234,
                "eTag": "9b2cf535f27731c974343645a3985328",
            })
        );
    }

    #[test]
    fn an_invocation_answer_is_a_summary_or_the_functions_error() {
        let summary = br#"{"trigger":"s3","deliveries":1,"duplicates":0,"skipped":0,"records":500,"rejects":42,"late_rows":3,"rows":9}"#;
        assert_eq!(
            read_invocation(None, Some(summary)),
            Ok(FunctionCounts {
                deliveries: 1,
                records: 500,
                rejects: 42,
                late_rows: 3,
                ..FunctionCounts::default()
            })
        );
        let error = br#"{"errorType":"Ingest.Fetch","errorMessage":"s3://b/k: reading"}"#;
        assert_eq!(
            read_invocation(Some("Unhandled"), Some(error)),
            Err("function error (Unhandled): Ingest.Fetch: s3://b/k: reading".to_owned())
        );
        assert!(read_invocation(None, Some(b"null")).is_err());
    }

    #[test]
    fn a_checkpoint_is_replaced_whole_and_read_back() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("replay.json");
        assert_eq!(Checkpoint::read(&path).unwrap(), None);
        let checkpoint = Checkpoint {
            bucket: "b".into(),
            prefix: "AWSLogs/".into(),
            since: Some(1_714_521_600),
            until: None,
            key_pattern: FLOW_LOG_KEY_PATTERN.into(),
            last_key: KEY.into(),
        };
        checkpoint.write(&path).unwrap();
        let names: Vec<_> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["replay.json"], "no temporary file left");
        let read = Checkpoint::read(&path).unwrap().unwrap();
        assert_eq!(read, checkpoint);
        let run = read.clone();
        assert_eq!(read.resume_key(&path, &run).unwrap(), KEY);
    }

    #[test]
    fn a_checkpoint_of_another_bucket_prefix_or_selection_is_refused() {
        let path = Path::new("replay.json");
        let checkpoint = || Checkpoint {
            bucket: "b".into(),
            prefix: "AWSLogs/".into(),
            since: None,
            until: Some(1_714_608_000),
            key_pattern: FLOW_LOG_KEY_PATTERN.into(),
            last_key: KEY.into(),
        };
        let run = |change: fn(&mut Checkpoint)| {
            let mut run = checkpoint();
            change(&mut run);
            run
        };
        let error = checkpoint()
            .resume_key(path, &run(|run| run.bucket = "other".into()))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "checkpoint replay.json is of s3://b/AWSLogs/, not s3://other/AWSLogs/; use another \
             file or delete it to start over"
        );
        assert!(
            checkpoint()
                .resume_key(path, &run(|run| run.prefix.clear()))
                .is_err()
        );
        // A run that stopped at --until, resumed with --since from there, would skip every
        // key after the checkpoint that the first run passed over as out of range.
        let error = checkpoint()
            .resume_key(path, &run(|run| (run.since, run.until) = (run.until, None)))
            .unwrap_err();
        assert!(
            error.to_string().contains("--since - --until 2024-05-02"),
            "{error}"
        );
        assert!(
            checkpoint()
                .resume_key(path, &run(|run| run.key_pattern = "x".into()))
                .is_err()
        );
        assert_eq!(checkpoint().resume_key(path, &checkpoint()).unwrap(), KEY);
    }
}
