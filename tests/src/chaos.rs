//! The chaos run behind `scripts/chaos`: the whole local pipeline under injected faults, judged against the
//! generator's own truth.
//!
//! The real function binaries run under stubs of the Lambda Runtime API, each behind its
//! own fault proxy (`tools/fault_proxy.py`) in front of one moto server, which answers a
//! share of their DynamoDB, S3 and SNS requests with throttling, 500s, long delays or
//! dropped connections. Generated flow logs (with planted scanners) arrive over simulated
//! time as S3 objects, through moto's S3 notifications to an SQS queue, and as CloudWatch
//! Logs subscription batches; some arrive late, some twice. The evaluator runs on a
//! five-minute schedule, concurrently with ingest. Function processes are killed in the
//! middle of an invocation, and everything is redelivered as Lambda and SQS would: SQS
//! messages come back after their visibility timeout until `maxReceiveCount`, failed
//! asynchronous invocations are retried twice under their request id.
//!
//! Last it prints one JSON line; the run fails unless no record was lost or counted twice
//! and every expected alert arrived exactly once.
//!

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::fault_proxy::FaultProxy;
use crate::moto::{MotoServer, create_counters_table};
use crate::runtime_api::{Outcome, RuntimeApi, function_binary};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use flate2::Compression;
use flate2::write::GzEncoder;
use rejectwatch_aws::dynamodb::counter_from_item;
use rejectwatch_core::decode::LogEntry;
use rejectwatch_core::tally::SourceWindow;
use rejectwatch_testkit::generate::{
    Expected, ExpectedSource, FlowLogGenerator, GeneratorConfig, subscription_payload,
};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

const TABLE: &str = "rejectwatch-counters";
const BUCKET: &str = "rejectwatch-flow-logs";
const OBJECT_QUEUE: &str = "rejectwatch-flow-log-objects";
const ALERT_QUEUE: &str = "rejectwatch-alerts";
const LOG_GROUP: &str = "/rejectwatch/flow-logs";
const ACCOUNT: &str = "123456789012";

/// The first window of generated traffic (unix seconds, a multiple of the window).
const T0: u64 = 1_714_560_000;
const WINDOW_SECONDS: u64 = 300;
/// The template's values: the functions get the same settings.
const REJECT_THRESHOLD: u64 = 500;
const PORT_SCAN_THRESHOLD: u64 = 20;
const HOST_SWEEP_THRESHOLD: u64 = 20;
/// The evaluator's `SCAN_SPAN_MINUTES` (15), in windows.
const SPAN_WINDOWS: u64 = 3;
/// The object queue's `maxReceiveCount`, and Lambda's attempts of an asynchronous event.
const MAX_RECEIVES: u32 = 5;
const ASYNC_ATTEMPTS: u32 = 3;
/// The SQS event source mapping's `BatchSize`.
const BATCH_SIZE: usize = 10;
/// Each invocation's deadline (Lambda's timeout).
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(120);

/// What a chaos run does; [`Options::default`] is the full run.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    pub records: u64,
    /// Share of DynamoDB, S3 and SNS requests faulted.
    pub fault_rate: f64,
    /// Function processes killed in the middle of an invocation.
    pub kills: u32,
    /// Five-minute windows of generated traffic.
    pub windows: u64,
    /// The functions' `SETTLE_MINUTES`; late deliveries come within it.
    pub settle_minutes: u64,
    /// The evaluator's `ALERT_COOLDOWN_MINUTES` (raised to settle + window if shorter).
    pub cooldown_minutes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 1,
            records: 200_000,
            fault_rate: 0.1,
            kills: 3,
            windows: 6,
            settle_minutes: 50,
            cooldown_minutes: 60,
        }
    }
}

/// The report's counts that must be zero for a run to pass.
pub const MUST_BE_ZERO: [&str; 4] = [
    "records_lost",
    "records_doubled",
    "alerts_missed",
    "alerts_repeated",
];

/// splitmix64: the harness's own decisions, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn chance(&mut self, probability: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - probability
    }
}

/// One flow-log delivery: an S3 object or a CloudWatch Logs batch, arriving at a
/// simulated time, perhaps again later.
struct Delivery {
    arrival: u64,
    duplicate_at: Option<u64>,
    late: bool,
    content: Content,
}

enum Content {
    Object { key: String, gzip: Vec<u8> },
    Batch { event: Value },
}

/// An SQS message of the object queue as the harness holds it between receives.
#[derive(Clone)]
struct Message {
    message_id: String,
    receipt: Option<String>,
    body: String,
    receives: u32,
}

/// A CloudWatch Logs batch waiting for its asynchronous invocation.
struct AsyncEvent {
    request_id: String,
    event: Value,
}

/// How one attempt of an invocation ended.
enum Attempt {
    Answered(Value),
    Failed(String),
    Killed,
    TimedOut,
}

/// A function's process under a Runtime API stub, its requests through a fault proxy.
struct Function {
    name: &'static str,
    api: RuntimeApi,
    proxy: FaultProxy,
    binary: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: File,
    invocations: u64,
    requests: u64,
    /// Kills still to do, each after a number of requests into an invocation (or, with
    /// `kill_after_publish`, once its SNS publish was accepted and before it is answered).
    kills_left: u32,
    kill_after_publish: bool,
    kills: u32,
    timeouts: u32,
    starts: u32,
}

impl Function {
    fn new(name: &'static str, proxy: FaultProxy, env: Vec<(String, String)>, log: File) -> Self {
        Function {
            name,
            api: RuntimeApi::start(),
            proxy,
            binary: function_binary(name),
            env,
            child: None,
            log,
            invocations: 0,
            requests: 0,
            kills_left: 0,
            kill_after_publish: false,
            kills: 0,
            timeouts: 0,
            starts: 0,
        }
    }

    fn ensure_running(&mut self) {
        if let Some(child) = &mut self.child
            && matches!(child.try_wait(), Ok(None))
        {
            return;
        }
        let mut command = self.api.command(&self.binary, self.name);
        command
            .env("AWS_ENDPOINT_URL", &self.proxy.endpoint)
            .env("RUST_LOG", "warn")
            .stdout(self.log.try_clone().map_or(Stdio::null(), Stdio::from))
            .stderr(self.log.try_clone().map_or(Stdio::null(), Stdio::from));
        for (name, value) in &self.env {
            command.env(name, value);
        }
        self.child = Some(
            command
                .spawn()
                .unwrap_or_else(|error| panic!("starting {}: {error}", self.binary.display())),
        );
        self.starts += 1;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn proxied_requests(&self) -> u64 {
        self.proxy.stats()["requests"].as_u64().unwrap_or(0)
    }

    /// Publishes the proxy held after SNS accepted them (the `delay_after` rule).
    fn held_publishes(&self) -> u64 {
        self.proxy.stats()["operations"]["sns.Publish"]["delay_after"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Kills this function's processes right after SNS accepts a publish, before the run
    /// can record it: the one case the evaluator publishes a digest again (same id).
    fn kill_after_publishing(&mut self, kills: u32) {
        self.kills_left = kills;
        self.kill_after_publish = true;
        self.proxy.configure(&json!({"rules": [
            {"match": "sns.Publish", "kind": "delay_after", "times": kills}
        ]}));
    }

    /// One attempt. With `kill_after`, the process is killed once its invocation has made
    /// that many requests (if it has not answered before).
    fn invoke(&mut self, request_id: &str, event: &Value, rng: &mut Rng) -> Attempt {
        self.ensure_running();
        self.invocations += 1;
        let before = self.proxied_requests();
        let held_before = self.held_publishes();
        // A kill lands somewhere within an ordinary invocation's requests.
        let kill_after = (self.kills_left > 0 && !self.kill_after_publish && rng.chance(0.25))
            .then(|| {
                let typical = (self.requests / self.invocations.max(1)).max(4);
                1 + rng.below(typical)
            });
        self.api.push(
            request_id,
            event.clone(),
            RuntimeApi::deadline_after(INVOCATION_TIMEOUT),
        );
        let started = Instant::now();
        let attempt = loop {
            if let Some(outcome) = self.api.take_outcome(request_id, Duration::from_millis(25)) {
                break match outcome {
                    Outcome::Response(value) => Attempt::Answered(value),
                    Outcome::Error {
                        error_type,
                        error_message,
                    } => Attempt::Failed(format!("{error_type}: {error_message}")),
                };
            }
            let made = self.proxied_requests().saturating_sub(before);
            let held = self.kill_after_publish && self.held_publishes() > held_before;
            if held || kill_after.is_some_and(|after| made >= after) {
                self.kill();
                self.kills_left -= 1;
                self.kills += 1;
                break Attempt::Killed;
            }
            if started.elapsed() > INVOCATION_TIMEOUT + Duration::from_secs(5) {
                // Lambda stops an invocation at its timeout.
                self.kill();
                self.timeouts += 1;
                break Attempt::TimedOut;
            }
            if let Some(child) = &mut self.child
                && !matches!(child.try_wait(), Ok(None))
            {
                self.child = None;
                break Attempt::Failed("the process exited".into());
            }
        };
        self.requests += self.proxied_requests().saturating_sub(before);
        attempt
    }
}

/// What the harness counted while it ran.
#[derive(Default)]
struct Tally {
    dead_lettered: u64,
    duplicates_sent: u64,
    late_deliveries: u64,
    ingest_failures: u64,
    evaluate_failures: u64,
}

/// Runs the pipeline under faults and returns the report (see the module docs).
pub fn run(options: &Options) -> Value {
    let runtime = Runtime::new().expect("a tokio runtime");
    let runtime = &runtime;
    let started = Instant::now();
    let mut rng = Rng(options.seed ^ 0xC4A0_5EED);
    let moto = MotoServer::start();
    let sdk = runtime.block_on(moto.sdk_config());
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let s3 = aws_sdk_s3::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let sns = aws_sdk_sns::Client::new(&sdk);
    let (object_queue, alert_queue, topic_arn) =
        runtime.block_on(create_resources(&dynamodb, &s3, &sqs, &sns));

    let logs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../target/chaos/seed-{}-records-{}",
        options.seed, options.records
    ));
    std::fs::create_dir_all(&logs).expect("creating the log directory under target/chaos");
    let log = |name: &str| File::create(logs.join(name)).expect("creating a log file");
    let settle_minutes = options.settle_minutes.to_string();
    let cooldown_minutes = options
        .cooldown_minutes
        .max(options.settle_minutes + WINDOW_SECONDS / 60)
        .to_string();
    let common = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
        [
            ("COUNTERS_TABLE_NAME", TABLE),
            ("WINDOW_MINUTES", "5"),
            ("SETTLE_MINUTES", settle_minutes.as_str()),
            // moto answers a query by reading every item of the table, so the evaluator's
            // 16 queries per window (one per index shard) would make each run read the
            // whole table a few hundred times; 4 shards keep runs within their timeout.
            // (DynamoDB reads only the partition asked for.)
            ("INDEX_SHARDS", "4"),
        ]
        .iter()
        .chain(extra)
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
    };
    let proxy = |seed: u64| {
        let proxy = FaultProxy::start(&moto.endpoint, seed, 0.0);
        proxy.configure(&json!({"rate": options.fault_rate}));
        proxy
    };
    let mut ingest = Function::new(
        "ingest-flow-logs",
        proxy(options.seed),
        common(&[]),
        log("ingest.log"),
    );
    let mut evaluate = Function::new(
        "evaluate-rejects",
        proxy(options.seed + 1),
        common(&[
            ("ALERT_TOPIC_ARN", &topic_arn),
            ("MAX_LISTED_SOURCES", "5000"),
            ("SCAN_SPAN_MINUTES", "15"),
            ("ALERT_COOLDOWN_MINUTES", cooldown_minutes.as_str()),
        ]),
        log("evaluate.log"),
    );
    // Two kills of ingest, mid-delivery, for each of the evaluator, just after SNS
    // accepted its digest.
    evaluate.kill_after_publishing(options.kills / 3);
    ingest.kills_left = options.kills - options.kills / 3;

    let (deliveries, expected) = generate(options, &mut rng);
    let last_arrival = deliveries.iter().map(|d| d.arrival).max().unwrap_or(T0);
    let end = last_arrival.max(T0 + options.windows * WINDOW_SECONDS)
        + options.settle_minutes * 60
        + 2 * WINDOW_SECONDS;
    let mut tally = Tally {
        late_deliveries: deliveries.iter().filter(|d| d.late).count() as u64,
        ..Tally::default()
    };
    let mut pending: Vec<Message> = Vec::new();
    let mut sent_bodies: HashMap<usize, String> = HashMap::new();
    let mut batches: Vec<AsyncEvent> = Vec::new();
    // The schedule fires 30 s into each window.
    let mut now = T0 + WINDOW_SECONDS + 30;
    let mut tick = 0;
    while now <= end {
        tick += 1;
        for (index, delivery) in deliveries.iter().enumerate() {
            let arrives = delivery.arrival <= now && delivery.arrival + WINDOW_SECONDS > now;
            let again = delivery
                .duplicate_at
                .is_some_and(|at| at <= now && at + WINDOW_SECONDS > now);
            match &delivery.content {
                Content::Object { key, gzip } if arrives => runtime.block_on(async {
                    s3.put_object()
                        .bucket(BUCKET)
                        .key(key)
                        .body(ByteStream::from(gzip.clone()))
                        .send()
                        .await
                        .expect("putting an object")
                }),
                Content::Object { .. } => {
                    // S3 sends a notification twice now and then.
                    if again && let Some(body) = sent_bodies.get(&index) {
                        tally.duplicates_sent += 1;
                        pending.push(Message {
                            message_id: format!("duplicate-{index}-{tick}"),
                            receipt: None,
                            body: body.clone(),
                            receives: 0,
                        });
                    }
                    continue;
                }
                Content::Batch { event } if arrives || again => {
                    tally.duplicates_sent += u64::from(again);
                    batches.push(AsyncEvent {
                        request_id: format!("cloudwatch-{index}-{tick}"),
                        event: event.clone(),
                    });
                    continue;
                }
                Content::Batch { .. } => continue,
            };
            // The notification the put just sent, kept to send again as a duplicate.
            let received = runtime.block_on(receive_all(&sqs, &object_queue));
            for message in received {
                sent_bodies.insert(index, message.body.clone());
                pending.push(message);
            }
        }
        let event_time = rejectwatch_core::time::format_utc(now);
        let schedule = json!({
            "version": "0", "id": format!("schedule-{now}"), "detail-type": "Scheduled Event",
            "source": "aws.events", "account": ACCOUNT, "time": event_time,
            "region": "us-east-1", "resources": [], "detail": {}
        });
        let mut ingest_rng = Rng(rng.next());
        let mut evaluate_rng = Rng(rng.next());
        let (ingest_tally, evaluate_failures) = std::thread::scope(|scope| {
            let evaluating = scope.spawn(|| {
                run_async(
                    &mut evaluate,
                    &format!("evaluate-{now}"),
                    &schedule,
                    &mut evaluate_rng,
                )
            });
            let ingested = ingest_tick(
                &mut ingest,
                &mut pending,
                std::mem::take(&mut batches),
                runtime,
                &sqs,
                &object_queue,
                &mut ingest_rng,
            );
            (ingested, evaluating.join().expect("the evaluator thread"))
        });
        tally.dead_lettered += ingest_tally.dead_lettered;
        tally.ingest_failures += ingest_tally.ingest_failures;
        tally.evaluate_failures += u64::from(!evaluate_failures);
        eprintln!(
            "chaos: t+{:>4} min  pending {:>3}  ingest {:>4} calls {:>2} kills  evaluate {:>3} calls {} kills  {:.0} s",
            (now - T0) / 60,
            pending.len(),
            ingest.invocations,
            ingest.kills,
            evaluate.invocations,
            evaluate.kills,
            started.elapsed().as_secs_f64()
        );
        now += WINDOW_SECONDS;
    }
    ingest.kill();
    evaluate.kill();
    // Whatever is still waiting was never counted: it is lost, as in a dead-letter queue.
    tally.dead_lettered += pending.len() as u64;

    let stored = runtime.block_on(stored_rejects(&dynamodb));
    let alerts = runtime.block_on(read_alerts(&sqs, &alert_queue));
    judge(
        options, &expected, &stored, &alerts, &tally, &ingest, &evaluate, started,
    )
}

/// Ingest's work of one tick: the waiting SQS messages in batches (those failing come
/// back next tick), and the CloudWatch Logs batches (retried twice at once, as Lambda
/// retries an asynchronous invocation).
fn ingest_tick(
    ingest: &mut Function,
    pending: &mut Vec<Message>,
    batches: Vec<AsyncEvent>,
    runtime: &Runtime,
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    rng: &mut Rng,
) -> Tally {
    let mut tally = Tally::default();
    let waiting = std::mem::take(pending);
    for (number, batch) in waiting.chunks(BATCH_SIZE).enumerate() {
        let records: Vec<Value> = batch
            .iter()
            .map(|message| {
                json!({
                    "messageId": message.message_id,
                    "receiptHandle": message.receipt.clone().unwrap_or_default(),
                    "body": message.body,
                    "attributes": {"ApproximateReceiveCount": (message.receives + 1).to_string()},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": format!("arn:aws:sqs:us-east-1:{ACCOUNT}:{OBJECT_QUEUE}"),
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        let request_id = format!("sqs-{}-{number}", ingest.invocations);
        let failed: HashSet<String> =
            match ingest.invoke(&request_id, &json!({"Records": records}), rng) {
                Attempt::Answered(response) => response["batchItemFailures"]
                    .as_array()
                    .map(|failures| {
                        failures
                            .iter()
                            .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                Attempt::Failed(_) | Attempt::Killed | Attempt::TimedOut => {
                    batch.iter().map(|m| m.message_id.clone()).collect()
                }
            };
        tally.ingest_failures += failed.len() as u64;
        for message in batch {
            if failed.contains(&message.message_id) {
                let mut message = message.clone();
                message.receives += 1;
                if message.receives >= MAX_RECEIVES {
                    tally.dead_lettered += 1;
                } else {
                    pending.push(message);
                }
            } else if let Some(receipt) = &message.receipt {
                runtime.block_on(async {
                    sqs.delete_message()
                        .queue_url(queue)
                        .receipt_handle(receipt)
                        .send()
                        .await
                        .expect("deleting a message")
                });
            }
        }
    }
    for batch in batches {
        if !run_async(ingest, &batch.request_id, &batch.event, rng) {
            tally.dead_lettered += 1;
        }
    }
    tally
}

/// An asynchronous invocation: up to [`ASYNC_ATTEMPTS`] under one request id; whether
/// one succeeded.
fn run_async(function: &mut Function, request_id: &str, event: &Value, rng: &mut Rng) -> bool {
    for _ in 0..ASYNC_ATTEMPTS {
        match function.invoke(request_id, event, rng) {
            Attempt::Answered(_) => return true,
            Attempt::Failed(error) => {
                eprintln!("chaos: {} {request_id} failed: {error}", function.name);
            }
            Attempt::Killed => eprintln!("chaos: {} {request_id} killed", function.name),
            Attempt::TimedOut => eprintln!("chaos: {} {request_id} timed out", function.name),
        }
    }
    false
}

/// The generated traffic, cut into deliveries with their arrival times, and its truth.
fn generate(options: &Options, rng: &mut Rng) -> (Vec<Delivery>, Expected) {
    let mut generator = FlowLogGenerator::new(GeneratorConfig {
        seed: options.seed,
        records: options.records,
        start_time: T0,
        duration_seconds: options.windows * WINDOW_SECONDS,
        benign_sources: 2_000,
        interfaces: 40,
        ..GeneratorConfig::default()
    });
    let header = rejectwatch_core::flow_log::FlowFormat::default().header_line();
    let per_delivery = (options.records / (options.windows * 4)).max(200);
    let mut deliveries = Vec::new();
    let mut line = String::new();
    let mut event_id: u64 = 37_000_000_000_000_000;
    loop {
        let mut lines = Vec::new();
        let mut latest = T0;
        while (lines.len() as u64) < per_delivery && generator.next_line(&mut line) {
            // The record's start: the eleventh field of the default format.
            if let Some(start) = line.split(' ').nth(10).and_then(|t| t.parse::<u64>().ok()) {
                latest = latest.max(start);
            }
            lines.push(line.clone());
        }
        if lines.is_empty() {
            break;
        }
        let index = deliveries.len();
        // AWS publishes within minutes of the capture window; some deliveries come late
        // (but within the settle time), some twice.
        let late = rng.chance(0.15);
        let settle = options.settle_minutes * 60;
        let delay = if late {
            settle * 3 / 10 + rng.below(settle * 4 / 10)
        } else {
            60 + rng.below(8 * 60).min(settle / 2)
        };
        let arrival = latest + 60 + delay;
        let duplicate_at = rng
            .chance(0.1)
            .then(|| arrival + WINDOW_SECONDS * (1 + rng.below(3)));
        let content = if index % 2 == 0 {
            let mut gzip = GzEncoder::new(Vec::new(), Compression::fast());
            writeln!(gzip, "{header}").expect("writing to memory");
            for line in &lines {
                writeln!(gzip, "{line}").expect("writing to memory");
            }
            Content::Object {
                key: format!(
                    "AWSLogs/{ACCOUNT}/vpcflowlogs/us-east-1/2024/05/01/{ACCOUNT}_vpcflowlogs_us-east-1_fl-0chaos_{index:04}.log.gz"
                ),
                gzip: gzip.finish().expect("gzip"),
            }
        } else {
            let events = lines
                .iter()
                .map(|message| {
                    event_id += 1;
                    let mut entry = LogEntry::default();
                    entry.id = event_id.to_string();
                    entry.timestamp = (latest * 1000) as i64;
                    entry.message = message.clone();
                    entry
                })
                .collect();
            let payload = subscription_payload(LOG_GROUP, events);
            Content::Batch {
                event: serde_json::from_str(&payload).expect("a subscription event"),
            }
        };
        deliveries.push(Delivery {
            arrival,
            duplicate_at,
            late,
            content,
        });
    }
    (deliveries, generator.into_expected())
}

async fn create_resources(
    dynamodb: &aws_sdk_dynamodb::Client,
    s3: &aws_sdk_s3::Client,
    sqs: &aws_sdk_sqs::Client,
    sns: &aws_sdk_sns::Client,
) -> (String, String, String) {
    create_counters_table(dynamodb, TABLE).await;
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("the bucket");
    let queue = |name: &'static str| async move {
        sqs.create_queue()
            .queue_name(name)
            .send()
            .await
            .expect("a queue")
            .queue_url
            .expect("a queue URL")
    };
    let object_queue = queue(OBJECT_QUEUE).await;
    let alert_queue = queue(ALERT_QUEUE).await;
    let notification = NotificationConfiguration::builder()
        .queue_configurations(
            QueueConfiguration::builder()
                .queue_arn(format!("arn:aws:sqs:us-east-1:{ACCOUNT}:{OBJECT_QUEUE}"))
                .events(Event::S3ObjectCreated)
                .build()
                .expect("a queue configuration"),
        )
        .build();
    s3.put_bucket_notification_configuration()
        .bucket(BUCKET)
        .notification_configuration(notification)
        .send()
        .await
        .expect("the bucket's notifications");
    let topic_arn = sns
        .create_topic()
        .name("rejectwatch-alerts")
        .send()
        .await
        .expect("the topic")
        .topic_arn
        .expect("a topic ARN");
    sns.subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(format!("arn:aws:sqs:us-east-1:{ACCOUNT}:{ALERT_QUEUE}"))
        .send()
        .await
        .expect("subscribing the alert queue");
    // S3 sends a test event when notifications are configured: drop it.
    receive_all(sqs, &object_queue).await;
    (object_queue, alert_queue, topic_arn)
}

/// Every message waiting in a queue, left invisible (the harness redelivers them).
async fn receive_all(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<Message> {
    let mut messages = Vec::new();
    loop {
        let output = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .visibility_timeout(43_200)
            .send()
            .await
            .expect("receiving messages");
        let received = output.messages.unwrap_or_default();
        if received.is_empty() {
            return messages;
        }
        for message in received {
            let body = message.body.unwrap_or_default();
            if body.contains("s3:TestEvent") {
                continue;
            }
            messages.push(Message {
                message_id: message.message_id.unwrap_or_default(),
                receipt: message.receipt_handle,
                body,
                receives: 0,
            });
        }
    }
}

/// REJECTs stored per (source, window).
async fn stored_rejects(dynamodb: &aws_sdk_dynamodb::Client) -> HashMap<(IpAddr, u64), u64> {
    let mut stored = HashMap::new();
    let mut pages = dynamodb
        .scan()
        .table_name(TABLE)
        .into_paginator()
        .items()
        .send();
    while let Some(item) = pages.next().await {
        let item = item.expect("scanning the table");
        if let Some(row) = counter_from_item(&item)
            && let Some(source) = row.source
        {
            *stored.entry((source, row.window_start)).or_default() += row.rejects;
        }
    }
    stored
}

/// One source in one delivered digest.
struct Alerted {
    digest_id: String,
    evaluated_at: u64,
    severity: u8,
    windows: Vec<u64>,
}

/// The digests delivered to the subscribed queue, per source, and how many deliveries
/// repeated a digest id (SNS delivers at least once; subscribers drop repeats by id).
async fn read_alerts(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
) -> (BTreeMap<IpAddr, Vec<Alerted>>, u64, u64) {
    let mut by_source: BTreeMap<IpAddr, Vec<Alerted>> = BTreeMap::new();
    let mut digests = HashSet::new();
    let mut repeats = 0;
    for message in receive_all(sqs, queue).await {
        let envelope: Value = serde_json::from_str(&message.body).expect("an SNS envelope");
        let digest: Value =
            serde_json::from_str(envelope["Message"].as_str().unwrap_or("{}")).expect("a digest");
        let digest_id = digest["digest_id"].as_str().unwrap_or("").to_owned();
        if !digests.insert(digest_id.clone()) {
            repeats += 1;
            continue;
        }
        for source in digest["sources"].as_array().into_iter().flatten() {
            let Some(address) = source["source"].as_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            by_source.entry(address).or_default().push(Alerted {
                digest_id: digest_id.clone(),
                evaluated_at: digest["evaluated_at"].as_u64().unwrap_or(0),
                severity: match source["severity"].as_str() {
                    Some("high") => 3,
                    Some("medium") => 2,
                    _ => 1,
                },
                windows: source["windows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_u64)
                    .collect(),
            });
        }
    }
    (by_source, digests.len() as u64, repeats)
}

/// Which sources a rule fires for, by the exact truth: in some window, or (the scan
/// rules) over a span of `SPAN_WINDOWS` consecutive windows. Distinct counts up to
/// `EXACT_VALUES` per row are stored exactly, so a count at a threshold is judged exactly.
fn sources_to_alert(per_source: &HashMap<SourceWindow, ExpectedSource>) -> HashSet<IpAddr> {
    let mut by_source: BTreeMap<IpAddr, BTreeMap<u64, &ExpectedSource>> = BTreeMap::new();
    for (key, source) in per_source {
        by_source
            .entry(key.source)
            .or_default()
            .insert(key.window_start, source);
    }
    let mut should = HashSet::new();
    for (source, windows) in &by_source {
        for &end in windows.keys() {
            let start = end.saturating_sub((SPAN_WINDOWS - 1) * WINDOW_SECONDS);
            // The window alone, then the span ending with it.
            for first in [end, start] {
                let mut rejects = 0;
                let mut ports = HashSet::new();
                let mut hosts = HashSet::new();
                for (_, window) in windows.range(first..=end) {
                    rejects += window.rejects;
                    ports.extend(window.dst_ports.iter().copied());
                    hosts.extend(window.dst_addrs.iter().copied());
                }
                let (ports, hosts) = (ports.len() as u64, hosts.len() as u64);
                // Volume is a rate per window; only the scan rules apply over a span.
                let alone = first == end;
                if (alone && rejects >= REJECT_THRESHOLD)
                    || ports >= PORT_SCAN_THRESHOLD
                    || hosts >= HOST_SWEEP_THRESHOLD
                {
                    should.insert(*source);
                }
            }
        }
    }
    should
}

/// Compares what was stored and alerted with the generator's truth.
#[allow(clippy::too_many_arguments)]
fn judge(
    options: &Options,
    expected: &Expected,
    stored: &HashMap<(IpAddr, u64), u64>,
    alerts: &(BTreeMap<IpAddr, Vec<Alerted>>, u64, u64),
    tally: &Tally,
    ingest: &Function,
    evaluate: &Function,
    started: Instant,
) -> Value {
    let mut lost = 0u64;
    let mut doubled = 0u64;
    let mut truth: HashMap<(IpAddr, u64), u64> = HashMap::new();
    for (key, source) in &expected.per_source {
        truth.insert((key.source, key.window_start), source.rejects);
    }
    for (key, &count) in &truth {
        let got = stored.get(key).copied().unwrap_or(0);
        lost += count.saturating_sub(got);
        doubled += got.saturating_sub(count);
    }
    for (key, &got) in stored {
        if !truth.contains_key(key) {
            doubled += got;
        }
    }

    let should = sources_to_alert(&expected.per_source);
    let (alerted, digests, duplicate_deliveries) = alerts;
    let missed = should
        .iter()
        .filter(|source| !alerted.contains_key(source))
        .count();
    let unexpected = alerted
        .keys()
        .filter(|source| !should.contains(source))
        .count();
    // A later digest naming a source again tells something new only at a higher severity,
    // or for activity in a window that ended after the earlier alert's cooldown.
    let cooldown = options
        .cooldown_minutes
        .max(options.settle_minutes + WINDOW_SECONDS / 60)
        * 60;
    let mut repeated = 0;
    let mut realerts = 0;
    for alerts in alerted.values() {
        let mut alerts: Vec<&Alerted> = alerts.iter().collect();
        alerts.sort_by_key(|alert| (alert.evaluated_at, alert.digest_id.clone()));
        let mut cooldown_end = 0;
        let mut highest = 0;
        for (position, alert) in alerts.into_iter().enumerate() {
            let news = alert.severity > highest
                || alert
                    .windows
                    .iter()
                    .any(|window| window + WINDOW_SECONDS > cooldown_end);
            if position > 0 {
                if news {
                    realerts += 1;
                } else {
                    repeated += 1;
                }
            }
            if news && alert.severity >= highest {
                cooldown_end = alert.evaluated_at + cooldown;
            }
            highest = highest.max(alert.severity);
        }
    }
    let faults = |function: &Function| function.proxy.stats();
    let (ingest_faults, evaluate_faults) = (faults(ingest), faults(evaluate));
    // The same digest delivered twice is a repeat too, unless something that is allowed
    // to repeat it happened as often: SNS accepted a publish whose answer was lost (the
    // SDK, or the run's retry, publishes it again), or an evaluation was killed or timed
    // out (after publishing, its retry publishes again).
    let publish_faults = &evaluate_faults["operations"]["sns.Publish"];
    let lost_answers = ["error_after", "drop_after"]
        .iter()
        .map(|kind| publish_faults[kind].as_u64().unwrap_or(0))
        .sum::<u64>();
    let explained = lost_answers + u64::from(evaluate.kills + evaluate.timeouts);
    let unexplained_redeliveries = duplicate_deliveries.saturating_sub(explained);
    repeated += unexplained_redeliveries;
    let injected = ingest_faults["faults"].as_u64().unwrap_or(0)
        + evaluate_faults["faults"].as_u64().unwrap_or(0);
    let mut by_kind = serde_json::Map::new();
    for stats in [&ingest_faults, &evaluate_faults] {
        for kind in [
            "throttle",
            "error",
            "error_after",
            "delay",
            "drop",
            "drop_after",
            "truncate",
        ] {
            let count = stats[kind].as_u64().unwrap_or(0);
            let total = by_kind.get(kind).and_then(Value::as_u64).unwrap_or(0);
            by_kind.insert(kind.into(), json!(total + count));
        }
    }
    json!({
        "records": expected.records,
        "records_lost": lost,
        "records_doubled": doubled,
        "alerts_expected": should.len(),
        "alerts_missed": missed,
        "alerts_repeated": repeated,
        "faults_injected": injected,
        "kills": ingest.kills + evaluate.kills,
        "rejects": expected.rejects,
        "seed": options.seed,
        "fault_rate": options.fault_rate,
        "requests": ingest_faults["requests"].as_u64().unwrap_or(0) + evaluate_faults["requests"].as_u64().unwrap_or(0),
        "faults": by_kind,
        "alerts_unexpected": unexpected,
        "realerts_with_news": realerts,
        "digests": digests,
        "digest_deliveries_repeated": duplicate_deliveries,
        "digest_repeats_explained": explained.min(*duplicate_deliveries),
        "publish_answers_lost": lost_answers,
        "dead_lettered": tally.dead_lettered,
        "deliveries_late": tally.late_deliveries,
        "deliveries_duplicated": tally.duplicates_sent,
        "failed_ingest_messages": tally.ingest_failures,
        "failed_evaluations": tally.evaluate_failures,
        "invocations": ingest.invocations + evaluate.invocations,
        "timeouts": ingest.timeouts + evaluate.timeouts,
        "process_starts": ingest.starts + evaluate.starts,
        "seconds": started.elapsed().as_secs(),
    })
}
