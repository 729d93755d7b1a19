//! What the CLI prints: records as JSON lines, tallies as a table or one JSON document,
//! skipped lines on stderr.
//!
//! Tallies are written as they are ranked: the core's ranking holds 16 bytes per row, and
//! each row's values are read at once (`SourceAggregate::summary`) and formatted straight
//! into the output, so a report never holds a second copy of every row.

use std::io::{self, Write};
use std::net::IpAddr;

use rejectwatch_core::decode::RecordSink;
use rejectwatch_core::flow_log::{FlowRecord, MalformedLine};
use rejectwatch_core::tally::{AggregateSummary, Ranking, RejectTally, Totals};
use rejectwatch_core::time::format_utc;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};

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

/// Writes the tally as one JSON document, the same as serialising
/// `RejectTally::report(limit)` (README: `tally --json`), but row by row. Compact unless
/// `pretty`.
pub fn write_json(
    out: &mut impl Write,
    tally: &RejectTally,
    limit: Option<usize>,
    pretty: bool,
) -> io::Result<()> {
    let ranking = tally.ranking(limit);
    let report = ReportJson {
        totals: tally.totals(),
        window_seconds: tally.options().window_seconds,
        sources: RowsJson(&ranking),
        sources_omitted: ranking.omitted() as u64,
        tally,
    };
    if pretty {
        serde_json::to_writer_pretty(&mut *out, &report)?;
    } else {
        write_compact(out, &report)?;
    }
    writeln!(out)
}

/// Rows are gathered into blocks of about this size before they are written, so that
/// each row is formatted straight into the block and the writer copies whole blocks.
const ROW_BLOCK_BYTES: usize = 64 << 10;

/// The compact document. Rows, the bulk of it, are written by hand: their keys need no
/// escaping and their values are numbers, addresses and names that rarely need any, which
/// serde would still scan byte by byte. The small parts go through serde_json.
fn write_compact(out: &mut impl Write, report: &ReportJson<'_>) -> io::Result<()> {
    out.write_all(b"{\"totals\":")?;
    serde_json::to_writer(&mut *out, &report.totals)?;
    write!(
        out,
        ",\"window_seconds\":{},\"sources\":[",
        report.window_seconds
    )?;
    // Room for the block and the row that takes it past its size.
    let mut block = Vec::with_capacity(ROW_BLOCK_BYTES + 4096);
    for (index, aggregate) in report.sources.0.iter().enumerate() {
        if index > 0 {
            block.push(b',');
        }
        compact_row(&mut block, &aggregate.summary())?;
        if block.len() >= ROW_BLOCK_BYTES {
            out.write_all(&block)?;
            block.clear();
        }
    }
    out.write_all(&block)?;
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

/// Appends one row as `serde_json::to_writer` would write its `RowJson`.
fn compact_row(out: &mut Vec<u8>, row: &AggregateSummary<'_>) -> io::Result<()> {
    out.extend_from_slice(b"{\"source\":\"");
    match row.key.source {
        IpAddr::V4(address) => {
            let [a, b, c, d] = address.octets();
            push_number(out, u64::from(a));
            for octet in [b, c, d] {
                out.push(b'.');
                push_number(out, u64::from(octet));
            }
        }
        IpAddr::V6(address) => write!(out, "{address}")?,
    }
    out.extend_from_slice(b"\",\"window_start\":");
    push_number(out, row.key.window_start);
    out.extend_from_slice(b",\"rejects\":");
    push_number(out, row.rejects);
    out.extend_from_slice(b",\"packets\":");
    push_number(out, row.packets);
    out.extend_from_slice(b",\"bytes\":");
    push_number(out, row.bytes);
    out.extend_from_slice(b",\"distinct_dst_ports\":");
    push_number(out, u64::from(row.distinct_dst_ports));
    out.extend_from_slice(b",\"distinct_dst_addrs\":");
    push_number(out, row.distinct_dst_addrs);
    out.extend_from_slice(if row.dst_addrs_exact {
        b",\"distinct_dst_addrs_exact\":true,\"first_seen\":"
    } else {
        b",\"distinct_dst_addrs_exact\":false,\"first_seen\":"
    });
    push_number(out, row.first_seen);
    out.extend_from_slice(b",\"last_seen\":");
    push_number(out, row.last_seen);
    out.extend_from_slice(b",\"protocols\":[");
    for (index, (protocol, rejects)) in row.protocols.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"protocol\":");
        push_number(out, u64::from(*protocol));
        out.extend_from_slice(b",\"rejects\":");
        push_number(out, *rejects);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"reject_reasons\":[");
    for (index, (reason, rejects)) in row.reject_reasons.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"reason\":");
        push_string(out, reason)?;
        out.extend_from_slice(b",\"rejects\":");
        push_number(out, *rejects);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"interfaces\":[");
    for (index, interface) in row.interfaces.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        push_string(out, interface)?;
    }
    out.extend_from_slice(b"]}");
    Ok(())
}

/// Appends `text` as a JSON string, as serde_json writes it. Interface ids and reject
/// reasons are plain text, copied as they are; anything serde_json would escape (quotes,
/// backslashes, control characters) goes through it.
fn push_string(out: &mut Vec<u8>, text: &str) -> io::Result<()> {
    if is_plain(text.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, text).map_err(io::Error::from)
    }
}

/// Whether `text` has no byte that JSON strings escape, so it can be copied as it is.
fn is_plain(text: &[u8]) -> bool {
    text.iter()
        .all(|&byte| byte >= 0x20 && byte != b'"' && byte != b'\\')
}

/// Appends `value` in decimal.
fn push_number(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
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
struct RowsJson<'a>(&'a Ranking<'a>);

impl Serialize for RowsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for aggregate in self.0.iter() {
            seq.serialize_element(&RowJson(&aggregate.summary()))?;
        }
        seq.end()
    }
}

/// One row as `SourceReport` serialises: its fields, in its order.
struct RowJson<'s, 'a>(&'s AggregateSummary<'a>);

impl Serialize for RowJson<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let row = self.0;
        let mut map = serializer.serialize_map(Some(13))?;
        map.serialize_entry("source", &row.key.source)?;
        map.serialize_entry("window_start", &row.key.window_start)?;
        map.serialize_entry("rejects", &row.rejects)?;
        map.serialize_entry("packets", &row.packets)?;
        map.serialize_entry("bytes", &row.bytes)?;
        map.serialize_entry("distinct_dst_ports", &row.distinct_dst_ports)?;
        map.serialize_entry("distinct_dst_addrs", &row.distinct_dst_addrs)?;
        map.serialize_entry("distinct_dst_addrs_exact", &row.dst_addrs_exact)?;
        map.serialize_entry("first_seen", &row.first_seen)?;
        map.serialize_entry("last_seen", &row.last_seen)?;
        map.serialize_entry("protocols", &Pairs("protocol", &row.protocols))?;
        map.serialize_entry("reject_reasons", &Pairs("reason", &row.reject_reasons))?;
        map.serialize_entry("interfaces", &*row.interfaces)?;
        map.end()
    }
}

/// `(value, rejects)` pairs as `[{"<name>": value, "rejects": n}, ...]`.
struct Pairs<'a, T>(&'static str, &'a [(T, u64)]);

impl<T: Serialize> Serialize for Pairs<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Pairs(name, pairs) = *self;
        serializer.collect_seq(pairs.iter().map(|(value, rejects)| Pair {
            name,
            value,
            rejects: *rejects,
        }))
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
    let ranking = tally.ranking(limit);
    let width = ranking
        .iter()
        .map(|row| row.key.source.to_string().len())
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
    for row in ranking.iter() {
        let row = row.summary();
        let key = row.key;
        let protocols: Vec<String> = row
            .protocols
            .iter()
            .take(3)
            .map(|(protocol, _)| protocol_name(*protocol))
            .collect();
        let hosts = if row.dst_addrs_exact {
            row.distinct_dst_addrs.to_string()
        } else {
            format!("~{}", row.distinct_dst_addrs)
        };
        writeln!(
            out,
            "{:<width$} {:<20} {:>8} {:>9} {:>11} {:>6} {:>6}  {:<14} {:<8} {:<8}",
            key.source.to_string(),
            format_utc(key.window_start),
            row.rejects,
            row.packets,
            row.bytes,
            row.distinct_dst_ports,
            hosts,
            protocols.join(","),
            &format_utc(row.first_seen)[11..19],
            &format_utc(row.last_seen)[11..19],
        )?;
    }
    if ranking.omitted() > 0 {
        writeln!(
            out,
            "... {} more rows (--limit 0 shows all)",
            ranking.omitted()
        )?;
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
    use crate::report::report;
    use rejectwatch_core::decode::{DecodeLimits, ObjectDecoder, ObjectLines};
    use rejectwatch_core::flow_log::FlowFormat;
    use rejectwatch_core::tally::TallyOptions;
    use rejectwatch_testkit::generate::{FlowLogGenerator, GeneratorConfig};

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
            let report = report(&tally, limit);
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
    fn strings_are_written_as_serde_json_writes_them() {
        let texts = [
            "eni-1235b8ca123456789",
            "",
            "BPA",
            "a \"quoted\" name",
            "back\\slash",
            "tab\tand\nnewline",
            "\u{1}\u{1f}\u{7f}",
            "caf\u{e9} \u{2028} \u{1f600}",
        ];
        // Each length around the eight-byte words, with one byte to escape at each place.
        let mut generated = Vec::new();
        for len in 0..=25 {
            generated.push("x".repeat(len));
            for place in 0..len {
                for special in ['"', '\\', '\n', '\u{1f}', '\u{7f}', '\u{e9}'] {
                    let mut text: Vec<char> = "x".repeat(len).chars().collect();
                    text[place] = special;
                    generated.push(text.into_iter().collect());
                }
            }
        }
        let generated = generated.iter().map(String::as_str);
        for text in texts.into_iter().chain(generated) {
            let mut out = Vec::new();
            push_string(&mut out, text).unwrap();
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text:?}");
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
        let powers = (0..20).map(|exponent| 10u64.pow(exponent));
        let around_powers = powers.flat_map(|power| [power - 1, power, power + 1]);
        let spread = (0..200_000u64).map(|n| n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (n % 64));
        let values = edges
            .into_iter()
            .chain(around_powers)
            .chain(0..100_000)
            .chain(spread);
        let mut out = Vec::new();
        for value in values {
            out.clear();
            push_number(&mut out, value);
            assert_eq!(out, value.to_string().into_bytes());
        }
    }

    #[test]
    fn an_empty_tally_prints_an_empty_report() {
        let tally = RejectTally::new(TallyOptions::default());
        assert_eq!(
            json(&tally, None, false),
            serde_json::to_string(&report(&tally, None)).unwrap() + "\n"
        );
    }
}
