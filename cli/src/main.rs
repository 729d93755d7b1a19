//! `rejectwatch`: the operator CLI. Parses and tallies VPC flow logs offline and generates
//! sample flow logs; with feature `table` (default) it also queries the counters table
//! (`top`, `source`) and replays objects (`replay`). Only wiring and output live here: the
//! work is done by `rejectwatch-core`, the table is reached only through `rejectwatch-aws`,
//! and `generate` uses the test kit's generator. It may not parse or count flow logs itself.

mod input;
mod output;
mod probe;
#[cfg(feature = "table")]
mod query;
#[cfg(feature = "table")]
mod replay;
#[cfg(test)]
mod report;

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rejectwatch_core::flow_log::{FlowFormat, FormatError};
use rejectwatch_core::parquet_object::Columns;
use rejectwatch_core::tally::{RejectTally, SourceAttribution, TallyOptions};
use rejectwatch_testkit::generate::{CUSTOM_25_FIELDS, FlowLogGenerator, GeneratorConfig};

#[derive(Parser)]
#[command(
    name = "rejectwatch",
    version,
    about = "Find hostile or broken traffic in AWS VPC Flow Logs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print each record as one JSON object, keyed by the AWS field names.
    Parse {
        #[command(flatten)]
        input: InputArgs,
    },
    /// Aggregate REJECT records per source address and time window.
    Tally {
        #[command(flatten)]
        input: InputArgs,
        /// Window length in minutes; a record belongs to the window holding its `start`.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1440))]
        window_minutes: u64,
        /// Attribute REJECTs to `pkt-srcaddr` when a record has it (traffic through NAT).
        #[arg(long)]
        pkt_srcaddr: bool,
        /// Print one JSON document instead of a table (compact: one line).
        #[arg(long)]
        json: bool,
        /// Indent the JSON document for reading.
        #[arg(long, requires = "json")]
        pretty: bool,
        /// Show at most this many (source, window) rows; 0 shows all. Default: 25 in the
        /// table, all in JSON.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// The sources with the most REJECTs in a window, read from the counters table.
    #[cfg(feature = "table")]
    Top {
        #[command(flatten)]
        table: query::TableArgs,
        /// The window: its start as unix seconds or an RFC 3339 UTC time. Default: the
        /// latest completed window.
        #[arg(long, value_parser = query::parse_time)]
        window: Option<u64>,
        /// Sources to show; 0 shows all.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One source's REJECTs per window, read from the counters table.
    #[cfg(feature = "table")]
    Source {
        #[command(flatten)]
        table: query::TableArgs,
        /// The source address (IPv4 or IPv6).
        address: std::net::IpAddr,
        /// Since when: unix seconds, an RFC 3339 UTC time, or a duration back like 24h.
        #[arg(long, default_value = "24h", value_parser = query::parse_time)]
        since: u64,
    },
    /// Hand flow-log objects already in a bucket to the ingest function (backfill): as S3
    /// notifications through its queue, or by invoking it. An object already counted is
    /// not counted again.
    #[cfg(feature = "table")]
    Replay {
        #[command(flatten)]
        args: replay::ReplayArgs,
    },
    /// Write synthetic flow logs (seeded, realistic) for tests, demos and benchmarks.
    Generate {
        /// Number of records.
        #[arg(long, default_value_t = 10_000)]
        records: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// `default`, `custom` (a 25-field v5 format) or a `${field} ...` format string.
        #[arg(long, default_value = "default")]
        format: String,
        /// Unix seconds of the first record.
        #[arg(long, default_value_t = 1_700_000_000)]
        start_time: u64,
        /// Spread of start times, in seconds.
        #[arg(long, default_value_t = 600)]
        duration_seconds: u64,
        /// Ordinary (non-scanning) sources in the heavy-tailed population.
        #[arg(long, default_value_t = 20_000)]
        sources: u32,
        #[arg(long, value_enum, default_value_t = Shape::S3Gzip)]
        shape: Shape,
        /// Gzip members for `s3-gzip` (concatenated, as when objects are joined).
        #[arg(long, default_value_t = 1)]
        members: u32,
        /// Log events per CloudWatch Logs payload for `cloudwatch`.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        /// Rows per row group for `s3-parquet`.
        #[arg(long, default_value_t = 100_000)]
        row_group_rows: usize,
        /// Output file; stdout when absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Write one labelled scenario of the suite (a planted scan or a benign look-alike)
        /// in background traffic of `--records` records a window, default format, ordered
        /// by start time; `list` names them. `--format`, `--start-time`,
        /// `--duration-seconds` and `--sources` do not apply.
        #[arg(long)]
        scenario: Option<String>,
    },
    /// One stage of the core over a file, once, for instruction counts
    /// (scripts/bench-instructions).
    #[command(hide = true)]
    BenchProbe {
        #[arg(long, value_enum)]
        case: probe::Case,
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct InputArgs {
    /// Record layout for input without a header line (CloudWatch Logs events, plain
    /// records), as the flow log's `LogFormat`: `${version} ${srcaddr} ...`.
    /// S3 objects carry their own header, which takes precedence.
    #[arg(long, value_parser = parse_format)]
    format: Option<FlowFormat>,
    /// Flow-log files: plain text, gzip, or CloudWatch Logs subscription event JSON.
    /// Standard input when none are given.
    files: Vec<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Shape {
    /// An S3 object: header line and records, gzip-compressed.
    S3Gzip,
    /// An S3 object, uncompressed.
    S3Text,
    /// CloudWatch Logs subscription payloads (Lambda event JSON), one per line.
    Cloudwatch,
    /// An S3 object in Parquet, as a flow log with `FileFormat: parquet` writes it (gzip
    /// pages, `--row-group-rows` rows per row group).
    S3Parquet,
}

fn parse_format(text: &str) -> Result<FlowFormat, FormatError> {
    FlowFormat::from_log_format(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Parse { input } => run_parse(input),
        Command::Tally {
            input,
            window_minutes,
            pkt_srcaddr,
            json,
            pretty,
            limit,
        } => {
            let options = TallyOptions {
                window_seconds: window_minutes * 60,
                attribution: if pkt_srcaddr {
                    SourceAttribution::PktSrcAddr
                } else {
                    SourceAttribution::SrcAddr
                },
            };
            let default_limit = if json { 0 } else { 25 };
            let limit = limit.unwrap_or(default_limit);
            let output = match (json, pretty) {
                (false, _) => TallyOutput::Table,
                (true, false) => TallyOutput::Json,
                (true, true) => TallyOutput::PrettyJson,
            };
            run_tally(input, options, output, (limit > 0).then_some(limit))
        }
        #[cfg(feature = "table")]
        Command::Top {
            table,
            window,
            limit,
        } => query::top(table, window, limit),
        #[cfg(feature = "table")]
        Command::Source {
            table,
            address,
            since,
        } => query::source(table, address, since),
        #[cfg(feature = "table")]
        Command::Replay { args } => replay::run(args),
        Command::BenchProbe { case, file } => probe::run(case, &file),
        Command::Generate {
            records,
            seed,
            shape,
            output,
            scenario: Some(name),
            ..
        } => run_scenario(&name, records, seed, shape, output),
        Command::Generate {
            records,
            seed,
            format,
            start_time,
            duration_seconds,
            sources,
            shape,
            members,
            batch_size,
            row_group_rows,
            output,
            scenario: None,
        } => {
            let format = match format.as_str() {
                "default" => Ok(FlowFormat::default()),
                "custom" => Ok(FlowFormat::from_fields(&CUSTOM_25_FIELDS)),
                text => FlowFormat::from_log_format(text),
            };
            match format {
                Ok(format) => {
                    let config = GeneratorConfig {
                        seed,
                        records,
                        format,
                        start_time,
                        duration_seconds,
                        benign_sources: sources,
                        ..GeneratorConfig::default()
                    };
                    run_generate(config, shape, members, batch_size, row_group_rows, output)
                }
                Err(error) => Err(CliError::Usage(error.to_string())),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rejectwatch: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Why a command failed; every variant names the input it concerns.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Decode {
        path: String,
        #[source]
        source: rejectwatch_core::decode::DecodeError,
    },
    #[error("writing output: {0}")]
    Write(#[source] io::Error),
    /// A request to AWS (or the endpoint standing in for it) failed; the message names the
    /// bucket, key, queue, function or table.
    #[error("{0}")]
    Service(String),
    /// The reader of our output went away (`| head`): not an error worth reporting.
    #[error("output closed")]
    BrokenPipe,
}

impl CliError {
    fn from_write(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Write(error)
        }
    }
}

fn run_parse(input: InputArgs) -> Result<(), CliError> {
    let stdout = io::stdout().lock();
    let mut printer = output::RecordPrinter::new(BufWriter::with_capacity(64 << 10, stdout));
    let format = input.format.unwrap_or_default();
    for source in input::sources(&input.files) {
        input::read_records(source, &format, Columns::All, &mut printer)?;
        printer.check().map_err(CliError::from_write)?;
    }
    printer.finish().map_err(CliError::from_write)
}

#[derive(Clone, Copy)]
enum TallyOutput {
    Table,
    Json,
    PrettyJson,
}

fn run_tally(
    input: InputArgs,
    options: TallyOptions,
    output: TallyOutput,
    limit: Option<usize>,
) -> Result<(), CliError> {
    let format = input.format.unwrap_or_default();
    let mut tally = output::LabelledTally::new(RejectTally::new(options));
    for source in input::sources(&input.files) {
        input::read_records(source, &format, Columns::Tally, &mut tally)?;
    }
    let mut tally = tally.into_inner();
    // The report reads every row, and each read of a row otherwise looks through the
    // REJECTs still waiting in the tally's last batch.
    tally.apply_pending();
    let mut out = BufWriter::with_capacity(64 << 10, raw_stdout());
    match output {
        TallyOutput::Table => output::write_table(&mut out, &tally, limit),
        TallyOutput::Json => output::write_json(&mut out, &tally, limit, false),
        TallyOutput::PrettyJson => output::write_json(&mut out, &tally, limit, true),
    }
    .map_err(CliError::from_write)?;
    out.flush().map_err(CliError::from_write)
}

/// Standard output without its line buffer: the report is written in 64 KiB blocks, which
/// the line buffer would search for newlines again.
#[cfg(unix)]
fn raw_stdout() -> Box<dyn Write> {
    use std::os::fd::AsFd;
    match io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::fs::File::from(fd)),
        Err(_) => Box::new(io::stdout().lock()),
    }
}

#[cfg(not(unix))]
fn raw_stdout() -> Box<dyn Write> {
    Box::new(io::stdout().lock())
}

/// `generate --scenario`: see `rejectwatch_testkit::scenarios`.
fn run_scenario(
    name: &str,
    records: u64,
    seed: u64,
    shape: Shape,
    output: Option<PathBuf>,
) -> Result<(), CliError> {
    let all = rejectwatch_testkit::scenarios::scenarios();
    if name == "list" {
        for scenario in &all {
            let expect = match &scenario.expect {
                rejectwatch_testkit::scenarios::Outcome::Alert(rules) => {
                    format!("alert ({})", rules.join(", "))
                }
                rejectwatch_testkit::scenarios::Outcome::Internal => {
                    "listed apart as internal".into()
                }
                rejectwatch_testkit::scenarios::Outcome::Silent => "no alert".into(),
            };
            println!(
                "{:<36} {:<15} {} ({})",
                scenario.name, scenario.source, scenario.plants, expect
            );
        }
        return Ok(());
    }
    let Some(lines) = rejectwatch_testkit::scenarios::scenario_log(name, seed, records) else {
        let names: Vec<&str> = all.iter().map(|s| s.name).collect();
        return Err(CliError::Usage(format!(
            "no scenario named {name:?}; the scenarios: {}, or `list`",
            names.join(", ")
        )));
    };
    if matches!(shape, Shape::Cloudwatch | Shape::S3Parquet) {
        return Err(CliError::Usage(
            "a scenario is written as an S3 text object (--shape s3-gzip or s3-text)".into(),
        ));
    }
    let path = output
        .as_ref()
        .map_or_else(|| "<stdout>".to_owned(), |p| p.display().to_string());
    let sink: Box<dyn Write> = match &output {
        Some(file) => Box::new(
            std::fs::File::create(file).map_err(|source| CliError::Read {
                path: path.clone(),
                source,
            })?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    let mut text = FlowFormat::default().header_line();
    text.push('\n');
    for line in &lines {
        text.push_str(line);
        text.push('\n');
    }
    let mut out = BufWriter::with_capacity(256 << 10, sink);
    match shape {
        Shape::S3Text => out.write_all(text.as_bytes()),
        Shape::S3Gzip => {
            let mut gzip = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
            gzip.write_all(text.as_bytes())
                .and_then(|()| gzip.finish().map(drop))
        }
        Shape::Cloudwatch | Shape::S3Parquet => unreachable!("refused above"),
    }
    .and_then(|()| out.flush())
    .map_err(CliError::from_write)?;
    eprintln!(
        "rejectwatch: wrote scenario {name} in {} lines to {path}",
        lines.len()
    );
    Ok(())
}

fn run_generate(
    config: GeneratorConfig,
    shape: Shape,
    members: u32,
    batch_size: usize,
    row_group_rows: usize,
    output: Option<PathBuf>,
) -> Result<(), CliError> {
    let name = output
        .as_ref()
        .map_or_else(|| "<stdout>".to_owned(), |p| p.display().to_string());
    let sink: Box<dyn Write + Send> = match &output {
        Some(path) => Box::new(
            std::fs::File::create(path).map_err(|source| CliError::Read {
                path: name.clone(),
                source,
            })?,
        ),
        // Not locked: the Parquet writer wants a sink it could send to another thread.
        None => Box::new(io::stdout()),
    };
    let mut out = BufWriter::with_capacity(256 << 10, sink);
    let mut generator = FlowLogGenerator::new(config);
    match shape {
        Shape::S3Gzip => generator.write_gzip(&mut out, members),
        Shape::S3Text => generator.write_text(&mut out),
        Shape::S3Parquet => generator.write_parquet(&mut out, row_group_rows),
        Shape::Cloudwatch => {
            let mut result = Ok(());
            for payload in generator.cloudwatch_payloads(batch_size, "/rejectwatch/demo/flow-logs")
            {
                result = writeln!(out, "{payload}");
                if result.is_err() {
                    break;
                }
            }
            result
        }
    }
    .and_then(|()| out.flush())
    .map_err(CliError::from_write)?;
    let expected = generator.into_expected();
    eprintln!(
        "rejectwatch: wrote {} records to {name} ({} REJECTs from {} sources; planted scanners: {})",
        expected.records,
        expected.rejects,
        expected.sources(),
        expected
            .scanners
            .iter()
            .map(|(addr, kind)| format!("{addr} ({kind:?})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
