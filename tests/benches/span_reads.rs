//! What rules over a span cost the evaluator in reads, on the rows of the 1M-record object.
//!
//! Three consecutive 5-minute windows, each the traffic of the ingest bench's 1M-record
//! object (20,000 heavy-tailed sources, planted scanners; seeds 9, 10, 11), go through the
//! core (decode, tally, counter rows, merged as the store merges them). Then the evaluator's
//! reads are counted for the last window, with spans off (rows at or above the lowest
//! threshold, 20) and on (the default 15 minutes: rows at or above 7, the two windows before
//! as context, and the sources read whole), with DynamoDB's read units: a `Query` costs
//! half a unit (eventually consistent) per 4 KB of the items it returns, per shard, with
//! item sizes by DynamoDB's sizing rules for the attributes the adapter writes.
//!
//! Run: `cargo bench -p rejectwatch-tests --bench span_reads`. Core only: no server.

use std::collections::BTreeMap;
use std::net::IpAddr;

use rejectwatch_aws::dynamodb::{
    BYTES, EXPIRES_AT, FIRST_SEEN, GSI1_PK, HOST_SKETCH, HOST_VALUES, INTERFACES, LAST_SEEN,
    PACKETS, PK, PORT_SKETCH, PORT_VALUES, PROTOCOL_PREFIX, REASON_PREFIX, REJECTS, SAMPLE_HOSTS,
    SAMPLE_PORTS, SK, SOURCE, WINDOW_SECONDS, WINDOW_START, source_key, window_key,
    window_shard_key,
};
use rejectwatch_core::alert::{AlertPolicy, InternalSources, evaluate_since, incomplete_spans};
use rejectwatch_core::counters::{BatchId, CounterBatch, ExactValues, StoredCounter, shard_of};
use rejectwatch_core::tally::TallyOptions;
use rejectwatch_testkit::generate::{FlowLogGenerator, GeneratorConfig};
use rejectwatch_tests::tally_object;

const RECORDS: u64 = 1_000_000;
const WINDOW: u64 = 300;
const START: u64 = 1_714_521_600;
const SHARDS: u8 = 16;
/// The evaluator's defaults: 5-minute windows settle 50 minutes after they end, so a run
/// reads 11 windows that may still change.
const WINDOWS_PER_RUN: u64 = 11;

fn main() {
    println!(
        "RejectWatch span reads: 3 windows of {RECORDS} records each (the 1M-record object's traffic)"
    );
    let mut rows: Vec<StoredCounter> = Vec::new();
    for window in 0..3u64 {
        let mut object = Vec::new();
        let config = GeneratorConfig {
            records: RECORDS,
            seed: 9 + window,
            start_time: START + window * WINDOW,
            duration_seconds: WINDOW,
            ..GeneratorConfig::default()
        };
        FlowLogGenerator::new(config)
            .write_gzip(&mut object, 1)
            .expect("generating");
        let tally = tally_object(&object, TallyOptions::default()).expect("a valid object");
        let id = BatchId::for_s3_object("bench", &format!("window-{window}"), None, None);
        let batch = CounterBatch::from_tally(id, &tally, SHARDS);
        // One delivery per window: the stored row is its update.
        let mut by_key: BTreeMap<(IpAddr, u64), StoredCounter> = BTreeMap::new();
        for update in &batch.updates {
            by_key
                .entry((update.source, update.window_start))
                .or_default()
                .merge(update);
        }
        rows.extend(by_key.into_values());
    }
    let last = START + 2 * WINDOW;
    let policy = AlertPolicy {
        volume_threshold: 500,
        port_scan_threshold: 20,
        host_sweep_threshold: 20,
        span_seconds: 900,
        allowlist: Vec::new(),
        internal_ranges: Vec::new(),
        internal_sources: InternalSources::Report,
    };
    let per_window = AlertPolicy {
        span_seconds: 0,
        ..policy.clone()
    };
    let in_last = |row: &&StoredCounter| row.window_start == last;
    println!(
        "rows in the evaluated window: {}",
        rows.iter().filter(in_last).count()
    );

    let off = window_reads(rows.iter().filter(in_last), per_window.min_rejects());
    let read_limit = policy.min_rejects_to_read(WINDOW);
    let on = window_reads(rows.iter().filter(in_last), read_limit);
    let read: Vec<StoredCounter> = rows
        .iter()
        .filter(|row| row.rejects >= read_limit)
        .cloned()
        .collect();
    let incomplete = incomplete_spans(&read, &policy, WINDOW, (last, last), read_limit);
    let mut source_units = 0.0;
    for (source, from, to) in &incomplete {
        let bytes: u64 = rows
            .iter()
            .filter(|row| row.source == Some(*source) && (*from..=*to).contains(&row.window_start))
            .map(item_bytes)
            .sum();
        source_units += read_units(bytes);
    }

    println!();
    println!("reads of one window                 rows  item bytes   read units (16 shards)");
    println!(
        "spans off (rejects >= {:>2})         {:>6}  {:>10}   {:>8.1}",
        per_window.min_rejects(),
        off.rows,
        off.bytes,
        off.units
    );
    println!(
        "spans on  (rejects >= {:>2})         {:>6}  {:>10}   {:>8.1}",
        read_limit, on.rows, on.bytes, on.units
    );
    println!(
        "sources read whole over a span     {:>6}              {:>8.1}   (one Query each, per evaluated window)",
        incomplete.len(),
        source_units
    );
    // A run reads every window that may still change, and with spans the two before.
    let run_off = WINDOWS_PER_RUN as f64 * off.units;
    // Whole-source reads are counted for the one window with its two windows of
    // context; a run has as many for each of its windows at this rate.
    let run_on = (WINDOWS_PER_RUN + 2) as f64 * on.units + WINDOWS_PER_RUN as f64 * source_units;
    let queries_off = WINDOWS_PER_RUN * u64::from(SHARDS);
    let queries_on =
        (WINDOWS_PER_RUN + 2) * u64::from(SHARDS) + WINDOWS_PER_RUN * incomplete.len() as u64;
    println!();
    println!(
        "per run ({WINDOWS_PER_RUN} windows at this rate): spans off {run_off:.0} read units in {queries_off} queries; \
         spans on {run_on:.0} read units in {queries_on} queries ({:.2}x)",
        run_on / run_off
    );

    item_sizes(rows.iter().filter(in_last));

    let findings_off = evaluate_since(&rows, &[], &per_window, last).len();
    let all_on = evaluate_since(&rows, &[], &policy, last);
    let findings_on = all_on.len();
    let mut by_rules: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for finding in &all_on {
        let rules: Vec<&str> = finding.rules.iter().map(|rule| rule.name()).collect();
        let entry = by_rules.entry(rules.join("+")).or_default();
        entry.0 += 1;
        entry.1 += u64::from(finding.span.is_some());
    }
    for (rules, (count, over_span)) in &by_rules {
        println!("  with spans: {rules}: {count} findings, {over_span} of them over a span");
    }
    let findings_read = {
        let mut complete = read.clone();
        for (source, from, to) in &incomplete {
            complete.retain(|row| {
                row.source != Some(*source) || !(*from..=*to).contains(&row.window_start)
            });
            complete.extend(
                rows.iter()
                    .filter(|row| {
                        row.source == Some(*source) && (*from..=*to).contains(&row.window_start)
                    })
                    .cloned(),
            );
        }
        evaluate_since(&complete, &[], &policy, last).len()
    };
    println!(
        "findings in the window: {findings_off} per window; {findings_on} with spans over every row, \
         {findings_read} from the rows the evaluator reads"
    );
}

/// What the `by-window` queries of one window return at a read limit.
struct WindowReads {
    rows: u64,
    bytes: u64,
    units: f64,
}

fn window_reads<'a>(
    rows: impl Iterator<Item = &'a StoredCounter>,
    min_rejects: u64,
) -> WindowReads {
    let mut shard_bytes = [0u64; SHARDS as usize];
    let mut count = 0;
    for row in rows.filter(|row| row.rejects >= min_rejects) {
        count += 1;
        let source = row.source.expect("a counter row has a source");
        shard_bytes[usize::from(shard_of(source, SHARDS))] += item_bytes(row);
    }
    WindowReads {
        rows: count,
        bytes: shard_bytes.iter().sum(),
        units: shard_bytes.iter().map(|&bytes| read_units(bytes)).sum(),
    }
}

/// What the exact value sets (`port_values`, `host_values`) add to the rows of one window:
/// item bytes, and the write units of one delivery's transactional update (two per KB of
/// the item).
fn item_sizes<'a>(rows: impl Iterator<Item = &'a StoredCounter>) {
    let (mut count, mut with, mut without, mut largest) = (0u64, 0u64, 0u64, (0u64, 0u64));
    let (mut units_with, mut units_without) = (0u64, 0u64);
    for row in rows {
        let bare = StoredCounter {
            exact_ports: ExactValues::default(),
            exact_hosts: ExactValues::default(),
            ..row.clone()
        };
        let (a, b) = (item_bytes(row), item_bytes(&bare));
        count += 1;
        with += a;
        without += b;
        largest = largest.max((a, b));
        units_with += 2 * a.div_ceil(1024);
        units_without += 2 * b.div_ceil(1024);
    }
    println!();
    println!(
        "item sizes of the window's {count} rows: mean {} B with exact values, {} B without; \
         largest {} B ({} B without)",
        with / count.max(1),
        without / count.max(1),
        largest.0,
        largest.1
    );
    println!(
        "write units of one delivery's updates: {units_with} with exact values, {units_without} without ({:.3}x)",
        units_with as f64 / units_without.max(1) as f64
    );
}

/// A `Query`'s eventually consistent read units: half a unit per 4 KB returned, rounded
/// up, and at least half a unit.
fn read_units(bytes: u64) -> f64 {
    bytes.div_ceil(4096).max(1) as f64 * 0.5
}

/// The item's size by DynamoDB's rules: each attribute's name in UTF-8 bytes plus its
/// value (a string's bytes; a number's significant digits, two per byte, plus one; a set
/// the sum of its members).
fn item_bytes(row: &StoredCounter) -> u64 {
    let number = |value: u64| (value.to_string().len() as u64).div_ceil(2) + 1;
    let string = |text: &str| text.len() as u64;
    let name = |text: &str| text.len() as u64;
    let source = row.source.expect("a counter row has a source");
    let shard = shard_of(source, SHARDS);
    let numbers = |values: &mut dyn Iterator<Item = u64>| values.map(number).sum::<u64>();
    let mut size = name(PK)
        + string(&source_key(source))
        + name(SK)
        + string(&window_key(row.window_start))
        + name(GSI1_PK)
        + string(&window_shard_key(row.window_start, shard))
        + name(SOURCE)
        + string(&source.to_string())
        + name(WINDOW_START)
        + number(row.window_start)
        + name(WINDOW_SECONDS)
        + number(row.window_seconds)
        + name(REJECTS)
        + number(row.rejects)
        + name(PACKETS)
        + number(row.packets)
        + name(BYTES)
        + number(row.bytes)
        + name(EXPIRES_AT)
        + number(row.window_start + 7 * 86_400);
    for (attribute, values) in [
        (
            PORT_SKETCH,
            &mut row.port_sketch.iter().map(|&v| u64::from(v)) as &mut dyn Iterator<Item = u64>,
        ),
        (
            HOST_SKETCH,
            &mut row.host_sketch.iter().map(|&v| u64::from(v)),
        ),
        (
            SAMPLE_PORTS,
            &mut row.sample_ports.iter().map(|&v| u64::from(v)),
        ),
        (SAMPLE_HOSTS, &mut row.sample_hosts.iter().copied()),
        (
            PORT_VALUES,
            &mut row.exact_ports.values.iter().map(|&v| u64::from(v)),
        ),
        (HOST_VALUES, &mut row.exact_hosts.values.iter().copied()),
        (FIRST_SEEN, &mut row.first_seen.iter().copied()),
        (LAST_SEEN, &mut row.last_seen.iter().copied()),
    ] {
        let members = numbers(values);
        if members > 0 {
            size += name(attribute) + members;
        }
    }
    // A set marked over holds the marker, `-1` (its values are not kept in memory).
    for (attribute, over) in [
        (PORT_VALUES, row.exact_ports.over),
        (HOST_VALUES, row.exact_hosts.over),
    ] {
        if over {
            size += name(attribute) + number(1);
        }
    }
    if !row.interfaces.is_empty() {
        size += name(INTERFACES) + row.interfaces.iter().map(|id| string(id)).sum::<u64>();
    }
    for (protocol, count) in &row.protocols {
        size += name(PROTOCOL_PREFIX) + protocol.to_string().len() as u64 + number(*count);
    }
    for (reason, count) in &row.reject_reasons {
        size += name(REASON_PREFIX) + string(reason) + number(*count);
    }
    size
}
