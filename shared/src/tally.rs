//! REJECT aggregates per (source address, time window), plus the counts that say how much
//! of the input could be counted at all.
//!
//! Pure and single-threaded: records go in through [`RecordSink`], aggregates come out.
//! Memory grows only with the number of distinct (source, window) pairs; distinct
//! destination ports and addresses are held in bounded structures.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;

use foldhash::fast::RandomState;
use serde::Serialize;

use crate::decode::RecordSink;
use crate::flow_log::{Action, Field, FlowRecord, LogStatus, MalformedLine};

/// The default aggregation window: 5 minutes.
pub const DEFAULT_WINDOW_SECONDS: u64 = 300;
/// How many malformed lines are kept with their reasons; the rest are only counted.
pub const MALFORMED_SAMPLES: usize = 10;
/// How many interface ids are kept per (source, window) as examples for alerts.
pub const SAMPLE_INTERFACES: usize = 3;

/// Which address a REJECT is attributed to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceAttribution {
    /// `srcaddr`: the address on the interface's side of any NAT.
    #[default]
    SrcAddr,
    /// `pkt-srcaddr` when the record has it, else `srcaddr`: the original sender of traffic
    /// that passed through a NAT gateway or load balancer.
    PktSrcAddr,
}

/// How records are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TallyOptions {
    /// Window length; a record belongs to the window containing its `start`.
    pub window_seconds: u64,
    pub attribution: SourceAttribution,
}

impl Default for TallyOptions {
    fn default() -> Self {
        TallyOptions {
            window_seconds: DEFAULT_WINDOW_SECONDS,
            attribution: SourceAttribution::SrcAddr,
        }
    }
}

/// The key of an aggregate: who sent the rejected traffic, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SourceWindow {
    pub source: IpAddr,
    /// Unix seconds, a multiple of the window length.
    pub window_start: u64,
}

/// Aggregates of the REJECT records of one source in one window.
#[derive(Clone, Debug)]
pub struct SourceStats {
    /// REJECT records.
    pub rejects: u64,
    /// Sum of `packets` over records that have it.
    pub packets: u64,
    /// Sum of `bytes` over records that have it.
    pub bytes: u64,
    /// Earliest `start` (unix seconds).
    pub first_seen: u64,
    /// Latest `end` (unix seconds; `start` when a record has no `end`).
    pub last_seen: u64,
    dst_ports: PortSet,
    dst_addrs: AddressSet,
    protocols: Vec<(u8, u64)>,
    reject_reasons: Vec<(Box<str>, u64)>,
    interfaces: Vec<Box<str>>,
}

impl SourceStats {
    fn new(time: u64) -> Self {
        SourceStats {
            rejects: 0,
            packets: 0,
            bytes: 0,
            first_seen: time,
            last_seen: time,
            dst_ports: PortSet::default(),
            dst_addrs: AddressSet::default(),
            protocols: Vec::new(),
            reject_reasons: Vec::new(),
            interfaces: Vec::new(),
        }
    }

    /// Distinct destination ports (exact).
    pub fn distinct_dst_ports(&self) -> u32 {
        self.dst_ports.len()
    }

    /// The destination ports, ascending.
    pub fn dst_ports(&self) -> Vec<u16> {
        self.dst_ports.to_vec()
    }

    /// Distinct destination addresses: exact up to [`EXACT_ADDRESSES`], then a HyperLogLog
    /// estimate (about 1.6% standard error).
    pub fn distinct_dst_addrs(&self) -> u64 {
        self.dst_addrs.len()
    }

    /// Whether [`Self::distinct_dst_addrs`] is exact.
    pub fn dst_addrs_exact(&self) -> bool {
        !matches!(self.dst_addrs, AddressSet::Sketch(_))
    }

    /// REJECT records per IANA protocol number, most frequent first.
    pub fn protocols(&self) -> Vec<(u8, u64)> {
        let mut protocols = self.protocols.clone();
        protocols.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        protocols
    }

    /// REJECT records per `reject-reason` (v8), most frequent first; records without a
    /// reason are not listed.
    pub fn reject_reasons(&self) -> Vec<(&str, u64)> {
        let mut reasons: Vec<(&str, u64)> = self
            .reject_reasons
            .iter()
            .map(|(reason, count)| (&**reason, *count))
            .collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        reasons
    }

    /// Up to [`SAMPLE_INTERFACES`] interfaces that logged the rejects, in order of first sight.
    pub fn sample_interfaces(&self) -> impl Iterator<Item = &str> {
        self.interfaces.iter().map(|id| &**id)
    }

    fn add(&mut self, record: &FlowRecord<'_>, time: u64) {
        self.rejects += 1;
        self.packets += record.number(Field::Packets).unwrap_or(0);
        self.bytes += record.number(Field::Bytes).unwrap_or(0);
        self.first_seen = self.first_seen.min(time);
        self.last_seen = self
            .last_seen
            .max(record.number(Field::End).unwrap_or(time));
        if let Some(port) = record.number(Field::DstPort) {
            self.dst_ports.insert(port as u16);
        }
        if let Some(addr) = record.address(Field::DstAddr) {
            self.dst_addrs.insert(addr);
        }
        if let Some(protocol) = record.number(Field::Protocol) {
            increment(&mut self.protocols, protocol as u8);
        }
        if let Some(reason) = record.text(Field::RejectReason) {
            match self.reject_reasons.iter_mut().find(|(r, _)| &**r == reason) {
                Some((_, count)) => *count += 1,
                None => self.reject_reasons.push((reason.into(), 1)),
            }
        }
        if self.interfaces.len() < SAMPLE_INTERFACES
            && let Some(interface) = record.text(Field::InterfaceId)
            && !self.interfaces.iter().any(|known| &**known == interface)
        {
            self.interfaces.push(interface.into());
        }
    }
}

fn increment<K: PartialEq>(counts: &mut Vec<(K, u64)>, key: K) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, count)) => *count += 1,
        None => counts.push((key, 1)),
    }
}

/// NODATA and SKIPDATA reports of one interface in one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CaptureGaps {
    pub nodata: u64,
    /// Non-zero means AWS dropped records for this interface: REJECT counts are a lower bound.
    pub skipdata: u64,
}

/// Counts over everything the tally saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Records parsed, of every kind.
    pub records: u64,
    /// REJECT records counted into a (source, window) aggregate.
    pub rejects: u64,
    /// Distinct source addresses with at least one counted REJECT.
    pub sources: u64,
    /// Lines skipped as malformed.
    pub malformed: u64,
    /// NODATA records (no traffic in the interval).
    pub nodata: u64,
    /// SKIPDATA records (AWS skipped records in the interval).
    pub skipdata: u64,
    /// Records that cannot be counted: formats without `action`, transit gateway records,
    /// and traffic records with no action, source or time.
    pub uncountable: u64,
}

/// REJECT aggregates of a batch of records, keyed by [`SourceWindow`].
#[derive(Clone, Debug)]
pub struct RejectTally {
    options: TallyOptions,
    stats: HashMap<SourceWindow, SourceStats, RandomState>,
    gaps: HashMap<(Box<str>, u64), CaptureGaps, RandomState>,
    totals: Totals,
    malformed_samples: Vec<MalformedLine>,
}

impl Default for RejectTally {
    fn default() -> Self {
        RejectTally::new(TallyOptions::default())
    }
}

impl RejectTally {
    /// An empty tally. A window length of zero is treated as one second.
    pub fn new(options: TallyOptions) -> Self {
        RejectTally {
            options: TallyOptions {
                window_seconds: options.window_seconds.max(1),
                ..options
            },
            stats: HashMap::default(),
            gaps: HashMap::default(),
            totals: Totals::default(),
            malformed_samples: Vec::new(),
        }
    }

    /// The options the tally groups by.
    pub fn options(&self) -> TallyOptions {
        self.options
    }

    fn window_of(&self, time: u64) -> u64 {
        time - time % self.options.window_seconds
    }

    /// Adds one record.
    pub fn add(&mut self, record: &FlowRecord<'_>) {
        self.totals.records += 1;
        match record.log_status() {
            Some(LogStatus::NoData) => {
                self.totals.nodata += 1;
                self.add_gap(record, |gaps| gaps.nodata += 1);
                return;
            }
            Some(LogStatus::SkipData) => {
                self.totals.skipdata += 1;
                self.add_gap(record, |gaps| gaps.skipdata += 1);
                return;
            }
            Some(LogStatus::Ok) | None => {}
        }
        if !record.format().can_count_rejects() {
            self.totals.uncountable += 1;
            return;
        }
        match record.action() {
            Some(Action::Reject) => {}
            Some(Action::Accept) => return,
            None => {
                self.totals.uncountable += 1;
                return;
            }
        }
        let source = match self.options.attribution {
            SourceAttribution::PktSrcAddr => record
                .address(Field::PktSrcAddr)
                .or_else(|| record.address(Field::SrcAddr)),
            SourceAttribution::SrcAddr => record.address(Field::SrcAddr),
        };
        let time = record
            .number(Field::Start)
            .or_else(|| record.number(Field::End));
        let (Some(source), Some(time)) = (source, time) else {
            self.totals.uncountable += 1;
            return;
        };
        self.totals.rejects += 1;
        let key = SourceWindow {
            source,
            window_start: self.window_of(time),
        };
        self.stats
            .entry(key)
            .or_insert_with(|| SourceStats::new(time))
            .add(record, time);
    }

    fn add_gap(&mut self, record: &FlowRecord<'_>, bump: impl FnOnce(&mut CaptureGaps)) {
        let (Some(interface), Some(start)) =
            (record.text(Field::InterfaceId), record.number(Field::Start))
        else {
            return;
        };
        let key = (Box::from(interface), self.window_of(start));
        bump(self.gaps.entry(key).or_default());
    }

    /// Records a skipped line: counted, and kept with its reason if among the first
    /// [`MALFORMED_SAMPLES`].
    pub fn add_malformed(&mut self, line: MalformedLine) {
        self.totals.malformed += 1;
        if self.malformed_samples.len() < MALFORMED_SAMPLES {
            self.malformed_samples.push(line);
        }
    }

    /// Totals, with `sources` computed from the aggregates.
    pub fn totals(&self) -> Totals {
        let sources: HashSet<IpAddr, RandomState> =
            self.stats.keys().map(|key| key.source).collect();
        Totals {
            sources: sources.len() as u64,
            ..self.totals
        }
    }

    /// The first malformed lines, with their reasons.
    pub fn malformed_samples(&self) -> &[MalformedLine] {
        &self.malformed_samples
    }

    /// The number of (source, window) aggregates.
    pub fn len(&self) -> usize {
        self.stats.len()
    }

    /// Whether no REJECT was counted.
    pub fn is_empty(&self) -> bool {
        self.stats.is_empty()
    }

    /// The aggregate of one source in one window.
    pub fn get(&self, key: &SourceWindow) -> Option<&SourceStats> {
        self.stats.get(key)
    }

    /// All aggregates, most REJECTs first (ties by address, then window).
    pub fn by_rejects(&self) -> Vec<(SourceWindow, &SourceStats)> {
        let mut sources: Vec<(SourceWindow, &SourceStats)> = self
            .stats
            .iter()
            .map(|(key, stats)| (*key, stats))
            .collect();
        sources.sort_by(|a, b| b.1.rejects.cmp(&a.1.rejects).then(a.0.cmp(&b.0)));
        sources
    }

    /// NODATA/SKIPDATA counts per (interface, window start), ordered by interface and time.
    pub fn capture_gaps(&self) -> Vec<(&str, u64, CaptureGaps)> {
        let mut gaps: Vec<(&str, u64, CaptureGaps)> = self
            .gaps
            .iter()
            .map(|((interface, window), gaps)| (&**interface, *window, *gaps))
            .collect();
        gaps.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)));
        gaps
    }
}

impl RecordSink for RejectTally {
    fn record(&mut self, record: &FlowRecord<'_>) {
        self.add(record);
    }

    fn malformed(&mut self, line: MalformedLine) {
        self.add_malformed(line);
    }
}

/// Distinct destination ports: a short list for the common case, a 65,536-bit map (8 KiB)
/// once a source has touched many ports, so a full sweep costs the same as a wide one.
#[derive(Clone, Debug)]
enum PortSet {
    Few(Vec<u16>),
    Bitmap { bits: Box<[u64; 1024]>, len: u32 },
}

const FEW_PORTS: usize = 64;

impl Default for PortSet {
    fn default() -> Self {
        PortSet::Few(Vec::new())
    }
}

impl PortSet {
    fn insert(&mut self, port: u16) {
        match self {
            PortSet::Few(ports) => {
                if ports.contains(&port) {
                    return;
                }
                ports.push(port);
                if ports.len() > FEW_PORTS {
                    let mut bits = Box::new([0u64; 1024]);
                    for &port in ports.iter() {
                        bits[usize::from(port) / 64] |= 1 << (port % 64);
                    }
                    let len = ports.len() as u32;
                    *self = PortSet::Bitmap { bits, len };
                }
            }
            PortSet::Bitmap { bits, len } => {
                let word = &mut bits[usize::from(port) / 64];
                let bit = 1u64 << (port % 64);
                if *word & bit == 0 {
                    *word |= bit;
                    *len += 1;
                }
            }
        }
    }

    fn len(&self) -> u32 {
        match self {
            PortSet::Few(ports) => ports.len() as u32,
            PortSet::Bitmap { len, .. } => *len,
        }
    }

    fn to_vec(&self) -> Vec<u16> {
        match self {
            PortSet::Few(ports) => {
                let mut ports = ports.clone();
                ports.sort_unstable();
                ports
            }
            PortSet::Bitmap { bits, .. } => (0..=u16::MAX)
                .filter(|&port| bits[usize::from(port) / 64] & (1 << (port % 64)) != 0)
                .collect(),
        }
    }
}

/// Addresses are counted exactly up to this many per (source, window), then estimated.
pub const EXACT_ADDRESSES: usize = 4096;
const FEW_ADDRESSES: usize = 16;

/// Distinct destination addresses: exact while small, then a HyperLogLog sketch so that a
/// source sweeping a /8 costs 4 KiB, not gigabytes.
#[derive(Clone, Debug)]
enum AddressSet {
    Few(Vec<IpAddr>),
    Many(HashSet<IpAddr, RandomState>),
    Sketch(Box<HyperLogLog>),
}

impl Default for AddressSet {
    fn default() -> Self {
        AddressSet::Few(Vec::new())
    }
}

impl AddressSet {
    fn insert(&mut self, addr: IpAddr) {
        match self {
            AddressSet::Few(addrs) => {
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                    if addrs.len() > FEW_ADDRESSES {
                        *self = AddressSet::Many(addrs.drain(..).collect());
                    }
                }
            }
            AddressSet::Many(addrs) => {
                if addrs.insert(addr) && addrs.len() > EXACT_ADDRESSES {
                    let mut sketch = Box::new(HyperLogLog::new());
                    for addr in addrs.iter() {
                        sketch.insert(addr);
                    }
                    *self = AddressSet::Sketch(sketch);
                }
            }
            AddressSet::Sketch(sketch) => sketch.insert(&addr),
        }
    }

    fn len(&self) -> u64 {
        match self {
            AddressSet::Few(addrs) => addrs.len() as u64,
            AddressSet::Many(addrs) => addrs.len() as u64,
            AddressSet::Sketch(sketch) => sketch.estimate(),
        }
    }
}

const HLL_PRECISION: u32 = 12;
const HLL_REGISTERS: usize = 1 << HLL_PRECISION;

/// A HyperLogLog cardinality sketch (Flajolet et al., with linear counting for small
/// ranges) over a fixed-seed hash, so estimates are reproducible run to run.
#[derive(Clone, Debug)]
struct HyperLogLog {
    registers: [u8; HLL_REGISTERS],
}

impl HyperLogLog {
    fn new() -> Self {
        HyperLogLog {
            registers: [0; HLL_REGISTERS],
        }
    }

    fn insert<T: Hash>(&mut self, item: &T) {
        let hash = foldhash::quality::FixedState::with_seed(0x5eed_f10e).hash_one(item);
        let index = (hash >> (64 - HLL_PRECISION)) as usize;
        // Rank of the first set bit in the remaining bits; the guard bit caps it.
        let rest = (hash << HLL_PRECISION) | (1 << (HLL_PRECISION - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        self.registers[index] = self.registers[index].max(rank);
    }

    fn estimate(&self) -> u64 {
        let m = HLL_REGISTERS as f64;
        let sum: f64 = self
            .registers
            .iter()
            .map(|&rank| 2f64.powi(-i32::from(rank)))
            .sum();
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let zeros = self.registers.iter().filter(|&&rank| rank == 0).count();
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }
}

/// A serialisable summary of a tally: the `rejectwatch tally --json` document.
#[derive(Clone, Debug, Serialize)]
pub struct TallyReport {
    pub totals: Totals,
    pub window_seconds: u64,
    /// Aggregates, most REJECTs first.
    pub sources: Vec<SourceReport>,
    /// Aggregates left out by a limit.
    pub sources_omitted: u64,
    pub capture_gaps: Vec<CaptureGapReport>,
    /// The first malformed lines, as `line N: reason`.
    pub malformed_samples: Vec<String>,
}

/// One (source, window) aggregate in a [`TallyReport`].
#[derive(Clone, Debug, Serialize)]
pub struct SourceReport {
    pub source: IpAddr,
    pub window_start: u64,
    pub rejects: u64,
    pub packets: u64,
    pub bytes: u64,
    pub distinct_dst_ports: u32,
    pub distinct_dst_addrs: u64,
    pub distinct_dst_addrs_exact: bool,
    pub first_seen: u64,
    pub last_seen: u64,
    pub protocols: Vec<ProtocolCount>,
    pub reject_reasons: Vec<ReasonCount>,
    pub interfaces: Vec<String>,
}

/// REJECT records of one IANA protocol number.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ProtocolCount {
    pub protocol: u8,
    pub rejects: u64,
}

/// REJECT records with one `reject-reason`.
#[derive(Clone, Debug, Serialize)]
pub struct ReasonCount {
    pub reason: String,
    pub rejects: u64,
}

/// NODATA/SKIPDATA counts of one interface in one window.
#[derive(Clone, Debug, Serialize)]
pub struct CaptureGapReport {
    pub interface: String,
    pub window_start: u64,
    pub nodata: u64,
    pub skipdata: u64,
}

impl SourceReport {
    /// The report row of one aggregate.
    pub fn new(key: SourceWindow, stats: &SourceStats) -> Self {
        SourceReport {
            source: key.source,
            window_start: key.window_start,
            rejects: stats.rejects,
            packets: stats.packets,
            bytes: stats.bytes,
            distinct_dst_ports: stats.distinct_dst_ports(),
            distinct_dst_addrs: stats.distinct_dst_addrs(),
            distinct_dst_addrs_exact: stats.dst_addrs_exact(),
            first_seen: stats.first_seen,
            last_seen: stats.last_seen,
            protocols: stats
                .protocols()
                .into_iter()
                .map(|(protocol, rejects)| ProtocolCount { protocol, rejects })
                .collect(),
            reject_reasons: stats
                .reject_reasons()
                .into_iter()
                .map(|(reason, rejects)| ReasonCount {
                    reason: reason.to_owned(),
                    rejects,
                })
                .collect(),
            interfaces: stats.sample_interfaces().map(str::to_owned).collect(),
        }
    }
}

impl RejectTally {
    /// The report of this tally, with at most `limit` sources (all when `None`).
    pub fn report(&self, limit: Option<usize>) -> TallyReport {
        let ranked = self.by_rejects();
        let shown = limit.unwrap_or(ranked.len()).min(ranked.len());
        TallyReport {
            totals: self.totals(),
            window_seconds: self.options.window_seconds,
            sources_omitted: (ranked.len() - shown) as u64,
            sources: ranked[..shown]
                .iter()
                .map(|(key, stats)| SourceReport::new(*key, stats))
                .collect(),
            capture_gaps: self
                .capture_gaps()
                .into_iter()
                .map(|(interface, window_start, gaps)| CaptureGapReport {
                    interface: interface.to_owned(),
                    window_start,
                    nodata: gaps.nodata,
                    skipdata: gaps.skipdata,
                })
                .collect(),
            malformed_samples: self
                .malformed_samples
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow_log::{FlowFormat, ParseError, RecordParser};

    const ACCEPT: &str = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK";
    const REJECT: &str = "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK";
    const NODATA: &str =
        "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA";
    const SKIPDATA: &str =
        "2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA";
    const ICMP_REJECT: &str = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 203.0.113.12 0 0 1 4 336 1432917094 1432917142 REJECT OK";

    fn tally_lines(format: FlowFormat, options: TallyOptions, lines: &[&str]) -> RejectTally {
        let mut parser = RecordParser::new(format);
        let mut tally = RejectTally::new(options);
        for line in lines {
            tally.add(&parser.parse(line).unwrap());
        }
        tally
    }

    fn tally_default(lines: &[&str]) -> RejectTally {
        tally_lines(FlowFormat::default(), TallyOptions::default(), lines)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn documented_records_give_the_expected_totals() {
        let tally = tally_default(&[ACCEPT, REJECT, NODATA, SKIPDATA, ICMP_REJECT]);
        assert_eq!(
            tally.totals(),
            Totals {
                records: 5,
                rejects: 2,
                sources: 2,
                malformed: 0,
                nodata: 1,
                skipdata: 1,
                uncountable: 0
            }
        );
    }

    #[test]
    fn reject_lands_in_the_window_of_its_start() {
        let tally = tally_default(&[REJECT]);
        let key = SourceWindow {
            source: ip("172.31.9.69"),
            window_start: 1_418_529_900,
        };
        let stats = tally
            .get(&key)
            .expect("window of 1418530010 starts at 1418529900");
        assert_eq!((stats.rejects, stats.packets, stats.bytes), (1, 20, 4249));
        assert_eq!(
            (stats.first_seen, stats.last_seen),
            (1_418_530_010, 1_418_530_070)
        );
        assert_eq!(stats.dst_ports(), vec![3389]);
        assert_eq!(stats.protocols(), vec![(6, 1)]);
        assert_eq!(
            stats.sample_interfaces().collect::<Vec<_>>(),
            vec!["eni-1235b8ca123456789"]
        );
    }

    #[test]
    fn window_length_is_configurable() {
        let options = TallyOptions {
            window_seconds: 3600,
            ..TallyOptions::default()
        };
        let tally = tally_lines(FlowFormat::default(), options, &[REJECT]);
        assert_eq!(tally.by_rejects()[0].0.window_start, 1_418_529_600);
    }

    #[test]
    fn same_source_in_two_windows_is_two_aggregates_and_one_source() {
        let later = REJECT.replace("1418530010 1418530070", "1418530400 1418530460");
        let tally = tally_default(&[REJECT, &later, REJECT]);
        let ranked = tally.by_rejects();
        assert_eq!(ranked.len(), 2);
        assert_eq!(ranked[0].1.rejects, 2);
        assert_eq!(tally.totals().sources, 1);
    }

    #[test]
    fn accepts_and_gaps_are_not_counted_as_rejects() {
        let tally = tally_default(&[ACCEPT, NODATA, SKIPDATA]);
        assert!(tally.is_empty());
        assert_eq!(tally.totals().rejects, 0);
    }

    #[test]
    fn nodata_and_skipdata_are_counted_per_interface_and_window() {
        let tally = tally_default(&[NODATA, SKIPDATA, SKIPDATA]);
        assert_eq!(
            tally.capture_gaps(),
            vec![
                (
                    "eni-11111111aaaaaaaaa",
                    1_431_280_800,
                    CaptureGaps {
                        nodata: 0,
                        skipdata: 2
                    }
                ),
                (
                    "eni-1235b8ca123456789",
                    1_431_280_800,
                    CaptureGaps {
                        nodata: 1,
                        skipdata: 0
                    }
                ),
            ]
        );
    }

    #[test]
    fn nat_gateway_records_without_action_are_uncountable() {
        let format = FlowFormat::from_log_format(
            "${instance-id} ${interface-id} ${srcaddr} ${dstaddr} ${pkt-srcaddr} ${pkt-dstaddr}",
        )
        .unwrap();
        let tally = tally_lines(
            format,
            TallyOptions::default(),
            &["- eni-1235b8ca123456789 10.0.1.5 10.0.0.220 10.0.1.5 203.0.113.5"],
        );
        assert_eq!(tally.totals().uncountable, 1);
        assert_eq!(tally.totals().rejects, 0);
    }

    #[test]
    fn transit_gateway_records_are_uncountable_even_with_an_action_column() {
        let format =
            FlowFormat::from_log_format("${resource-type} ${srcaddr} ${start} ${action}").unwrap();
        let tally = tally_lines(
            format,
            TallyOptions::default(),
            &["TransitGateway 10.0.0.1 1700000000 REJECT"],
        );
        assert_eq!((tally.totals().uncountable, tally.totals().rejects), (1, 0));
    }

    #[test]
    fn reject_without_source_or_time_is_uncountable() {
        let format = FlowFormat::from_log_format("${srcaddr} ${start} ${action}").unwrap();
        let tally = tally_lines(
            format,
            TallyOptions::default(),
            &["- 1700000000 REJECT", "10.0.0.1 - REJECT"],
        );
        assert_eq!((tally.totals().uncountable, tally.totals().rejects), (2, 0));
    }

    #[test]
    fn end_is_used_when_the_format_has_no_start() {
        let format = FlowFormat::from_log_format("${srcaddr} ${end} ${action}").unwrap();
        let tally = tally_lines(
            format,
            TallyOptions::default(),
            &["10.0.0.1 1700000123 REJECT"],
        );
        assert_eq!(tally.by_rejects()[0].0.window_start, 1_700_000_100);
    }

    #[test]
    fn pkt_srcaddr_attribution_uses_the_original_sender() {
        let format =
            FlowFormat::from_log_format("${srcaddr} ${pkt-srcaddr} ${start} ${action}").unwrap();
        let lines = [
            "10.0.1.5 203.0.113.5 1700000000 REJECT",
            "10.0.1.5 - 1700000000 REJECT",
        ];
        let by_pkt = tally_lines(
            format.clone(),
            TallyOptions {
                attribution: SourceAttribution::PktSrcAddr,
                ..TallyOptions::default()
            },
            &lines,
        );
        let sources: Vec<IpAddr> = by_pkt
            .by_rejects()
            .iter()
            .map(|(key, _)| key.source)
            .collect();
        assert_eq!(sources, vec![ip("10.0.1.5"), ip("203.0.113.5")]);
        let by_src = tally_lines(format, TallyOptions::default(), &lines);
        assert_eq!(by_src.by_rejects()[0].1.rejects, 2);
    }

    #[test]
    fn reject_reasons_and_protocols_are_broken_down() {
        let format = FlowFormat::from_log_format(
            "${srcaddr} ${protocol} ${start} ${action} ${reject-reason}",
        )
        .unwrap();
        let tally = tally_lines(
            format,
            TallyOptions::default(),
            &[
                "10.0.0.1 6 1700000000 REJECT BPA",
                "10.0.0.1 17 1700000000 REJECT -",
                "10.0.0.1 6 1700000000 REJECT BPA",
            ],
        );
        let stats = tally.by_rejects()[0].1;
        assert_eq!(stats.reject_reasons(), vec![("BPA", 2)]);
        assert_eq!(stats.protocols(), vec![(6, 2), (17, 1)]);
    }

    #[test]
    fn a_full_port_sweep_is_counted_exactly_in_bounded_memory() {
        let format =
            FlowFormat::from_log_format("${srcaddr} ${dstaddr} ${dstport} ${start} ${action}")
                .unwrap();
        let mut parser = RecordParser::new(format);
        let mut tally = RejectTally::default();
        for round in 0..2 {
            for port in 0..=u16::MAX {
                let line = format!("198.51.100.7 10.0.0.{} {port} 1700000000 REJECT", round + 1);
                tally.add(&parser.parse(&line).unwrap());
            }
        }
        let stats = tally.by_rejects()[0].1;
        assert_eq!(stats.rejects, 131_072);
        assert_eq!(stats.distinct_dst_ports(), 65_536);
        assert_eq!(stats.distinct_dst_addrs(), 2);
        assert!(matches!(stats.dst_ports, PortSet::Bitmap { .. }));
    }

    #[test]
    fn host_sweeps_are_exact_up_to_the_cap_then_estimated_closely() {
        let format =
            FlowFormat::from_log_format("${srcaddr} ${dstaddr} ${start} ${action}").unwrap();
        let mut parser = RecordParser::new(format);
        let mut tally = RejectTally::default();
        let mut counts = Vec::new();
        for host in 0u32..50_000 {
            let addr = std::net::Ipv4Addr::from(0x0a00_0000 + host);
            tally.add(
                &parser
                    .parse(&format!("203.0.113.9 {addr} 1700000000 REJECT"))
                    .unwrap(),
            );
            if host + 1 == EXACT_ADDRESSES as u32 || host + 1 == 50_000 {
                let stats = tally.by_rejects()[0].1;
                counts.push((stats.distinct_dst_addrs(), stats.dst_addrs_exact()));
            }
        }
        assert_eq!(counts[0], (EXACT_ADDRESSES as u64, true));
        let (estimate, exact) = counts[1];
        assert!(!exact);
        let error = (estimate as f64 - 50_000.0).abs() / 50_000.0;
        assert!(error < 0.05, "estimate {estimate} is {error:.3} off");
    }

    #[test]
    fn interface_samples_stop_at_the_limit() {
        let lines: Vec<String> = (0..5)
            .map(|i| REJECT.replace("eni-1235b8ca123456789", &format!("eni-{i}")))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let tally = tally_default(&refs);
        let stats = tally.by_rejects()[0].1;
        assert_eq!(
            stats.sample_interfaces().collect::<Vec<_>>(),
            vec!["eni-0", "eni-1", "eni-2"]
        );
    }

    #[test]
    fn malformed_lines_are_all_counted_and_the_first_kept() {
        let mut tally = RejectTally::default();
        for line_number in 1..=25 {
            tally.add_malformed(MalformedLine {
                line_number,
                error: ParseError::NotUtf8,
            });
        }
        assert_eq!(tally.totals().malformed, 25);
        assert_eq!(tally.malformed_samples().len(), MALFORMED_SAMPLES);
        assert_eq!(tally.malformed_samples()[0].line_number, 1);
    }

    #[test]
    fn ranking_is_by_rejects_then_address() {
        let other = REJECT.replace("172.31.9.69", "172.31.9.1");
        let tally = tally_default(&[REJECT, &other, &other]);
        let sources: Vec<IpAddr> = tally
            .by_rejects()
            .iter()
            .map(|(key, _)| key.source)
            .collect();
        assert_eq!(sources, vec![ip("172.31.9.1"), ip("172.31.9.69")]);
    }

    #[test]
    fn report_serialises_totals_and_sources() {
        let tally = tally_default(&[REJECT, ACCEPT, SKIPDATA]);
        let json = serde_json::to_value(tally.report(None)).unwrap();
        assert_eq!(json["totals"]["records"], 3);
        assert_eq!(json["totals"]["rejects"], 1);
        assert_eq!(json["totals"]["sources"], 1);
        assert_eq!(json["sources"][0]["source"], "172.31.9.69");
        assert_eq!(json["sources"][0]["window_start"], 1_418_529_900);
        assert_eq!(json["sources"][0]["distinct_dst_ports"], 1);
        assert_eq!(json["capture_gaps"][0]["skipdata"], 1);
        assert_eq!(tally.report(Some(0)).sources_omitted, 1);
    }
}
