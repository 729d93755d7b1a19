//! Throughput and memory of the flow-log core on a generated 1M-record S3 object.
//!
//! Run: `cargo bench -p rejectwatch-tests --bench throughput` (add `-- --records N` to
//! change the size). Everything runs on one thread. Each case is timed several times,
//! interleaved with the others so that machine noise hits all of them alike, and the
//! median is reported; the targets are ratios measured in the same run.
//!
//! Peak RSS is measured in a fresh child process (this binary re-run with
//! `REJECTWATCH_BENCH_CHILD`), which streams the object from disk the way the CLI and
//! Lambda do and reports the kernel's high-water mark (`VmHWM`).
//!
//! The `rejectwatch` CLI (release build) is timed in the same rounds on the same object,
//! read from a file, with its output to `/dev/null`: `tally --json` and the default
//! table, each against the core's end-to-end time; its peak RSS is the kernel's
//! `ru_maxrss` for the child, read through Python's `resource` module.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flate2::write::MultiGzDecoder;
use rejectwatch_core::decode::{DecodeLimits, ObjectDecoder, ObjectLines, RecordSink};
use rejectwatch_core::flow_log::{FlowFormat, FlowRecord, MalformedLine};
use rejectwatch_core::tally::{RejectTally, TallyOptions};
use rejectwatch_testkit::generate::{CUSTOM_25_FIELDS, FlowLogGenerator, GeneratorConfig};
use rejectwatch_tests::runtime_api::function_binary;
use rejectwatch_tests::{CHUNK_BYTES, tally_object};

const ROUNDS: usize = 7;
const CHILD_ENV: &str = "REJECTWATCH_BENCH_CHILD";

fn main() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        return child_stream_file(Path::new(&path));
    }
    let records = arg_value("--records").unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("rejectwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the bench directory");

    println!(
        "RejectWatch core throughput: {records} records per object, {ROUNDS} interleaved rounds, one thread"
    );
    let default_object = generate(records, FlowFormat::default());
    let custom_object = generate(records, FlowFormat::from_fields(&CUSTOM_25_FIELDS));
    for (name, object) in [
        ("default (14 fields)", &default_object),
        ("custom (25 fields)", &custom_object),
    ] {
        println!(
            "  {name}: {:.1} MiB gzip, {:.1} MiB text",
            mib(object.len() as u64),
            mib(decompressed_len(object))
        );
    }

    let default_file = dir.join("default.log.gz");
    std::fs::write(&default_file, &default_object).expect("writing the object");
    let cli = function_binary("rejectwatch");
    let cli_json_args = ["tally", "--json"];
    let cli_table_args = ["tally"];

    let mut cli_json = Vec::new();
    let mut cli_table = Vec::new();
    let mut gunzip_default = Vec::new();
    let mut e2e_default = Vec::new();
    let mut gunzip_custom = Vec::new();
    let mut e2e_custom = Vec::new();
    let mut parse_default = Vec::new();
    for _ in 0..ROUNDS {
        gunzip_default.push(time(|| gunzip_only(&default_object)));
        parse_default.push(time(|| parse_only(&default_object, records)));
        e2e_default.push(time(|| end_to_end(&default_object, records)));
        gunzip_custom.push(time(|| gunzip_only(&custom_object)));
        e2e_custom.push(time(|| end_to_end(&custom_object, records)));
        cli_json.push(time(|| run_cli(&cli, &cli_json_args, &default_file)));
        cli_table.push(time(|| run_cli(&cli, &cli_table_args, &default_file)));
    }
    let system_gunzip = system_gunzip(&default_file);

    println!();
    println!(
        "{:<34} {:>10} {:>14} {:>9}",
        "case (median)", "seconds", "records/s", "vs gunzip"
    );
    let rows = [
        (
            "gunzip only, default",
            median(&gunzip_default),
            median(&gunzip_default),
        ),
        (
            "gunzip+parse, default",
            median(&parse_default),
            median(&gunzip_default),
        ),
        (
            "gunzip+parse+tally, default",
            median(&e2e_default),
            median(&gunzip_default),
        ),
        (
            "gunzip only, custom 25",
            median(&gunzip_custom),
            median(&gunzip_custom),
        ),
        (
            "gunzip+parse+tally, custom 25",
            median(&e2e_custom),
            median(&gunzip_custom),
        ),
    ];
    for (name, seconds, baseline) in rows {
        println!(
            "{name:<34} {:>10.3} {:>14.0} {:>8.2}x",
            seconds.as_secs_f64(),
            records as f64 / seconds.as_secs_f64(),
            seconds.as_secs_f64() / baseline.as_secs_f64()
        );
    }
    println!();
    println!(
        "{:<34} {:>10} {:>14} {:>9} {:>9}",
        "CLI on the default file (median)", "seconds", "records/s", "vs gunzip", "vs core"
    );
    for (name, samples) in [
        ("rejectwatch tally --json", &cli_json),
        ("rejectwatch tally (table)", &cli_table),
    ] {
        let seconds = median(samples).as_secs_f64();
        println!(
            "{name:<34} {:>10.3} {:>14.0} {:>8.2}x {:>8.2}x",
            seconds,
            records as f64 / seconds,
            seconds / median(&gunzip_default).as_secs_f64(),
            seconds / median(&e2e_default).as_secs_f64()
        );
    }
    if let Some(seconds) = system_gunzip {
        println!(
            "{:<34} {:>10.3}   (gzip -dc > /dev/null, for reference)",
            "system gzip, default",
            seconds.as_secs_f64()
        );
    }

    println!();
    println!("peak RSS of a fresh process streaming the object from disk (VmHWM):");
    let custom_file = dir.join("custom.log.gz");
    std::fs::write(&custom_file, &custom_object).expect("writing the object");
    let empty_file = dir.join("empty.log.gz");
    std::fs::write(&empty_file, b"").expect("writing the object");
    for (name, path) in [
        ("empty object (baseline)", &empty_file),
        ("default object", &default_file),
        ("custom 25 object", &custom_file),
    ] {
        println!(
            "  {name:<26} {}",
            peak_rss(path).unwrap_or_else(|| "unavailable".into())
        );
    }
    for (name, args) in [
        ("rejectwatch tally --json", &cli_json_args[..]),
        ("rejectwatch tally (table)", &cli_table_args[..]),
    ] {
        println!(
            "  {name:<26} {}",
            cli_peak_rss(&cli, args, &default_file).unwrap_or_else(|| "unavailable".into())
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the CLI on `file` with its output thrown away.
fn run_cli(cli: &Path, args: &[&str], file: &Path) {
    let status = Command::new(cli)
        .args(args)
        .arg(file)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running rejectwatch");
    assert!(status.success(), "rejectwatch {args:?} failed");
}

/// The CLI's peak RSS (`ru_maxrss` of the child, which Linux reports in KiB).
fn cli_peak_rss(cli: &Path, args: &[&str], file: &Path) -> Option<String> {
    let script = "import resource, subprocess, sys\n\
        subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)\n\
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)";
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(cli)
        .args(args)
        .arg(file)
        .output()
        .ok()?;
    let kib: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .ok()?;
    Some(format!("{kib} kB (ru_maxrss)"))
}

fn arg_value(flag: &str) -> Option<u64> {
    let args: Vec<String> = std::env::args().collect();
    let index = args.iter().position(|arg| arg == flag)?;
    args.get(index + 1)?.parse().ok()
}

fn generate(records: u64, format: FlowFormat) -> Vec<u8> {
    let config = GeneratorConfig {
        records,
        format,
        seed: 7,
        ..GeneratorConfig::default()
    };
    let mut object = Vec::new();
    FlowLogGenerator::new(config)
        .write_gzip(&mut object, 1)
        .expect("generating");
    object
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn decompressed_len(object: &[u8]) -> u64 {
    let mut counter = CountingSink(0);
    let mut decoder = MultiGzDecoder::new(&mut counter);
    decoder.write_all(object).expect("valid gzip");
    decoder.finish().expect("valid gzip");
    counter.0
}

struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len() as u64;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn time(work: impl FnOnce()) -> Duration {
    let started = Instant::now();
    work();
    started.elapsed()
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// Decompression alone, with the same decoder and chunking the pipeline uses.
fn gunzip_only(object: &[u8]) {
    let mut counter = CountingSink(0);
    let mut decoder = MultiGzDecoder::new(&mut counter);
    for chunk in object.chunks(CHUNK_BYTES) {
        decoder.write_all(chunk).expect("valid gzip");
    }
    decoder.finish().expect("valid gzip");
    std::hint::black_box(counter.0);
}

/// Decompression, line splitting and parsing, without the tally: where the time goes.
fn parse_only(object: &[u8], records: u64) {
    #[derive(Default)]
    struct Count(u64);
    impl RecordSink for Count {
        fn record(&mut self, record: &FlowRecord<'_>) {
            self.0 += u64::from(record.action().is_some());
        }
        fn malformed(&mut self, _: MalformedLine) {}
    }
    let lines = ObjectLines::new(FlowFormat::default(), Count::default());
    let mut decoder = ObjectDecoder::new(lines, DecodeLimits::default());
    for chunk in object.chunks(CHUNK_BYTES) {
        decoder.write(chunk).expect("valid object");
    }
    let counted = decoder.finish().expect("valid object").into_records().0;
    assert!(counted <= records);
}

fn end_to_end(object: &[u8], records: u64) {
    let tally = tally_object(object, TallyOptions::default()).expect("valid object");
    assert_eq!(tally.totals().records, records);
    std::hint::black_box(tally.len());
}

fn system_gunzip(path: &Path) -> Option<Duration> {
    let mut samples = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let status = Command::new("gzip")
            .arg("-dc")
            .arg(path)
            .stdout(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(())?;
        samples.push(started.elapsed());
    }
    Some(median(&samples))
}

fn peak_rss(path: &PathBuf) -> Option<String> {
    let output = Command::new(std::env::current_exe().ok()?)
        .env(CHILD_ENV, path)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The child: stream the file through the pipeline in chunks, then report VmHWM.
fn child_stream_file(path: &Path) {
    let mut file = std::fs::File::open(path).expect("opening the object");
    let lines = ObjectLines::new(FlowFormat::default(), RejectTally::default());
    let mut decoder = ObjectDecoder::new(lines, DecodeLimits::default());
    let mut chunk = vec![0u8; CHUNK_BYTES];
    loop {
        let read = file.read(&mut chunk).expect("reading the object");
        if read == 0 {
            break;
        }
        decoder.write(&chunk[..read]).expect("decoding the object");
    }
    let tally = decoder
        .finish()
        .expect("finishing the object")
        .into_records();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .map_or("unknown", str::trim);
    println!(
        "{peak} ({} records, {} source-windows)",
        tally.totals().records,
        tally.len()
    );
}
