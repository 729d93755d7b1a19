//! The ingest handler's cost: DynamoDB write requests for a 1M-record object against a
//! per-record writer, and the peak RSS of a fresh process ingesting a 75 MB gzip object
//! streamed from S3 (moto on loopback, through the real SDK).
//!
//! Run: `cargo bench -p rejectwatch-tests --bench ingest` (needs `./scripts/setup-tools`).
//! The counter store here counts requests and keeps nothing, so the RSS is the handler's
//! own: streaming, tally and the counter batch. (The moto integration tests check that the
//! DynamoDB adapter sends exactly these requests.)

use std::collections::HashMap;
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use ingest_flow_logs::config::Config;
use ingest_flow_logs::{Deps, handle};
use rejectwatch_tests::moto::MotoServer;
use serde_json::{Value, json};
use shared::aws::s3::S3ObjectSource;
use shared::counters::{BatchId, CounterBatch};
use shared::generate::{FlowLogGenerator, GeneratorConfig};
use shared::ports::{ApplyReport, CounterStore, StoreError};
use shared::testing::InMemoryObjectSource;

const CHILD_ENV: &str = "REJECTWATCH_INGEST_BENCH_CHILD";
const BUCKET: &str = "flow-logs";
const KEY: &str = "AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/01/bench.log.gz";

/// Counts requests, stores nothing.
#[derive(Default)]
struct CountingStore {
    requests: std::sync::atomic::AtomicU64,
}

impl CounterStore for CountingStore {
    async fn is_done(&self, _: &BatchId) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn apply(&self, batch: &CounterBatch) -> Result<ApplyReport, StoreError> {
        let requests = (batch.updates.len() + batch.gaps.len()) as u64;
        self.requests
            .fetch_add(requests, std::sync::atomic::Ordering::Relaxed);
        Ok(ApplyReport {
            applied: requests,
            already_applied: 0,
            requests,
        })
    }
    async fn mark_done(&self, _: &BatchId, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
}

fn config() -> Config {
    let settings: HashMap<&str, &str> = HashMap::from([("COUNTERS_TABLE_NAME", "counters")]);
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

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var(CHILD_ENV).is_ok() {
        return runtime.block_on(child());
    }

    println!("DynamoDB write requests for one S3 object of 1M records (5 minutes of traffic):");
    let deps = Deps {
        store: CountingStore::default(),
        objects: InMemoryObjectSource::new(),
        config: config(),
    };
    deps.objects.put(BUCKET, KEY, object(1_000_000));
    let summary = runtime
        .block_on(handle(s3_event(), &deps))
        .expect("ingesting");
    println!(
        "  RejectWatch: {} requests ({} counter and gap rows, plus 1 done marker); a per-record writer: {} (one per REJECT)",
        summary["writes"], summary["rows"], summary["rejects"]
    );

    println!("peak RSS of a fresh process ingesting a 75 MB gzip object from S3 (moto):");
    let moto = MotoServer::start();
    let mut records = 3_000_000;
    let mut bytes = object(records);
    // Grow to just over 75 MB, the size at which VPC Flow Logs rolls an object.
    while bytes.len() < 75_000_000 {
        records = records * 75_000_000 / bytes.len() as u64 + 50_000;
        bytes = object(records);
    }
    let size = bytes.len();
    runtime.block_on(async {
        let s3 = aws_sdk_s3::Client::new(&moto.sdk_config().await);
        s3.create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("bucket");
        s3.put_object()
            .bucket(BUCKET)
            .key(KEY)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .expect("upload");
    });
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
    println!(
        "  {:.1} MB gzip, {records} records: {} (in {:.1} s)",
        size as f64 / 1e6,
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
}

/// The child: ingest the object through the real S3 adapter, then report VmHWM.
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
    let deps = Deps {
        store: CountingStore::default(),
        objects: S3ObjectSource::new(aws_sdk_s3::Client::new(&sdk)),
        config: config(),
    };
    let summary = handle(s3_event(), &deps).await.expect("ingesting");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .map_or("unknown", str::trim);
    println!(
        "peak RSS {peak}, {} rows, {} REJECTs",
        summary["rows"], summary["rejects"]
    );
}
