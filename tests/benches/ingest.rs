//! The ingest handler's cost: DynamoDB write requests for a 1M-record object against a
//! per-record writer, and the peak RSS of a fresh process ingesting a 75 MB gzip object.
//! Both run the whole handler through the real SDK adapters (S3 and DynamoDB) against moto
//! on loopback, so the requests counted are the requests sent.
//!
//! Run: `cargo bench -p rejectwatch-tests --bench ingest` (needs `./scripts/setup-tools`).

use std::collections::HashMap;
use std::time::Instant;

use aws_config::SdkConfig;
use aws_sdk_s3::primitives::ByteStream;
use ingest_flow_logs::config::Config;
use ingest_flow_logs::{Deps, handle};
use rejectwatch_tests::moto::{MotoServer, create_counters_table};
use serde_json::{Value, json};
use shared::aws::dynamodb::DynamoCounterStore;
use shared::aws::s3::S3ObjectSource;
use shared::counters::ROWS_PER_CHUNK;
use shared::generate::{FlowLogGenerator, GeneratorConfig};

const CHILD_ENV: &str = "REJECTWATCH_INGEST_BENCH_CHILD";
const BUCKET: &str = "flow-logs";
const KEY: &str = "AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/01/bench.log.gz";
const TABLE: &str = "counters";
/// The ceiling the issue sets: the function runs in a 128 MB Lambda.
const RSS_LIMIT_KIB: u64 = 64 << 10;

fn config() -> Config {
    let settings: HashMap<&str, &str> = HashMap::from([("COUNTERS_TABLE_NAME", TABLE)]);
    Config::from_lookup(|name| settings.get(name).map(|value| value.to_string())).expect("config")
}

fn s3_event() -> Value {
    json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": BUCKET}, "object": {"key": KEY}}}]})
}

/// Five minutes of flow logs (one S3 delivery) of the given size.
fn object(records: u64) -> Vec<u8> {
    let config = GeneratorConfig {
        records,
        seed: 9,
        duration_seconds: 300,
        ..GeneratorConfig::default()
    };
    let mut object = Vec::new();
    FlowLogGenerator::new(config)
        .write_gzip(&mut object, 1)
        .expect("generating");
    object
}

fn deps(sdk: &SdkConfig) -> Deps<DynamoCounterStore, S3ObjectSource> {
    let config = config();
    Deps {
        store: DynamoCounterStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            TABLE,
            config.retention_seconds,
            config.write_concurrency,
        ),
        objects: S3ObjectSource::new(aws_sdk_s3::Client::new(sdk)),
        config,
    }
}

/// A fresh bucket and counters table on `moto`, holding `object` at [`KEY`].
async fn stage(moto: &MotoServer, object: Vec<u8>) {
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
        .key(KEY)
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

    println!("DynamoDB write requests for one S3 object of 1M records (5 minutes of traffic):");
    let moto = MotoServer::start();
    let started = Instant::now();
    let summary = runtime.block_on(async {
        stage(&moto, object(1_000_000)).await;
        handle(s3_event(), &deps(&moto.sdk_config().await))
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

    println!(
        "peak RSS of a fresh process ingesting a 75 MB gzip object (S3 and DynamoDB on moto):"
    );
    let moto = MotoServer::start();
    let mut records = 3_000_000;
    let mut bytes = object(records);
    // Grow to just over 75 MB, the size at which VPC Flow Logs rolls an object.
    while bytes.len() < 75_000_000 {
        records = records * 75_000_000 / bytes.len() as u64 + 50_000;
        bytes = object(records);
    }
    let size = bytes.len();
    runtime.block_on(stage(&moto, bytes));
    let started = Instant::now();
    let output = std::process::Command::new(std::env::current_exe().expect("this binary"))
        .env(CHILD_ENV, &moto.endpoint)
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
        "  {:.1} MB gzip, {records} records: {report} (in {:.1} s)",
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
        "peak RSS {peak_kib} KiB is over the {RSS_LIMIT_KIB} KiB limit"
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
    let summary = handle(s3_event(), &deps(&sdk)).await.expect("ingesting");
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
