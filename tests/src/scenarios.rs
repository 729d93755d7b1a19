//! The labelled scenario suite (`rejectwatch_testkit::scenarios`) through the ingest handler and the
//! evaluate handler, with in-memory fakes, on the schedule AWS would keep: each delivery
//! is ingested when it arrives, and the evaluator runs every five minutes until every
//! window has settled. Judged per scenario (expected against alerted) and overall (recall
//! of the scans, false alerts among the look-alikes and the background).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;

use evaluate_rejects::config::Config as EvaluateConfig;
use ingest_flow_logs::config::Config as IngestConfig;
use rejectwatch_aws::dynamodb::DynamoCounterStore;
use rejectwatch_core::decode::LogEntry;
use rejectwatch_core::ports::{
    AlertStateStore, CounterReader, CounterStore, DigestLog, EvaluationProgress,
};
use rejectwatch_testkit::fakes::{InMemoryCounterStore, InMemoryObjectSource, RecordingPublisher};
use rejectwatch_testkit::generate::subscription_payload;
use rejectwatch_testkit::scenarios::{
    Delivery, Outcome, Path, SETTINGS, START, WINDOW_SECONDS, WINDOWS, background, scenarios,
};
use serde_json::{Value, json};

const BUCKET: &str = "rejectwatch-flow-logs";
const LOG_GROUP: &str = "/vpc/flow-logs";
/// The evaluator's settle time in the suite: deliveries above arrive within it.
const SETTLE_MINUTES: u64 = 15;

/// One scenario's result.
#[derive(Debug)]
pub struct ScenarioResult {
    pub name: &'static str,
    pub plants: &'static str,
    pub expect: Outcome,
    pub got: Outcome,
    pub why: &'static str,
}

impl ScenarioResult {
    /// An expected alert is met when every expected rule fired (a fast scan may also cross
    /// the volume rule); the other outcomes must match exactly.
    pub fn ok(&self) -> bool {
        match (&self.expect, &self.got) {
            (Outcome::Alert(wanted), Outcome::Alert(fired)) => {
                wanted.iter().all(|rule| fired.contains(rule))
            }
            (expect, got) => expect == got,
        }
    }
}

/// The suite's results.
#[derive(Debug)]
pub struct SuiteReport {
    pub results: Vec<ScenarioResult>,
    /// Sources of the background traffic that a digest named (outside or internal).
    pub background_alerts: Vec<IpAddr>,
    pub digests: usize,
    pub evaluations: usize,
    pub deliveries: usize,
}

impl SuiteReport {
    /// Scans alerted as expected, of the scans planted.
    pub fn recall(&self) -> (usize, usize) {
        let scans = self
            .results
            .iter()
            .filter(|r| matches!(r.expect, Outcome::Alert(_)));
        let planted = scans.clone().count();
        (scans.filter(|r| r.ok()).count(), planted)
    }

    /// Sources alerted (among the outside sources) that should not have been: look-alikes
    /// and background.
    pub fn false_alerts(&self) -> usize {
        let look_alikes = self
            .results
            .iter()
            .filter(|r| {
                !matches!(r.expect, Outcome::Alert(_)) && matches!(r.got, Outcome::Alert(_))
            })
            .count();
        look_alikes + self.background_alerts.len()
    }

    /// A Markdown table: scenario, what it plants, expected, alerted, why.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| scenario | plants | expected | alerted | ok | why |\n|---|---|---|---|---|---|\n",
        );
        for r in &self.results {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                r.name,
                r.plants,
                outcome_text(&r.expect),
                outcome_text(&r.got),
                if r.ok() { "yes" } else { "NO" },
                r.why
            );
        }
        out
    }

    /// One JSON line: the summary.
    pub fn summary(&self) -> Value {
        let (found, planted) = self.recall();
        json!({
            "scenarios": self.results.len(),
            "scans_planted": planted,
            "scans_alerted": found,
            "recall": if planted == 0 { 1.0 } else { found as f64 / planted as f64 },
            "false_alerts": self.false_alerts(),
            "background_alerts": self.background_alerts.len(),
            "scenarios_as_expected": self.results.iter().filter(|r| r.ok()).count(),
            "deliveries": self.deliveries,
            "evaluations": self.evaluations,
            "digests": self.digests,
        })
    }
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Alert(rules) => format!("alert: {}", rules.join(", ")),
        Outcome::Internal => "listed apart as internal".into(),
        Outcome::Silent => "none".into(),
    }
}

/// Runs the suite with in-memory counters over `background_records` records of background
/// traffic a window, with the suite's settings (`rejectwatch_testkit::scenarios::SETTINGS`) changed by
/// `overrides`.
pub async fn run_in_memory(
    seed: u64,
    background_records: u64,
    overrides: &[(&str, &str)],
) -> SuiteReport {
    // The store passes from ingest to the evaluator and back, as if both reached one table.
    run(
        seed,
        background_records,
        overrides,
        (
            InMemoryCounterStore::default(),
            InMemoryCounterStore::default(),
        ),
        std::mem::swap,
    )
    .await
}

/// Runs the suite with counters in DynamoDB (moto, say): two stores on one table.
pub async fn run_in_dynamodb(
    seed: u64,
    background_records: u64,
    stores: (DynamoCounterStore, DynamoCounterStore),
) -> SuiteReport {
    run(seed, background_records, &[], stores, |_, _| {}).await
}

/// The suite's run. `hand_over` gives the evaluator's store what ingest wrote before each
/// evaluation, and back after it (a swap for in-memory stores, nothing for one table).
async fn run<S>(
    seed: u64,
    background_records: u64,
    overrides: &[(&str, &str)],
    (ingest_store, evaluate_store): (S, S),
    hand_over: fn(&mut S, &mut S),
) -> SuiteReport
where
    S: CounterStore + CounterReader + AlertStateStore + EvaluationProgress + DigestLog + Sync,
{
    let settings = |extra: &[(&str, &str)]| -> HashMap<String, String> {
        SETTINGS
            .iter()
            .chain(extra)
            .chain(overrides)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let ingest_settings = settings(&[("COUNTERS_TABLE_NAME", "counters")]);
    let mut ingest = ingest_flow_logs::Deps::new(
        ingest_store,
        InMemoryObjectSource::new(),
        IngestConfig::from_lookup(|name| ingest_settings.get(name).cloned())
            .expect("the suite's ingest settings"),
    );
    let settle = SETTLE_MINUTES.to_string();
    let evaluate_settings = settings(&[
        ("COUNTERS_TABLE_NAME", "counters"),
        (
            "ALERT_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:alerts",
        ),
        ("SETTLE_MINUTES", &settle),
    ]);
    let mut evaluate = evaluate_rejects::Deps::new(
        evaluate_store,
        RecordingPublisher::default(),
        EvaluateConfig::from_lookup(|name| evaluate_settings.get(name).cloned())
            .expect("the suite's evaluator settings"),
    );

    let planted = scenarios();
    let mut deliveries: Vec<Delivery> = background(seed, background_records);
    deliveries.extend(planted.iter().flat_map(|s| s.deliveries.iter().cloned()));
    deliveries.sort_by_key(|d| d.arrives);
    let delivered = deliveries.len();
    let mut pending = deliveries.into_iter().peekable();
    let mut event_id: u64 = 37_000_000_000_000_000;

    // Every five minutes, from the first window's end until the last has settled.
    let last = START + (WINDOWS + 1) * WINDOW_SECONDS + SETTLE_MINUTES * 60 + 2 * WINDOW_SECONDS;
    let mut evaluations = 0;
    let mut now = START + WINDOW_SECONDS + 30;
    while now <= last {
        while let Some(delivery) = pending.next_if(|d| d.arrives <= now) {
            let event = match delivery.path {
                Path::S3 => {
                    let key = format!(
                        "AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=us-east-1/year=2024/month=05/day=01/{}.log",
                        delivery.name
                    );
                    let mut body = delivery.lines.join("\n");
                    body.push('\n');
                    ingest.objects.put(BUCKET, &key, body.into_bytes());
                    s3_event(&key, &delivery.name)
                }
                Path::CloudWatch => {
                    let events = delivery
                        .lines
                        .iter()
                        .map(|line| {
                            event_id += 1;
                            let mut entry = LogEntry::default();
                            entry.id = event_id.to_string();
                            entry.timestamp = (delivery.arrives * 1000) as i64;
                            entry.message = line.clone();
                            entry
                        })
                        .collect();
                    serde_json::from_str(&subscription_payload(LOG_GROUP, events))
                        .expect("a subscription event")
                }
            };
            ingest_flow_logs::invoke(event, &ingest)
                .await
                .unwrap_or_else(|error| panic!("ingesting {}: {error}", delivery.name));
        }
        hand_over(&mut ingest.store, &mut evaluate.store);
        evaluate.wall_clock = Box::new(move || now);
        let at = json!({"detail-type": "Scheduled Event", "source": "aws.events",
                        "time": rejectwatch_core::time::format_utc(now)});
        evaluate_rejects::invoke(at, &format!("run-{now}"), &evaluate)
            .await
            .unwrap_or_else(|error| panic!("evaluating at {now}: {error}"));
        hand_over(&mut evaluate.store, &mut ingest.store);
        evaluations += 1;
        now += WINDOW_SECONDS;
    }
    assert!(
        pending.next().is_none(),
        "every delivery arrives in the run"
    );

    // Who was named, and how.
    let digests = evaluate.publisher.published();
    let mut named: HashMap<IpAddr, (bool, BTreeSet<String>)> = HashMap::new();
    for digest in &digests {
        let json: Value = serde_json::from_str(&digest.json).expect("digest JSON");
        for source in json["sources"].as_array().into_iter().flatten() {
            let address: IpAddr = source["source"]
                .as_str()
                .and_then(|text| text.parse().ok())
                .expect("a source address");
            let entry = named.entry(address).or_default();
            entry.0 |= source["internal"].as_bool().unwrap_or(false);
            for rule in source["rules"].as_array().into_iter().flatten() {
                entry.1.insert(rule.as_str().unwrap_or_default().to_owned());
            }
        }
    }
    let results = planted
        .iter()
        .map(|scenario| {
            let got = match named.remove(&scenario.source) {
                None => Outcome::Silent,
                Some((true, _)) => Outcome::Internal,
                Some((false, rules)) => Outcome::Alert(
                    ["volume", "port-scan", "host-sweep"]
                        .into_iter()
                        .filter(|rule| rules.contains(*rule))
                        .collect(),
                ),
            };
            ScenarioResult {
                name: scenario.name,
                plants: scenario.plants,
                expect: scenario.expect.clone(),
                got,
                why: scenario.why,
            }
        })
        .collect();
    let mut background_alerts: Vec<IpAddr> = named.into_keys().collect();
    background_alerts.sort();
    SuiteReport {
        results,
        background_alerts,
        digests: digests.len(),
        evaluations,
        deliveries: delivered,
    }
}

/// An S3 object-created notification for one object of the suite's bucket.
fn s3_event(key: &str, etag: &str) -> Value {
    json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2024-05-01T12:25:03.123Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": BUCKET, "arn": format!("arn:aws:s3:::{BUCKET}")},
            "object": {"key": key.replace('=', "%3D"), "size": 1024, "eTag": etag}
        }
    }]})
}
