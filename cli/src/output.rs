//! What the CLI prints: records as JSON lines, tallies as a table, skipped lines on stderr.

use std::io::{self, Write};

use shared::decode::RecordSink;
use shared::flow_log::{FlowRecord, MalformedLine};
use shared::tally::RejectTally;
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

/// Writes the tally as an aligned table, most REJECTs first, then the totals.
pub fn write_table(
    out: &mut impl Write,
    tally: &RejectTally,
    limit: Option<usize>,
) -> io::Result<()> {
    let ranked = tally.by_rejects();
    let shown = limit.unwrap_or(ranked.len()).min(ranked.len());
    let rows = &ranked[..shown];
    let width = rows
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
    for stats in rows {
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
            stats.rejects(),
            stats.packets(),
            stats.bytes(),
            stats.distinct_dst_ports(),
            hosts,
            protocols.join(","),
            &format_utc(stats.first_seen())[11..19],
            &format_utc(stats.last_seen())[11..19],
        )?;
    }
    if shown < ranked.len() {
        writeln!(
            out,
            "... {} more rows (--limit 0 shows all)",
            ranked.len() - shown
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
