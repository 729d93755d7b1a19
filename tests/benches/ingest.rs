//! The ingest handler's cost: DynamoDB write requests for a 1M-record object against a
//! per-record writer, and the peak RSS of a fresh process ingesting a 75 MB gzip object,
//! the Parquet twin of the 1M-record object, and a 75 MB Parquet object. These run the
//! whole handler through the real SDK adapters (S3 and DynamoDB) against moto on
//! loopback, so the requests counted are the requests sent. Beside them, the core's time
//! to read and tally the 1M-record object as gzip text and as Parquet, interleaved rounds
//! in one run, compared as a ratio.
//!
//! Run: `cargo bench -p rejectwatch-tests --bench ingest` (needs `./scripts/setup-tools`);
//! `-- --parquet` runs only the Parquet measures (moto takes about ten minutes per object).

use std::collections::HashMap;
use std::time::Instant;

use aws_config::SdkConfig;
use aws_sdk_s3::primitives::ByteStream;
use ingest_flow_logs::config::Config;
use ingest_flow_logs::{Deps, invoke};
use rejectwatch_aws::dynamodb::DynamoCounterStore;
use rejectwatch_aws::s3::S3ObjectSource;
use rejectwatch_core::counters::ROWS_PER_CHUNK;
use rejectwatch_core::decode::{DecodeLimits, ObjectDecoder, ObjectLines};
use rejectwatch_core::flow_log::FlowFormat;
use rejectwatch_core::parquet_object::{Columns, read_parquet_object};
use rejectwatch_core::ports::ObjectRef;
use rejectwatch_core::tally::{RejectTally, TallyOptions};
use rejectwatch_testkit::fakes::InMemoryObjectSource;
use rejectwatch_testkit::generate::{FlowLogGenerator, GeneratorConfig};
use rejectwatch_tests::moto::{MotoServer, create_counters_table};
use rejectwatch_tests::tally_object;
use serde_json::{Value, json};

const CHILD_ENV: &str = "REJECTWATCH_INGEST_BENCH_CHILD";
const CHILD_KEY_ENV: &str = "REJECTWATCH_INGEST_BENCH_KEY";
const BUCKET: &str = "flow-logs";
const KEY: &str = "AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/01/bench.log.gz";
const PARQUET_KEY: &str = "AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/01/bench.log.parquet";
/// Rows per row group of the generated Parquet objects.
const ROW_GROUP_ROWS: usize = 100_000;
const ROUNDS: usize = 5;
const TABLE: &str = "counters";
/// The ceiling the issue sets: the function runs in a 128 MB Lambda.
const RSS_LIMIT_KIB: u64 = 64 << 10;

fn config() -> Config {
    let settings: HashMap<&str, &str> = HashMap::from([("COUNTERS_TABLE_NAME", TABLE)]);
    Config::from_lookup(|name| settings.get(name).map(|value| value.to_string())).expect("config")
}

fn s3_event(key: &str) -> Value {
    json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": BUCKET}, "object": {"key": key}}}]})
}

/// Five minutes of flow logs (one S3 delivery) of the given size.
fn generator(records: u64) -> FlowLogGenerator {
    FlowLogGenerator::new(GeneratorConfig {
        records,
        seed: 9,
        duration_seconds: 300,
        ..GeneratorConfig::default()
    })
}

fn object(records: u64) -> Vec<u8> {
    let mut object = Vec::new();
    generator(records)
        .write_gzip(&mut object, 1)
        .expect("generating");
    object
}

/// The Parquet twin of [`object`]: the same records.
fn parquet_object(records: u64) -> Vec<u8> {
    let mut object = Vec::new();
    generator(records)
        .write_parquet(&mut object, ROW_GROUP_ROWS)
        .expect("generating");
    object
}

/// `make(records)` grown to just over 75 MB, the size at which VPC Flow Logs rolls an
/// object; returns it with its record count.
fn object_of_75_mb(make: fn(u64) -> Vec<u8>) -> (Vec<u8>, u64) {
    let mut records = 3_000_000;
    let mut bytes = make(records);
    while bytes.len() < 75_000_000 {
        records = records * 75_000_000 / bytes.len() as u64 + 50_000;
        bytes = make(records);
    }
    (bytes, records)
}

fn deps(sdk: &SdkConfig) -> Deps<DynamoCounterStore, S3ObjectSource> {
    let config = config();
    Deps::new(
        DynamoCounterStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            TABLE,
            config.retention_seconds,
            config.write_concurrency,
        ),
        S3ObjectSource::new(aws_sdk_s3::Client::new(sdk)),
        config,
    )
}

/// A fresh bucket and counters table on `moto`, holding `object` at `key`.
async fn stage(moto: &MotoServer, key: &str, object: Vec<u8>) {
    let sdk = moto.sdk_config().await;
    create_counters_table(&aws_sdk_dynamodb::Client::new(&sdk), TABLE).await;
    let s3 = aws_sdk_s3::Client::new(&sdk);
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("bucket");
    s3.put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from(object))
        .send()
        .await
        .expect("upload");
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var(CHILD_ENV).is_ok() {
        return runtime.block_on(child());
    }

    let parquet_only = std::env::args().any(|arg| arg == "--parquet");
    if !parquet_only {
        write_requests(&runtime);
    }
    println!("the core reading and tallying the 1M-record object, gzip text and its Parquet twin:");
    let text = object(1_000_000);
    let parquet = parquet_object(1_000_000);
    let (mut text_times, mut parquet_times) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let from_text = tally_object(&text, TallyOptions::default()).expect("text");
        text_times.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        let from_parquet = runtime.block_on(tally_parquet(&parquet));
        parquet_times.push(started.elapsed().as_secs_f64());
        assert_eq!(from_parquet.totals(), from_text.totals(), "twins differ");
    }
    let (text_time, parquet_time) = (median(&mut text_times), median(&mut parquet_times));
    println!(
        "  gzip text {:.1} MB: {:.2} s, {:.2} M records/s; Parquet {:.1} MB ({} rows per row \
         group): {:.2} s, {:.2} M records/s; Parquet/text time {:.2}x (median of {ROUNDS} \
         interleaved rounds, one thread)",
        text.len() as f64 / 1e6,
        text_time,
        1.0 / text_time,
        parquet.len() as f64 / 1e6,
        ROW_GROUP_ROWS,
        parquet_time,
        1.0 / parquet_time,
        parquet_time / text_time
    );

    println!(
        "peak RSS of a fresh process ingesting an object from S3 into DynamoDB (both on moto):"
    );
    if !parquet_only {
        let (gzip_75, gzip_records) = object_of_75_mb(object);
        peak_rss(&runtime, "gzip text", KEY, gzip_75, gzip_records);
    }
    peak_rss(
        &runtime,
        "Parquet, twin of the 1M-record object",
        PARQUET_KEY,
        parquet,
        1_000_000,
    );
    let (parquet_75, parquet_records) = object_of_75_mb(parquet_object);
    peak_rss(
        &runtime,
        "Parquet",
        PARQUET_KEY,
        parquet_75,
        parquet_records,
    );
}

/// DynamoDB write requests for the 1M-record object, against a per-record writer.
fn write_requests(runtime: &tokio::runtime::Runtime) {
    println!("DynamoDB write requests for one S3 object of 1M records (5 minutes of traffic):");
    let moto = MotoServer::start();
    let started = Instant::now();
    let summary = runtime.block_on(async {
        stage(&moto, KEY, object(1_000_000)).await;
        invoke(s3_event(KEY), &deps(&moto.sdk_config().await))
            .await
            .expect("ingesting")
    });
    let rows = summary["rows"].as_u64().unwrap_or(0);
    let writes = summary["writes"].as_u64().unwrap_or(0);
    println!(
        "  RejectWatch: {writes} requests: {} TransactWriteItems of up to {ROWS_PER_CHUNK} rows \
         and a ledger item each, for {rows} counter and gap rows, plus 1 done marker \
         ({} items written; in {:.1} s against moto)",
        writes - 1,
        rows + writes,
        started.elapsed().as_secs_f64()
    );
    println!(
        "  a per-record writer: {} requests (one per REJECT)",
        summary["rejects"]
    );
    drop(moto);
}

/// Reads and tallies a Parquet object as ingest does, through ranged reads.
async fn tally_parquet(parquet: &[u8]) -> RejectTally {
    let source = InMemoryObjectSource::new();
    source.put(BUCKET, PARQUET_KEY, parquet.to_vec());
    let object = ObjectRef {
        bucket: BUCKET.into(),
        key: PARQUET_KEY.into(),
        version_id: None,
        etag: None,
    };
    let lines = ObjectLines::new(
        FlowFormat::default(),
        RejectTally::new(TallyOptions::default()),
    );
    let mut decoder = ObjectDecoder::new(lines, DecodeLimits::default());
    read_parquet_object(&source, &object, Columns::Tally, |text| decoder.write(text))
        .await
        .expect("reading the Parquet object");
    decoder.finish().expect("decoding").into_records()
}

fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Ingests `object` in a fresh child process against a fresh moto, prints and checks
/// its peak RSS.
fn peak_rss(
    runtime: &tokio::runtime::Runtime,
    name: &str,
    key: &str,
    object: Vec<u8>,
    records: u64,
) {
    let moto = MotoServer::start();
    let size = object.len();
    runtime.block_on(stage(&moto, key, object));
    let started = Instant::now();
    let output = std::process::Command::new(std::env::current_exe().expect("this binary"))
        .env(CHILD_ENV, &moto.endpoint)
        .env(CHILD_KEY_ENV, key)
        .output()
        .expect("running the child");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = String::from_utf8_lossy(&output.stdout);
    let report = report.lines().last().unwrap_or_default();
    println!(
        "  {name}, {:.1} MB, {records} records: {report} (in {:.1} s)",
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let peak_kib: u64 = report
        .strip_prefix("peak RSS ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("the child's peak RSS");
    assert!(
        peak_kib < RSS_LIMIT_KIB,
        "{name}: peak RSS {peak_kib} KiB is over the {RSS_LIMIT_KIB} KiB limit"
    );
}

/// The child: ingest the object through the real adapters, then report VmHWM.
async fn child() {
    let endpoint = std::env::var(CHILD_ENV).expect("endpoint");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await;
    let key = std::env::var(CHILD_KEY_ENV).expect("key");
    let summary = invoke(s3_event(&key), &deps(&sdk))
        .await
        .expect("ingesting");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .map_or("unknown", str::trim);
    println!(
        "peak RSS {peak}, {} rows, {} REJECTs, {} requests",
        summary["rows"], summary["rejects"], summary["writes"]
    );
}
