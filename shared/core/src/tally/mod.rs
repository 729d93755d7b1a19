//! REJECT aggregates per (source address, time window), plus the counts that say how much
//! of the input could be counted at all.
//!
//! Pure and single-threaded: records go in through [`RecordSink`], aggregates come out.
//! Memory grows only with the number of distinct (source, window) pairs. Each costs about
//! 80 bytes (a 64-byte row and its share of the index) while its source keeps to two
//! ports, hosts, protocols and interfaces (ordinary sources do); richer detail is allocated
//! only for sources that spread out, and distinct destination ports and addresses are held
//! in bounded structures (a bitmap, a capped set, then a sketch).
//!
//! - `table`: the private prefetching hash table of rows, and the detail of rows that spill.
//! - `bounded`: the bounded sets of ports and addresses, [`ShortList`], the interface-id cache.

mod bounded;
mod table;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use foldhash::fast::RandomState;
use indexmap::IndexSet;
use serde::Serialize;

use crate::decode::RecordSink;
use crate::flow_log::{Action, AddressBits, Field, FlowRecord, LogStatus, MalformedLine};
use crate::sketch::{DistinctSketch, stable_hash};

pub use bounded::ShortList;
use bounded::{AddressSet, RecentIds, ShortText};
use table::{
    ADDRESSES, AddressId, BATCH, Destination, Detail, INTERFACES, PORTS, PROTOCOLS,
    ROW_PREFETCH_LAG, Row, RowKey, SPILLED, Sample, Table, V6_DESTINATION_IDS, fingerprint_of,
};

/// The default aggregation window: 5 minutes.
pub const DEFAULT_WINDOW_SECONDS: u64 = 300;
/// The shortest window: one minute, the shortest flow-log aggregation interval.
pub const MIN_WINDOW_SECONDS: u64 = 60;
/// How many malformed lines are kept with their reasons; the rest are only counted.
pub const MALFORMED_SAMPLES: usize = 10;
/// How many interface ids are kept per (source, window) as examples for alerts.
pub const SAMPLE_INTERFACES: usize = 3;
/// Addresses are counted exactly up to this many per (source, window), then estimated.
pub const EXACT_ADDRESSES: usize = 4096;

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
    /// Window length; a record belongs to the window containing its `start`. Values below
    /// [`MIN_WINDOW_SECONDS`] are raised to it.
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

/// Protocols a detail counts inline; a summary lists as many without allocating.
pub const INLINE_PROTOCOLS: usize = 4;

/// REJECT aggregates of a batch of records, keyed by [`SourceWindow`].
///
/// REJECTs are applied to the aggregates 64 at a time; every read sees the ones
/// still waiting, so the batching shows only in speed.
#[derive(Clone, Debug)]
pub struct RejectTally {
    options: TallyOptions,
    table: Table,
    /// The details of rows that spilled, by index.
    details: Vec<Detail>,
    /// REJECTs counted in the totals but not yet applied to `table`.
    pending: Vec<Sample>,
    /// Interface ids seen, interned so aggregates refer to them by index.
    interfaces: IndexSet<Box<str>, RandomState>,
    /// Recently interned interface ids, to skip hashing and comparing through `interfaces`.
    recent_interfaces: RecentIds,
    /// Reject reasons seen, interned like interfaces.
    reasons: IndexSet<Box<str>, RandomState>,
    /// IPv6 sources seen, interned so that a row's key is one word; there are never more
    /// of them than rows.
    v6_sources: IndexSet<u128, RandomState>,
    /// IPv6 destinations seen, interned so that rows keep them inline; at most
    /// [`V6_DESTINATION_IDS`] of them.
    v6_destinations: IndexSet<u128, RandomState>,
    /// The start and index of the window of the last REJECT: most records fall in the
    /// same window as the one before, which spares a division.
    current_window: (u64, u32),
    gaps: HashMap<(u32, u64), CaptureGaps, RandomState>,
    /// Destination ports whose REJECTs are not counted, one bit per port.
    ignored_dst_ports: Option<Box<[u64; 1024]>>,
    totals: Totals,
    malformed_samples: Vec<MalformedLine>,
}

impl Default for RejectTally {
    fn default() -> Self {
        RejectTally::new(TallyOptions::default())
    }
}

impl RejectTally {
    /// The documented fields [`RejectTally::add`] reads; the rest of a record is never
    /// looked at. Parquet objects are read with only these columns.
    pub const FIELDS_READ: &'static [Field] = &[
        Field::LogStatus,
        Field::Action,
        Field::SrcAddr,
        Field::PktSrcAddr,
        Field::Start,
        Field::End,
        Field::DstPort,
        Field::DstAddr,
        Field::Protocol,
        Field::Packets,
        Field::Bytes,
        Field::InterfaceId,
        Field::RejectReason,
    ];

    /// An empty tally.
    pub fn new(options: TallyOptions) -> Self {
        RejectTally {
            options: TallyOptions {
                window_seconds: options.window_seconds.max(MIN_WINDOW_SECONDS),
                ..options
            },
            table: Table::default(),
            details: Vec::new(),
            pending: Vec::with_capacity(BATCH),
            interfaces: IndexSet::default(),
            recent_interfaces: RecentIds::default(),
            reasons: IndexSet::default(),
            v6_sources: IndexSet::default(),
            v6_destinations: IndexSet::default(),
            current_window: (0, 0),
            gaps: HashMap::default(),
            ignored_dst_ports: None,
            totals: Totals::default(),
            malformed_samples: Vec::new(),
        }
    }

    /// Leaves REJECTs to these destination ports out of every aggregate (expected noise,
    /// such as health checks a network ACL drops); they are counted in
    /// [`Totals::ignored`] only.
    pub fn ignore_dst_ports(&mut self, ports: impl IntoIterator<Item = u16>) {
        let mut bits = Box::new([0u64; 1024]);
        let mut any = false;
        for port in ports {
            bits[usize::from(port) / 64] |= 1 << (port % 64);
            any = true;
        }
        self.ignored_dst_ports = any.then_some(bits);
    }

    /// The options the tally groups by.
    pub fn options(&self) -> TallyOptions {
        self.options
    }

    fn window_start(&self, time: u64) -> u64 {
        time - time % self.options.window_seconds
    }

    /// The index of the window holding `time`; `None` for times too far in the future to
    /// be real (past [`RowKey::MAX_WINDOW_INDEX`]).
    #[inline(always)]
    fn window_index(&mut self, time: u64) -> Option<u32> {
        let (start, index) = self.current_window;
        if time.wrapping_sub(start) < self.options.window_seconds {
            return Some(index);
        }
        let index = u32::try_from(time / self.options.window_seconds)
            .ok()
            .filter(|&index| index <= RowKey::MAX_WINDOW_INDEX)?;
        self.current_window = (u64::from(index) * self.options.window_seconds, index);
        Some(index)
    }

    #[inline(always)]
    fn intern_interface(&mut self, interface: &str) -> u32 {
        let key = ShortText::new(interface);
        match key.and_then(|key| self.recent_interfaces.get(&key)) {
            Some(id) => id,
            None => self.intern_interface_slowly(interface, key),
        }
    }

    #[cold]
    fn intern_interface_slowly(&mut self, interface: &str, key: Option<ShortText>) -> u32 {
        let id = match self.interfaces.get_index_of(interface) {
            Some(index) => index as u32,
            None => self.interfaces.insert_full(interface.into()).0 as u32,
        };
        if let Some(key) = key {
            self.recent_interfaces.put(key, id);
        }
        id
    }

    fn intern_reason(&mut self, reason: &str) -> u32 {
        match self.reasons.get_index_of(reason) {
            Some(index) => index as u32,
            None => self.reasons.insert_full(reason.into()).0 as u32,
        }
    }

    #[inline(always)]
    fn source_id(&mut self, address: AddressBits) -> AddressId {
        match address {
            AddressBits::V4(bits) => AddressId { bits, is_v6: false },
            AddressBits::V6(bits) => AddressId {
                bits: self.v6_sources.insert_full(bits).0 as u32,
                is_v6: true,
            },
        }
    }

    #[inline(always)]
    fn destination(&mut self, address: AddressBits) -> Destination {
        match address {
            AddressBits::V4(bits) => Destination::Id(AddressId { bits, is_v6: false }),
            AddressBits::V6(bits) => self.v6_destination(bits),
        }
    }

    fn v6_destination(&mut self, bits: u128) -> Destination {
        let known = self.v6_destinations.get_index_of(&bits);
        let id = match known {
            Some(id) => Some(id),
            None if self.v6_destinations.len() < V6_DESTINATION_IDS => {
                Some(self.v6_destinations.insert_full(bits).0)
            }
            None => None,
        };
        match id {
            Some(id) => Destination::Id(AddressId {
                bits: id as u32,
                is_v6: true,
            }),
            None => {
                Destination::Fingerprint(address_fingerprint(IpAddr::V6(Ipv6Addr::from_bits(bits))))
            }
        }
    }

    /// The id of an address already seen; `None` for an IPv6 address the tally never met.
    fn known_address_id(&self, address: IpAddr) -> Option<AddressId> {
        match address {
            IpAddr::V4(v4) => Some(AddressId {
                bits: v4.to_bits(),
                is_v6: false,
            }),
            IpAddr::V6(v6) => Some(AddressId {
                bits: self.v6_sources.get_index_of(&v6.to_bits())? as u32,
                is_v6: true,
            }),
        }
    }

    fn address_of(&self, address: AddressId) -> IpAddr {
        if address.is_v6 {
            let bits = self.v6_sources.get_index(address.bits as usize);
            IpAddr::V6(Ipv6Addr::from_bits(bits.copied().unwrap_or_default()))
        } else {
            IpAddr::V4(Ipv4Addr::from_bits(address.bits))
        }
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
                .address_bits(Field::PktSrcAddr)
                .or_else(|| record.address_bits(Field::SrcAddr)),
            SourceAttribution::SrcAddr => record.address_bits(Field::SrcAddr),
        };
        let start = record.number(Field::Start);
        let end = record.number(Field::End);
        // Any real time (below 10^11 seconds, the millisecond cut-off) has a window index
        // below 2^31 for windows of a minute or more; absurd times do not count.
        let counted = source.zip(start.or(end)).and_then(|(source, time)| {
            let window_index = self.window_index(time)?;
            Some((source, time, window_index))
        });
        let Some((source, time, window_index)) = counted else {
            self.totals.uncountable += 1;
            return;
        };
        let dst_port = record.number(Field::DstPort).map(|port| port as u16);
        if let (Some(ignored), Some(port)) = (&self.ignored_dst_ports, dst_port)
            && ignored[usize::from(port) / 64] & 1 << (port % 64) != 0
        {
            self.totals.ignored += 1;
            return;
        }
        let key = RowKey::new(self.source_id(source), window_index);
        self.totals.rejects += 1;
        let window_start = self.current_window.0;
        let offset =
            |moment: u64| moment.saturating_sub(window_start).min(u64::from(u32::MAX)) as u32;
        let hash = self.table.hash(key);
        self.table.prefetch_slot(hash);
        // The REJECT read a few before this one had its index slot asked for then: by now
        // the slot is in cache, so its row can be asked for in turn.
        if let Some(earlier) = self.pending.len().checked_sub(ROW_PREFETCH_LAG) {
            self.table.prefetch_row(self.pending[earlier].hash);
        }
        let interface = record
            .text(Field::InterfaceId)
            .map(|interface| self.intern_interface(interface));
        let reject_reason = record
            .text(Field::RejectReason)
            .map(|reason| self.intern_reason(reason));
        let dst_address = record
            .address_bits(Field::DstAddr)
            .map(|address| self.destination(address));
        self.pending.push(Sample {
            key,
            hash,
            packets: record.number(Field::Packets).unwrap_or(0),
            bytes: record.number(Field::Bytes).unwrap_or(0),
            offset: offset(time),
            last_offset: offset(end.unwrap_or(time).max(time)),
            dst_address,
            interface,
            reject_reason,
            dst_port,
            protocol: record
                .number(Field::Protocol)
                .map(|protocol| protocol as u8),
        });
        if self.pending.len() == BATCH {
            self.apply_pending();
        }
    }

    /// Applies the REJECTs still waiting in the batch, in the order they came.
    ///
    /// Reads give the same answers before and after. Each read of an aggregate looks
    /// through the waiting REJECTs for its own, so a caller about to read many aggregates
    /// (a report of every row) applies them once first.
    pub fn apply_pending(&mut self) {
        let lagging = self.pending.len().saturating_sub(ROW_PREFETCH_LAG);
        for sample in &self.pending[lagging..] {
            self.table.prefetch_row(sample.hash);
        }
        for sample in &self.pending {
            let row = self.table.find_or_insert(sample);
            row.count(sample);
            if row.used != SPILLED && !row.add_inline(sample) {
                let detail = row.spill(self.details.len(), &self.v6_destinations);
                self.details.push(detail);
            }
            if let Some(index) = row.detail() {
                self.details[index].add(sample, &self.v6_destinations);
            }
        }
        self.pending.clear();
    }

    fn add_gap(&mut self, record: &FlowRecord<'_>, bump: impl FnOnce(&mut CaptureGaps)) {
        // The same event time as REJECTs use, so that a gap lines up with their windows.
        let time = record
            .number(Field::Start)
            .or_else(|| record.number(Field::End));
        let (Some(interface), Some(time)) = (record.text(Field::InterfaceId), time) else {
            return;
        };
        let id = self.intern_interface(interface);
        let window_start = self.window_start(time);
        bump(self.gaps.entry((id, window_start)).or_default());
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
        let keys = self.table.rows.iter().map(|row| row.key);
        let sources: HashSet<AddressId, RandomState> = keys
            .chain(self.pending.iter().map(|sample| sample.key))
            .map(RowKey::source)
            .collect();
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
        self.table.rows.len() + self.pending_only_keys().count()
    }

    /// Whether no REJECT was counted.
    pub fn is_empty(&self) -> bool {
        self.table.rows.is_empty() && self.pending.is_empty()
    }

    /// Keys that only waiting REJECTs have, in order of first sight.
    fn pending_only_keys(&self) -> impl Iterator<Item = RowKey> + '_ {
        let pending = &self.pending;
        pending
            .iter()
            .enumerate()
            .filter_map(move |(index, sample)| {
                let first = pending[..index].iter().all(|seen| seen.key != sample.key);
                let applied = self.table.find(sample.key, sample.hash).is_some();
                (first && !applied).then_some(sample.key)
            })
    }

    fn view<'a>(&'a self, key: RowKey, applied: Option<&'a Row>) -> SourceAggregate<'a> {
        SourceAggregate {
            key: SourceWindow {
                source: self.address_of(key.source()),
                window_start: u64::from(key.window_index()) * self.options.window_seconds,
            },
            row_key: key,
            applied,
            tally: self,
        }
    }

    /// The aggregate of one source in one window.
    pub fn get(&self, key: &SourceWindow) -> Option<SourceAggregate<'_>> {
        if !key.window_start.is_multiple_of(self.options.window_seconds) {
            return None;
        }
        let window_index = u32::try_from(key.window_start / self.options.window_seconds)
            .ok()
            .filter(|&index| index <= RowKey::MAX_WINDOW_INDEX)?;
        let row_key = RowKey::new(self.known_address_id(key.source)?, window_index);
        match self.table.get(row_key) {
            Some(row) => Some(self.view(row.key, Some(row))),
            None => {
                let key = self
                    .pending_only_keys()
                    .find(|&pending| pending == row_key)?;
                Some(self.view(key, None))
            }
        }
    }

    /// All aggregates, in the order they were first seen.
    pub fn aggregates(&self) -> impl Iterator<Item = SourceAggregate<'_>> {
        let applied = self
            .table
            .rows
            .iter()
            .map(|row| self.view(row.key, Some(row)));
        applied.chain(self.pending_only_keys().map(|key| self.view(key, None)))
    }

    /// All aggregates, most REJECTs first (ties by address, then window).
    pub fn by_rejects(&self) -> Vec<SourceAggregate<'_>> {
        self.ranking(None).iter().collect()
    }

    /// The aggregates in [`Self::by_rejects`] order, at most `limit` of them (all when
    /// `None`), and how many were left out.
    ///
    /// Holds 16 bytes per aggregate rather than a handle, and each aggregate's REJECT
    /// count is read once rather than at every comparison.
    pub fn ranking(&self, limit: Option<usize>) -> Ranking<'_> {
        let waiting: Vec<RowKey> = self.pending_only_keys().collect();
        let v6_ranks = self.v6_source_ranks();
        let rank_key = |rejects: u32, key: RowKey, position: usize| {
            let source = key.source();
            let source_rank = if source.is_v6 {
                1 << 32 | u64::from(v6_ranks[source.bits as usize])
            } else {
                u64::from(source.bits)
            };
            u128::from(u32::MAX - rejects) << 96
                | u128::from(source_rank) << 63
                | u128::from(key.window_index()) << 32
                | position as u128
        };
        let mut order: Vec<u128> = if self.pending.is_empty() {
            // Every aggregate is a row, and its count is the row's own.
            let rows = self.table.rows.iter().enumerate();
            rows.map(|(position, row)| rank_key(row.rejects, row.key, position))
                .collect()
        } else {
            let aggregates = self.aggregates().enumerate();
            aggregates
                .map(|(position, aggregate)| {
                    // Rows count in a saturating u32, so this never saturates.
                    let rejects = u32::try_from(aggregate.rejects()).unwrap_or(u32::MAX);
                    rank_key(rejects, aggregate.row_key, position)
                })
                .collect()
        };
        let n_aggregates = order.len();
        match limit {
            Some(limit) if limit < order.len() => {
                if limit > 0 {
                    order.select_nth_unstable(limit - 1);
                }
                order.truncate(limit);
                order.shrink_to_fit();
            }
            _ => {}
        }
        // Positions make every key distinct, so an unstable sort gives the one order.
        order.sort_unstable();
        Ranking {
            tally: self,
            omitted: n_aggregates - order.len(),
            order,
            waiting,
        }
    }

    /// For each interned IPv6 source, its place among them in address order.
    fn v6_source_ranks(&self) -> Vec<u32> {
        let mut by_address: Vec<u32> = (0..self.v6_sources.len() as u32).collect();
        by_address.sort_unstable_by_key(|&id| self.v6_sources.get_index(id as usize));
        let mut ranks = vec![0; by_address.len()];
        for (rank, &id) in by_address.iter().enumerate() {
            ranks[id as usize] = rank as u32;
        }
        ranks
    }

    /// The aggregate at `position` in [`Self::aggregates`] order, given the keys only
    /// waiting REJECTs have (which follow the rows).
    fn aggregate_at(&self, position: usize, waiting: &[RowKey]) -> SourceAggregate<'_> {
        match self.table.rows.get(position) {
            Some(row) => self.view(row.key, Some(row)),
            None => self.view(waiting[position - self.table.rows.len()], None),
        }
    }

    /// NODATA/SKIPDATA counts per (interface, window start), ordered by interface and time.
    pub fn capture_gaps(&self) -> Vec<(&str, u64, CaptureGaps)> {
        let mut gaps: Vec<(&str, u64, CaptureGaps)> = self
            .gaps
            .iter()
            .filter_map(|((id, window), gaps)| {
                let interface = self.interfaces.get_index(*id as usize)?;
                Some((&**interface, *window, *gaps))
            })
            .collect();
        gaps.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)));
        gaps
    }
}

/// Aggregates in ranking order (see [`RejectTally::ranking`]).
#[derive(Clone, Debug)]
pub struct Ranking<'a> {
    tally: &'a RejectTally,
    /// Per aggregate shown, in order: the REJECTs (inverted), source and window that rank
    /// it in the top 96 bits, its position in [`RejectTally::aggregates`] in the low 32.
    order: Vec<u128>,
    /// Keys only waiting REJECTs have, which follow the rows in that order.
    waiting: Vec<RowKey>,
    omitted: usize,
}

impl<'a> Ranking<'a> {
    /// The aggregates shown, most REJECTs first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = SourceAggregate<'a>> + '_ {
        self.order.iter().map(|&key| {
            let position = key as u32 as usize;
            self.tally.aggregate_at(position, &self.waiting)
        })
    }

    /// How many aggregates are shown.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none are shown (no aggregates, or a limit of 0).
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// How many aggregates the limit left out.
    pub fn omitted(&self) -> usize {
        self.omitted
    }
}

/// An aggregate's state: its row and, once it spilled, its detail (both as applied, or
/// copies with the REJECTs still waiting in the batch applied to them).
#[derive(Clone, Debug)]
struct RowState<'a> {
    row: Row,
    detail: Option<Cow<'a, Detail>>,
}

impl RowState<'_> {
    fn used(&self, kind: u32) -> usize {
        self.row.used(kind)
    }

    fn distinct_dst_ports(&self) -> u32 {
        match &self.detail {
            Some(detail) => detail.dst_ports.len(),
            None => self.used(PORTS) as u32,
        }
    }

    fn dst_ports(&self) -> Vec<u16> {
        match &self.detail {
            Some(detail) => detail.dst_ports.to_vec(),
            None => {
                let mut ports = self.row.dst_ports[..self.used(PORTS)].to_vec();
                ports.sort_unstable();
                ports
            }
        }
    }

    fn distinct_dst_addresses(&self) -> u64 {
        match &self.detail {
            Some(detail) => detail.dst_addresses.len(),
            None => self.used(ADDRESSES) as u64,
        }
    }

    fn protocols(&self) -> ShortList<(u8, u64), INLINE_PROTOCOLS> {
        let mut protocols: ShortList<(u8, u64), INLINE_PROTOCOLS> = match &self.detail {
            Some(detail) => detail
                .protocols()
                .map(|(protocol, count)| (protocol, u64::from(count)))
                .collect(),
            None => (0..self.used(PROTOCOLS))
                .map(|place| {
                    let count = self.row.protocol_rejects[place];
                    (self.row.protocols[place], u64::from(count))
                })
                .collect(),
        };
        protocols.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        protocols
    }

    fn distinct_dst_addresses_exact(&self) -> bool {
        !matches!(
            self.detail.as_deref(),
            Some(Detail {
                dst_addresses: AddressSet::Sketch(_),
                ..
            })
        )
    }

    /// Interned interface ids, in order of first sight.
    fn interface_ids(&self) -> impl Iterator<Item = u32> + '_ {
        // Rows keep interface ids in 16 bits, details in 32; one of the two is empty.
        let (in_detail, inline): (&[u32], &[u16]) = match &self.detail {
            Some(detail) => (detail.interfaces(), &[]),
            None => (&[], &self.row.interfaces[..self.used(INTERFACES)]),
        };
        let inline = inline.iter().map(|&id| u32::from(id));
        in_detail.iter().copied().chain(inline)
    }
}

/// A read-only view of one (source, window) aggregate.
#[derive(Clone, Copy, Debug)]
pub struct SourceAggregate<'a> {
    pub key: SourceWindow,
    row_key: RowKey,
    /// The row as the last batch left it; `None` when the source first appeared in the
    /// batch still pending.
    applied: Option<&'a Row>,
    tally: &'a RejectTally,
}

impl<'a> SourceAggregate<'a> {
    /// The aggregate's state, with REJECTs still waiting in the tally's batch applied to a
    /// copy (borrowed, at no cost, when none wait).
    fn stats(&self) -> RowState<'a> {
        let tally = self.tally;
        let borrowed = |row: &'a Row| RowState {
            row: *row,
            detail: row
                .detail()
                .map(|index| Cow::Borrowed(&tally.details[index])),
        };
        let mut waiting = tally
            .pending
            .iter()
            .filter(|sample| sample.key == self.row_key)
            .peekable();
        let mut state = match (self.applied, waiting.peek()) {
            (Some(applied), _) => borrowed(applied),
            (None, first) => RowState {
                row: Row::new(self.row_key, first.map_or(0, |sample| sample.offset)),
                detail: None,
            },
        };
        for sample in waiting {
            state.row.count(sample);
            if state.detail.is_none() && !state.row.add_inline(sample) {
                let detail = state.row.spill(0, &tally.v6_destinations);
                state.detail = Some(Cow::Owned(detail));
            }
            if let Some(detail) = &mut state.detail {
                detail.to_mut().add(sample, &tally.v6_destinations);
            }
        }
        state
    }

    /// REJECT records.
    pub fn rejects(&self) -> u64 {
        u64::from(self.stats().row.rejects)
    }

    /// Sum of `packets` over the records that have it.
    pub fn packets(&self) -> u64 {
        self.stats().row.packets
    }

    /// Sum of `bytes` over the records that have it (VPC BPA rejects never do).
    pub fn bytes(&self) -> u64 {
        self.stats().row.bytes
    }

    /// Earliest `start` (unix seconds).
    pub fn first_seen(&self) -> u64 {
        self.key.window_start + u64::from(self.stats().row.first_offset)
    }

    /// Latest `end` (unix seconds; `start` for records without `end`).
    pub fn last_seen(&self) -> u64 {
        self.key.window_start + u64::from(self.stats().row.last_offset)
    }

    /// Distinct destination ports (exact).
    pub fn distinct_dst_ports(&self) -> u32 {
        self.stats().distinct_dst_ports()
    }

    /// The destination ports, ascending.
    pub fn dst_ports(&self) -> Vec<u16> {
        self.stats().dst_ports()
    }

    /// The distinct-port sketch that stored counters keep (see [`crate::sketch`]).
    pub fn dst_port_sketch(&self) -> DistinctSketch {
        DistinctSketch::from_values(self.dst_ports().into_iter().map(u64::from))
    }

    /// The inline destinations' fingerprints (rows without detail).
    fn inline_fingerprints(&self, state: &RowState<'_>) -> Vec<u64> {
        (0..state.used(ADDRESSES))
            .map(|place| fingerprint_of(state.row.dst_address(place), &self.tally.v6_destinations))
            .collect()
    }

    /// The distinct-destination sketch that stored counters keep, over address
    /// fingerprints (see [`address_fingerprint`]).
    pub fn dst_host_sketch(&self) -> DistinctSketch {
        let state = self.stats();
        match &state.detail {
            Some(detail) => detail.dst_addresses.sketch(),
            None => DistinctSketch::from_values(self.inline_fingerprints(&state)),
        }
    }

    /// Up to `limit` destination-address fingerprints, the smallest (IPv4 addresses first):
    /// examples for alerts.
    pub fn dst_host_examples(&self, limit: usize) -> Vec<u64> {
        let state = self.stats();
        let mut examples = match &state.detail {
            Some(detail) => detail.dst_addresses.examples(limit),
            None => self.inline_fingerprints(&state),
        };
        examples.sort_unstable();
        examples.truncate(limit);
        examples
    }

    /// Distinct destination addresses: exact up to [`EXACT_ADDRESSES`], then a HyperLogLog
    /// estimate (about 1.6% standard error).
    pub fn distinct_dst_addrs(&self) -> u64 {
        self.stats().distinct_dst_addresses()
    }

    /// Whether [`Self::distinct_dst_addrs`] is exact.
    pub fn dst_addrs_exact(&self) -> bool {
        self.stats().distinct_dst_addresses_exact()
    }

    /// REJECT records per IANA protocol number, most frequent first.
    pub fn protocols(&self) -> Vec<(u8, u64)> {
        self.stats().protocols().to_vec()
    }

    /// REJECT records per `reject-reason` (v8), most frequent first; records without a
    /// reason are not listed.
    pub fn reject_reasons(&self) -> Vec<(&'a str, u64)> {
        self.reject_reasons_of(&self.stats())
    }

    fn reject_reasons_of(&self, state: &RowState<'_>) -> Vec<(&'a str, u64)> {
        let Some(rare) = state
            .detail
            .as_deref()
            .and_then(|detail| detail.rare.as_deref())
        else {
            return Vec::new();
        };
        let mut reasons: Vec<(&str, u64)> = rare
            .reject_reasons
            .iter()
            .filter_map(|&(id, count)| {
                let reason = self.tally.reasons.get_index(id as usize)?;
                Some((&**reason, u64::from(count)))
            })
            .collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        reasons
    }

    /// Up to [`SAMPLE_INTERFACES`] interfaces that logged the rejects, in order of first sight.
    pub fn sample_interfaces(&self) -> Vec<&'a str> {
        self.sample_interfaces_of(&self.stats()).to_vec()
    }

    fn sample_interfaces_of(&self, state: &RowState<'_>) -> ShortList<&'a str, SAMPLE_INTERFACES> {
        let interfaces = &self.tally.interfaces;
        state
            .interface_ids()
            .filter_map(|id| interfaces.get_index(id as usize).map(|name| &**name))
            .collect()
    }

    /// Everything a report shows of the aggregate, read at once: each accessor above
    /// works out the aggregate's state again (looking through the tally's waiting
    /// REJECTs), which a caller reading most of them would otherwise pay for each one.
    pub fn summary(&self) -> AggregateSummary<'a> {
        let state = self.stats();
        AggregateSummary {
            key: self.key,
            rejects: u64::from(state.row.rejects),
            packets: state.row.packets,
            bytes: state.row.bytes,
            first_seen: self.key.window_start + u64::from(state.row.first_offset),
            last_seen: self.key.window_start + u64::from(state.row.last_offset),
            distinct_dst_ports: state.distinct_dst_ports(),
            distinct_dst_addrs: state.distinct_dst_addresses(),
            dst_addrs_exact: state.distinct_dst_addresses_exact(),
            protocols: state.protocols(),
            reject_reasons: self.reject_reasons_of(&state),
            interfaces: self.sample_interfaces_of(&state),
        }
    }
}

/// The values of one aggregate, as [`SourceAggregate`]'s accessors of the same names
/// give them, borrowing names from the tally (see [`SourceAggregate::summary`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateSummary<'a> {
    pub key: SourceWindow,
    pub rejects: u64,
    pub packets: u64,
    pub bytes: u64,
    pub first_seen: u64,
    pub last_seen: u64,
    pub distinct_dst_ports: u32,
    pub distinct_dst_addrs: u64,
    /// Whether `distinct_dst_addrs` is exact rather than estimated.
    pub dst_addrs_exact: bool,
    /// REJECT records per IANA protocol number, most frequent first.
    pub protocols: ShortList<(u8, u64), INLINE_PROTOCOLS>,
    /// REJECT records per `reject-reason`, most frequent first.
    pub reject_reasons: Vec<(&'a str, u64)>,
    /// Up to [`SAMPLE_INTERFACES`] interfaces, in order of first sight.
    pub interfaces: ShortList<&'a str, SAMPLE_INTERFACES>,
}

impl RecordSink for RejectTally {
    fn record(&mut self, record: &FlowRecord<'_>) {
        self.add(record);
    }

    fn malformed(&mut self, line: MalformedLine) {
        self.add_malformed(line);
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
    /// REJECTs to an ignored destination port (see [`RejectTally::ignore_dst_ports`]), left
    /// out of every aggregate; shown only when some were.
    #[serde(skip_serializing_if = "is_zero")]
    pub ignored: u64,
}

impl Totals {
    /// Adds another tally's totals: the counts over several deliveries (`sources` then
    /// sums distinct sources per delivery).
    pub fn add(&mut self, other: &Totals) {
        self.records += other.records;
        self.rejects += other.rejects;
        self.sources += other.sources;
        self.malformed += other.malformed;
        self.nodata += other.nodata;
        self.skipdata += other.skipdata;
        self.uncountable += other.uncountable;
        self.ignored += other.ignored;
    }
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// An exact 64-bit stand-in for an address: IPv4 addresses are their own value, IPv6
/// addresses a hash with the top bit set (collisions are vanishingly unlikely among the few
/// thousand addresses a source is counted exactly for). Stored counters hold fingerprints,
/// so the hash must never change.
#[inline]
pub fn address_fingerprint(address: IpAddr) -> u64 {
    match address {
        IpAddr::V4(v4) => u64::from(v4.to_bits()),
        IpAddr::V6(v6) => {
            let bits = v6.to_bits();
            stable_hash(stable_hash(bits as u64) ^ (bits >> 64) as u64) | 1 << 63
        }
    }
}

/// The IPv4 address behind a fingerprint; IPv6 fingerprints are one-way.
pub fn fingerprint_address(fingerprint: u64) -> Option<std::net::Ipv4Addr> {
    u32::try_from(fingerprint)
        .ok()
        .map(std::net::Ipv4Addr::from_bits)
}

/// REJECT records with one `reject-reason`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    pub reason: String,
    pub rejects: u64,
}
