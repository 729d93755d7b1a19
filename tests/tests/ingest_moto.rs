//! The ingest handler against real HTTP servers: moto's DynamoDB, S3 and SQS on loopback,
//! reached through the real SDK clients and adapters.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use ingest_flow_logs::config::Config;
use ingest_flow_logs::{Deps, invoke};
use rejectwatch_aws::dynamodb::DynamoCounterStore;
use rejectwatch_aws::s3::S3ObjectSource;
use rejectwatch_core::counters::{
    BatchId, CounterBatch, CounterUpdate, EXACT_VALUES, ROWS_PER_CHUNK, StoredCounter,
};
use rejectwatch_core::ports::CounterStore;
use rejectwatch_core::sketch::within_expected_error;
use rejectwatch_core::tally::TallyOptions;
use rejectwatch_testkit::generate::{Expected, FlowLogGenerator, GeneratorConfig};
use rejectwatch_tests::assert_counts_match;
use rejectwatch_tests::fault_proxy::FaultProxy;
use rejectwatch_tests::moto::{MotoServer, counter_rows, create_counters_table};
use serde_json::{Value, json};

const TABLE: &str = "rejectwatch-counters";
const BUCKET: &str = "rejectwatch-flow-logs";
const QUEUE: &str = "rejectwatch-flow-log-objects";

struct Stack {
    _moto: MotoServer,
    sdk: SdkConfig,
    dynamodb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl Stack {
    /// A fresh moto server with the table, the bucket, and a queue that receives the
    /// bucket's object-created notifications.
    async fn start() -> Stack {
        let moto = MotoServer::start();
        let sdk = moto.sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let s3 = aws_sdk_s3::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        create_counters_table(&dynamodb, TABLE).await;
        s3.create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("creating the bucket");
        let queue_url = sqs
            .create_queue()
            .queue_name(QUEUE)
            .send()
            .await
            .expect("creating the queue")
            .queue_url
            .expect("a queue URL");
        let notification = NotificationConfiguration::builder()
            .queue_configurations(
                QueueConfiguration::builder()
                    .queue_arn(format!("arn:aws:sqs:us-east-1:123456789012:{QUEUE}"))
                    .events(Event::S3ObjectCreated)
                    .build()
                    .expect("queue configuration"),
            )
            .build();
        s3.put_bucket_notification_configuration()
            .bucket(BUCKET)
            .notification_configuration(notification)
            .send()
            .await
            .expect("configuring notifications");
        Stack {
            _moto: moto,
            sdk,
            dynamodb,
            s3,
            sqs,
            queue_url,
        }
    }

    fn deps(&self, extra: &[(&str, &str)]) -> Deps<DynamoCounterStore, S3ObjectSource> {
        let mut settings: HashMap<String, String> =
            HashMap::from([("COUNTERS_TABLE_NAME".into(), TABLE.into())]);
        settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_lookup(|name| settings.get(name).cloned()).expect("config");
        Deps::new(
            self.store(&config),
            S3ObjectSource::new(aws_sdk_s3::Client::new(&self.sdk)),
            config,
        )
    }

    /// Ingest dependencies whose DynamoDB and S3 requests pass through a fault proxy.
    async fn through_proxy(
        &self,
        extra: &[(&str, &str)],
    ) -> (FaultProxy, Deps<DynamoCounterStore, S3ObjectSource>) {
        let proxy = FaultProxy::start(&self._moto.endpoint, 1, 0.0);
        let sdk = proxy.sdk_config().await;
        let mut deps = self.deps(extra);
        deps.store = DynamoCounterStore::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            TABLE,
            deps.config.retention_seconds,
            deps.config.write_concurrency,
        );
        deps.objects = S3ObjectSource::new(aws_sdk_s3::Client::new(&sdk));
        (proxy, deps)
    }

    fn store(&self, config: &Config) -> DynamoCounterStore {
        DynamoCounterStore::new(
            self.dynamodb.clone(),
            TABLE,
            config.retention_seconds,
            config.write_concurrency,
        )
    }

    async fn put_object(&self, key: &str, bytes: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .expect("putting the object");
    }

    /// The object-created notifications waiting in the queue, as a Lambda SQS event
    /// (S3's test event, if any, included: the handler must cope with it).
    async fn receive_sqs_event(&self, wanted: usize) -> Value {
        let mut records = Vec::new();
        for _ in 0..20 {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receiving messages");
            for message in output.messages.unwrap_or_default() {
                let body = message.body.unwrap_or_default();
                let is_object = body.contains("ObjectCreated");
                records.push(json!({
                    "messageId": message.message_id.unwrap_or_default(),
                    "body": body,
                    "eventSource": "aws:sqs",
                }));
                if is_object
                    && records
                        .iter()
                        .filter(|r| r["body"].as_str().unwrap_or("").contains("ObjectCreated"))
                        .count()
                        >= wanted
                {
                    return json!({"Records": records});
                }
            }
        }
        panic!("{wanted} object notifications did not arrive in the queue");
    }

    /// Every counter row, read back the way a user would.
    async fn counters(&self) -> HashMap<(String, u64), StoredCounter> {
        counter_rows(&self.dynamodb, TABLE).await
    }
}

/// A generated object of one five-minute delivery from a few hundred sources: moto applies
/// about a hundred updates a second, so the row count, not the record count, sets the
/// test's duration.
fn generate(records: u64, seed: u64) -> (Vec<u8>, Expected) {
    let mut generator = generator(records, seed);
    let mut object = Vec::new();
    generator.write_gzip(&mut object, 1).expect("generating");
    (object, generator.into_expected())
}

fn generator(records: u64, seed: u64) -> FlowLogGenerator {
    FlowLogGenerator::new(GeneratorConfig {
        records,
        seed,
        benign_sources: 300,
        start_time: 1_700_000_100,
        duration_seconds: 290,
        ..GeneratorConfig::default()
    })
}

fn flow_log_key(name: &str) -> String {
    format!(
        "AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=us-east-1/year=2024/month=05/day=01/{name}.log.gz"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_batch_is_written_to_dynamodb() {
    let stack = Stack::start().await;
    let deps = stack.deps(&[]);
    let event: Value =
        serde_json::from_str(include_str!("../../events/cloudwatch-logs-rejects.json")).unwrap();
    let summary = invoke(event.clone(), &deps).await.expect("first delivery");
    assert_eq!(summary["rejects"], 6);
    let rows = stack.counters().await;
    let scanner = &rows[&("198.51.100.7".to_owned(), 1_714_566_000)];
    assert_eq!(scanner.rejects, 4);
    assert_eq!(scanner.sample_ports, vec![22, 23, 445, 3389]);
    assert_eq!(scanner.distinct_dst_ports(), (4, true));
    assert_eq!(scanner.interfaces, vec!["eni-1235b8ca123456789"]);
    assert_eq!(scanner.protocols, vec![(6, 4)]);
    assert_eq!(
        (scanner.first_seen(), scanner.last_seen()),
        (Some(1_714_566_011), Some(1_714_566_074))
    );

    let again = invoke(event, &deps).await.expect("second delivery");
    assert_eq!(again["duplicates"], 1);
    assert_eq!(stack.counters().await, rows);

    // The evaluator's access path: the window's rows, from the index, without a scan.
    let window = deps
        .store
        .window_counters(1_714_566_000, deps.config.index_shards, 2)
        .await
        .unwrap();
    assert_eq!(window.len(), 1);
    assert_eq!(window[0].source, Some("198.51.100.7".parse().unwrap()));
    let history = deps
        .store
        .source_counters(
            "198.51.100.7".parse().unwrap(),
            1_714_500_000,
            1_714_600_000,
        )
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_put_notification_from_the_queue_is_counted_exactly() {
    let stack = Stack::start().await;
    let deps = stack.deps(&[]);
    let (object, expected) = generate(20_000, 21);
    stack.put_object(&flow_log_key("first"), object).await;
    let event = stack.receive_sqs_event(1).await;
    let response = invoke(event, &deps)
        .await
        .expect("handling the queue's messages");
    assert_eq!(response, json!({"batchItemFailures": []}));
    assert_counts_match(&stack.counters().await, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_object_in_an_sqs_batch_fails_only_its_message() {
    let stack = Stack::start().await;
    let deps = stack.deps(&[]);
    let (object, expected) = generate(5_000, 22);
    stack.put_object(&flow_log_key("good"), object).await;
    let mut corrupt = generate(1_000, 23).0;
    corrupt.truncate(corrupt.len() / 3);
    stack.put_object(&flow_log_key("corrupt"), corrupt).await;
    let event = stack.receive_sqs_event(2).await;
    let response = invoke(event.clone(), &deps)
        .await
        .expect("handling the batch");
    let failures = response["batchItemFailures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    let failed_id = failures[0]["itemIdentifier"].as_str().unwrap();
    let failed = event["Records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["messageId"] == failed_id)
        .unwrap();
    assert!(failed["body"].as_str().unwrap().contains("corrupt"));
    assert_counts_match(&stack.counters().await, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_deliveries_count_once() {
    let stack = Stack::start().await;
    let (object, expected) = generate(20_000, 24);
    let key = flow_log_key("concurrent");
    stack.put_object(&key, object).await;
    let event = stack.receive_sqs_event(1).await;
    let (first, second) = (stack.deps(&[]), stack.deps(&[]));
    let (a, b) = tokio::join!(
        invoke(event.clone(), &first),
        invoke(event.clone(), &second)
    );
    assert_eq!(a.unwrap(), json!({"batchItemFailures": []}));
    assert_eq!(b.unwrap(), json!({"batchItemFailures": []}));
    invoke(event, &first).await.expect("a third, late delivery");
    assert_counts_match(&stack.counters().await, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applies_of_one_batch_apply_each_chunk_once() {
    let stack = Stack::start().await;
    let (object, expected) = generate(20_000, 27);
    let tally = rejectwatch_tests::tally_object(&object, TallyOptions::default()).unwrap();
    let id = BatchId::for_s3_object(BUCKET, "concurrent-apply", None, Some("e"));
    let (first, second) = (stack.deps(&[]), stack.deps(&[]));
    let batch = CounterBatch::from_tally(id, &tally, first.config.index_shards);
    let rows = (batch.updates.len() + batch.gaps.len()) as u64;
    let (a, b) = tokio::join!(first.store.apply(&batch), second.store.apply(&batch));
    let (a, b) = (a.expect("first apply"), b.expect("second apply"));
    // Both ran through every chunk; each chunk changed the table exactly once.
    assert_eq!(a.applied + b.applied, rows);
    assert_eq!(a.already_applied + b.already_applied, rows);
    assert_counts_match(&stack.counters().await, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_that_chunks_differently_is_refused_not_counted_twice() {
    let stack = Stack::start().await;
    let deps = stack.deps(&[]);
    let (object, _) = generate(5_000, 28);
    let tally = rejectwatch_tests::tally_object(&object, TallyOptions::default()).unwrap();
    let id = BatchId::for_s3_object(BUCKET, "reconfigured", None, Some("e"));
    let batch = CounterBatch::from_tally(id, &tally, deps.config.index_shards);
    deps.store.apply(&batch).await.expect("the first delivery");
    let before = stack.counters().await;
    // The same delivery, tallied under another configuration: one row fewer shifts every
    // chunk's rows.
    let mut shifted = batch.clone();
    shifted.updates.remove(0);
    let error = deps.store.apply(&shifted).await.unwrap_err();
    assert!(
        rejectwatch_core::ports::error_chain(&error).contains("other rows"),
        "{}",
        rejectwatch_core::ports::error_chain(&error)
    );
    assert_eq!(stack.counters().await, before);
    // Delivered unchanged, it is simply already applied.
    let again = deps.store.apply(&batch).await.expect("a plain redelivery");
    assert_eq!(again.applied, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_partial_write_then_retry_equals_one_clean_run() {
    let stack = Stack::start().await;
    let (object, expected) = generate(20_000, 25);
    let key = flow_log_key("crash");
    stack.put_object(&key, object.clone()).await;
    let event = stack.receive_sqs_event(1).await;
    // The first attempt writes through a connection that breaks after two of its chunk
    // transactions (one at a time): whole chunks are all a crash can leave.
    let (proxy, crashing) = stack.through_proxy(&[("WRITE_CONCURRENCY", "1")]).await;
    proxy.configure(&json!({"rules": [
        {"match": "TransactWriteItems", "kind": "drop", "skip": 2, "times": 1000}
    ]}));
    let response = invoke(event.clone(), &crashing)
        .await
        .expect("a partial attempt");
    assert_eq!(response["batchItemFailures"].as_array().unwrap().len(), 1);
    let partial: u64 = stack.counters().await.values().map(|row| row.rejects).sum();
    assert!(partial > 0 && partial < expected.rejects, "{partial}");

    let deps = stack.deps(&[]);
    let response = invoke(event, &deps).await.expect("the retry");
    assert_eq!(response, json!({"batchItemFailures": []}));
    assert_counts_match(&stack.counters().await, &expected);
}

/// Issue 13, 3: a first attempt applied chunks 0 and 1 and died; a configuration change
/// adds a row that sorts first, so the retry's chunks hold other rows, and its chunk 2
/// has no ledger item. The manifest refuses the whole retry before any chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_an_extra_row_after_a_partial_apply_applies_nothing() {
    let stack = Stack::start().await;
    let updates: Vec<CounterUpdate> = (0..250u32)
        .map(|i| {
            rejectwatch_tests::counter_update(
                &format!("10.1.{}.{}", i / 200, i % 200 + 1),
                1_700_000_100,
                10,
                1,
                1,
            )
        })
        .collect();
    let id = BatchId::for_s3_object(BUCKET, "partial-then-reconfigured", None, Some("e"));
    let batch = CounterBatch {
        id,
        updates,
        gaps: Vec::new(),
    };
    assert_eq!(batch.chunks().len(), 3);
    let (proxy, crashing) = stack.through_proxy(&[("WRITE_CONCURRENCY", "1")]).await;
    proxy.configure(&json!({"rules": [
        {"match": "TransactWriteItems", "kind": "drop", "skip": 2, "times": 1000}
    ]}));
    crashing
        .store
        .apply(&batch)
        .await
        .expect_err("the attempt that dies");
    let applied = stack.counters().await;
    assert_eq!(applied.len(), 2 * ROWS_PER_CHUNK);

    let mut reconfigured = batch.clone();
    reconfigured.updates.insert(
        0,
        rejectwatch_tests::counter_update("10.0.0.1", 1_700_000_100, 10, 1, 1),
    );
    let deps = stack.deps(&[]);
    let error = deps.store.apply(&reconfigured).await.unwrap_err();
    assert!(!error.is_retryable());
    let message = rejectwatch_core::ports::error_chain(&error);
    assert!(
        message.contains("other rows (250 then, 251 now)"),
        "{message}"
    );
    assert_eq!(stack.counters().await, applied, "not a single row changed");
}

/// Issue 13, 3: a delivery fully applied but never marked done, redelivered with one row
/// more (crossing a multiple of 99 rows), must not apply the new last chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_redelivery_of_a_fully_applied_batch_applies_nothing() {
    let stack = Stack::start().await;
    let updates: Vec<CounterUpdate> = (0..ROWS_PER_CHUNK as u32)
        .map(|i| {
            rejectwatch_tests::counter_update(&format!("10.2.0.{}", i + 1), 1_700_000_100, 10, 1, 1)
        })
        .collect();
    let id = BatchId::for_s3_object(BUCKET, "applied-not-done", None, Some("e"));
    let batch = CounterBatch {
        id,
        updates,
        gaps: Vec::new(),
    };
    let deps = stack.deps(&[]);
    deps.store.apply(&batch).await.expect("the first delivery");
    let applied = stack.counters().await;
    let mut longer = batch.clone();
    longer.updates.insert(
        0,
        rejectwatch_tests::counter_update("10.0.0.1", 1_700_000_100, 10, 1, 1),
    );
    assert_eq!(longer.chunks().len(), 2);
    deps.store.apply(&longer).await.expect_err("refused");
    assert_eq!(stack.counters().await, applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_record_object_matches_the_generator_truth() {
    let stack = Stack::start().await;
    let deps = stack.deps(&[("WRITE_CONCURRENCY", "32")]);
    let (object, expected) = generate(1_000_000, 26);
    assert!(
        expected.per_source.len() < 2_000,
        "{} rows",
        expected.per_source.len()
    );
    stack.put_object(&flow_log_key("million"), object).await;
    let event = stack.receive_sqs_event(1).await;
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(1200), invoke(event, &deps))
        .await
        .expect("ingesting within 20 minutes")
        .expect("ingesting");
    eprintln!(
        "1M-record object ingested into moto in {:?}",
        started.elapsed()
    );
    assert_eq!(response, json!({"batchItemFailures": []}));
    let rows = stack.counters().await;
    assert_counts_match(&rows, &expected);
    let counted: u64 = rows.values().map(|row| row.rejects).sum();
    assert_eq!(counted, expected.rejects);
}

/// Issue 13, 5: free text from a log line never becomes a key or an attribute DynamoDB
/// refuses. An interface id of 2 KB in a NODATA line (a gap row's sort key) and one of
/// 300 KB in a REJECT line (the counter item's interfaces) are counted malformed lines;
/// the rest of the delivery is counted, and its redelivery adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_interface_ids_are_malformed_lines_not_a_poisoned_delivery() {
    use rejectwatch_core::decode::LogEntry;
    let stack = Stack::start().await;
    let deps = stack.deps(&[]);
    let line = |interface: &str, source: &str, status: &str| {
        format!(
            "2 123456789012 {interface} {source} 10.0.0.5 40000 22 6 1 40 1714566011 1714566070 REJECT {status}"
        )
    };
    let messages = [
        line("eni-0a1b2c3d4e5f60001", "198.51.100.7", "OK"),
        format!(
            "2 123456789012 eni-{} - - - - - - - 1714566011 1714566070 - NODATA",
            "b".repeat(2_048)
        ),
        line(
            &format!("eni-{}", "c".repeat(300 * 1024)),
            "198.51.100.8",
            "OK",
        ),
        line("eni-0a1b2c3d4e5f60002", "198.51.100.9", "OK"),
    ];
    let events: Vec<LogEntry> = messages
        .iter()
        .enumerate()
        .map(|(index, message)| {
            let mut event = LogEntry::default();
            event.id = format!("3700000000000000000000000000000000000000000000000000000{index}");
            event.timestamp = 1_714_566_080_000;
            event.message = message.clone();
            event
        })
        .collect();
    let payload = rejectwatch_testkit::generate::subscription_payload("/vpc/flow-logs", events);
    let event: Value = serde_json::from_str(&payload).unwrap();
    let summary = invoke(event.clone(), &deps).await.expect("the delivery");
    assert_eq!(
        (summary["malformed"].as_u64(), summary["rejects"].as_u64()),
        (Some(2), Some(2))
    );
    let samples = summary["malformed_samples"].to_string();
    assert!(
        samples.contains("interface-id: 2052 bytes, longer than the 64 stored"),
        "{samples}"
    );
    let rows = stack.counters().await;
    let sources: Vec<&str> = rows.keys().map(|(source, _)| source.as_str()).collect();
    assert_eq!(rows.len(), 2, "{sources:?}");
    assert!(rows.contains_key(&("198.51.100.7".to_owned(), 1_714_566_000)));
    let again = invoke(event, &deps).await.expect("the redelivery");
    assert_eq!(again["duplicates"], 1);
    assert_eq!(stack.counters().await, rows);
}

/// An object whose body breaks off halfway (the connection drops mid-stream) fails its
/// message, and the redelivery counts the object exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_whose_body_breaks_off_is_counted_once_on_redelivery() {
    let stack = Stack::start().await;
    let (object, expected) = generate(20_000, 29);
    stack.put_object(&flow_log_key("truncated"), object).await;
    let event = stack.receive_sqs_event(1).await;
    let (proxy, deps) = stack.through_proxy(&[]).await;
    proxy.configure(&json!({"rules": [
        {"match": "s3.GetObject", "kind": "truncate", "times": 1}
    ]}));
    let response = invoke(event.clone(), &deps)
        .await
        .expect("the first attempt");
    assert_eq!(response["batchItemFailures"].as_array().unwrap().len(), 1);
    assert_eq!(proxy.stats()["truncate"], 1);
    assert!(
        stack.counters().await.is_empty(),
        "nothing counted from half an object"
    );
    let response = invoke(event, &deps).await.expect("the redelivery");
    assert_eq!(response, json!({"batchItemFailures": []}));
    assert_counts_match(&stack.counters().await, &expected);
}

/// Issue 14: exact distinct values through DynamoDB's conditional set ADD. Deliveries to
/// one row that repeat the same ports keep their union exact; the set never holds more than
/// `EXACT_VALUES` values and the marker, however many deliveries add to it; a row pushed
/// over counts by its sketch; and the stored rows equal the in-memory store's merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_values_stay_exact_and_bounded_in_dynamodb() {
    let stack = Stack::start().await;
    let deps = stack.deps(&[]);
    let window = 1_700_000_100;
    let delivery = |name: &str, source: &str, ports: std::ops::RangeInclusive<u16>| {
        let mut update = rejectwatch_tests::counter_update(source, window, 1, 1, 1);
        update = update.with_destinations(ports, [0x0a00_0001]);
        CounterBatch {
            id: BatchId::for_s3_object(BUCKET, name, None, Some("e")),
            updates: vec![update],
            gaps: Vec::new(),
        }
    };
    let batches = [
        // The same 40 ports, three times, then 24 more: 64, exactly at the bound.
        delivery("a1", "198.51.100.1", 1..=40),
        delivery("a2", "198.51.100.1", 1..=40),
        delivery("a3", "198.51.100.1", 11..=50),
        delivery("a4", "198.51.100.1", 41..=64),
        // 40 then 25 new ones: 65, over.
        delivery("b1", "198.51.100.2", 1..=40),
        delivery("b2", "198.51.100.2", 41..=65),
        // 101 ports in one delivery: over on its own.
        delivery("c", "198.51.100.3", 1..=101),
    ];
    // 50 deliveries of 40 new ports each: over from the second, bounded throughout.
    let sweep: Vec<CounterBatch> = (0..50u16)
        .map(|d| delivery(&format!("d{d}"), "198.51.100.4", d * 40 + 1..=d * 40 + 40))
        .collect();
    let fake = rejectwatch_testkit::fakes::InMemoryCounterStore::default();
    let mut sweep_requests = Vec::new();
    for batch in batches.iter().chain(&sweep) {
        let report = deps.store.apply(batch).await.expect("applying");
        if batch.updates[0].source.to_string() == "198.51.100.4" {
            sweep_requests.push(report.requests);
        }
        fake.apply(batch).await.expect("applying in memory");
        // A redelivery adds nothing.
        let again = deps.store.apply(batch).await.expect("reapplying");
        assert_eq!(again.applied, 0);
    }
    // The manifest and one chunk; the second delivery's condition fails once, and the
    // store remembers the set is over, so later ones offer the marker straight away.
    assert_eq!(sweep_requests[..3], [2, 3, 2], "{sweep_requests:?}");
    assert!(
        sweep_requests[3..].iter().all(|&r| r == 2),
        "{sweep_requests:?}"
    );
    let rows = stack.counters().await;
    let row = |source: &str| &rows[&(source.to_owned(), window)];
    assert_eq!(row("198.51.100.1").distinct_dst_ports(), (64, true));
    assert_eq!(row("198.51.100.1").distinct_dst_hosts(), (1, true));
    let over = row("198.51.100.2");
    assert!(over.exact_ports.over);
    let (estimate, _) = over.distinct_dst_ports();
    assert!(within_expected_error(estimate, 65), "{estimate}");
    assert_eq!(over.distinct_dst_hosts(), (1, true));
    let (estimate, _) = row("198.51.100.3").distinct_dst_ports();
    assert!(within_expected_error(estimate, 101), "{estimate}");
    let (estimate, _) = row("198.51.100.4").distinct_dst_ports();
    assert!(within_expected_error(estimate, 2_000), "{estimate}");
    for (key, stored) in &rows {
        let item = stack
            .dynamodb
            .get_item()
            .table_name(TABLE)
            .key("pk", AttributeValue::S(format!("SRC#{}", key.0)))
            .key("sk", AttributeValue::S(format!("WIN#{:010}", key.1)))
            .send()
            .await
            .expect("reading the item")
            .item
            .expect("the item");
        let members = item["port_values"].as_ns().expect("a number set").len();
        assert!(members <= EXACT_VALUES + 1, "{key:?}: {members} members");
        let in_memory = fake
            .counter(stored.source.unwrap(), window)
            .expect("the fake's row");
        assert_eq!(
            (stored.distinct_dst_ports(), &stored.exact_ports),
            (in_memory.distinct_dst_ports(), &in_memory.exact_ports),
            "{key:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_object_is_read_by_ranged_gets_and_counted_exactly() {
    let stack = Stack::start().await;
    let deps = stack.deps(&[]);
    let mut generator = generator(20_000, 31);
    let mut parquet = Vec::new();
    generator.write_parquet(&mut parquet, 4_000).unwrap();
    let key = flow_log_key("parquet").replace(".log.gz", ".log.parquet");
    stack.put_object(&key, parquet).await;
    let event = stack.receive_sqs_event(1).await;
    let response = invoke(event.clone(), &deps)
        .await
        .expect("handling the message");
    assert_eq!(response, json!({"batchItemFailures": []}));
    assert_counts_match(&stack.counters().await, generator.expected());
    // A redelivery is a duplicate, as for text objects.
    invoke(event, &deps).await.expect("a redelivery");
    assert_counts_match(&stack.counters().await, generator.expected());
}
