//! `rejectwatch replay` against real servers: a moto server on loopback holds the bucket,
//! the queue and the counters table. What replay hands over is drained through the ingest
//! handler with its real adapters, as the deployed function receives it: from the queue, or
//! (`--function`) through a stand-in for Lambda's Invoke API that runs the handler.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_s3::primitives::ByteStream;
use flate2::write::GzEncoder;
use ingest_flow_logs::config::Config;
use ingest_flow_logs::{Deps, error_chain, invoke};
use rejectwatch_aws::dynamodb::DynamoCounterStore;
use rejectwatch_aws::s3::S3ObjectSource;
use rejectwatch_core::counters::StoredCounter;
use rejectwatch_core::decode::decode_s3_key;
use rejectwatch_core::flow_log::FlowFormat;
use rejectwatch_testkit::generate::{
    Expected, FlowLogGenerator, GeneratorConfig, write_parquet_lines,
};
use rejectwatch_tests::assert_counts_match;
use rejectwatch_tests::lambda_invoke::InvokeApi;
use rejectwatch_tests::moto::{MotoServer, counter_rows, create_counters_table};
use serde_json::{Value, json};

const TABLE: &str = "rejectwatch-counters";
const BUCKET: &str = "rejectwatch-flow-logs";
const QUEUE: &str = "rejectwatch-flow-log-objects";
const FUNCTION: &str = "rejectwatch-ingest-flow-logs";
const SINCE: &str = "2024-05-01T00:00:00Z";
const UNTIL: &str = "2024-05-02T00:00:00Z";

type Rows = std::collections::HashMap<(String, u64), StoredCounter>;

/// A key as VPC Flow Logs names it, in the plain layout.
fn plain_key(stamp: &str, hash: &str) -> String {
    format!(
        "AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/01/123456789012_vpcflowlogs_us-east-1_fl-0a1b2c3d_{stamp}_{hash}.log.gz"
    )
}

/// A key with Hive-compatible prefixes and hourly partitions (`=` is `%3D` in a
/// notification).
fn hive_key(stamp: &str, hash: &str) -> String {
    format!(
        "AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=us-east-1/year=2024/month=05/day=01/hour=12/123456789012_vpcflowlogs_us-east-1_fl-0a1b2c3d_{stamp}_{hash}.log.gz"
    )
}

/// The four objects inside 2024-05-01 in both layouts (one with a space in its name, a
/// `+` in its notification), one of the day before, and a CloudTrail object.
fn bucket_keys() -> (Vec<String>, Vec<String>) {
    let in_range = vec![
        plain_key("20240501T1205Z", "a1b2c3d4"),
        plain_key("20240501T1210Z", "e5f6 a7b8"),
        hive_key("20240501T1215Z", "c9d0e1f2"),
        hive_key("20240501T1220Z", "a3b4c5d6").replace(".log.gz", ".log.parquet"),
    ];
    let others = vec![
        plain_key("20240430T2355Z", "f7e8d9c0"),
        "AWSLogs/123456789012/CloudTrail/us-east-1/2024/05/01/123456789012_CloudTrail_us-east-1_20240501T1205Z_x.json.gz".to_owned(),
    ];
    (in_range, others)
}

/// `parts` gzip objects sharing one generated delivery's records round robin, and the
/// truth about all of them; the object at `parquet`, if any, is Parquet instead (the
/// fourth key of [`bucket_keys`] ends in `.log.parquet`).
fn generated_objects(
    parts: usize,
    records: u64,
    seed: u64,
    parquet: Option<usize>,
) -> (Vec<Vec<u8>>, Expected) {
    let mut generator = FlowLogGenerator::new(GeneratorConfig {
        records,
        seed,
        benign_sources: 30,
        // 2024-05-01T12:00:00Z, one five-minute window.
        start_time: 1_714_564_800,
        duration_seconds: 290,
        ..GeneratorConfig::default()
    });
    let header = FlowFormat::default().header_line();
    let mut texts = vec![format!("{header}\n"); parts];
    let mut line = String::new();
    let mut index = 0;
    while generator.next_line(&mut line) {
        texts[index % parts].push_str(&line);
        texts[index % parts].push('\n');
        index += 1;
    }
    let objects = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            if Some(index) == parquet {
                let mut parquet = Vec::new();
                let records = text.lines().skip(1);
                write_parquet_lines(&FlowFormat::default(), records, &mut parquet, 1_000)
                    .expect("writing Parquet");
                return parquet;
            }
            let mut gzip = GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gzip.write_all(text.as_bytes()).expect("compressing");
            gzip.finish().expect("compressing")
        })
        .collect();
    (objects, generator.into_expected())
}

struct Stack {
    moto: MotoServer,
    runtime: tokio::runtime::Runtime,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    queue_url: String,
    deps: Arc<Deps<DynamoCounterStore, S3ObjectSource>>,
}

impl Stack {
    /// A fresh moto server with the table, the bucket and a queue (which S3 does not
    /// notify: only replay puts messages in it).
    fn start() -> Stack {
        let moto = MotoServer::start();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let sdk = runtime.block_on(moto.sdk_config());
        let s3 = aws_sdk_s3::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let queue_url = runtime.block_on(async {
            create_counters_table(&dynamodb, TABLE).await;
            s3.create_bucket().bucket(BUCKET).send().await.unwrap();
            let queue = sqs.create_queue().queue_name(QUEUE).send().await.unwrap();
            queue.queue_url.expect("a queue URL")
        });
        let config =
            Config::from_lookup(|name| (name == "COUNTERS_TABLE_NAME").then(|| TABLE.to_owned()))
                .expect("config");
        let deps = Deps::new(
            DynamoCounterStore::new(
                dynamodb.clone(),
                TABLE,
                config.retention_seconds,
                config.write_concurrency,
            ),
            S3ObjectSource::new(s3.clone()),
            config,
        );
        Stack {
            moto,
            runtime,
            s3,
            sqs,
            dynamodb,
            queue_url,
            deps: Arc::new(deps),
        }
    }

    fn put_objects(&self, keys: &[String], objects: &[Vec<u8>]) {
        self.runtime.block_on(async {
            for (key, object) in keys.iter().zip(objects) {
                self.s3
                    .put_object()
                    .bucket(BUCKET)
                    .key(key)
                    .body(ByteStream::from(object.clone()))
                    .send()
                    .await
                    .expect("putting an object");
            }
        });
    }

    /// `rejectwatch replay ARGS` with the SDK pointed at moto (and any `env` added).
    fn replay(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rejectwatch"))
            .arg("replay")
            .args(args)
            .env("AWS_ENDPOINT_URL", &self.moto.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env_remove("COUNTERS_TABLE_NAME")
            .env_remove("FLOW_LOG_KEY_PATTERN")
            .envs(env.iter().copied())
            .output()
            .expect("running rejectwatch")
    }

    /// The JSON report of a replay that must succeed.
    fn replay_json(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let output = self.replay(&[args, &["--json"]].concat(), env);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("a JSON report")
    }

    /// Hands every message in the queue to the ingest handler, ten at a time as Lambda's
    /// event source mapping does, deletes them, and returns their bodies.
    fn drain_queue(&self) -> Vec<String> {
        self.runtime.block_on(async {
            let mut bodies = Vec::new();
            loop {
                let received = self
                    .sqs
                    .receive_message()
                    .queue_url(&self.queue_url)
                    .max_number_of_messages(10)
                    .send()
                    .await
                    .expect("receiving messages");
                let messages = received.messages.unwrap_or_default();
                if messages.is_empty() {
                    return bodies;
                }
                let records: Vec<Value> = messages
                    .iter()
                    .map(|message| {
                        json!({"messageId": message.message_id(), "body": message.body(),
                            "eventSource": "aws:sqs"})
                    })
                    .collect();
                let response = invoke(json!({"Records": records}), &self.deps)
                    .await
                    .expect("ingesting the queue's messages");
                assert_eq!(response, json!({"batchItemFailures": []}));
                for message in &messages {
                    self.sqs
                        .delete_message()
                        .queue_url(&self.queue_url)
                        .receipt_handle(message.receipt_handle().unwrap_or_default())
                        .send()
                        .await
                        .expect("deleting a message");
                    bodies.push(message.body().unwrap_or_default().to_owned());
                }
            }
        })
    }

    fn counters(&self) -> Rows {
        self.runtime.block_on(counter_rows(&self.dynamodb, TABLE))
    }

    /// A stand-in for Lambda that runs the ingest handler on each invocation, failing the
    /// first invocation for a key that contains `fail_once`.
    fn invoke_api(&self, fail_once: &'static str) -> InvokeApi {
        let deps = Arc::clone(&self.deps);
        let runtime = self.runtime.handle().clone();
        let failed = AtomicBool::new(false);
        InvokeApi::start(move |name, payload| {
            assert_eq!(name, FUNCTION);
            let key = payload["Records"][0]["s3"]["object"]["key"].to_string();
            if key.contains(fail_once) && !failed.swap(true, Ordering::SeqCst) {
                return Err(("Ingest.Fetch".into(), format!("{key}: connection reset")));
            }
            runtime
                .block_on(invoke(payload, &deps))
                .map_err(|error| (error.error_type().to_owned(), error_chain(&error)))
        })
    }
}

/// A checkpoint file's path in a fresh temporary directory, which lives as long as the
/// returned handle.
fn checkpoint_path() -> (tempfile::TempDir, String) {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("replay.json");
    let path = path.to_str().unwrap().to_owned();
    (directory, path)
}

/// The decoded keys of S3 notifications (SQS message bodies).
fn notified_keys(bodies: &[String]) -> BTreeSet<String> {
    bodies
        .iter()
        .map(|body| {
            let event: Value = serde_json::from_str(body).expect("a JSON body");
            let raw = event["Records"][0]["s3"]["object"]["key"].as_str().unwrap();
            decode_s3_key(raw).expect("an encoded key")
        })
        .collect()
}

fn counts(report: &Value, fields: &[&str]) -> Vec<u64> {
    fields
        .iter()
        .map(|field| report[*field].as_u64().unwrap_or_else(|| panic!("{field}")))
        .collect()
}

const TALLY: [&str; 5] = [
    "listed",
    "not_flow_logs",
    "skipped_by_time",
    "already_counted",
    "handed_over",
];

#[test]
fn replay_through_the_queue_counts_each_object_once_and_a_second_replay_sends_nothing() {
    let stack = Stack::start();
    let (in_range, others) = bucket_keys();
    let (objects, expected) = generated_objects(4, 4_000, 31, Some(3));
    stack.put_objects(&in_range, &objects);
    let (stray, _) = generated_objects(2, 200, 32, None);
    stack.put_objects(&others, &stray);
    let queue_url = stack.queue_url.clone();
    let args = [
        "--bucket", BUCKET, "--prefix", "AWSLogs/", "--since", SINCE, "--until", UNTIL, "--queue",
        &queue_url, "--table", TABLE,
    ];

    let first = stack.replay_json(&args, &[]);
    assert_eq!(counts(&first, &TALLY), [6, 1, 1, 0, 4]);
    let bytes: usize = objects.iter().map(Vec::len).sum();
    assert_eq!(first["bytes_handed_over"], bytes);
    let bodies = stack.drain_queue();
    assert_eq!(notified_keys(&bodies), in_range.iter().cloned().collect());
    let counted = stack.counters();
    assert_counts_match(&counted, &expected);

    // Every object is marked counted now: nothing is sent.
    let second = stack.replay_json(&args, &[]);
    assert_eq!(counts(&second, &TALLY), [6, 1, 1, 4, 0]);
    assert!(stack.drain_queue().is_empty());
    assert_eq!(stack.counters(), counted);
    let text = stack.replay(&args, &[]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("  already counted   4\n"), "{text}");
    assert!(
        text.contains("  handed over       0 objects, 0 B\n"),
        "{text}"
    );

    // Without the table replay cannot tell, and sends all four again; the function counts
    // none of them twice.
    let unchecked = stack.replay_json(&args[..args.len() - 2], &[]);
    assert_eq!(counts(&unchecked, &TALLY), [6, 1, 1, 0, 4]);
    assert_eq!(stack.drain_queue().len(), 4);
    assert_eq!(stack.counters(), counted);

    // The same notifications sent again by hand: still counted once.
    stack.runtime.block_on(async {
        for body in &bodies {
            stack
                .sqs
                .send_message()
                .queue_url(&stack.queue_url)
                .message_body(body)
                .send()
                .await
                .expect("sending a notification again");
        }
    });
    assert_eq!(stack.drain_queue().len(), 4);
    assert_eq!(stack.counters(), counted);
    // And handed to the function directly, each is a duplicate it does not read.
    for body in &bodies {
        let event: Value = serde_json::from_str(body).unwrap();
        let summary = stack
            .runtime
            .block_on(invoke(event, &stack.deps))
            .expect("a direct delivery");
        assert_eq!(
            (
                summary["duplicates"].as_u64(),
                summary["deliveries"].as_u64()
            ),
            (Some(1), Some(0))
        );
    }
    assert_counts_match(&stack.counters(), &expected);
}

#[test]
fn a_dry_run_lists_what_it_would_send_and_sends_nothing() {
    let stack = Stack::start();
    let (in_range, others) = bucket_keys();
    let (objects, _) = generated_objects(4, 400, 33, Some(3));
    stack.put_objects(&in_range, &objects);
    stack.put_objects(&others, &objects);
    let queue_url = stack.queue_url.clone();
    // The first object (12:05) counted beforehand.
    let until_first = "2024-05-01T12:06:00Z";
    let first = stack.replay_json(
        &[
            "--bucket",
            BUCKET,
            "--since",
            SINCE,
            "--until",
            until_first,
            "--queue",
            &queue_url,
        ],
        &[],
    );
    assert_eq!(first["handed_over"], 1);
    stack.drain_queue();

    let (_directory, checkpoint) = checkpoint_path();
    let checkpoint = checkpoint.as_str();
    let args = [
        "--bucket",
        BUCKET,
        "--since",
        SINCE,
        "--until",
        UNTIL,
        "--queue",
        &queue_url,
        "--table",
        TABLE,
        "--dry-run",
        "--checkpoint",
        checkpoint,
    ];
    let report = stack.replay_json(&args, &[]);
    assert_eq!(counts(&report, &TALLY), [6, 1, 1, 1, 3]);
    assert_eq!(report["dry_run"], true);
    let planned: Vec<(String, String)> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|object| {
            (
                object["key"].as_str().unwrap().to_owned(),
                object["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut wanted: Vec<(String, String)> = in_range
        .iter()
        .map(|key| (key.clone(), "send".to_owned()))
        .collect();
    wanted[0].1 = "already_counted".into();
    assert_eq!(planned, wanted);

    let text = stack.replay(&args, &[]);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!("already counted  s3://{BUCKET}/{}", in_range[0])),
        "{text}"
    );
    assert!(lines[1].starts_with("would send       s3://"), "{text}");
    assert!(
        text.contains("dry run: s3://rejectwatch-flow-logs/ to queue"),
        "{text}"
    );
    assert!(text.contains("would hand over   3 objects"), "{text}");

    assert!(stack.drain_queue().is_empty(), "a dry run sends nothing");
    assert!(!Path::new(checkpoint).exists(), "nor writes a checkpoint");

    // A versioned bucket's notifications name versions, which replay does not send.
    stack.runtime.block_on(async {
        let versioning = aws_sdk_s3::types::VersioningConfiguration::builder()
            .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
            .build();
        stack
            .s3
            .create_bucket()
            .bucket("versioned")
            .send()
            .await
            .unwrap();
        stack
            .s3
            .put_bucket_versioning()
            .bucket("versioned")
            .versioning_configuration(versioning)
            .send()
            .await
            .unwrap();
    });
    let refused = stack.replay(
        &["--bucket", "versioned", "--queue", &queue_url, "--dry-run"],
        &[],
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("s3://versioned: versioning is Enabled"),
        "{stderr}"
    );
}

#[test]
fn an_interrupted_function_replay_resumes_after_its_checkpoint() {
    let stack = Stack::start();
    // Twelve objects, five minutes apart: a batch of ten, then two.
    let keys: Vec<String> = (0..12)
        .map(|index| {
            plain_key(
                &format!("20240501T12{:02}Z", index * 5),
                &format!("h{index:02}"),
            )
        })
        .collect();
    let (objects, expected) = generated_objects(keys.len(), 3_000, 34, None);
    stack.put_objects(&keys, &objects);
    let api = stack.invoke_api("h10");
    let (_directory, checkpoint) = checkpoint_path();
    let checkpoint_text = checkpoint.as_str();
    let args = [
        "--bucket",
        BUCKET,
        "--prefix",
        "AWSLogs/123456789012/",
        "--function",
        FUNCTION,
        "--table",
        TABLE,
        "--checkpoint",
        checkpoint_text,
    ];
    let lambda = [("AWS_ENDPOINT_URL_LAMBDA", api.endpoint())];
    let lambda: Vec<(&str, &str)> = lambda.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // The eleventh object's invocation fails: the replay stops, naming it.
    let failed = stack.replay(&args, &lambda);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains(&format!(
            "invoking function {FUNCTION} for s3://{BUCKET}/{}: function error (Unhandled): Ingest.Fetch",
            keys[10]
        )),
        "{stderr}"
    );
    let saved: Value = serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    assert_eq!(
        saved["last_key"],
        keys[9].as_str(),
        "the first batch is done"
    );

    // The rerun starts after the tenth; the twelfth was counted beside the failure.
    let resumed = stack.replay_json(&args, &lambda);
    assert_eq!(resumed["started_after"], keys[9].as_str());
    assert_eq!(counts(&resumed, &TALLY), [2, 0, 0, 1, 1]);
    assert_eq!(resumed["function"]["deliveries"], 1);
    assert!(resumed["function"]["records"].as_u64().unwrap() > 0);
    assert_eq!(api.invocations(), 13);
    assert_counts_match(&stack.counters(), &expected);
    let saved: Value = serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    assert_eq!(saved["last_key"], keys[11].as_str());

    // Nothing is left after the checkpoint.
    let again = stack.replay_json(&args, &lambda);
    assert_eq!(counts(&again, &TALLY), [0, 0, 0, 0, 0]);

    // The checkpoint belongs to its bucket and prefix.
    let other = stack.replay(
        &[
            "--bucket",
            BUCKET,
            "--function",
            FUNCTION,
            "--checkpoint",
            checkpoint_text,
        ],
        &lambda,
    );
    assert!(!other.status.success());
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(
        stderr.contains(&format!(
            "checkpoint {checkpoint_text} is of s3://{BUCKET}/AWSLogs/123456789012/"
        )),
        "{stderr}"
    );
}
