//! `rejectwatch top` and `rejectwatch source`: read the counters the ingest function wrote,
//! from DynamoDB (or any endpoint the SDK is pointed at), and print them.

use std::io::{self, Write};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use rejectwatch_aws::dynamodb::DynamoCounterStore;
use rejectwatch_aws::sdk::{self, SdkConfig};
use rejectwatch_core::counters::StoredCounter;
use rejectwatch_core::ports::error_chain;
use rejectwatch_core::tally::fingerprint_address;
use rejectwatch_core::time::{format_utc, parse_utc};
use serde_json::json;

use crate::CliError;

/// Where the counters are.
#[derive(clap::Args)]
pub struct TableArgs {
    /// The counters table.
    #[arg(long, env = "COUNTERS_TABLE_NAME")]
    table: String,
    /// A DynamoDB endpoint other than AWS's (such as a local moto server); the SDK also
    /// reads `AWS_ENDPOINT_URL`.
    #[arg(long)]
    endpoint_url: Option<String>,
    /// Partitions per window of the `by-window` index (the functions' `INDEX_SHARDS`).
    #[arg(long, env = "INDEX_SHARDS", default_value_t = 16)]
    shards: u8,
    /// Window length in minutes (the functions' `WINDOW_MINUTES`).
    #[arg(long, env = "WINDOW_MINUTES", default_value_t = 5)]
    window_minutes: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// A time on the command line: unix seconds, an RFC 3339 UTC time, or (for `--since`)
/// a duration back from now such as `90m`, `24h`, `7d`.
pub fn parse_time(text: &str) -> Result<u64, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds);
    }
    if let Some(seconds) = parse_utc(text) {
        return Ok(seconds);
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let scale = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(count) if scale > 0 => Ok(now().saturating_sub(count * scale)),
        _ => Err(format!(
            "{text:?} is not unix seconds, an RFC 3339 UTC time, or a duration like 24h"
        )),
    }
}

/// The counters table as a store that only reads (it never writes, so no retention).
pub(crate) fn reader(sdk_config: &SdkConfig, table: &str) -> DynamoCounterStore {
    DynamoCounterStore::new(sdk::dynamodb_client(sdk_config, None), table, 0, 1)
}

async fn store(args: &TableArgs) -> DynamoCounterStore {
    let sdk_config = sdk::load_config(args.endpoint_url.as_deref()).await;
    reader(&sdk_config, &args.table).with_index_shards(args.shards)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Read {
            path: "tokio runtime".into(),
            source,
        })
}

fn query_error(table: &str, error: rejectwatch_core::ports::StoreError) -> CliError {
    CliError::Usage(format!("reading table {table}: {}", error_chain(&error)))
}

/// `rejectwatch top`: the sources with the most REJECTs in one window.
pub fn top(args: TableArgs, window: Option<u64>, limit: usize) -> Result<(), CliError> {
    let window_seconds = args.window_minutes.max(1) * 60;
    // Default: the latest completed window.
    let window = window.unwrap_or_else(|| now() - now() % window_seconds - window_seconds);
    let window = window - window % window_seconds;
    let rows = runtime()?.block_on(async {
        let store = store(&args).await;
        store
            .top_in_window(window, (limit > 0).then_some(limit))
            .await
    });
    let rows = rows.map_err(|error| query_error(&args.table, error))?;
    let mut out = io::stdout().lock();
    if args.json {
        let rows: Vec<_> = rows.iter().map(row_json).collect();
        writeln!(out, "{}", json!({"window_start": window, "sources": rows}))
            .map_err(CliError::from_write)?;
        return Ok(());
    }
    writeln!(out, "window {} ({window})", format_utc(window)).map_err(CliError::from_write)?;
    write_rows(&mut out, &rows, false).map_err(CliError::from_write)
}

/// `rejectwatch source ADDRESS`: one source's REJECTs per window since a time.
pub fn source(args: TableArgs, address: IpAddr, since: u64) -> Result<(), CliError> {
    let rows = runtime()?.block_on(async {
        let store = store(&args).await;
        store
            .source_counters(
                address,
                since - since % (args.window_minutes.max(1) * 60),
                now() + 86_400,
            )
            .await
    });
    let rows = rows.map_err(|error| query_error(&args.table, error))?;
    let mut out = io::stdout().lock();
    if args.json {
        let rows: Vec<_> = rows.iter().map(row_json).collect();
        writeln!(
            out,
            "{}",
            json!({"source": address, "since": since, "windows": rows})
        )
        .map_err(CliError::from_write)?;
        return Ok(());
    }
    write_rows(&mut out, &rows, true).map_err(CliError::from_write)
}

fn row_json(row: &StoredCounter) -> serde_json::Value {
    let (ports, ports_exact) = row.distinct_dst_ports();
    let (hosts, hosts_exact) = row.distinct_dst_hosts();
    json!({
        "source": row.source,
        "window_start": row.window_start,
        "rejects": row.rejects,
        "packets": row.packets,
        "bytes": row.bytes,
        "distinct_dst_ports": ports,
        "distinct_dst_ports_exact": ports_exact,
        "distinct_dst_addrs": hosts,
        "distinct_dst_addrs_exact": hosts_exact,
        "first_seen": row.first_seen(),
        "last_seen": row.last_seen(),
        "sample_ports": row.sample_ports,
        "sample_hosts": row.sample_hosts.iter().filter_map(|fp| fingerprint_address(*fp)).collect::<Vec<_>>(),
        "protocols": row.protocols.iter().map(|(p, n)| json!({"protocol": p, "rejects": n})).collect::<Vec<_>>(),
        "reject_reasons": row.reject_reasons.iter().map(|(r, n)| json!({"reason": r, "rejects": n})).collect::<Vec<_>>(),
        "interfaces": row.interfaces,
    })
}

fn count(value: (u64, bool)) -> String {
    if value.1 {
        value.0.to_string()
    } else {
        format!("~{}", value.0)
    }
}

fn write_rows(out: &mut impl Write, rows: &[StoredCounter], by_window: bool) -> io::Result<()> {
    let first = if by_window { "WINDOW (UTC)" } else { "SOURCE" };
    writeln!(
        out,
        "{first:<39} {:>9} {:>10} {:>6} {:>6}  {:<20} INTERFACES",
        "REJECTS", "PACKETS", "PORTS", "HOSTS", "LAST SEEN"
    )?;
    for row in rows {
        let label = if by_window {
            format_utc(row.window_start)
        } else {
            row.source
                .map_or_else(String::new, |source| source.to_string())
        };
        writeln!(
            out,
            "{label:<39} {:>9} {:>10} {:>6} {:>6}  {:<20} {}",
            row.rejects,
            row.packets,
            count(row.distinct_dst_ports()),
            count(row.distinct_dst_hosts()),
            row.last_seen().map(format_utc).unwrap_or_default(),
            row.interfaces
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(",")
        )?;
    }
    if rows.is_empty() {
        writeln!(out, "(no counters)")?;
    }
    Ok(())
}
