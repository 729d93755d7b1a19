//! The handler with in-memory fakes: every trigger, duplicates, crashes and bad input.

use std::collections::HashMap;
use std::net::IpAddr;

use ingest_flow_logs::config::Config;
use std::time::{Duration, Instant};

use ingest_flow_logs::{Deps, IngestError, invoke, invoke_until};
use rejectwatch_core::counters::ROWS_PER_CHUNK;
use rejectwatch_core::sketch::within_expected_error;
use rejectwatch_testkit::fakes::{InMemoryCounterStore, InMemoryObjectSource};
use rejectwatch_testkit::generate::{FlowLogGenerator, GeneratorConfig};
use serde_json::{Value, json};

const CLOUDWATCH_REJECTS: &str = include_str!("../../../events/cloudwatch-logs-rejects.json");
const CLOUDWATCH_CONTROL: &str =
    include_str!("../../../events/cloudwatch-logs-control-message.json");
const S3_PUT: &str = include_str!("../../../events/s3-put-flow-log.json");
const SQS_S3_PUT: &str = include_str!("../../../events/sqs-s3-put-flow-log.json");

const BUCKET: &str = "rejectwatch-flow-logs-123456789012";
const KEY: &str = "AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/01/123456789012_vpcflowlogs_us-east-1_fl-1234abcd_20240501T1220Z_fe123456.log.gz";

fn config(extra: &[(&str, &str)]) -> Config {
    let mut settings: HashMap<String, String> =
        HashMap::from([("COUNTERS_TABLE_NAME".into(), "counters".into())]);
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::from_lookup(|name| settings.get(name).cloned()).unwrap()
}

fn deps(extra: &[(&str, &str)]) -> Deps<InMemoryCounterStore, InMemoryObjectSource> {
    Deps::new(
        InMemoryCounterStore::default(),
        InMemoryObjectSource::new(),
        config(extra),
    )
}

fn event(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn generated_object(records: u64) -> (Vec<u8>, rejectwatch_testkit::generate::Expected) {
    let mut generator = FlowLogGenerator::new(GeneratorConfig {
        records,
        seed: 11,
        ..GeneratorConfig::default()
    });
    let mut object = Vec::new();
    generator.write_gzip(&mut object, 2).unwrap();
    (object, generator.into_expected())
}

/// An S3 notification for `key`, as S3 sends it (the key URL-encoded).
fn s3_event(bucket: &str, key: &str, etag: &str) -> Value {
    let mut event = event(S3_PUT);
    event["Records"][0]["s3"]["bucket"]["name"] = json!(bucket);
    event["Records"][0]["s3"]["object"]["key"] = json!(key.replace('=', "%3D"));
    event["Records"][0]["s3"]["object"]["eTag"] = json!(etag);
    event
}

#[tokio::test]
async fn cloudwatch_batch_is_counted_per_source_and_window() {
    let deps = deps(&[]);
    let summary = invoke(event(CLOUDWATCH_REJECTS), &deps).await.unwrap();
    assert_eq!(summary["trigger"], "cloudwatch");
    assert_eq!(summary["records"], 8);
    assert_eq!(summary["rejects"], 6);
    assert_eq!(summary["sources"], 3);
    assert_eq!(summary["nodata"], 1);
    let scanner = deps
        .store
        .counter(ip("198.51.100.7"), 1_714_566_000)
        .expect("the scanner's row");
    assert_eq!(scanner.rejects, 4);
    assert_eq!(scanner.sample_ports, vec![22, 23, 445, 3389]);
    assert_eq!(scanner.distinct_dst_ports(), (4, true));
    assert_eq!(scanner.interfaces, vec!["eni-1235b8ca123456789"]);
    assert!(
        deps.store
            .counter(ip("2001:db8:1234:a100:8d6e:3477:df66:f105"), 1_714_566_000)
            .is_some()
    );
    assert_eq!(
        deps.store
            .gap("eni-1235b8ca123456789", 1_714_566_000)
            .map(|gap| gap.nodata),
        Some(1)
    );
}

#[tokio::test]
async fn control_message_succeeds_without_writes() {
    let deps = deps(&[]);
    let summary = invoke(event(CLOUDWATCH_CONTROL), &deps).await.unwrap();
    assert_eq!(summary["control_messages"], 1);
    assert_eq!(deps.store.requests(), 0);
}

#[tokio::test]
async fn second_delivery_of_the_same_batch_adds_nothing() {
    let deps = deps(&[]);
    invoke(event(CLOUDWATCH_REJECTS), &deps).await.unwrap();
    let before = deps.store.counters();
    let summary = invoke(event(CLOUDWATCH_REJECTS), &deps).await.unwrap();
    assert_eq!(summary["duplicates"], 1);
    assert_eq!(deps.store.counters(), before);
}

#[tokio::test]
async fn log_groups_use_their_configured_format() {
    // The fixture's records are default-format; a different format for this group makes
    // every record malformed (and none is counted), which shows the override applies.
    let deps = deps(&[(
        "FLOW_LOG_FORMATS_BY_LOG_GROUP",
        r#"{"/rejectwatch/vpc-flow-logs": "${srcaddr} ${action}"}"#,
    )]);
    let summary = invoke(event(CLOUDWATCH_REJECTS), &deps).await.unwrap();
    assert_eq!(summary["malformed"], 8);
    assert_eq!(summary["rejects"], 0);
    assert!(
        summary["malformed_samples"][0]
            .as_str()
            .unwrap()
            .starts_with(
                "/rejectwatch/vpc-flow-logs/eni-1235b8ca123456789-all line 1: expected 2 fields"
            )
    );
}

#[tokio::test]
async fn s3_object_is_streamed_and_counted_exactly() {
    let deps = deps(&[]);
    let (object, expected) = generated_object(30_000);
    deps.objects.put(BUCKET, KEY, object);
    let summary = invoke(event(S3_PUT), &deps).await.unwrap();
    assert_eq!(summary["trigger"], "s3");
    assert_eq!(summary["records"], expected.records);
    assert_eq!(summary["rejects"], expected.rejects);
    assert_eq!(deps.store.counters().len(), expected.per_source.len());
    for (key, truth) in &expected.per_source {
        let row = deps.store.counter(key.source, key.window_start).unwrap();
        assert_eq!(
            (row.rejects, row.packets, row.bytes),
            (truth.rejects, truth.packets, truth.bytes)
        );
        for ((counted, _), actual) in [
            (row.distinct_dst_ports(), truth.dst_ports.len()),
            (row.distinct_dst_hosts(), truth.dst_addrs.len()),
        ] {
            assert!(
                within_expected_error(counted, actual as u64),
                "{key:?}: {counted} for {actual}"
            );
        }
    }
    // One transaction per 99 (source, window) and gap rows, plus the manifest and its
    // done mark: never a write per record.
    let rows = summary["rows"].as_u64().unwrap();
    assert_eq!(
        summary["writes"].as_u64().unwrap(),
        rows.div_ceil(ROWS_PER_CHUNK as u64) + 2
    );
    assert!(rows <= expected.rejects);
}

#[tokio::test]
async fn hive_style_keys_are_url_decoded() {
    let deps = deps(&[]);
    let key = "AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=us-east-1/year=2024/month=05/day=01/x.log.gz";
    let (object, expected) = generated_object(500);
    deps.objects.put(BUCKET, key, object);
    let summary = invoke(s3_event(BUCKET, key, "etag-1"), &deps)
        .await
        .unwrap();
    assert_eq!(summary["rejects"], expected.rejects);
}

#[tokio::test]
async fn objects_outside_the_flow_log_pattern_are_skipped_unread() {
    let deps = deps(&[]);
    let summary = invoke(
        s3_event(BUCKET, "AWSLogs/123456789012/CloudTrail/x.json.gz", "e"),
        &deps,
    )
    .await
    .unwrap();
    assert_eq!(summary["skipped"], 1);
    assert_eq!(summary["deliveries"], 0);
    assert!(
        summary["skip_reasons"][0]
            .as_str()
            .unwrap()
            .contains("not a flow-log key")
    );
}

#[tokio::test]
async fn deleted_object_is_a_logged_skip() {
    let deps = deps(&[]);
    let summary = invoke(event(S3_PUT), &deps).await.unwrap();
    assert_eq!(summary["skipped"], 1);
    assert!(
        summary["skip_reasons"][0]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );
}

#[tokio::test]
async fn corrupt_gzip_fails_the_invocation_for_a_retry() {
    let deps = deps(&[]);
    let (mut object, _) = generated_object(2_000);
    object.truncate(object.len() / 2);
    deps.objects.put(BUCKET, KEY, object);
    let error = invoke(event(S3_PUT), &deps).await.unwrap_err();
    assert_eq!(error.error_type(), "Ingest.Decode");
    assert!(error.to_string().contains(KEY), "{error}");
    assert_eq!(deps.store.requests(), 0);
}

#[tokio::test]
async fn a_parquet_object_counts_exactly_as_its_text_twin() {
    let generator = || {
        FlowLogGenerator::new(GeneratorConfig {
            records: 20_000,
            seed: 12,
            ..GeneratorConfig::default()
        })
    };
    let mut text = Vec::new();
    generator().write_gzip(&mut text, 1).unwrap();
    let mut parquet = Vec::new();
    generator().write_parquet(&mut parquet, 3_000).unwrap();
    let parquet_key = KEY.replace(".log.gz", ".log.parquet");

    let text_deps = deps(&[]);
    text_deps.objects.put(BUCKET, KEY, text);
    let text_summary = invoke(s3_event(BUCKET, KEY, "t"), &text_deps)
        .await
        .unwrap();
    let parquet_deps = deps(&[]);
    parquet_deps.objects.put(BUCKET, &parquet_key, parquet);
    let parquet_summary = invoke(s3_event(BUCKET, &parquet_key, "p"), &parquet_deps)
        .await
        .unwrap();

    for field in [
        "records",
        "rejects",
        "sources",
        "nodata",
        "skipdata",
        "malformed",
        "rows",
    ] {
        assert_eq!(parquet_summary[field], text_summary[field], "{field}");
    }
    assert_eq!(parquet_summary["records"], 20_000);
    assert_eq!(parquet_deps.store.counters(), text_deps.store.counters());
    assert!(!parquet_deps.store.counters().is_empty());
}

#[tokio::test]
async fn a_corrupt_parquet_object_fails_with_a_clear_error() {
    let deps = deps(&[]);
    let key = KEY.replace(".log.gz", ".log.parquet");
    deps.objects
        .put(BUCKET, &key, b"PAR1 not really parquet PAR1".to_vec());
    let error = invoke(s3_event(BUCKET, &key, "p"), &deps)
        .await
        .unwrap_err();
    assert!(matches!(error, IngestError::Decode { .. }));
    let chain = ingest_flow_logs::error_chain(&error);
    assert!(chain.contains(&key) && chain.contains("Parquet"), "{chain}");
    assert_eq!(deps.store.requests(), 0, "nothing written");
}

#[tokio::test]
async fn unexpected_events_are_rejected_by_name() {
    let deps = deps(&[]);
    let error = invoke(json!({"detail-type": "Scheduled Event"}), &deps)
        .await
        .unwrap_err();
    assert_eq!(error.error_type(), "Ingest.Event");
    let diagnostic: lambda_runtime::Diagnostic = error.into();
    assert!(
        diagnostic
            .error_message
            .contains("neither `awslogs` nor `Records`")
    );
}

#[tokio::test]
async fn sqs_batch_reports_only_the_failed_message() {
    let deps = deps(&[]);
    let (object, expected) = generated_object(3_000);
    deps.objects.put(BUCKET, KEY, object);
    let broken_key = KEY.replace("fe123456", "broken00");
    deps.objects.put(
        BUCKET,
        &broken_key,
        b"\x1f\x8b\x08\x00 not really gzip".to_vec(),
    );
    let mut batch = event(SQS_S3_PUT);
    let mut broken = batch["Records"][0].clone();
    broken["messageId"] = json!("broken-message");
    broken["body"] = json!(s3_event(BUCKET, &broken_key, "b").to_string());
    batch["Records"].as_array_mut().unwrap().push(broken);
    let response = invoke(batch, &deps).await.unwrap();
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": "broken-message"}]})
    );
    let counted: u64 = deps.store.counters().iter().map(|row| row.rejects).sum();
    assert_eq!(counted, expected.rejects);
}

#[tokio::test]
async fn sqs_messages_unfinished_near_the_deadline_are_reported_not_lost() {
    let deps = deps(&[]);
    let (object, expected) = generated_object(3_000);
    deps.objects.put(BUCKET, KEY, object);
    let batch = event(SQS_S3_PUT);
    let message_id = batch["Records"][0]["messageId"].clone();
    // Less time left than the reserve: the message is handed back untouched.
    let soon = Instant::now() + Duration::from_secs(1);
    let response = invoke_until(batch.clone(), &deps, Some(soon))
        .await
        .unwrap();
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": message_id}]})
    );
    assert!(deps.store.counters().is_empty());
    // SQS redelivers it to an invocation with time to spare.
    let later = Instant::now() + Duration::from_secs(60);
    let response = invoke_until(batch, &deps, Some(later)).await.unwrap();
    assert_eq!(response, json!({"batchItemFailures": []}));
    let counted: u64 = deps.store.counters().iter().map(|row| row.rejects).sum();
    assert_eq!(counted, expected.rejects);
}

#[tokio::test]
async fn crash_after_a_partial_write_then_retry_counts_once() {
    let (object, expected) = generated_object(20_000);
    let clean = deps(&[]);
    clean.objects.put(BUCKET, KEY, object.clone());
    invoke(event(S3_PUT), &clean).await.unwrap();

    let crashed = deps(&[]);
    crashed.objects.put(BUCKET, KEY, object);
    // The manifest and four chunks are written, then the store fails.
    crashed.store.fail_after(5);
    let error = invoke(event(S3_PUT), &crashed).await.unwrap_err();
    assert_eq!(error.error_type(), "Ingest.Store");
    crashed.store.heal();
    let summary = invoke(event(S3_PUT), &crashed).await.unwrap();
    assert_eq!(summary["already_applied"], 4 * ROWS_PER_CHUNK as u64);
    assert_eq!(crashed.store.counters(), clean.store.counters());
    let counted: u64 = crashed.store.counters().iter().map(|row| row.rejects).sum();
    assert_eq!(counted, expected.rejects);
}

#[tokio::test]
async fn one_interface_logged_to_both_paths_counts_once_under_the_policy() {
    // Two flow logs on one interface: CloudWatch Logs and S3 carry the same records. The
    // policy counts the S3 path only.
    let deps = deps(&[
        ("COUNT_CLOUDWATCH_LOG_GROUPS", ""),
        ("COUNT_S3_BUCKETS", BUCKET),
    ]);
    let data =
        rejectwatch_core::decode::decode_subscription_event(CLOUDWATCH_REJECTS.as_bytes()).unwrap();
    let text: String = data
        .log_events
        .iter()
        .map(|event| format!("{}\n", event.message))
        .collect();
    deps.objects.put(BUCKET, KEY, text.into_bytes());
    invoke(event(CLOUDWATCH_REJECTS), &deps).await.unwrap();
    invoke(event(S3_PUT), &deps).await.unwrap();
    assert_eq!(
        deps.store
            .counter(ip("198.51.100.7"), 1_714_566_000)
            .unwrap()
            .rejects,
        4
    );
}

#[tokio::test]
async fn rows_of_windows_settled_before_the_delivery_are_counted_and_reported_late() {
    let deps = deps(&[("SETTLE_MINUTES", "50")]);
    // The fixture's records are from 2024: long settled, counted all the same.
    let summary = invoke(event(CLOUDWATCH_REJECTS), &deps).await.unwrap();
    assert_eq!(summary["late_rows"], summary["rows"].as_u64().unwrap() - 1);
    assert!(
        deps.store
            .counter(ip("198.51.100.7"), 1_714_566_000)
            .is_some()
    );
    // Records of the last few minutes are on time.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut generator = FlowLogGenerator::new(GeneratorConfig {
        records: 2_000,
        seed: 5,
        start_time: now - 600,
        duration_seconds: 300,
        ..GeneratorConfig::default()
    });
    let mut object = Vec::new();
    generator.write_gzip(&mut object, 1).unwrap();
    deps.objects.put(BUCKET, KEY, object);
    let summary = invoke(s3_event(BUCKET, KEY, "fresh"), &deps).await.unwrap();
    assert!(summary["rows"].as_u64().unwrap() > 0);
    assert_eq!(summary["late_rows"], 0);
}
