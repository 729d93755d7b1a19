//! Cold start of the two function binaries, and their sizes as deployed.
//!
//! Run: `cargo bench -p rejectwatch-tests --bench coldstart` (add `-- --starts N`). Each
//! start spawns the release binary against a stub of the Lambda Runtime API on loopback
//! (`rejectwatch_tests::runtime_api`), with the environment Lambda gives it, and measures
//! from `spawn` to the runtime's first `GET .../invocation/next`: the init phase (tracing,
//! configuration, SDK configuration and clients). Medians of `--starts` (default 20)
//! starts per function, interleaved.
//!
//! Then, in fresh processes (this binary re-run with `REJECTWATCH_COLDSTART_PROBE`), where
//! that time goes: `aws_config::load_defaults`, building the clients, and the first request
//! against a loopback port that refuses it, over plain HTTP and over HTTPS (the difference
//! is building the TLS stack: the rustls configuration and its root certificates).
//!
//! Sizes: the x86-64 release binaries this bench runs, and the arm64 `bootstrap` files of
//! `sam build` (from `scripts/check-template`, in target/sam-build) when they are there,
//! each with its deflated zip size (what Lambda stores and loads).

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use rejectwatch_tests::runtime_api::{Outcome, RuntimeApi, function_binary};

const PROBE_ENV: &str = "REJECTWATCH_COLDSTART_PROBE";
const WAIT: Duration = Duration::from_secs(30);

struct Function {
    binary: &'static str,
    sam_name: &'static str,
    env: &'static [(&'static str, &'static str)],
}

const FUNCTIONS: [Function; 2] = [
    Function {
        binary: "ingest-flow-logs",
        sam_name: "IngestFunction",
        env: &[("COUNTERS_TABLE_NAME", "rejectwatch-counters")],
    },
    Function {
        binary: "evaluate-rejects",
        sam_name: "EvaluateFunction",
        env: &[
            ("COUNTERS_TABLE_NAME", "rejectwatch-counters"),
            (
                "ALERT_TOPIC_ARN",
                "arn:aws:sns:us-east-1:123456789012:rejectwatch-alerts",
            ),
        ],
    },
];

fn main() {
    if let Ok(phase) = std::env::var(PROBE_ENV) {
        return probe(&phase);
    }
    let starts = arg_value("--starts").unwrap_or(20);
    let binaries: Vec<PathBuf> = FUNCTIONS
        .iter()
        .map(|function| function_binary(function.binary))
        .collect();
    println!("RejectWatch cold start: {starts} starts per function, interleaved, release build");
    println!("(from spawn to the first request for an invocation, against a loopback stub)");

    let mut inits: Vec<Vec<Duration>> = vec![Vec::new(); FUNCTIONS.len()];
    let mut first_invocations = Vec::new();
    for start in 0..starts {
        for (index, (function, binary)) in FUNCTIONS.iter().zip(&binaries).enumerate() {
            let (init, first) = cold_start(function, binary, start == 0 && index == 0);
            inits[index].push(init);
            if let Some(first) = first {
                first_invocations.push(first);
            }
        }
    }
    println!();
    println!(
        "{:<20} {:>12} {:>10} {:>10}",
        "function", "init median", "min", "max"
    );
    for (function, samples) in FUNCTIONS.iter().zip(&inits) {
        println!(
            "{:<20} {:>9.2} ms {:>7.2} ms {:>7.2} ms",
            function.binary,
            millis(median(samples)),
            millis(*samples.iter().min().expect("samples")),
            millis(*samples.iter().max().expect("samples")),
        );
    }
    if let Some(first) = first_invocations.first() {
        println!(
            "first invocation of ingest-flow-logs (CloudWatch Logs control message): {:.2} ms",
            millis(*first)
        );
    }

    println!();
    println!("where init goes (median of {starts} fresh processes each):");
    for phase in ["sdk-config", "clients", "first-http", "first-https"] {
        let samples: Vec<Duration> = (0..starts).filter_map(|_| run_probe(phase)).collect();
        if samples.is_empty() {
            println!("  {phase:<12} unavailable");
        } else {
            println!(
                "  {:<12} {:>7.2} ms  {}",
                phase,
                millis(median(&samples)),
                describe(phase)
            );
        }
    }

    println!();
    println!(
        "{:<20} {:<8} {:>12} {:>12}",
        "binary", "arch", "size", "zip (-9)"
    );
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (function, binary) in FUNCTIONS.iter().zip(&binaries) {
        print_size(function.binary, binary);
    }
    for function in &FUNCTIONS {
        let bootstrap = workspace
            .join("target/sam-build")
            .join(function.sam_name)
            .join("bootstrap");
        if bootstrap.exists() {
            print_size(function.binary, &bootstrap);
        } else {
            println!(
                "{:<20} {:<8} (no {}: run scripts/check-template)",
                function.binary,
                "arm64",
                bootstrap.display()
            );
        }
    }
}

fn describe(phase: &str) -> &'static str {
    match phase {
        "sdk-config" => "aws_config::load_defaults (environment credentials and region)",
        "clients" => "the above plus DynamoDB, S3 and SNS clients built",
        "first-http" => "the clients plus one plain-HTTP request refused on loopback",
        _ => "the clients plus one HTTPS request refused on loopback (TLS stack built)",
    }
}

/// One start: spawn, wait for the first poll, and (for the first start of ingest) time one
/// invocation on the control message, which needs no AWS call.
fn cold_start(function: &Function, binary: &Path, invoke: bool) -> (Duration, Option<Duration>) {
    let api = RuntimeApi::start();
    let mut command = api.command(binary, function.binary);
    for (name, value) in function.env {
        command.env(name, value);
    }
    command
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = command.spawn().expect("starting the function");
    let first_poll = api.wait_first_poll(WAIT);
    let mut first_invocation = None;
    if invoke && first_poll.is_some() {
        let event: serde_json::Value = serde_json::from_str(include_str!(
            "../../events/cloudwatch-logs-control-message.json"
        ))
        .expect("the fixture is JSON");
        let pushed = Instant::now();
        api.push("cold-1", event, RuntimeApi::deadline_after(WAIT));
        if let Some(Outcome::Response(_)) = api.wait_outcome("cold-1", WAIT) {
            first_invocation = Some(pushed.elapsed());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let first_poll =
        first_poll.unwrap_or_else(|| panic!("{} never asked for an invocation", function.binary));
    (first_poll - started, first_invocation)
}

fn run_probe(phase: &str) -> Option<Duration> {
    let output = Command::new(std::env::current_exe().ok()?)
        .env(PROBE_ENV, phase)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let micros: u64 = text.trim().parse().ok()?;
    Some(Duration::from_micros(micros))
}

/// The probe: a fresh process that does the phases up to `phase` the way `main.rs` does,
/// and prints how long they took (microseconds, from the start of `main`).
fn probe(phase: &str) {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
        if phase == "sdk-config" {
            return;
        }
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let s3 = aws_sdk_s3::Client::new(&sdk);
        let sns = aws_sdk_sns::Client::new(&sdk);
        std::hint::black_box((&s3, &sns));
        if phase == "clients" {
            return;
        }
        // A port that accepts and closes: the request fails after the client has built
        // its TLS configuration.
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("an address").port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                drop(stream);
            }
        });
        let scheme = if phase == "first-http" {
            "http"
        } else {
            "https"
        };
        let endpoint = format!("{scheme}://127.0.0.1:{port}");
        let client = aws_sdk_dynamodb::Client::from_conf(
            dynamodb
                .config()
                .to_builder()
                .endpoint_url(endpoint)
                .retry_config(aws_config::retry::RetryConfig::disabled())
                .build(),
        );
        let _ = client.list_tables().send().await;
    });
    println!("{}", started.elapsed().as_micros());
}

fn print_size(name: &str, binary: &Path) {
    let bytes = std::fs::read(binary).expect("reading the binary");
    let arch = match bytes.get(18..20) {
        Some([0x3e, 0]) => "x86_64",
        Some([0xb7, 0]) => "arm64",
        _ => "?",
    };
    let zipped = zip_size(binary).map_or_else(|| "unavailable".into(), mb);
    println!(
        "{:<20} {:<8} {:>12} {:>12}",
        name,
        arch,
        mb(bytes.len() as u64),
        zipped
    );
}

/// The size of a zip holding the file as `bootstrap`, deflated at level 9 (`zip -9`).
fn zip_size(binary: &Path) -> Option<u64> {
    let dir = std::env::temp_dir().join(format!("rejectwatch-zip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::copy(binary, dir.join("bootstrap")).ok()?;
    let status = Command::new("zip")
        .current_dir(&dir)
        .args(["-q", "-9", "function.zip", "bootstrap"])
        .status();
    let size = match status {
        Ok(status) if status.success() => std::fs::metadata(dir.join("function.zip"))
            .ok()
            .map(|metadata| metadata.len()),
        _ => python_zip_size(&dir),
    };
    let _ = std::fs::remove_dir_all(&dir);
    size
}

fn python_zip_size(dir: &Path) -> Option<u64> {
    let mut child = Command::new("python3")
        .current_dir(dir)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(
        b"import zipfile, os\nwith zipfile.ZipFile('function.zip', 'w', zipfile.ZIP_DEFLATED, compresslevel=9) as z: z.write('bootstrap')\nprint(os.path.getsize('function.zip'))\n",
    ).ok()?;
    let output = child.wait_with_output().ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn arg_value(flag: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    let index = args.iter().position(|arg| arg == flag)?;
    args.get(index + 1)?.parse().ok()
}
