//! The evaluate handler against moto's DynamoDB, SNS and SQS on loopback: alerts are read
//! from an SQS queue subscribed to the topic, as a program subscriber would read them. And
//! the whole chain: flow logs through the ingest handler, then one evaluator run.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use aws_config::SdkConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use evaluate_rejects::config::Config as EvaluateConfig;
use ingest_flow_logs::config::Config as IngestConfig;
use rejectwatch_aws::dynamodb::DynamoCounterStore;
use rejectwatch_aws::s3::S3ObjectSource;
use rejectwatch_aws::sns::SnsAlertPublisher;
use rejectwatch_core::counters::{BatchId, CounterBatch, CounterUpdate};
use rejectwatch_core::ports::CounterStore;
use rejectwatch_testkit::generate::{FlowLogGenerator, GeneratorConfig};
use rejectwatch_tests::moto::{MotoServer, create_counters_table};
use serde_json::{Value, json};

const TABLE: &str = "rejectwatch-counters";
const TOPIC: &str = "rejectwatch-alerts";
const WINDOW: u64 = 1_714_566_000;
/// An evaluation a minute after `WINDOW` ended.
const NOW: u64 = WINDOW + 300 + 60;

struct Stack {
    _moto: MotoServer,
    sdk: SdkConfig,
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    topic_arn: String,
    alerts_queue: String,
}

impl Stack {
    async fn start() -> Stack {
        let moto = MotoServer::start();
        let sdk = moto.sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        create_counters_table(&dynamodb, TABLE).await;
        let sns = aws_sdk_sns::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let topic_arn = sns
            .create_topic()
            .name(TOPIC)
            .send()
            .await
            .expect("topic")
            .topic_arn
            .expect("arn");
        let alerts_queue = sqs
            .create_queue()
            .queue_name("alerts")
            .send()
            .await
            .expect("queue")
            .queue_url
            .expect("url");
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint("arn:aws:sqs:us-east-1:123456789012:alerts")
            .send()
            .await
            .expect("subscribing the queue");
        Stack {
            _moto: moto,
            sdk,
            dynamodb,
            sqs,
            topic_arn,
            alerts_queue,
        }
    }

    fn store(&self) -> DynamoCounterStore {
        DynamoCounterStore::new(self.dynamodb.clone(), TABLE, 86_400, 16)
    }

    fn evaluator(
        &self,
        extra: &[(&str, &str)],
    ) -> evaluate_rejects::Deps<DynamoCounterStore, SnsAlertPublisher> {
        let mut settings: HashMap<String, String> = HashMap::from([
            ("COUNTERS_TABLE_NAME".into(), TABLE.into()),
            ("ALERT_TOPIC_ARN".into(), self.topic_arn.clone()),
            ("REJECT_THRESHOLD".into(), "100".into()),
            ("PORT_SCAN_THRESHOLD".into(), "20".into()),
            ("HOST_SWEEP_THRESHOLD".into(), "20".into()),
            ("ALLOWLIST_CIDRS".into(), "192.0.2.0/24".into()),
            ("SETTLE_MINUTES".into(), "15".into()),
        ]);
        settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config =
            EvaluateConfig::from_lookup(|name| settings.get(name).cloned()).expect("config");
        evaluate_rejects::Deps::new(
            self.store().with_index_shards(config.index_shards),
            SnsAlertPublisher::new(
                aws_sdk_sns::Client::new(&self.sdk),
                config.topic_arn.clone(),
            ),
            config,
        )
    }

    /// Writes counter rows the way ingest does.
    async fn write_rows(&self, batch: &str, updates: Vec<CounterUpdate>) {
        let batch = CounterBatch {
            id: BatchId::for_s3_object("test", batch, None, None),
            updates,
            gaps: Vec::new(),
        };
        self.store().apply(&batch).await.expect("writing counters");
    }

    /// The alerts delivered to the subscribed queue so far: (subject, message JSON,
    /// message attributes) of each SNS notification.
    async fn alerts(&self) -> Vec<(String, Value, Value)> {
        let mut alerts = Vec::new();
        loop {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.alerts_queue)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receiving alerts");
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                return alerts;
            }
            for message in messages {
                let envelope: Value = serde_json::from_str(message.body.as_deref().unwrap_or("{}"))
                    .expect("an SNS envelope");
                let body: Value =
                    serde_json::from_str(envelope["Message"].as_str().expect("a message"))
                        .expect("the JSON body");
                alerts.push((
                    envelope["Subject"].as_str().unwrap_or("").to_owned(),
                    body,
                    envelope["MessageAttributes"].clone(),
                ));
                self.sqs
                    .delete_message()
                    .queue_url(&self.alerts_queue)
                    .receipt_handle(message.receipt_handle.unwrap_or_default())
                    .send()
                    .await
                    .expect("deleting the alert");
            }
        }
    }
}

fn at(seconds: u64) -> Value {
    json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "time": rejectwatch_core::time::format_utc(seconds), "detail": {}})
}

fn update(source: &str, window: u64, rejects: u64, ports: u16, hosts: u32) -> CounterUpdate {
    rejectwatch_tests::counter_update(source, window, rejects, ports, hosts)
}

fn sources(body: &Value) -> Vec<String> {
    body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_alerts_through_sns_to_the_queue() {
    let stack = Stack::start().await;
    stack
        .write_rows(
            "rules",
            vec![
                update("198.51.100.1", WINDOW, 150, 1, 1),
                update("198.51.100.2", WINDOW, 40, 40, 1),
                update("198.51.100.3", WINDOW - 300, 40, 1, 40),
                update("198.51.100.4", WINDOW, 19, 3, 3),
                update("192.0.2.9", WINDOW, 10_000, 60, 60),
            ],
        )
        .await;
    let deps = stack.evaluator(&[]);
    let summary = evaluate_rejects::invoke(at(NOW), "run-1", &deps)
        .await
        .expect("evaluating");
    assert_eq!(summary["alerted"], 3);
    let alerts = stack.alerts().await;
    assert_eq!(alerts.len(), 1, "one digest per run");
    let (subject, body, attributes) = &alerts[0];
    assert_eq!(
        subject,
        "RejectWatch low: 3 sources - top 198.51.100.1 volume (150 REJECTs)"
    );
    assert_eq!(
        sources(body),
        vec!["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    );
    assert_eq!(body["sources"][1]["rules"], json!(["port-scan"]));
    let ports = body["sources"][1]["distinct_dst_ports"].as_u64().unwrap();
    assert!(
        rejectwatch_core::sketch::within_expected_error(ports, 40),
        "{ports}"
    );
    assert_eq!(body["sources"][2]["rules"], json!(["host-sweep"]));
    assert_eq!(body["sources"][2]["sample_hosts"][0], "10.0.0.1");
    assert_eq!(attributes["severity"]["Value"], "low");
    assert_eq!(attributes["source_count"]["Value"], "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_holds_then_yields_to_time_and_to_severity() {
    let stack = Stack::start().await;
    stack
        .write_rows("first", vec![update("198.51.100.1", WINDOW, 150, 1, 1)])
        .await;
    let deps = stack.evaluator(&[("ALERT_COOLDOWN_MINUTES", "60")]);
    evaluate_rejects::invoke(at(NOW), "run-1", &deps)
        .await
        .unwrap();
    evaluate_rejects::invoke(at(NOW + 300), "run-2", &deps)
        .await
        .unwrap();
    assert_eq!(stack.alerts().await.len(), 1, "held by the cooldown");

    stack
        .write_rows(
            "worse",
            vec![update("198.51.100.1", WINDOW + 300, 2_000, 1, 1)],
        )
        .await;
    evaluate_rejects::invoke(at(NOW + 600), "run-3", &deps)
        .await
        .unwrap();
    let alerts = stack.alerts().await;
    assert_eq!(alerts.len(), 1, "severity rose to high");
    assert_eq!(alerts[0].2["severity"]["Value"], "high");

    stack
        .write_rows(
            "later",
            vec![update("198.51.100.1", WINDOW + 4_200, 2_000, 1, 1)],
        )
        .await;
    evaluate_rejects::invoke(at(NOW + 600 + 3_900), "run-4", &deps)
        .await
        .unwrap();
    assert_eq!(
        stack.alerts().await.len(),
        0,
        "the cooldown ran out by now, but the activity's window ended inside it"
    );

    stack
        .write_rows(
            "after",
            vec![update("198.51.100.1", WINDOW + 4_500, 2_000, 1, 1)],
        )
        .await;
    evaluate_rejects::invoke(at(NOW + 600 + 4_200), "run-5", &deps)
        .await
        .unwrap();
    assert_eq!(
        stack.alerts().await.len(),
        1,
        "activity in a window that ended after the cooldown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_runs_send_one_alert() {
    let stack = Stack::start().await;
    stack
        .write_rows(
            "concurrent",
            (1..=20u8)
                .map(|i| update(&format!("198.51.100.{i}"), WINDOW, 150 + u64::from(i), 1, 1))
                .collect(),
        )
        .await;
    let (first, second) = (stack.evaluator(&[]), stack.evaluator(&[]));
    let (a, b) = tokio::join!(
        evaluate_rejects::invoke(at(NOW), "run-a", &first),
        evaluate_rejects::invoke(at(NOW), "run-b", &second)
    );
    assert_eq!(
        a.unwrap()["alerted"].as_u64().unwrap() + b.unwrap()["alerted"].as_u64().unwrap(),
        20
    );
    let alerted: Vec<String> = stack
        .alerts()
        .await
        .iter()
        .flat_map(|(_, body, _)| sources(body))
        .collect();
    let mut unique = alerted.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        (alerted.len(), unique.len()),
        (20, 20),
        "every source alerted exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_is_retried_by_the_next_run() {
    let stack = Stack::start().await;
    stack
        .write_rows("failing", vec![update("198.51.100.1", WINDOW, 150, 1, 1)])
        .await;
    // No settle time, and the retry comes two windows later: the finding's window
    // settled long before.
    let settings = [("SETTLE_MINUTES", "0")];
    let mut broken = stack.evaluator(&settings);
    broken.publisher = SnsAlertPublisher::new(
        aws_sdk_sns::Client::new(&stack.sdk),
        "arn:aws:sns:us-east-1:123456789012:no-such-topic",
    );
    let error = evaluate_rejects::invoke(at(NOW), "run-1", &broken)
        .await
        .unwrap_err();
    assert_eq!(error.error_type(), "Evaluate.Publish");
    assert!(stack.alerts().await.is_empty());
    let summary = evaluate_rejects::invoke(at(NOW + 600), "run-2", &stack.evaluator(&settings))
        .await
        .expect("the next run");
    assert_eq!(
        summary["windows"],
        json!([WINDOW, WINDOW + 300, WINDOW + 600])
    );
    let alerts = stack.alerts().await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(sources(&alerts[0].1), vec!["198.51.100.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_offenders_fit_in_one_message() {
    let stack = Stack::start().await;
    let updates: Vec<CounterUpdate> = (0..5_000u32)
        .map(|i| {
            update(
                &Ipv4Addr::from(0xCB00_7100 + i * 7).to_string(),
                WINDOW,
                100 + u64::from(i),
                30,
                30,
            )
        })
        .collect();
    stack.write_rows("many", updates).await;
    let deps = stack.evaluator(&[("MAX_LISTED_SOURCES", "5000")]);
    let summary = evaluate_rejects::invoke(at(NOW), "run-1", &deps)
        .await
        .expect("evaluating");
    assert_eq!(summary["alerted"], 5_000);
    assert_eq!(summary["unconfirmed"], 0);
    // The run's time against moto (one request at a time), for the README; the function's
    // timeout is 120 s.
    eprintln!(
        "5,000 findings: read, claimed, published and confirmed in {} ms",
        summary["duration_ms"]
    );
    let alerts = stack.alerts().await;
    assert_eq!(alerts.len(), 1);
    let (subject, body, attributes) = &alerts[0];
    assert!(subject.len() < 100 && !subject.contains('\n'), "{subject}");
    assert_eq!(body["source_count"], 5_000);
    let listed = body["sources"].as_array().unwrap().len();
    assert_eq!(
        listed as u64 + body["omitted"]["sources"].as_u64().unwrap(),
        5_000
    );
    assert!(body.to_string().len() < 256 * 1024);
    assert_eq!(attributes["source_count"]["Value"], "5000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_then_evaluate_alerts_every_planted_scanner_once_and_no_one_else() {
    let stack = Stack::start().await;
    let s3 = aws_sdk_s3::Client::new(&stack.sdk);
    let sqs = &stack.sqs;
    s3.create_bucket().bucket("flow-logs").send().await.unwrap();
    let objects_queue = sqs
        .create_queue()
        .queue_name("objects")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let notification = NotificationConfiguration::builder()
        .queue_configurations(
            QueueConfiguration::builder()
                .queue_arn("arn:aws:sqs:us-east-1:123456789012:objects")
                .events(Event::S3ObjectCreated)
                .build()
                .unwrap(),
        )
        .build();
    s3.put_bucket_notification_configuration()
        .bucket("flow-logs")
        .notification_configuration(notification)
        .send()
        .await
        .unwrap();

    // Ten minutes of traffic from 300 ordinary sources and five planted scanners, half
    // delivered to S3 and half as CloudWatch Logs batches.
    let config = GeneratorConfig {
        records: 40_000,
        seed: 77,
        benign_sources: 300,
        start_time: WINDOW - 300,
        duration_seconds: 590,
        ..GeneratorConfig::default()
    };
    let mut generator = FlowLogGenerator::new(GeneratorConfig {
        records: 20_000,
        ..config.clone()
    });
    let mut object = Vec::new();
    generator.write_gzip(&mut object, 1).unwrap();
    let planted = generator.expected().scanners.clone();
    let key = "AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/01/123456789012_vpcflowlogs_us-east-1_fl-1_20240501T1220Z_1.log.gz";
    s3.put_object()
        .bucket("flow-logs")
        .key(key)
        .body(ByteStream::from(object))
        .send()
        .await
        .unwrap();
    let payloads = FlowLogGenerator::new(GeneratorConfig {
        records: 20_000,
        seed: 78,
        ..config
    })
    .cloudwatch_payloads(2_000, "/vpc/flow-logs");

    let settings: HashMap<&str, &str> = HashMap::from([("COUNTERS_TABLE_NAME", TABLE)]);
    let ingest = ingest_flow_logs::Deps::new(
        stack.store(),
        S3ObjectSource::new(s3.clone()),
        IngestConfig::from_lookup(|name| settings.get(name).map(|v| v.to_string())).unwrap(),
    );
    let messages = sqs
        .receive_message()
        .queue_url(&objects_queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let records: Vec<Value> = messages
        .messages
        .unwrap_or_default()
        .into_iter()
        .map(|m| json!({"messageId": m.message_id, "body": m.body, "eventSource": "aws:sqs"}))
        .collect();
    let response = ingest_flow_logs::invoke(json!({"Records": records}), &ingest)
        .await
        .unwrap();
    assert_eq!(response, json!({"batchItemFailures": []}));
    for payload in payloads {
        ingest_flow_logs::invoke(serde_json::from_str(&payload).unwrap(), &ingest)
            .await
            .unwrap();
    }

    let deps = stack.evaluator(&[("REJECT_THRESHOLD", "100000")]);
    evaluate_rejects::invoke(at(NOW), "run-1", &deps)
        .await
        .expect("evaluating");
    evaluate_rejects::invoke(at(NOW + 120), "run-2", &deps)
        .await
        .expect("a second run, inside the cooldown");
    let alerted: Vec<String> = stack
        .alerts()
        .await
        .iter()
        .flat_map(|(_, body, _)| sources(body))
        .collect();
    let mut expected: Vec<String> = planted
        .iter()
        .map(|(address, _)| address.to_string())
        .collect();
    expected.sort();
    let mut got = alerted.clone();
    got.sort();
    assert_eq!(got, expected, "exactly the planted scanners, once each");
}

/// The alert-state requests against DynamoDB: a claim is held until its run's deadline,
/// then reported abandoned with its holder; a take-over succeeds only while the holder
/// still holds it unpublished; digest records say which runs published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_held_to_their_deadline_then_taken_over_once() {
    use rejectwatch_core::ports::{AlertStateStore, Claim, ClaimOutcome, DigestLog};
    let stack = Stack::start().await;
    let store = stack.store();
    let source = "198.51.100.1".parse().unwrap();
    let claim = |run: &str, wall_now: u64| Claim {
        run_id: run.into(),
        now: NOW,
        wall_now,
        held_until: wall_now + 60,
        cooldown_seconds: 3_600,
        expires_at: NOW + 100_000,
    };
    assert_eq!(
        store
            .claim(source, 1, NOW, &claim("run-1", 50_000))
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    assert_eq!(
        store
            .claim(source, 1, NOW, &claim("run-2", 50_059))
            .await
            .unwrap(),
        ClaimOutcome::ClaimedElsewhere
    );
    let late = claim("run-2", 50_060);
    assert_eq!(
        store.claim(source, 1, NOW, &late).await.unwrap(),
        ClaimOutcome::Abandoned {
            holder: "run-1".into()
        }
    );
    assert!(!store.is_published("run-1").await.unwrap());
    assert_eq!(
        store.take_over(source, 1, &late, "run-1").await.unwrap(),
        ClaimOutcome::Won
    );
    // A second taker finds the claim no longer run-1's.
    assert_eq!(
        store
            .take_over(source, 1, &claim("run-3", 50_061), "run-1")
            .await
            .unwrap(),
        ClaimOutcome::ClaimedElsewhere
    );
    // The retry of run-2 itself takes its own claim up again.
    assert_eq!(
        store
            .claim(source, 1, NOW, &claim("run-2", 50_070))
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    store
        .record_published("run-2", 1, 50_071, NOW + 100_000)
        .await
        .unwrap();
    assert!(store.is_published("run-2").await.unwrap());
    store.confirm(source, "run-2").await.unwrap();
    assert_eq!(
        store
            .claim(source, 1, NOW, &claim("run-4", 50_200))
            .await
            .unwrap(),
        ClaimOutcome::Cooldown
    );
}

/// Alert-state writes whose answer is lost (applied, then a 500) are retried by the SDK;
/// the retry must read as this run's own success, not as another run's claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_take_overs_whose_answers_were_lost_are_still_won() {
    use rejectwatch_core::ports::{AlertStateStore, Claim, ClaimOutcome};
    use rejectwatch_tests::fault_proxy::FaultProxy;
    let stack = Stack::start().await;
    let proxy = FaultProxy::start(&stack._moto.endpoint, 1, 0.0);
    let store = DynamoCounterStore::new(
        aws_sdk_dynamodb::Client::new(&proxy.sdk_config().await),
        TABLE,
        86_400,
        16,
    );
    let source = "198.51.100.1".parse().unwrap();
    let claim = |run: &str, wall_now: u64| Claim {
        run_id: run.into(),
        now: NOW,
        wall_now,
        held_until: wall_now + 60,
        cooldown_seconds: 3_600,
        expires_at: NOW + 100_000,
    };
    proxy.configure(&json!({"rules": [
        {"match": "attribute_not_exists(#pk)", "kind": "error_after", "times": 1},
        {"match": "#claim = :holder", "kind": "error_after", "times": 1}
    ]}));
    assert_eq!(
        store
            .claim(source, 1, NOW, &claim("run-1", 50_000))
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    assert_eq!(
        store
            .take_over(source, 1, &claim("run-2", 50_100), "run-1")
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    assert_eq!(proxy.stats()["faults"], 2, "both answers were lost once");
    assert_eq!(
        store
            .claim(source, 1, NOW, &claim("run-3", 50_101))
            .await
            .unwrap(),
        ClaimOutcome::ClaimedElsewhere,
        "run-2 holds it"
    );
}

/// The conditions in DynamoDB agree with the core's rule: a take-over loses to the
/// holder's own retry, and a cooldown holds against windows from before it ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_overs_and_cooldowns_follow_the_core_rule_in_dynamodb() {
    use rejectwatch_core::ports::{AlertStateStore, Claim, ClaimOutcome};
    let stack = Stack::start().await;
    let store = stack.store();
    let source = "198.51.100.1".parse().unwrap();
    let claim = |run: &str, now: u64, wall_now: u64| Claim {
        run_id: run.into(),
        now,
        wall_now,
        held_until: wall_now + 60,
        cooldown_seconds: 3_600,
        expires_at: NOW + 100_000,
    };
    store
        .claim(source, 1, 300, &claim("run-1", 330, 50_000))
        .await
        .unwrap();
    let late = claim("run-2", 630, 50_060);
    assert!(matches!(
        store.claim(source, 1, 300, &late).await.unwrap(),
        ClaimOutcome::Abandoned { .. }
    ));
    assert_eq!(
        store
            .claim(source, 1, 300, &claim("run-1", 330, 50_060))
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    assert_eq!(
        store.take_over(source, 1, &late, "run-1").await.unwrap(),
        ClaimOutcome::ClaimedElsewhere
    );
    store.confirm(source, "run-1").await.unwrap();
    // Published at 330: at 3_930 a window that ended at 1_800 is still under the
    // cooldown; one that ended after 3_930 is not.
    assert_eq!(
        store
            .claim(source, 1, 1_800, &claim("run-3", 3_930, 50_100))
            .await
            .unwrap(),
        ClaimOutcome::Cooldown
    );
    assert_eq!(
        store
            .claim(source, 1, 3_931, &claim("run-4", 4_230, 50_200))
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
}

/// Issue 14: the labelled scenario suite with its counters, claims and progress in DynamoDB
/// (objects in memory, digests recorded): every planted scan alerted, no look-alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenario_suite_alerts_every_scan_and_no_look_alike_in_dynamodb() {
    let stack = Stack::start().await;
    let report =
        rejectwatch_tests::scenarios::run_in_dynamodb(1, 300, (stack.store(), stack.store())).await;
    println!("{}", report.table());
    let summary = report.summary();
    println!("{summary}");
    for result in &report.results {
        assert!(
            result.ok(),
            "{}: expected {:?}, got {:?}",
            result.name,
            result.expect,
            result.got
        );
    }
    assert_eq!(summary["recall"], 1.0, "{summary}");
    assert_eq!(summary["false_alerts"], 0, "{summary}");
}
