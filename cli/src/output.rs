//! What the CLI prints: records as JSON lines, tallies as a table or one JSON document,
//! skipped lines on stderr.
//!
//! Tallies are written as they are ranked: one vector of row handles is sorted (with a
//! limit, only the shown rows are kept) and each row is formatted straight into the output,
//! so a report never holds a second copy of every row.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::net::IpAddr;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use shared::decode::RecordSink;
use shared::flow_log::{FlowRecord, MalformedLine};
use shared::tally::{RejectTally, SourceAggregate, Totals};
use shared::time::format_utc;

use crate::input::InputAware;

/// Prints each record as one JSON object per line; malformed lines go to stderr.
pub struct RecordPrinter<W: Write> {
    out: W,
    source: String,
    error: Option<io::Error>,
}

impl<W: Write> RecordPrinter<W> {
    pub fn new(out: W) -> Self {
        RecordPrinter {
            out,
            source: String::new(),
            error: None,
        }
    }

    /// The first write error, if any.
    pub fn check(&mut self) -> io::Result<()> {
        self.error.take().map_or(Ok(()), Err)
    }

    pub fn finish(mut self) -> io::Result<()> {
        self.check()?;
        self.out.flush()
    }
}

impl<W: Write> RecordSink for RecordPrinter<W> {
    fn record(&mut self, record: &FlowRecord<'_>) {
        if self.error.is_some() {
            return;
        }
        let result = serde_json::to_writer(&mut self.out, record)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        if let Err(error) = result {
            self.error = Some(error);
        }
    }

    fn malformed(&mut self, line: MalformedLine) {
        eprintln!("{}: {line}", self.source);
    }
}

impl<W: Write> InputAware for RecordPrinter<W> {
    fn set_source(&mut self, name: String) {
        self.source = name;
    }

    fn should_stop(&self) -> bool {
        self.error.is_some()
    }
}

/// How many malformed lines `tally` reports on stderr per run before only counting.
const MALFORMED_ON_STDERR: u64 = 20;

/// A tally that reports the first malformed lines on stderr with their input's name.
pub struct LabelledTally {
    tally: RejectTally,
    source: String,
    reported: u64,
}

impl LabelledTally {
    pub fn new(tally: RejectTally) -> Self {
        LabelledTally {
            tally,
            source: String::new(),
            reported: 0,
        }
    }

    pub fn into_inner(self) -> RejectTally {
        if self.reported > MALFORMED_ON_STDERR {
            eprintln!(
                "rejectwatch: {} more malformed lines skipped",
                self.reported - MALFORMED_ON_STDERR
            );
        }
        self.tally
    }
}

impl RecordSink for LabelledTally {
    fn record(&mut self, record: &FlowRecord<'_>) {
        self.tally.add(record);
    }

    fn malformed(&mut self, line: MalformedLine) {
        self.reported += 1;
        if self.reported <= MALFORMED_ON_STDERR {
            eprintln!("{}: {line}", self.source);
        }
        self.tally.add_malformed(line);
    }
}

impl InputAware for LabelledTally {
    fn set_source(&mut self, name: String) {
        self.source = name;
    }
}

/// Common IANA protocol names; others print as numbers.
fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        58 => "icmpv6".into(),
        other => other.to_string(),
    }
}

/// The rows of a tally in the order `RejectTally::by_rejects` gives (most REJECTs first,
/// ties by address, then window), each with its REJECT count, cut to `limit`; and how many
/// rows there are in all. With a limit, only that many rows are kept (in a heap) while the
/// rest stream past.
pub fn ranked(
    tally: &RejectTally,
    limit: Option<usize>,
) -> (Vec<(u64, SourceAggregate<'_>)>, usize) {
    // Each row's count is read once, not at every comparison.
    let rows = tally
        .aggregates()
        .map(|aggregate| Ranked(aggregate.rejects(), aggregate));
    let (ranked, total) = match limit {
        Some(limit) => {
            let mut best = BinaryHeap::with_capacity(limit + 1);
            let mut total = 0;
            for row in rows {
                total += 1;
                // The heap's top is the last of the rows kept.
                if best.len() < limit {
                    best.push(row);
                } else if best.peek().is_some_and(|last| row < *last) {
                    best.pop();
                    best.push(row);
                }
            }
            (best.into_sorted_vec(), total)
        }
        None => {
            let mut all = Vec::with_capacity(tally.len());
            all.extend(rows);
            // Keys are unique, so an unstable sort gives the one order there is.
            all.sort_unstable();
            let total = all.len();
            (all, total)
        }
    };
    (
        ranked.into_iter().map(|row| (row.0, row.1)).collect(),
        total,
    )
}

/// A row and its REJECT count, ordered as it is printed: most REJECTs first, then by
/// address and window.
struct Ranked<'a>(u64, SourceAggregate<'a>);

impl Ord for Ranked<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .cmp(&self.0)
            .then_with(|| self.1.key.cmp(&other.1.key))
    }
}

impl PartialOrd for Ranked<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked<'_> {}

/// Writes the tally as one JSON document, the same as serialising
/// `RejectTally::report(limit)` (README: `tally --json`), but row by row. Compact unless
/// `pretty`.
pub fn write_json(
    out: &mut impl Write,
    tally: &RejectTally,
    limit: Option<usize>,
    pretty: bool,
) -> io::Result<()> {
    let (rows, total) = ranked(tally, limit);
    let report = ReportJson {
        totals: tally.totals(),
        window_seconds: tally.options().window_seconds,
        sources: RowsJson(&rows),
        sources_omitted: (total - rows.len()) as u64,
        tally,
    };
    if pretty {
        serde_json::to_writer_pretty(&mut *out, &report)?;
    } else {
        write_compact(out, &report)?;
    }
    writeln!(out)
}

/// The compact document. Rows, the bulk of it, are written by hand: their keys need no
/// escaping and their values are numbers and addresses, which serde would still scan byte
/// by byte. Names (interfaces, reasons) and the small parts go through serde_json.
fn write_compact(out: &mut impl Write, report: &ReportJson<'_>) -> io::Result<()> {
    out.write_all(b"{\"totals\":")?;
    serde_json::to_writer(&mut *out, &report.totals)?;
    write!(
        out,
        ",\"window_seconds\":{},\"sources\":[",
        report.window_seconds
    )?;
    let mut row = Vec::with_capacity(512);
    for (index, aggregate) in report.sources.0.iter().enumerate() {
        row.clear();
        if index > 0 {
            row.push(b',');
        }
        compact_row(&mut row, &RowJson::new(aggregate))?;
        out.write_all(&row)?;
    }
    write!(
        out,
        "],\"sources_omitted\":{},\"capture_gaps\":",
        report.sources_omitted
    )?;
    serde_json::to_writer(&mut *out, &GapsJson(report.tally))?;
    out.write_all(b",\"malformed_samples\":")?;
    serde_json::to_writer(&mut *out, &SamplesJson(report.tally))?;
    out.write_all(b"}")
}

/// One row as `serde_json::to_writer` would write `RowJson`.
fn compact_row(row: &mut Vec<u8>, json: &RowJson<'_>) -> io::Result<()> {
    row.extend_from_slice(b"{\"source\":\"");
    match json.source {
        IpAddr::V4(address) => {
            for (index, octet) in address.octets().into_iter().enumerate() {
                if index > 0 {
                    row.push(b'.');
                }
                push_number(row, u64::from(octet));
            }
        }
        IpAddr::V6(address) => write!(row, "{address}")?,
    }
    for (key, value) in [
        (&b"\",\"window_start\":"[..], json.window_start),
        (b",\"rejects\":", json.rejects),
        (b",\"packets\":", json.packets),
        (b",\"bytes\":", json.bytes),
        (
            b",\"distinct_dst_ports\":",
            u64::from(json.distinct_dst_ports),
        ),
        (b",\"distinct_dst_addrs\":", json.distinct_dst_addrs),
    ] {
        row.extend_from_slice(key);
        push_number(row, value);
    }
    row.extend_from_slice(if json.distinct_dst_addrs_exact {
        b",\"distinct_dst_addrs_exact\":true,\"first_seen\":"
    } else {
        b",\"distinct_dst_addrs_exact\":false,\"first_seen\":"
    });
    push_number(row, json.first_seen);
    row.extend_from_slice(b",\"last_seen\":");
    push_number(row, json.last_seen);
    row.extend_from_slice(b",\"protocols\":[");
    for (index, (protocol, rejects)) in json.protocols.pairs.iter().enumerate() {
        row.extend_from_slice(if index > 0 {
            b",{\"protocol\":"
        } else {
            b"{\"protocol\":"
        });
        push_number(row, u64::from(*protocol));
        row.extend_from_slice(b",\"rejects\":");
        push_number(row, *rejects);
        row.push(b'}');
    }
    row.extend_from_slice(b"],\"reject_reasons\":[");
    for (index, (reason, rejects)) in json.reject_reasons.pairs.iter().enumerate() {
        row.extend_from_slice(if index > 0 {
            b",{\"reason\":"
        } else {
            b"{\"reason\":"
        });
        serde_json::to_writer(&mut *row, reason)?;
        row.extend_from_slice(b",\"rejects\":");
        push_number(row, *rejects);
        row.push(b'}');
    }
    row.extend_from_slice(b"],\"interfaces\":");
    serde_json::to_writer(&mut *row, &json.interfaces)?;
    row.push(b'}');
    Ok(())
}

/// Appends `value` in decimal, two digits per step.
fn push_number(out: &mut Vec<u8>, mut value: u64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    while value >= 100 {
        let pair = (value % 100) as usize * 2;
        value /= 100;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if value >= 10 {
        let pair = value as usize * 2;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        start -= 1;
        digits[start] = b'0' + value as u8;
    }
    out.extend_from_slice(&digits[start..]);
}

/// The `tally --json` document; fields in `TallyReport`'s order.
struct ReportJson<'a> {
    totals: Totals,
    window_seconds: u64,
    sources: RowsJson<'a>,
    sources_omitted: u64,
    tally: &'a RejectTally,
}

impl Serialize for ReportJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(6))?;
        map.serialize_entry("totals", &self.totals)?;
        map.serialize_entry("window_seconds", &self.window_seconds)?;
        map.serialize_entry("sources", &self.sources)?;
        map.serialize_entry("sources_omitted", &self.sources_omitted)?;
        map.serialize_entry("capture_gaps", &GapsJson(self.tally))?;
        map.serialize_entry("malformed_samples", &SamplesJson(self.tally))?;
        map.end()
    }
}

/// Rows formatted one at a time as the serializer asks for them.
struct RowsJson<'a>(&'a [(u64, SourceAggregate<'a>)]);

impl Serialize for RowsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for aggregate in self.0 {
            seq.serialize_element(&RowJson::new(aggregate))?;
        }
        seq.end()
    }
}

/// One row, borrowing its names from the tally; fields in `SourceReport`'s order.
#[derive(Serialize)]
struct RowJson<'a> {
    source: IpAddr,
    window_start: u64,
    rejects: u64,
    packets: u64,
    bytes: u64,
    distinct_dst_ports: u32,
    distinct_dst_addrs: u64,
    distinct_dst_addrs_exact: bool,
    first_seen: u64,
    last_seen: u64,
    protocols: Pairs<u8>,
    reject_reasons: Pairs<&'a str>,
    interfaces: Vec<&'a str>,
}

impl<'a> RowJson<'a> {
    /// The row of `aggregate`, whose REJECT count the ranking already read.
    fn new((rejects, aggregate): &(u64, SourceAggregate<'a>)) -> Self {
        RowJson {
            source: aggregate.key.source,
            window_start: aggregate.key.window_start,
            rejects: *rejects,
            packets: aggregate.packets(),
            bytes: aggregate.bytes(),
            distinct_dst_ports: aggregate.distinct_dst_ports(),
            distinct_dst_addrs: aggregate.distinct_dst_addrs(),
            distinct_dst_addrs_exact: aggregate.dst_addrs_exact(),
            first_seen: aggregate.first_seen(),
            last_seen: aggregate.last_seen(),
            protocols: Pairs {
                name: "protocol",
                pairs: aggregate.protocols(),
            },
            reject_reasons: Pairs {
                name: "reason",
                pairs: aggregate.reject_reasons(),
            },
            interfaces: aggregate.sample_interfaces(),
        }
    }
}

/// `(value, rejects)` pairs as `[{"<name>": value, "rejects": n}, ...]`.
struct Pairs<T> {
    name: &'static str,
    pairs: Vec<(T, u64)>,
}

impl<T: Serialize> Serialize for Pairs<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.pairs.len()))?;
        for (value, rejects) in &self.pairs {
            seq.serialize_element(&Pair {
                name: self.name,
                value,
                rejects: *rejects,
            })?;
        }
        seq.end()
    }
}

struct Pair<'a, T> {
    name: &'static str,
    value: &'a T,
    rejects: u64,
}

impl<T: Serialize> Serialize for Pair<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry(self.name, self.value)?;
        map.serialize_entry("rejects", &self.rejects)?;
        map.end()
    }
}

/// `capture_gaps`, as `CaptureGapReport`s.
struct GapsJson<'a>(&'a RejectTally);

impl Serialize for GapsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Gap<'a> {
            interface: &'a str,
            window_start: u64,
            nodata: u64,
            skipdata: u64,
        }
        let gaps = self.0.capture_gaps();
        serializer.collect_seq(gaps.iter().map(|&(interface, window_start, gaps)| Gap {
            interface,
            window_start,
            nodata: gaps.nodata,
            skipdata: gaps.skipdata,
        }))
    }
}

/// `malformed_samples`, as `line N: reason`.
struct SamplesJson<'a>(&'a RejectTally);

impl Serialize for SamplesJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.malformed_samples().iter().map(ToString::to_string))
    }
}

/// Writes the tally as an aligned table, most REJECTs first, then the totals.
pub fn write_table(
    out: &mut impl Write,
    tally: &RejectTally,
    limit: Option<usize>,
) -> io::Result<()> {
    let (rows, total) = ranked(tally, limit);
    let shown = rows.len();
    let width = rows
        .iter()
        .map(|(_, row)| row.key.source.to_string().len())
        .max()
        .unwrap_or(0)
        .max("SOURCE".len());
    writeln!(
        out,
        "{:<width$} {:<20} {:>8} {:>9} {:>11} {:>6} {:>6}  {:<14} {:<8} {:<8}",
        "SOURCE",
        "WINDOW (UTC)",
        "REJECTS",
        "PACKETS",
        "BYTES",
        "PORTS",
        "HOSTS",
        "PROTOCOLS",
        "FIRST",
        "LAST"
    )?;
    for (rejects, stats) in &rows {
        let key = stats.key;
        let protocols: Vec<String> = stats
            .protocols()
            .iter()
            .take(3)
            .map(|(protocol, _)| protocol_name(*protocol))
            .collect();
        let hosts = if stats.dst_addrs_exact() {
            stats.distinct_dst_addrs().to_string()
        } else {
            format!("~{}", stats.distinct_dst_addrs())
        };
        writeln!(
            out,
            "{:<width$} {:<20} {:>8} {:>9} {:>11} {:>6} {:>6}  {:<14} {:<8} {:<8}",
            key.source.to_string(),
            format_utc(key.window_start),
            rejects,
            stats.packets(),
            stats.bytes(),
            stats.distinct_dst_ports(),
            hosts,
            protocols.join(","),
            &format_utc(stats.first_seen())[11..19],
            &format_utc(stats.last_seen())[11..19],
        )?;
    }
    if shown < total {
        writeln!(out, "... {} more rows (--limit 0 shows all)", total - shown)?;
    }
    let totals = tally.totals();
    writeln!(out)?;
    writeln!(
        out,
        "records {}  rejects {}  sources {}  malformed {}  nodata {}  skipdata {}  uncountable {}",
        totals.records,
        totals.rejects,
        totals.sources,
        totals.malformed,
        totals.nodata,
        totals.skipdata,
        totals.uncountable
    )?;
    let skipped_interfaces = tally
        .capture_gaps()
        .iter()
        .filter(|(_, _, gaps)| gaps.skipdata > 0)
        .count();
    if skipped_interfaces > 0 {
        writeln!(
            out,
            "warning: AWS skipped records (SKIPDATA) on {skipped_interfaces} interface-windows; \
             counts there are a lower bound"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::decode::{DecodeLimits, ObjectDecoder, ObjectLines};
    use shared::flow_log::FlowFormat;
    use shared::generate::{FlowLogGenerator, GeneratorConfig};
    use shared::tally::TallyOptions;

    /// A generated object's tally, with a malformed line and a capture gap or two.
    fn generated_tally(records: u64) -> RejectTally {
        let mut text = Vec::new();
        FlowLogGenerator::new(GeneratorConfig {
            records,
            seed: 5,
            benign_sources: 300,
            ..GeneratorConfig::default()
        })
        .write_text(&mut text)
        .unwrap();
        text.extend_from_slice(b"2 123456789010 eni-1 not-an-address\n");
        let lines = ObjectLines::new(
            FlowFormat::default(),
            RejectTally::new(TallyOptions::default()),
        );
        let mut decoder = ObjectDecoder::new(lines, DecodeLimits::default());
        decoder.write(&text).unwrap();
        decoder.finish().unwrap().into_records()
    }

    fn json(tally: &RejectTally, limit: Option<usize>, pretty: bool) -> String {
        let mut out = Vec::new();
        write_json(&mut out, tally, limit, pretty).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn streamed_json_is_the_serialised_report_byte_for_byte() {
        let tally = generated_tally(20_000);
        assert!(tally.totals().malformed > 0 && tally.len() > 100);
        for limit in [
            None,
            Some(1),
            Some(7),
            Some(tally.len()),
            Some(tally.len() + 5),
        ] {
            let report = tally.report(limit);
            assert_eq!(
                json(&tally, limit, false),
                serde_json::to_string(&report).unwrap() + "\n",
                "limit {limit:?}"
            );
            assert_eq!(
                json(&tally, limit, true),
                serde_json::to_string_pretty(&report).unwrap() + "\n",
                "limit {limit:?}"
            );
        }
    }

    #[test]
    fn ranked_rows_are_the_by_rejects_order_cut_to_the_limit() {
        let tally = generated_tally(20_000);
        let all: Vec<_> = tally.by_rejects().iter().map(|row| row.key).collect();
        for limit in [
            None,
            Some(1),
            Some(25),
            Some(all.len() - 1),
            Some(all.len() * 2),
        ] {
            let (rows, total) = ranked(&tally, limit);
            let keys: Vec<_> = rows.iter().map(|(_, row)| row.key).collect();
            let shown = limit.unwrap_or(all.len()).min(all.len());
            assert_eq!((&keys[..], total), (&all[..shown], all.len()), "{limit:?}");
        }
    }

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        let edges = [
            0,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            65_535,
            1_700_000_000,
            u64::MAX,
        ];
        for value in edges.into_iter().chain((0..5000).map(|n| n * 7919)) {
            let mut out = Vec::new();
            push_number(&mut out, value);
            assert_eq!(out, value.to_string().into_bytes());
        }
    }

    #[test]
    fn an_empty_tally_prints_an_empty_report() {
        let tally = RejectTally::new(TallyOptions::default());
        assert_eq!(
            json(&tally, None, false),
            serde_json::to_string(&tally.report(None)).unwrap() + "\n"
        );
    }
}
