//! REJECT aggregates per (source address, time window), plus the counts that say how much
//! of the input could be counted at all.
//!
//! Pure and single-threaded: records go in through [`RecordSink`], aggregates come out.
//! Memory grows only with the number of distinct (source, window) pairs, and each costs
//! about 145 bytes (a two-cache-line row and its share of the index) while a source keeps
//! to two ports, hosts, protocols and interfaces (ordinary sources do): richer detail is
//! allocated only for sources that spread out, and distinct destination ports and addresses
//! are held in bounded structures (a bitmap, a capped set, then a sketch).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr};

use foldhash::fast::RandomState;
use indexmap::IndexSet;
use serde::Serialize;

use crate::decode::RecordSink;
use crate::flow_log::{Action, Field, FlowRecord, LogStatus, MalformedLine};
use crate::sketch::{DistinctSketch, stable_hash};

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

/// [`SourceWindow`] as stored: 24 bytes, hashed as three words. The window is kept as its
/// index (start / length), which fits in 32 bits for any window of a minute or more.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PackedKey {
    address: [u32; 4],
    window_index: u32,
    is_v6: bool,
}

impl PackedKey {
    fn new(source: IpAddr, window_index: u32) -> Self {
        let (bits, is_v6) = match source {
            IpAddr::V4(v4) => (u128::from(v4.to_bits()), false),
            IpAddr::V6(v6) => (v6.to_bits(), true),
        };
        PackedKey {
            address: [
                (bits >> 96) as u32,
                (bits >> 64) as u32,
                (bits >> 32) as u32,
                bits as u32,
            ],
            window_index,
            is_v6,
        }
    }

    fn source(&self) -> IpAddr {
        let bits = self
            .address
            .iter()
            .fold(0u128, |bits, &word| bits << 32 | u128::from(word));
        if self.is_v6 {
            IpAddr::V6(Ipv6Addr::from_bits(bits))
        } else {
            IpAddr::V4((bits as u32).into())
        }
    }
}

impl Hash for PackedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let [a, b, c, d] = self.address.map(u64::from);
        state.write_u64(a << 32 | b);
        state.write_u64(c << 32 | d);
        state.write_u64(u64::from(self.window_index) << 1 | u64::from(self.is_v6));
    }
}

/// Aggregates of one (source, window). Up to two distinct destination ports, hosts,
/// protocols and interfaces are kept inline, which covers ordinary sources; [`Detail`] is
/// allocated only when a third one (or a reject reason) appears.
#[derive(Clone, Debug)]
#[repr(C)]
struct SourceStats {
    packets: u64,
    bytes: u64,
    dst_addresses: [u64; 2],
    detail: Option<Box<Detail>>,
    rejects: u32,
    /// Seconds from the window start to the earliest `start`.
    first_offset: u32,
    /// Seconds from the window start to the latest `end`.
    last_offset: u32,
    interfaces: [u32; 2],
    /// Records per inline protocol (all records with a protocol, until `detail`).
    protocol_rejects: [u32; 2],
    dst_ports: [u16; 2],
    protocols: [u8; 2],
    /// How many of the inline ports, addresses, protocols and interfaces are in use.
    used: [u8; 4],
}

const PORTS: usize = 0;
const ADDRESSES: usize = 1;
const PROTOCOLS: usize = 2;
const INTERFACES: usize = 3;

/// What one REJECT record contributes, extracted once and owned, so that it can wait in
/// [`RejectTally`]'s batch after the line is gone.
#[derive(Clone, Copy, Debug)]
struct RejectSample {
    key: PackedKey,
    hash: u64,
    offset: u32,
    last_offset: u32,
    packets: u64,
    bytes: u64,
    dst_port: Option<u16>,
    dst_address: Option<u64>,
    protocol: Option<u8>,
    interface: Option<u32>,
    /// Interned in [`RejectTally::reasons`].
    reject_reason: Option<u32>,
}

/// Per-source detail for sources that touch several ports, hosts, protocols or interfaces.
#[derive(Clone, Debug, Default)]
struct Detail {
    dst_ports: PortSet,
    dst_addresses: AddressSet,
    /// Records per protocol; a source rarely uses more than a few, so they live inline.
    protocols: [(u8, u32); INLINE_PROTOCOLS],
    protocol_kinds: u8,
    /// What few sources have: more protocols than fit inline, and reject reasons (v8).
    rare: Option<Box<RareDetail>>,
    interfaces: [u32; SAMPLE_INTERFACES],
    interface_count: u8,
}

const INLINE_PROTOCOLS: usize = 4;

#[derive(Clone, Debug, Default)]
struct RareDetail {
    more_protocols: Vec<(u8, u32)>,
    /// (interned reason, records).
    reject_reasons: Vec<(u32, u32)>,
}

/// Where `value` is among the first `used` of `values`, or would go: `Some(None)` when
/// there is no value, `None` when it is new and both places are taken.
fn inline_place<T: Copy + PartialEq>(
    values: &[T; 2],
    used: u8,
    value: Option<T>,
) -> Option<Option<usize>> {
    let Some(value) = value else {
        return Some(None);
    };
    let used = usize::from(used);
    match values[..used].iter().position(|&known| known == value) {
        Some(index) => Some(Some(index)),
        None if used < 2 => Some(Some(used)),
        None => None,
    }
}

/// Puts `value` at `place` (from [`inline_place`]).
fn put_inline<T: Copy>(values: &mut [T; 2], used: &mut u8, value: Option<T>, place: Option<usize>) {
    if let (Some(value), Some(index)) = (value, place) {
        values[index] = value;
        *used = (*used).max(index as u8 + 1);
    }
}

impl SourceStats {
    fn new(offset: u32) -> Self {
        SourceStats {
            packets: 0,
            bytes: 0,
            dst_addresses: [0; 2],
            detail: None,
            rejects: 0,
            first_offset: offset,
            last_offset: offset,
            interfaces: [0; 2],
            protocol_rejects: [0; 2],
            dst_ports: [0; 2],
            protocols: [0; 2],
            used: [0; 4],
        }
    }

    fn used(&self, kind: usize) -> usize {
        usize::from(self.used[kind])
    }

    fn add(&mut self, sample: &RejectSample) {
        self.rejects = self.rejects.saturating_add(1);
        self.packets = self.packets.saturating_add(sample.packets);
        self.bytes = self.bytes.saturating_add(sample.bytes);
        self.first_offset = self.first_offset.min(sample.offset);
        self.last_offset = self.last_offset.max(sample.last_offset);
        if self.detail.is_none() && !self.add_inline(sample) {
            self.detail = Some(Box::new(self.seed_detail()));
        }
        if let Some(detail) = self.detail.as_mut() {
            detail.add(sample);
        }
    }

    /// Records the sample in the inline fields; `false`, changing nothing, when it does
    /// not fit there.
    fn add_inline(&mut self, sample: &RejectSample) -> bool {
        if sample.reject_reason.is_some() {
            return false;
        }
        let places = (
            inline_place(&self.dst_ports, self.used[PORTS], sample.dst_port),
            inline_place(
                &self.dst_addresses,
                self.used[ADDRESSES],
                sample.dst_address,
            ),
            inline_place(&self.protocols, self.used[PROTOCOLS], sample.protocol),
            inline_place(&self.interfaces, self.used[INTERFACES], sample.interface),
        );
        let (Some(port), Some(address), Some(protocol), Some(interface)) = places else {
            return false;
        };
        let used = &mut self.used;
        put_inline(&mut self.dst_ports, &mut used[PORTS], sample.dst_port, port);
        put_inline(
            &mut self.dst_addresses,
            &mut used[ADDRESSES],
            sample.dst_address,
            address,
        );
        put_inline(
            &mut self.protocols,
            &mut used[PROTOCOLS],
            sample.protocol,
            protocol,
        );
        if let Some(index) = protocol {
            self.protocol_rejects[index] += 1;
        }
        put_inline(
            &mut self.interfaces,
            &mut used[INTERFACES],
            sample.interface,
            interface,
        );
        true
    }

    /// Detail holding what the inline fields recorded so far.
    fn seed_detail(&self) -> Detail {
        let mut detail = Detail::default();
        for &port in &self.dst_ports[..self.used(PORTS)] {
            detail.dst_ports.insert(port);
        }
        for &address in &self.dst_addresses[..self.used(ADDRESSES)] {
            detail.dst_addresses.insert(address);
        }
        for index in 0..self.used(PROTOCOLS) {
            detail.count_protocol(self.protocols[index], self.protocol_rejects[index]);
        }
        for &id in &self.interfaces[..self.used(INTERFACES)] {
            detail.sample_interface(id);
        }
        detail
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
                let mut ports = self.dst_ports[..self.used(PORTS)].to_vec();
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

    fn protocols(&self) -> Vec<(u8, u64)> {
        let mut protocols: Vec<(u8, u64)> = match &self.detail {
            Some(detail) => detail
                .protocols()
                .map(|(protocol, count)| (protocol, u64::from(count)))
                .collect(),
            None => (0..self.used(PROTOCOLS))
                .map(|index| {
                    let count = self.protocol_rejects[index];
                    (self.protocols[index], u64::from(count))
                })
                .collect(),
        };
        protocols.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        protocols
    }

    fn interface_ids(&self) -> Vec<u32> {
        match &self.detail {
            Some(detail) => detail.interfaces().to_vec(),
            None => self.interfaces[..self.used(INTERFACES)].to_vec(),
        }
    }
}

impl Detail {
    fn add(&mut self, sample: &RejectSample) {
        if let Some(port) = sample.dst_port {
            self.dst_ports.insert(port);
        }
        if let Some(address) = sample.dst_address {
            self.dst_addresses.insert(address);
        }
        if let Some(protocol) = sample.protocol {
            self.count_protocol(protocol, 1);
        }
        if let Some(reason) = sample.reject_reason {
            let reasons = &mut self.rare.get_or_insert_default().reject_reasons;
            match reasons.iter_mut().find(|(known, _)| *known == reason) {
                Some((_, count)) => *count = count.saturating_add(1),
                None => reasons.push((reason, 1)),
            }
        }
        if let Some(id) = sample.interface {
            self.sample_interface(id);
        }
    }

    fn count_protocol(&mut self, protocol: u8, records: u32) {
        let kinds = usize::from(self.protocol_kinds);
        let inline = &mut self.protocols[..kinds];
        if let Some((_, count)) = inline.iter_mut().find(|(p, _)| *p == protocol) {
            *count = count.saturating_add(records);
        } else if kinds < INLINE_PROTOCOLS {
            self.protocols[kinds] = (protocol, records);
            self.protocol_kinds += 1;
        } else {
            let more = &mut self.rare.get_or_insert_default().more_protocols;
            match more.iter_mut().find(|(p, _)| *p == protocol) {
                Some((_, count)) => *count = count.saturating_add(records),
                None => more.push((protocol, records)),
            }
        }
    }

    fn protocols(&self) -> impl Iterator<Item = (u8, u32)> + '_ {
        let more = self
            .rare
            .as_deref()
            .map_or(&[][..], |rare| &rare.more_protocols);
        self.protocols[..usize::from(self.protocol_kinds)]
            .iter()
            .chain(more)
            .copied()
    }

    fn sample_interface(&mut self, id: u32) {
        let count = usize::from(self.interface_count);
        if count < SAMPLE_INTERFACES && !self.interfaces[..count].contains(&id) {
            self.interfaces[count] = id;
            self.interface_count += 1;
        }
    }

    fn interfaces(&self) -> &[u32] {
        &self.interfaces[..usize::from(self.interface_count)]
    }
}

/// A read-only view of one (source, window) aggregate.
#[derive(Clone, Copy, Debug)]
pub struct SourceAggregate<'a> {
    pub key: SourceWindow,
    packed: PackedKey,
    /// The row's state after the last batch was applied; `None` when the source first
    /// appeared in the batch still pending.
    applied: Option<&'a SourceStats>,
    tally: &'a RejectTally,
}

impl<'a> SourceAggregate<'a> {
    /// The aggregate's state, with REJECTs still waiting in the tally's batch applied to a
    /// copy (borrowed, at no cost, when none wait).
    fn stats(&self) -> Cow<'a, SourceStats> {
        let mut waiting = self
            .tally
            .pending
            .iter()
            .filter(|sample| sample.key == self.packed)
            .peekable();
        let mut stats = match (self.applied, waiting.peek()) {
            (Some(applied), None) => return Cow::Borrowed(applied),
            (Some(applied), Some(_)) => applied.clone(),
            (None, first) => SourceStats::new(first.map_or(0, |sample| sample.offset)),
        };
        for sample in waiting {
            stats.add(sample);
        }
        Cow::Owned(stats)
    }

    /// REJECT records.
    pub fn rejects(&self) -> u64 {
        u64::from(self.stats().rejects)
    }

    /// Sum of `packets` over the records that have it.
    pub fn packets(&self) -> u64 {
        self.stats().packets
    }

    /// Sum of `bytes` over the records that have it (VPC BPA rejects never do).
    pub fn bytes(&self) -> u64 {
        self.stats().bytes
    }

    /// Earliest `start` (unix seconds).
    pub fn first_seen(&self) -> u64 {
        self.key.window_start + u64::from(self.stats().first_offset)
    }

    /// Latest `end` (unix seconds; `start` for records without `end`).
    pub fn last_seen(&self) -> u64 {
        self.key.window_start + u64::from(self.stats().last_offset)
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

    /// The distinct-destination sketch that stored counters keep, over address
    /// fingerprints (see [`address_fingerprint`]).
    pub fn dst_host_sketch(&self) -> DistinctSketch {
        let stats = self.stats();
        match &stats.detail {
            Some(detail) => detail.dst_addresses.sketch(),
            None => DistinctSketch::from_values(
                stats.dst_addresses[..stats.used(ADDRESSES)].iter().copied(),
            ),
        }
    }

    /// Up to `limit` destination-address fingerprints, the smallest (IPv4 addresses first):
    /// examples for alerts.
    pub fn dst_host_examples(&self, limit: usize) -> Vec<u64> {
        let stats = self.stats();
        let mut examples = match &stats.detail {
            Some(detail) => detail.dst_addresses.examples(limit),
            None => stats.dst_addresses[..stats.used(ADDRESSES)].to_vec(),
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
        !matches!(
            self.stats().detail.as_deref(),
            Some(Detail {
                dst_addresses: AddressSet::Sketch(_),
                ..
            })
        )
    }

    /// REJECT records per IANA protocol number, most frequent first.
    pub fn protocols(&self) -> Vec<(u8, u64)> {
        self.stats().protocols()
    }

    /// REJECT records per `reject-reason` (v8), most frequent first; records without a
    /// reason are not listed.
    pub fn reject_reasons(&self) -> Vec<(&'a str, u64)> {
        let stats = self.stats();
        let Some(rare) = stats
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
        self.stats()
            .interface_ids()
            .into_iter()
            .filter_map(|id| {
                let interfaces = &self.tally.interfaces;
                interfaces.get_index(id as usize).map(|name| &**name)
            })
            .collect()
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

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// How many REJECTs wait before they are applied together. Their rows are mostly not in
/// the processor's caches (a busy hour has tens of thousands of them); looking all of a
/// batch's rows up before updating any lets those cache misses overlap instead of
/// queueing one behind the other.
const BATCH: usize = 64;

/// One aggregate: exactly two cache lines (104 bytes of fields, laid out in declaration
/// order), so that [`Rows::warm`] can bring a row in by reading the key at its start and
/// `used` at its end.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
struct Row {
    key: PackedKey,
    stats: SourceStats,
}

/// The aggregates: rows in order of first sight, found through an open-addressing index.
#[derive(Clone, Debug, Default)]
struct Rows {
    rows: Vec<Row>,
    /// Linear probing over `rows`: 0 for an empty slot, else the top half of the key's
    /// hash above the row's position plus one. A power of two long, at most 3/4 full.
    index: Vec<u64>,
    hasher: RandomState,
}

impl Rows {
    fn hash(&self, key: &PackedKey) -> u64 {
        self.hasher.hash_one(key)
    }

    fn mask(&self) -> usize {
        self.index.len().wrapping_sub(1)
    }

    fn find(&self, key: &PackedKey, hash: u64) -> Option<usize> {
        if self.index.is_empty() {
            return None;
        }
        let mut slot = hash as usize & self.mask();
        loop {
            let entry = self.index[slot];
            if entry == 0 {
                return None;
            }
            let row = (entry as u32 - 1) as usize;
            if entry >> 32 == hash >> 32 && self.rows[row].key == *key {
                return Some(row);
            }
            slot = (slot + 1) & self.mask();
        }
    }

    fn get(&self, key: &PackedKey) -> Option<&Row> {
        self.find(key, self.hash(key)).map(|row| &self.rows[row])
    }

    fn find_or_insert(&mut self, sample: &RejectSample) -> &mut SourceStats {
        let row = match self.find(&sample.key, sample.hash) {
            Some(row) => row,
            None => {
                if (self.rows.len() + 1) * 4 > self.index.len() * 3 {
                    self.grow();
                }
                let row = self.rows.len();
                self.rows.push(Row {
                    key: sample.key,
                    stats: SourceStats::new(sample.offset),
                });
                self.place(sample.hash, row);
                row
            }
        };
        &mut self.rows[row].stats
    }

    fn place(&mut self, hash: u64, row: usize) {
        // Rows are counted in u32 like every other count here; 4 billion (source, window)
        // pairs would need hundreds of gigabytes first.
        let entry = (hash >> 32) << 32 | u64::from(row as u32 + 1);
        let mut slot = hash as usize & self.mask();
        while self.index[slot] != 0 {
            slot = (slot + 1) & self.mask();
        }
        self.index[slot] = entry;
    }

    fn grow(&mut self) {
        self.index = vec![0; (self.index.len() * 2).max(16)];
        for row in 0..self.rows.len() {
            let hash = self.hash(&self.rows[row].key);
            self.place(hash, row);
        }
    }

    /// Reads the index slots, then the rows, of all the samples, so that their cache misses
    /// overlap; the updates that follow then find everything in cache.
    fn warm(&self, samples: &[RejectSample]) {
        if self.index.is_empty() {
            return;
        }
        let mut slots = [0u64; BATCH];
        for (slot, sample) in slots.iter_mut().zip(samples) {
            *slot = self.index[sample.hash as usize & self.mask()];
        }
        let mut touched = 0;
        for (slot, sample) in slots.iter().zip(samples) {
            // Probe on from the home slot (usually within its cache line) by hash alone.
            let mut entry = *slot;
            let mut at = sample.hash as usize;
            while entry != 0 && entry >> 32 != sample.hash >> 32 {
                at = (at + 1) & self.mask();
                entry = self.index[at];
            }
            if let Some(row) = self.rows.get((entry as u32).wrapping_sub(1) as usize) {
                touched ^= row.key.window_index ^ u32::from(row.stats.used[INTERFACES]);
            }
        }
        std::hint::black_box(touched);
    }
}

/// A text of 8 to 24 bytes as its length and three (possibly overlapping) words, which
/// together determine it: compared and hashed in a few operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ShortText {
    words: [u64; 3],
    len: usize,
}

impl ShortText {
    fn new(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        let word = |at: usize| {
            let chunk = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>);
            chunk.map_or(0, |chunk| u64::from_le_bytes(*chunk))
        };
        let len = bytes.len();
        (8..=24).contains(&len).then(|| ShortText {
            words: [word(0), word(len.min(16) - 8), word(len - 8)],
            len,
        })
    }

    fn slot(&self) -> usize {
        let [a, b, c] = self.words;
        let mixed = (a ^ b.rotate_left(21) ^ c.rotate_left(42) ^ self.len as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> (64 - RECENT_IDS_BITS)) as usize
    }
}

const RECENT_IDS_BITS: u32 = 10;

/// A direct-mapped cache from short texts (interface ids are 21 bytes) to interned ids.
/// A flow log names a few hundred interfaces; with 1024 entries few of them share one, so
/// nearly every lookup hits.
#[derive(Clone, Debug)]
struct RecentIds {
    entries: Box<[(ShortText, u32); 1 << RECENT_IDS_BITS]>,
}

impl Default for RecentIds {
    fn default() -> Self {
        RecentIds {
            entries: Box::new([(ShortText::default(), 0); 1 << RECENT_IDS_BITS]),
        }
    }
}

impl RecentIds {
    fn get(&self, key: &ShortText) -> Option<u32> {
        let (known, id) = &self.entries[key.slot()];
        (known == key).then_some(*id)
    }

    fn put(&mut self, key: ShortText, id: u32) {
        self.entries[key.slot()] = (key, id);
    }
}

/// REJECT aggregates of a batch of records, keyed by [`SourceWindow`].
///
/// REJECTs are applied to the aggregates [`BATCH`] at a time; every read sees the ones
/// still waiting, so the batching shows only in speed.
#[derive(Clone, Debug)]
pub struct RejectTally {
    options: TallyOptions,
    rows: Rows,
    /// REJECTs counted in the totals but not yet applied to `rows`.
    pending: Vec<RejectSample>,
    /// Interface ids seen, interned so aggregates refer to them by index.
    interfaces: IndexSet<Box<str>, RandomState>,
    /// Recently interned interface ids, to skip hashing and comparing through `interfaces`.
    recent_interfaces: RecentIds,
    /// Reject reasons seen, interned like interfaces.
    reasons: IndexSet<Box<str>, RandomState>,
    gaps: HashMap<(u32, u64), CaptureGaps, RandomState>,
    /// Destination ports whose REJECTs are not counted, one bit per port.
    ignored_dst_ports: Option<Box<[u64; 1024]>>,
    totals: Totals,
    malformed_samples: Vec<MalformedLine>,
}

impl std::fmt::Debug for PackedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.source(), self.window_index)
    }
}

impl Default for RejectTally {
    fn default() -> Self {
        RejectTally::new(TallyOptions::default())
    }
}

impl RejectTally {
    /// An empty tally.
    pub fn new(options: TallyOptions) -> Self {
        RejectTally {
            options: TallyOptions {
                window_seconds: options.window_seconds.max(MIN_WINDOW_SECONDS),
                ..options
            },
            rows: Rows::default(),
            pending: Vec::with_capacity(BATCH),
            interfaces: IndexSet::default(),
            recent_interfaces: RecentIds::default(),
            reasons: IndexSet::default(),
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

    fn intern_interface(&mut self, interface: &str) -> u32 {
        let key = ShortText::new(interface);
        if let Some(id) = key.and_then(|key| self.recent_interfaces.get(&key)) {
            return id;
        }
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
        let start = record.number(Field::Start);
        let end = record.number(Field::End);
        let (Some(source), Some(time)) = (source, start.or(end)) else {
            self.totals.uncountable += 1;
            return;
        };
        // Any real time (below 10^11 seconds, the millisecond cut-off) has a window index
        // that fits in 32 bits for windows of a minute or more; absurd times do not count.
        let Ok(window_index) = u32::try_from(time / self.options.window_seconds) else {
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
        self.totals.rejects += 1;
        let window_start = self.window_start(time);
        let offset =
            |moment: u64| moment.saturating_sub(window_start).min(u64::from(u32::MAX)) as u32;
        let interface = record
            .text(Field::InterfaceId)
            .map(|interface| self.intern_interface(interface));
        let reject_reason = record
            .text(Field::RejectReason)
            .map(|reason| self.intern_reason(reason));
        let key = PackedKey::new(source, window_index);
        self.pending.push(RejectSample {
            key,
            hash: self.rows.hash(&key),
            offset: offset(time),
            last_offset: offset(end.unwrap_or(time).max(time)),
            packets: record.number(Field::Packets).unwrap_or(0),
            bytes: record.number(Field::Bytes).unwrap_or(0),
            dst_port,
            dst_address: record.address(Field::DstAddr).map(address_fingerprint),
            protocol: record
                .number(Field::Protocol)
                .map(|protocol| protocol as u8),
            interface,
            reject_reason,
        });
        if self.pending.len() == BATCH {
            self.apply_pending();
        }
    }

    /// Applies the waiting REJECTs, in the order they came.
    fn apply_pending(&mut self) {
        self.rows.warm(&self.pending);
        for sample in &self.pending {
            self.rows.find_or_insert(sample).add(sample);
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
        let keys = self.rows.rows.iter().map(|row| &row.key);
        let sources: HashSet<([u32; 4], bool), RandomState> = keys
            .chain(self.pending.iter().map(|sample| &sample.key))
            .map(|key| (key.address, key.is_v6))
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
        self.rows.rows.len() + self.pending_only_keys().count()
    }

    /// Whether no REJECT was counted.
    pub fn is_empty(&self) -> bool {
        self.rows.rows.is_empty() && self.pending.is_empty()
    }

    /// Keys that only waiting REJECTs have, in order of first sight.
    fn pending_only_keys(&self) -> impl Iterator<Item = &PackedKey> {
        let pending = &self.pending;
        pending
            .iter()
            .enumerate()
            .filter_map(move |(index, sample)| {
                let first = pending[..index].iter().all(|seen| seen.key != sample.key);
                (first && self.rows.find(&sample.key, sample.hash).is_none()).then_some(&sample.key)
            })
    }

    fn view<'a>(
        &'a self,
        key: &PackedKey,
        applied: Option<&'a SourceStats>,
    ) -> SourceAggregate<'a> {
        SourceAggregate {
            key: SourceWindow {
                source: key.source(),
                window_start: u64::from(key.window_index) * self.options.window_seconds,
            },
            packed: *key,
            applied,
            tally: self,
        }
    }

    /// The aggregate of one source in one window.
    pub fn get(&self, key: &SourceWindow) -> Option<SourceAggregate<'_>> {
        let packed = PackedKey::new(
            key.source,
            (key.window_start / self.options.window_seconds) as u32,
        );
        let aggregate = match self.rows.get(&packed) {
            Some(row) => self.view(&row.key, Some(&row.stats)),
            None => self.view(self.pending_only_keys().find(|&&k| k == packed)?, None),
        };
        Some(aggregate).filter(|aggregate| aggregate.key.window_start == key.window_start)
    }

    /// All aggregates, in the order they were first seen.
    pub fn aggregates(&self) -> impl Iterator<Item = SourceAggregate<'_>> {
        let applied = self.rows.rows.iter();
        let applied = applied.map(|row| self.view(&row.key, Some(&row.stats)));
        applied.chain(self.pending_only_keys().map(|key| self.view(key, None)))
    }

    /// All aggregates, most REJECTs first (ties by address, then window).
    pub fn by_rejects(&self) -> Vec<SourceAggregate<'_>> {
        let mut sources: Vec<SourceAggregate<'_>> = self.aggregates().collect();
        sources.sort_by(|a, b| b.rejects().cmp(&a.rejects()).then(a.key.cmp(&b.key)));
        sources
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

impl RecordSink for RejectTally {
    fn record(&mut self, record: &FlowRecord<'_>) {
        self.add(record);
    }

    fn malformed(&mut self, line: MalformedLine) {
        self.add_malformed(line);
    }
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

/// Distinct destination ports: a short list for the common case, a 65,536-bit map (8 KiB)
/// once a source has touched many ports, so a full sweep costs the same as a wide one.
#[derive(Clone, Debug)]
enum PortSet {
    Inline { ports: [u16; INLINE_PORTS], len: u8 },
    Few(Vec<u16>),
    Bitmap { bits: Box<[u64; 1024]>, len: u32 },
}

const INLINE_PORTS: usize = 8;
const FEW_PORTS: usize = 64;

impl Default for PortSet {
    fn default() -> Self {
        PortSet::Inline {
            ports: [0; INLINE_PORTS],
            len: 0,
        }
    }
}

impl PortSet {
    fn insert(&mut self, port: u16) {
        match self {
            PortSet::Inline { ports, len } => {
                let used = usize::from(*len);
                if ports[..used].contains(&port) {
                    return;
                }
                if used < INLINE_PORTS {
                    ports[used] = port;
                    *len += 1;
                } else {
                    let mut spilled = ports.to_vec();
                    spilled.push(port);
                    *self = PortSet::Few(spilled);
                }
            }
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
            PortSet::Inline { len, .. } => u32::from(*len),
            PortSet::Few(ports) => ports.len() as u32,
            PortSet::Bitmap { len, .. } => *len,
        }
    }

    fn to_vec(&self) -> Vec<u16> {
        match self {
            PortSet::Inline { ports, len } => {
                let mut ports = ports[..usize::from(*len)].to_vec();
                ports.sort_unstable();
                ports
            }
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

const FEW_ADDRESSES: usize = 4;
/// Destination fingerprints kept as examples once a source's addresses are only estimated.
const HOST_EXAMPLES: usize = 8;

/// Distinct destination addresses (as fingerprints): exact while small, then a HyperLogLog
/// sketch so that a source sweeping a /8 costs 4 KiB, not megabytes.
#[derive(Clone, Debug)]
enum AddressSet {
    Few([u64; FEW_ADDRESSES], u8),
    Many(HashSet<u64, RandomState>),
    /// Past the exact cap: a count estimate, the sketch that stored counters need, and
    /// the smallest fingerprints seen while the set was exact, as examples.
    Sketch(Box<(HyperLogLog, DistinctSketch, Vec<u64>)>),
}

impl Default for AddressSet {
    fn default() -> Self {
        AddressSet::Few([0; FEW_ADDRESSES], 0)
    }
}

impl AddressSet {
    fn insert(&mut self, fingerprint: u64) {
        match self {
            AddressSet::Few(addresses, len) => {
                let used = usize::from(*len);
                if addresses[..used].contains(&fingerprint) {
                    return;
                }
                if used < FEW_ADDRESSES {
                    addresses[used] = fingerprint;
                    *len += 1;
                } else {
                    let mut many: HashSet<u64, RandomState> = addresses.iter().copied().collect();
                    many.insert(fingerprint);
                    *self = AddressSet::Many(many);
                }
            }
            AddressSet::Many(addresses) => {
                if addresses.insert(fingerprint) && addresses.len() > EXACT_ADDRESSES {
                    let mut examples: Vec<u64> = addresses.iter().copied().collect();
                    examples.sort_unstable();
                    examples.truncate(HOST_EXAMPLES);
                    let mut sketch =
                        Box::new((HyperLogLog::default(), DistinctSketch::default(), examples));
                    for &known in addresses.iter() {
                        sketch.0.insert(known);
                        sketch.1.insert(known);
                    }
                    *self = AddressSet::Sketch(sketch);
                }
            }
            AddressSet::Sketch(sketch) => {
                sketch.0.insert(fingerprint);
                sketch.1.insert(fingerprint);
            }
        }
    }

    fn len(&self) -> u64 {
        match self {
            AddressSet::Few(_, len) => u64::from(*len),
            AddressSet::Many(addresses) => addresses.len() as u64,
            AddressSet::Sketch(sketch) => sketch.0.estimate(),
        }
    }

    /// The stored-counter sketch of the fingerprints.
    fn sketch(&self) -> DistinctSketch {
        match self {
            AddressSet::Few(addresses, len) => {
                DistinctSketch::from_values(addresses[..usize::from(*len)].iter().copied())
            }
            AddressSet::Many(addresses) => DistinctSketch::from_values(addresses.iter().copied()),
            AddressSet::Sketch(sketch) => sketch.1.clone(),
        }
    }

    /// Up to `limit` of the smallest fingerprints known exactly.
    fn examples(&self, limit: usize) -> Vec<u64> {
        let mut examples: Vec<u64> = match self {
            AddressSet::Few(addresses, len) => addresses[..usize::from(*len)].to_vec(),
            AddressSet::Many(addresses) => addresses.iter().copied().collect(),
            AddressSet::Sketch(sketch) => sketch.2.clone(),
        };
        examples.sort_unstable();
        examples.truncate(limit);
        examples
    }
}

/// Registers of the sketch a source's addresses switch to past [`EXACT_ADDRESSES`]:
/// about 1.6% standard error, 4 KiB.
type HyperLogLog = crate::sketch::HyperLogLog<4096>;

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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

impl From<SourceAggregate<'_>> for SourceReport {
    fn from(aggregate: SourceAggregate<'_>) -> Self {
        SourceReport {
            source: aggregate.key.source,
            window_start: aggregate.key.window_start,
            rejects: aggregate.rejects(),
            packets: aggregate.packets(),
            bytes: aggregate.bytes(),
            distinct_dst_ports: aggregate.distinct_dst_ports(),
            distinct_dst_addrs: aggregate.distinct_dst_addrs(),
            distinct_dst_addrs_exact: aggregate.dst_addrs_exact(),
            first_seen: aggregate.first_seen(),
            last_seen: aggregate.last_seen(),
            protocols: aggregate
                .protocols()
                .into_iter()
                .map(|(protocol, rejects)| ProtocolCount { protocol, rejects })
                .collect(),
            reject_reasons: aggregate
                .reject_reasons()
                .into_iter()
                .map(|(reason, rejects)| ReasonCount {
                    reason: reason.to_owned(),
                    rejects,
                })
                .collect(),
            interfaces: aggregate
                .sample_interfaces()
                .into_iter()
                .map(str::to_owned)
                .collect(),
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
                .map(|&aggregate| aggregate.into())
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
                uncountable: 0,
                ignored: 0
            }
        );
    }

    #[test]
    fn rejects_to_ignored_ports_are_left_out_of_every_aggregate() {
        let mut tally = RejectTally::new(TallyOptions::default());
        tally.ignore_dst_ports([3389, 123]);
        let mut parser = RecordParser::new(FlowFormat::default());
        for line in [REJECT, ICMP_REJECT] {
            tally.add(&parser.parse(line).unwrap());
        }
        let totals = tally.totals();
        assert_eq!((totals.rejects, totals.ignored, totals.sources), (1, 1, 1));
        assert!(
            tally
                .aggregates()
                .all(|aggregate| !aggregate.dst_ports().contains(&3389))
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
        assert_eq!(
            (stats.rejects(), stats.packets(), stats.bytes()),
            (1, 20, 4249)
        );
        assert_eq!(
            (stats.first_seen(), stats.last_seen()),
            (1_418_530_010, 1_418_530_070)
        );
        assert_eq!(stats.dst_ports(), vec![3389]);
        assert_eq!(stats.protocols(), vec![(6, 1)]);
        assert_eq!(stats.sample_interfaces(), vec!["eni-1235b8ca123456789"]);
    }

    #[test]
    fn window_length_is_configurable() {
        let options = TallyOptions {
            window_seconds: 3600,
            ..TallyOptions::default()
        };
        let tally = tally_lines(FlowFormat::default(), options, &[REJECT]);
        assert_eq!(tally.by_rejects()[0].key.window_start, 1_418_529_600);
    }

    #[test]
    fn same_source_in_two_windows_is_two_aggregates_and_one_source() {
        let later = REJECT.replace("1418530010 1418530070", "1418530400 1418530460");
        let tally = tally_default(&[REJECT, &later, REJECT]);
        let ranked = tally.by_rejects();
        assert_eq!(ranked.len(), 2);
        assert_eq!(ranked[0].rejects(), 2);
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
        assert_eq!(tally.by_rejects()[0].key.window_start, 1_700_000_100);
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
            .map(|aggregate| aggregate.key.source)
            .collect();
        assert_eq!(sources, vec![ip("10.0.1.5"), ip("203.0.113.5")]);
        let by_src = tally_lines(format, TallyOptions::default(), &lines);
        assert_eq!(by_src.by_rejects()[0].rejects(), 2);
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
        let stats = tally.by_rejects()[0];
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
        let stats = tally.by_rejects()[0];
        assert_eq!(stats.rejects(), 131_072);
        assert_eq!(stats.distinct_dst_ports(), 65_536);
        assert_eq!(stats.distinct_dst_addrs(), 2);
        assert!(matches!(
            stats.stats().detail.as_deref().map(|d| &d.dst_ports),
            Some(PortSet::Bitmap { .. })
        ));
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
                let stats = tally.by_rejects()[0];
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
    fn a_source_that_keeps_to_two_ports_and_hosts_needs_no_detail() {
        let other_port = REJECT.replace(" 3389 ", " 22 ");
        let other_host = REJECT.replace("172.31.9.12", "172.31.9.13");
        let tally = tally_default(&[REJECT, &other_port, REJECT, &other_host]);
        let stats = tally.by_rejects()[0];
        assert!(stats.stats().detail.is_none());
        assert_eq!(
            (
                stats.rejects(),
                stats.distinct_dst_ports(),
                stats.distinct_dst_addrs()
            ),
            (4, 2, 2)
        );
        assert_eq!(stats.protocols(), vec![(6, 4)]);
        assert_eq!(std::mem::size_of::<SourceStats>(), 80);
        assert_eq!(std::mem::size_of::<Row>(), 128);
        assert_eq!(std::mem::offset_of!(Row, stats.used) / 64, 1);

        let third_port = REJECT.replace(" 3389 ", " 443 ");
        let tally = tally_default(&[REJECT, &other_port, &third_port]);
        let stats = tally.by_rejects()[0];
        assert!(stats.stats().detail.is_some());
        assert_eq!(stats.dst_ports(), vec![22, 443, 3389]);
        assert_eq!(stats.protocols(), vec![(6, 3)]);
    }

    #[test]
    fn short_texts_are_equal_exactly_when_the_texts_are() {
        let mut texts: Vec<String> = [
            "eni-1235b8ca123456789",
            "eni-1235b8ca123456788",
            "eni-0235b8ca123456789",
            "eni-1235b8cb123456789",
            "abcdefgh",
            "abcdefghi",
            "abcdefgh\0",
            "short",
        ]
        .map(String::from)
        .to_vec();
        for len in 7..=25 {
            texts.push("x".repeat(len));
            texts.push(format!(
                "{}y{}",
                "x".repeat(len / 2),
                "x".repeat(len - len / 2 - 1)
            ));
        }
        for a in &texts {
            for b in &texts {
                let same_key = ShortText::new(a).is_some_and(|key| ShortText::new(b) == Some(key));
                assert_eq!(
                    same_key,
                    a == b && (8..=24).contains(&a.len()),
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn reads_see_the_rejects_waiting_in_the_batch() {
        let format = FlowFormat::from_log_format(
            "${interface-id} ${srcaddr} ${dstaddr} ${dstport} ${protocol} ${start} ${action} \
             ${reject-reason}",
        )
        .unwrap();
        let mut parser = RecordParser::new(format);
        let mut tally = RejectTally::default();
        for i in 0..3 * BATCH + 5 {
            let line = format!(
                "eni-{} 10.0.{}.{} 10.1.0.{} {} {} {} REJECT {}",
                i % 4,
                i % 7,
                i % 5,
                i % 3,
                20 + i % 4,
                [6, 17, 1][i % 3],
                1_700_000_000 + 40 * i,
                ["-", "BPA", "-", "OTHER"][i % 4],
            );
            tally.add(&parser.parse(&line).unwrap());
            let mut applied = tally.clone();
            applied.apply_pending();
            assert!(applied.pending.is_empty());
            let json = |tally: &RejectTally| serde_json::to_string(&tally.report(None)).unwrap();
            assert_eq!(json(&tally), json(&applied), "after {} records", i + 1);
            assert_eq!(tally.len(), applied.len());
            let first = applied.by_rejects()[0].key;
            assert_eq!(
                tally.get(&first).map(|aggregate| aggregate.rejects()),
                applied.get(&first).map(|aggregate| aggregate.rejects())
            );
        }
    }

    #[test]
    fn spreading_out_keeps_what_was_counted_inline() {
        let other_port = REJECT.replace(" 3389 ", " 22 ");
        let other_protocol = ICMP_REJECT.replace("172.31.16.139", "172.31.9.69");
        let tally = tally_default(&[REJECT, REJECT, &other_port, &other_protocol]);
        let stats = tally.get(&SourceWindow {
            source: ip("172.31.9.69"),
            window_start: 1_418_529_900,
        });
        let stats = stats.expect("REJECT's window");
        assert_eq!(stats.dst_ports(), vec![22, 3389]);
        assert_eq!(stats.protocols(), vec![(6, 3)]);
        assert_eq!(stats.distinct_dst_addrs(), 1);
        let icmp = tally.get(&SourceWindow {
            source: ip("172.31.9.69"),
            window_start: 1_432_917_000,
        });
        assert_eq!(icmp.expect("ICMP's window").protocols(), vec![(1, 1)]);
    }

    #[test]
    fn absurd_times_are_uncountable_not_wrapped() {
        let format = FlowFormat::from_log_format("${srcaddr} ${start} ${action}").unwrap();
        let tally = tally_lines(
            format,
            TallyOptions::default(),
            &[
                "10.0.0.1 99999999999 REJECT",
                "10.0.0.1 99999999999999999 REJECT",
            ],
        );
        assert_eq!(tally.totals().rejects, 1);
        assert_eq!(tally.totals().uncountable, 1);
    }

    #[test]
    fn interface_samples_stop_at_the_limit() {
        let lines: Vec<String> = (0..5)
            .map(|i| REJECT.replace("eni-1235b8ca123456789", &format!("eni-{i}")))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let tally = tally_default(&refs);
        let stats = tally.by_rejects()[0];
        assert_eq!(stats.sample_interfaces(), vec!["eni-0", "eni-1", "eni-2"]);
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
            .map(|aggregate| aggregate.key.source)
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
