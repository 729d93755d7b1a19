//! The `rejectwatch` binary, run as a user runs it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use flate2::Compression;
use flate2::write::GzEncoder;
use rejectwatch_core::decode::{LogData, LogEntry, encode_subscription_event};
use rejectwatch_core::flow_log::FlowFormat;
use rejectwatch_testkit::generate::{FlowLogGenerator, GeneratorConfig};
use serde_json::Value;

const HEADER: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status";
const REJECT: &str = "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK";
const ACCEPT: &str = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK";
const NODATA: &str =
    "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA";

fn rejectwatch(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rejectwatch"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running rejectwatch");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default())
        .expect("writing stdin");
    drop(input);
    child.wait_with_output().expect("waiting for rejectwatch")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_lines(output: &Output) -> Vec<Value> {
    text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON object per line"))
        .collect()
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn parse_prints_one_json_object_per_record_with_absent_fields_omitted() {
    let input = format!("{HEADER}\n{REJECT}\n{NODATA}\n");
    let output = rejectwatch(&["parse"], Some(input.as_bytes()));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let records = json_lines(&output);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["srcaddr"], "172.31.9.69");
    assert_eq!(records[0]["dstport"], 3389);
    assert_eq!(records[0]["action"], "REJECT");
    assert_eq!(records[0]["log-status"], "OK");
    assert!(records[1].get("srcaddr").is_none());
    assert_eq!(records[1]["log-status"], "NODATA");
}

#[test]
fn parse_reports_malformed_lines_on_stderr_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "flows.log",
        format!("{HEADER}\n{REJECT}\n2 x y\n{ACCEPT}\n").as_bytes(),
    );
    let output = rejectwatch(&["parse", &path], None);
    assert!(output.status.success());
    assert_eq!(json_lines(&output).len(), 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            r#"{path}: line 3: expected 14 fields, found 3: "2 x y""#
        )),
        "{stderr}"
    );
}

#[test]
fn parse_reads_gzip_and_uses_the_format_for_headerless_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "flows.gz", &gzip("REJECT 10.0.0.1 22\n"));
    let output = rejectwatch(
        &[
            "parse",
            "--format",
            "${action} ${srcaddr} ${dstport}",
            &path,
        ],
        None,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        json_lines(&output)[0],
        serde_json::json!({"action": "REJECT", "srcaddr": "10.0.0.1", "dstport": 22})
    );
}

#[test]
fn parse_reads_cloudwatch_subscription_payloads() {
    let mut data = LogData::default();
    data.message_type = "DATA_MESSAGE".into();
    data.log_group = "/vpc/flow-logs".into();
    data.log_events = [REJECT, ACCEPT]
        .iter()
        .enumerate()
        .map(|(index, message)| {
            let mut entry = LogEntry::default();
            entry.id = index.to_string();
            entry.message = (*message).to_owned();
            entry
        })
        .collect();
    let payload = text(&encode_subscription_event(&data));
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&payload).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let single = write(dir.path(), "event.json", pretty.as_bytes());
    let lines = write(
        dir.path(),
        "events.jsonl",
        format!("{payload}\n{payload}\n").as_bytes(),
    );
    assert_eq!(json_lines(&rejectwatch(&["parse", &single], None)).len(), 2);
    assert_eq!(json_lines(&rejectwatch(&["parse", &lines], None)).len(), 4);
}

#[test]
fn corrupt_gzip_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = gzip(&format!("{HEADER}\n{REJECT}\n"));
    bytes.truncate(bytes.len() - 6);
    let path = write(dir.path(), "broken.log.gz", &bytes);
    let output = rejectwatch(&["tally", &path], None);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("broken.log.gz") && stderr.contains("gzip"),
        "{stderr}"
    );
}

/// `rejectwatch generate` writes a text object and its Parquet twin from one seed.
fn generated_twins(dir: &Path) -> (String, String) {
    let paths = [
        ("flows.log.gz", "s3-gzip"),
        ("flows.log.parquet", "s3-parquet"),
    ]
    .map(|(name, shape)| {
        let path = dir.join(name).display().to_string();
        let output = rejectwatch(
            &[
                "generate",
                "--records",
                "20000",
                "--seed",
                "3",
                "--format",
                "custom",
                "--shape",
                shape,
                "--row-group-rows",
                "3000",
                "--output",
                &path,
            ],
            None,
        );
        assert!(output.status.success(), "{}", text(&output.stderr));
        path
    });
    let [text_path, parquet_path] = paths;
    (text_path, parquet_path)
}

#[test]
fn a_parquet_file_tallies_and_parses_as_its_text_twin() {
    let dir = tempfile::tempdir().unwrap();
    let (text_path, parquet_path) = generated_twins(dir.path());
    let tally = |path: &str| {
        let output = rejectwatch(&["tally", "--json", path], None);
        assert!(output.status.success(), "{}", text(&output.stderr));
        let mut report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        report.as_object_mut().unwrap().remove("malformed_samples");
        report
    };
    let from_parquet = tally(&parquet_path);
    assert_eq!(from_parquet["totals"]["records"], 20_000);
    assert_eq!(from_parquet, tally(&text_path));

    let parse = |path: &str| rejectwatch(&["parse", path], None);
    let (from_parquet, from_text) = (parse(&parquet_path), parse(&text_path));
    assert!(
        from_parquet.status.success(),
        "{}",
        text(&from_parquet.stderr)
    );
    assert_eq!(
        from_parquet.stdout.iter().filter(|&&b| b == b'\n').count(),
        20_000
    );
    assert!(
        from_parquet.stdout == from_text.stdout,
        "parse output differs"
    );
}

#[test]
fn parquet_on_standard_input_is_told_by_its_magic() {
    let dir = tempfile::tempdir().unwrap();
    let (text_path, parquet_path) = generated_twins(dir.path());
    let parquet = std::fs::read(&parquet_path).unwrap();
    let from_stdin = rejectwatch(&["tally", "--json"], Some(&parquet));
    assert!(from_stdin.status.success(), "{}", text(&from_stdin.stderr));
    let from_text = rejectwatch(&["tally", "--json", &text_path], None);
    let totals = |output: &Output| {
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()["totals"].clone()
    };
    assert_eq!(totals(&from_stdin), totals(&from_text));
    // A pipe named as a file (process substitution) cannot seek either.
    let from_pipe = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} tally --json <(cat {parquet_path})",
            env!("CARGO_BIN_EXE_rejectwatch")
        ))
        .output()
        .unwrap();
    assert!(from_pipe.status.success(), "{}", text(&from_pipe.stderr));
    assert_eq!(totals(&from_pipe), totals(&from_text));
}

#[test]
fn a_parquet_file_name_is_never_read_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let plain = format!("{HEADER}\n{REJECT}\n");
    for (name, bytes) in [
        ("plain.log.parquet", plain.as_bytes().to_vec()),
        ("gzip.log.parquet", gzip(&plain)),
        (
            "broken.log.parquet",
            b"PAR1\x15\x04\x15\x10\x15\x14".to_vec(),
        ),
    ] {
        let path = write(dir.path(), name, &bytes);
        for command in ["parse", "tally"] {
            let output = rejectwatch(&[command, &path], None);
            assert!(!output.status.success(), "{command} {name}");
            assert!(output.stdout.is_empty(), "{command} {name}");
            let stderr = text(&output.stderr);
            assert!(
                stderr.contains(&path) && stderr.contains("Parquet data is corrupt"),
                "{command} {name}: {stderr}"
            );
        }
    }
}

#[test]
fn missing_file_fails_naming_it() {
    let output = rejectwatch(&["tally", "/nonexistent/flows.log"], None);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("/nonexistent/flows.log"));
}

#[test]
fn tally_json_matches_the_generator_truth() {
    let config = GeneratorConfig {
        records: 20_000,
        seed: 3,
        ..GeneratorConfig::default()
    };
    let mut generator = FlowLogGenerator::new(config);
    let mut object = Vec::new();
    generator.write_gzip(&mut object, 2).unwrap();
    let expected = generator.into_expected();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "flows.log.gz", &object);

    let output = rejectwatch(&["tally", "--json", &path], None);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let totals = &report["totals"];
    assert_eq!(totals["records"], expected.records);
    assert_eq!(totals["rejects"], expected.rejects);
    assert_eq!(totals["sources"], expected.sources());
    assert_eq!(totals["nodata"], expected.nodata);
    assert_eq!(totals["skipdata"], expected.skipdata);
    assert_eq!(totals["malformed"], 0);
    assert_eq!(totals["uncountable"], 0);
    let sources = report["sources"].as_array().unwrap();
    assert_eq!(sources.len(), expected.per_source.len());
    let rejects: Vec<u64> = sources
        .iter()
        .map(|s| s["rejects"].as_u64().unwrap())
        .collect();
    assert!(
        rejects.windows(2).all(|pair| pair[0] >= pair[1]),
        "sorted by rejects, descending"
    );
    assert_eq!(rejects.iter().sum::<u64>(), expected.rejects);
    for field in [
        "source",
        "window_start",
        "packets",
        "bytes",
        "distinct_dst_ports",
        "distinct_dst_addrs",
        "first_seen",
        "last_seen",
    ] {
        assert!(sources[0].get(field).is_some(), "{field}");
    }
}

#[test]
fn tally_table_shows_top_sources_and_totals() {
    let input = format!("{HEADER}\n{REJECT}\n{REJECT}\n{ACCEPT}\n{NODATA}\n");
    let output = rejectwatch(&["tally", "--window-minutes", "60"], Some(input.as_bytes()));
    assert!(output.status.success());
    let table = text(&output.stdout);
    let first_row = table.lines().nth(1).unwrap();
    assert!(first_row.starts_with("172.31.9.69"), "{table}");
    assert!(first_row.contains("2014-12-14T04:00:00Z"), "{table}");
    assert!(
        table.contains(
            "records 4  rejects 2  sources 1  malformed 0  nodata 1  skipdata 0  uncountable 0"
        ),
        "{table}"
    );
}

#[test]
fn generate_writes_what_tally_reads_in_every_shape() {
    let dir = tempfile::tempdir().unwrap();
    for (shape, name) in [
        ("s3-gzip", "a.log.gz"),
        ("s3-text", "a.log"),
        ("cloudwatch", "a.jsonl"),
    ] {
        let path = dir.path().join(name).display().to_string();
        let made = rejectwatch(
            &[
                "generate",
                "--records",
                "3000",
                "--shape",
                shape,
                "--format",
                "custom",
                "-o",
                &path,
            ],
            None,
        );
        assert!(made.status.success(), "{}", text(&made.stderr));
        let mut args = vec!["tally", "--json", path.as_str()];
        let format =
            FlowFormat::from_fields(&rejectwatch_testkit::generate::CUSTOM_25_FIELDS).to_string();
        if shape == "cloudwatch" {
            args.extend(["--format", format.as_str()]);
        }
        let output = rejectwatch(&args, None);
        assert!(output.status.success(), "{shape}: {}", text(&output.stderr));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["totals"]["records"], 3000, "{shape}");
        assert_eq!(report["totals"]["malformed"], 0, "{shape}");
    }
}

fn tally_json(args: &[&str], stdin: &str) -> Value {
    let mut all = vec!["tally", "--json"];
    all.extend_from_slice(args);
    let output = rejectwatch(&all, Some(stdin.as_bytes()));
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("one JSON document")
}

#[test]
fn tally_json_totals_have_exactly_the_documented_keys() {
    let input = format!("{HEADER}\n{REJECT}\n{ACCEPT}\n{NODATA}\n2 x y\n");
    let report = tally_json(&[], &input);
    let totals = report["totals"].as_object().expect("totals is an object");
    let mut keys: Vec<&str> = totals.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "malformed",
            "nodata",
            "records",
            "rejects",
            "skipdata",
            "sources",
            "uncountable"
        ]
    );
    assert_eq!(
        report["totals"],
        serde_json::json!({
            "records": 3, "rejects": 1, "sources": 1, "malformed": 1,
            "nodata": 1, "skipdata": 0, "uncountable": 0
        })
    );
}

#[test]
fn pkt_srcaddr_flag_attributes_rejects_to_the_packet_source() {
    // A NAT gateway interface: srcaddr is the gateway, pkt-srcaddr the original sender.
    let input = "interface-id srcaddr pkt-srcaddr dstaddr dstport start end action\n\
                 eni-1235b8ca123456789 10.0.1.5 203.0.113.5 10.0.0.220 22 1418530010 1418530070 REJECT\n\
                 eni-1235b8ca123456789 10.0.1.5 - 10.0.0.220 23 1418530010 1418530070 REJECT\n";
    let sources = |report: &Value| -> Vec<(String, u64)> {
        let mut sources: Vec<(String, u64)> = report["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let source = s["source"].as_str().unwrap().to_owned();
                (source, s["rejects"].as_u64().unwrap())
            })
            .collect();
        sources.sort();
        sources
    };
    assert_eq!(
        sources(&tally_json(&[], input)),
        [("10.0.1.5".to_owned(), 2)]
    );
    let by_packet_source = tally_json(&["--pkt-srcaddr"], input);
    assert_eq!(
        sources(&by_packet_source),
        [("10.0.1.5".to_owned(), 1), ("203.0.113.5".to_owned(), 1)]
    );
    assert_eq!(by_packet_source["totals"]["sources"], 2);
}

#[test]
fn cloudwatch_control_message_yields_no_records() {
    let mut data = LogData::default();
    data.message_type = "CONTROL_MESSAGE".into();
    data.owner = "CloudwatchLogs".into();
    data.log_group = String::new();
    let mut entry = LogEntry::default();
    entry.id = String::new();
    entry.message = "CWL CONTROL MESSAGE: Checking health of destination Firehose.".into();
    data.log_events = vec![entry];
    let payload = encode_subscription_event(&data);

    let output = rejectwatch(&["parse"], Some(&payload));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    assert!(output.stderr.is_empty(), "{}", text(&output.stderr));

    let report = tally_json(&[], &text(&payload));
    assert_eq!(report["totals"]["records"], 0);
    assert_eq!(report["totals"]["malformed"], 0);
}

#[test]
fn cloudwatch_export_line_with_an_iso_timestamp_is_parsed() {
    let input = format!(
        "2024-05-01T12:00:00.000Z {REJECT}\n2024-05-01T12:00:01.000Z 2 123456789010 REJECT OK\n"
    );
    let output = rejectwatch(&["parse"], Some(input.as_bytes()));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let records = json_lines(&output);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["version"], 2);
    assert_eq!(records[0]["srcaddr"], "172.31.9.69");
    assert_eq!(records[0]["log-status"], "OK");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("<stdin>: line 2: line starts with a timestamp"),
        "{stderr}"
    );
}

#[test]
fn nodata_record_with_end_but_no_start_shows_in_capture_gaps() {
    let report = tally_json(
        &["--format", "${interface-id} ${end} ${log-status}"],
        "eni-1235b8ca123456789 1418530070 NODATA\n",
    );
    assert_eq!(report["totals"]["nodata"], 1);
    assert_eq!(
        report["capture_gaps"],
        serde_json::json!([{
            "interface": "eni-1235b8ca123456789",
            "window_start": 1_418_529_900u64,
            "nodata": 1,
            "skipdata": 0
        }])
    );
}

#[test]
fn tally_json_is_one_line_unless_pretty_and_both_say_the_same() {
    let input = format!("{HEADER}\n{REJECT}\n{ACCEPT}\n{NODATA}\n");
    let compact = rejectwatch(&["tally", "--json"], Some(input.as_bytes()));
    let pretty = rejectwatch(&["tally", "--json", "--pretty"], Some(input.as_bytes()));
    assert!(compact.status.success() && pretty.status.success());
    assert_eq!(text(&compact.stdout).lines().count(), 1);
    assert!(text(&pretty.stdout).lines().count() > 10);
    let compact: Value = serde_json::from_slice(&compact.stdout).unwrap();
    let pretty: Value = serde_json::from_slice(&pretty.stdout).unwrap();
    assert_eq!(compact, pretty);
    assert_eq!(compact["sources"][0]["source"], "172.31.9.69");
}

#[test]
fn pretty_without_json_is_refused() {
    let output = rejectwatch(&["tally", "--pretty"], Some(b""));
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("--json"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn generate_writes_a_labelled_scenario_that_tally_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.log.gz").display().to_string();
    let made = rejectwatch(
        &[
            "generate",
            "--scenario",
            "window-edge-scan",
            "--records",
            "500",
            "-o",
            &path,
        ],
        None,
    );
    assert!(made.status.success(), "{}", text(&made.stderr));
    let report = {
        let output = rejectwatch(&["tally", "--json", path.as_str()], None);
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    assert_eq!(report["totals"]["malformed"], 0);
    // The scan's two rows, 15 ports each side of the window edge.
    let rows: Vec<&Value> = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["source"] == "100.64.0.2")
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|row| row["distinct_dst_ports"] == 15));

    let listed = rejectwatch(&["generate", "--scenario", "list"], None);
    assert!(text(&listed.stdout).contains("slow-scan"));
    let unknown = rejectwatch(&["generate", "--scenario", "no-such"], None);
    assert!(!unknown.status.success());
    assert!(text(&unknown.stderr).contains("no scenario named \"no-such\""));
}
