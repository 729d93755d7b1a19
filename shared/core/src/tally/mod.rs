//! REJECT aggregates per (source address, time window), plus the counts that say how much
//! of the input could be counted at all.
//!
//! Pure and single-threaded: records go in through [`RecordSink`], aggregates come out.
//! Memory grows only with the number of distinct (source, window) pairs. Each costs about
//! 80 bytes (a 64-byte row and its share of the index) while its source keeps to two
//! ports, hosts, protocols and interfaces (ordinary sources do); richer detail is allocated
//! only for sources that spread out, and distinct destination ports and addresses are held
//! in bounded structures (a bitmap, a capped set, then a sketch).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use foldhash::fast::RandomState;
use indexmap::IndexSet;
use serde::Serialize;

use crate::decode::RecordSink;
use crate::flow_log::{Action, AddressBits, Field, FlowRecord, LogStatus, MalformedLine};
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

/// An address in 32 bits and a flag: an IPv4 address's bits, or the id under which the
/// tally interned an IPv6 address (a source in [`RejectTally::v6_sources`], a destination in
/// [`RejectTally::v6_destinations`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct AddressId {
    bits: u32,
    is_v6: bool,
}

impl AddressId {
    /// The 33 bits as one number, for comparisons and keys.
    fn packed(self) -> u64 {
        u64::from(self.is_v6) << 32 | u64::from(self.bits)
    }
}

/// A (source, window) as one word: the window index (below 2^31) in the top 31 bits, then
/// the source's [`AddressId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RowKey(u64);

impl RowKey {
    /// The largest window index a key holds: 2^31 one-minute windows reach past the
    /// year 6000, so [`RejectTally::window_index`] treats later times as absurd.
    const MAX_WINDOW_INDEX: u32 = (1 << 31) - 1;

    /// The key of `source` in window `window_index`, which is at most
    /// [`RowKey::MAX_WINDOW_INDEX`].
    fn new(source: AddressId, window_index: u32) -> RowKey {
        debug_assert!(window_index <= RowKey::MAX_WINDOW_INDEX);
        RowKey(u64::from(window_index & RowKey::MAX_WINDOW_INDEX) << 33 | source.packed())
    }

    fn source(self) -> AddressId {
        AddressId {
            bits: self.0 as u32,
            is_v6: self.0 >> 32 & 1 == 1,
        }
    }

    fn window_index(self) -> u32 {
        (self.0 >> 33) as u32
    }
}

/// What one REJECT record contributes, read from it once, so that it can wait in
/// [`RejectTally`]'s batch after the line is gone.
#[derive(Clone, Copy, Debug)]
struct Sample {
    key: RowKey,
    hash: u64,
    packets: u64,
    bytes: u64,
    offset: u32,
    last_offset: u32,
    dst_address: Option<Destination>,
    /// Interned in [`RejectTally::interfaces`].
    interface: Option<u32>,
    /// Interned in [`RejectTally::reasons`].
    reject_reason: Option<u32>,
    dst_port: Option<u16>,
    protocol: Option<u8>,
}

/// A destination as a sample carries it.
#[derive(Clone, Copy, Debug)]
enum Destination {
    /// IPv4 bits or an interned IPv6 destination: what rows hold inline.
    Id(AddressId),
    /// An IPv6 destination met once the interning table was full: only a detail can hold
    /// it, as its fingerprint (see [`V6_DESTINATION_IDS`]).
    Fingerprint(u64),
}

/// How many distinct IPv6 destinations the tally interns (about 3 MiB at most). Interned ids
/// let rows keep IPv6 destinations inline; past this many (a host sweeping IPv6 space, or a
/// very large VPC), rows meeting new ones keep them in their detail, whose address sets are
/// bounded, so memory stays bounded too.
const V6_DESTINATION_IDS: usize = 1 << 16;

/// Two bits per kind of inline value in [`Row::used`]: how many of its two places hold one.
const PORTS: u32 = 0;
const ADDRESSES: u32 = 2;
const PROTOCOLS: u32 = 4;
const INTERFACES: u32 = 6;
/// [`Row::used`] of a row whose values all live in its [`Detail`].
const SPILLED: u8 = u8::MAX;

/// One aggregate: a single cache line. Up to two distinct destination ports, hosts,
/// protocols and interfaces are kept inline, which covers ordinary sources; a [`Detail`]
/// takes over when a third one (or a reject reason) appears.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Row {
    key: RowKey,
    packets: u64,
    bytes: u64,
    rejects: u32,
    /// Seconds from the window start to the earliest `start`.
    first_offset: u32,
    /// Seconds from the window start to the latest `end`.
    last_offset: u32,
    /// REJECTs per inline protocol.
    protocol_rejects: [u32; 2],
    /// Inline destinations ([`AddressId`] bits, IPv6 flags in `v6_addresses`); once the
    /// row has spilled, the index of its detail.
    dst_addresses: [u32; 2],
    dst_ports: [u16; 2],
    /// Interface ids below 2^16; a row meeting a larger one spills.
    interfaces: [u16; 2],
    protocols: [u8; 2],
    /// Places in use, two bits per kind (see [`PORTS`]), or [`SPILLED`].
    used: u8,
    /// Bit `i` set when `dst_addresses[i]` is an IPv6 id.
    v6_addresses: u8,
}

impl Row {
    fn new(key: RowKey, offset: u32) -> Self {
        Row {
            key,
            packets: 0,
            bytes: 0,
            rejects: 0,
            first_offset: offset,
            last_offset: offset,
            protocol_rejects: [0; 2],
            dst_addresses: [0; 2],
            dst_ports: [0; 2],
            interfaces: [0; 2],
            protocols: [0; 2],
            used: 0,
            v6_addresses: 0,
        }
    }

    fn used(&self, kind: u32) -> usize {
        usize::from(self.used >> kind & 3)
    }

    /// The index of the row's detail, once it has one.
    fn detail(&self) -> Option<usize> {
        (self.used == SPILLED).then_some(self.dst_addresses[0] as usize)
    }

    fn dst_address(&self, index: usize) -> AddressId {
        AddressId {
            bits: self.dst_addresses[index],
            is_v6: self.v6_addresses >> index & 1 == 1,
        }
    }

    /// The counts every REJECT adds, inline or not.
    #[inline(always)]
    fn count(&mut self, sample: &Sample) {
        self.rejects = self.rejects.saturating_add(1);
        self.packets = self.packets.saturating_add(sample.packets);
        self.bytes = self.bytes.saturating_add(sample.bytes);
        self.first_offset = self.first_offset.min(sample.offset);
        self.last_offset = self.last_offset.max(sample.last_offset);
    }

    /// Records the sample's values in the inline places; `false`, changing nothing, when
    /// they do not fit there. Places are found without branching on the values, which
    /// vary from record to record.
    #[inline(always)]
    fn add_inline(&mut self, sample: &Sample) -> bool {
        let interface = match sample.interface.map(u16::try_from) {
            Some(Ok(interface)) => Some(interface),
            Some(Err(_)) => return false,
            None => None,
        };
        if sample.reject_reason.is_some() {
            return false;
        }
        let addresses = [self.dst_address(0).packed(), self.dst_address(1).packed()];
        let port = sample
            .dst_port
            .map(|port| place(self.dst_ports, self.used(PORTS), port));
        let address = match sample.dst_address {
            Some(Destination::Id(address)) => Some(address),
            Some(Destination::Fingerprint(_)) => return false,
            None => None,
        };
        let address_place =
            address.map(|address| place(addresses, self.used(ADDRESSES), address.packed()));
        let protocol = sample
            .protocol
            .map(|protocol| place(self.protocols, self.used(PROTOCOLS), protocol));
        let interface_place =
            interface.map(|interface| place(self.interfaces, self.used(INTERFACES), interface));
        let fits = |place: Option<usize>| place.is_none_or(|index| index < 2);
        if !(fits(port) && fits(address_place) && fits(protocol) && fits(interface_place)) {
            return false;
        }
        if let (Some(index), Some(port)) = (port, sample.dst_port) {
            self.dst_ports[index & 1] = port;
            self.mark_used(PORTS, index);
        }
        if let (Some(index), Some(address)) = (address_place, address) {
            self.dst_addresses[index & 1] = address.bits;
            let flag = 1 << (index & 1);
            self.v6_addresses = self.v6_addresses & !flag | if address.is_v6 { flag } else { 0 };
            self.mark_used(ADDRESSES, index);
        }
        if let (Some(index), Some(protocol)) = (protocol, sample.protocol) {
            self.protocols[index & 1] = protocol;
            self.protocol_rejects[index & 1] = self.protocol_rejects[index & 1].saturating_add(1);
            self.mark_used(PROTOCOLS, index);
        }
        if let (Some(index), Some(interface)) = (interface_place, interface) {
            self.interfaces[index & 1] = interface;
            self.mark_used(INTERFACES, index);
        }
        true
    }

    /// Counts place `index` (0 or 1) of `kind` as used.
    #[inline(always)]
    fn mark_used(&mut self, kind: u32, index: usize) {
        let count = (self.used >> kind & 3).max(index as u8 + 1);
        self.used = self.used & !(3 << kind) | count << kind;
    }

    /// A detail holding what the inline places recorded so far, and the row pointing at
    /// it (as `index`).
    fn spill(&mut self, index: usize, v6_destinations: &IndexSet<u128, RandomState>) -> Detail {
        let mut detail = Detail::default();
        for &port in &self.dst_ports[..self.used(PORTS)] {
            detail.dst_ports.insert(port);
        }
        for place in 0..self.used(ADDRESSES) {
            let fingerprint = fingerprint_of(self.dst_address(place), v6_destinations);
            detail.dst_addresses.insert(fingerprint);
        }
        for place in 0..self.used(PROTOCOLS) {
            detail.count_protocol(self.protocols[place], self.protocol_rejects[place]);
        }
        for &id in &self.interfaces[..self.used(INTERFACES)] {
            detail.sample_interface(u32::from(id));
        }
        self.used = SPILLED;
        self.dst_addresses = [index as u32, 0];
        detail
    }
}

/// Where `value` goes among the first `used` (0 to 2) of `values`: where it already is,
/// else the next free place; 2 when both places hold other values.
#[inline(always)]
fn place<T: Copy + PartialEq>(values: [T; 2], used: usize, value: T) -> usize {
    let at_first = used > 0 && values[0] == value;
    let at_second = used > 1 && values[1] == value;
    if at_first {
        0
    } else if at_second {
        1
    } else {
        used
    }
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

/// Protocols a detail counts inline; a summary lists as many without allocating.
pub const INLINE_PROTOCOLS: usize = 4;

#[derive(Clone, Debug, Default)]
struct RareDetail {
    more_protocols: Vec<(u8, u32)>,
    /// (interned reason, records).
    reject_reasons: Vec<(u32, u32)>,
}

impl Detail {
    fn add(&mut self, sample: &Sample, v6_destinations: &IndexSet<u128, RandomState>) {
        if let Some(port) = sample.dst_port {
            self.dst_ports.insert(port);
        }
        match sample.dst_address {
            Some(Destination::Id(address)) => {
                let fingerprint = fingerprint_of(address, v6_destinations);
                self.dst_addresses.insert(fingerprint);
            }
            Some(Destination::Fingerprint(fingerprint)) => self.dst_addresses.insert(fingerprint),
            None => {}
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

/// The fingerprint (see [`address_fingerprint`]) of a destination the tally holds as an id.
fn fingerprint_of(address: AddressId, v6_destinations: &IndexSet<u128, RandomState>) -> u64 {
    if !address.is_v6 {
        return u64::from(address.bits);
    }
    let bits = v6_destinations
        .get_index(address.bits as usize)
        .copied()
        .unwrap_or_default();
    address_fingerprint(IpAddr::V6(Ipv6Addr::from_bits(bits)))
}

/// The aggregates: rows in order of first sight, found through an open-addressing index
/// with linear probing.
#[derive(Clone, Debug)]
struct Table {
    rows: Vec<Row>,
    /// 0 for an empty slot, else the top half of the key's hash above the row's position
    /// plus one, so that probing compares hashes without touching rows. A power of two
    /// long, at most three quarters full.
    index: Vec<u64>,
    /// Mixed into every hash, drawn per tally: source addresses come from the internet,
    /// and an attacker who could predict the slots could make every lookup probe long.
    seed: u64,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            rows: Vec::new(),
            index: Vec::new(),
            seed: RandomState::default().hash_one(0x5eed_u64),
        }
    }
}

impl Table {
    /// A 64-bit mix of the key and the seed in which every bit depends on every key bit.
    #[inline(always)]
    fn hash(&self, key: RowKey) -> u64 {
        const MULTIPLIER: u64 = 0xd6e8_feb8_6659_fd93;
        let mixed = key.0 ^ self.seed;
        let mixed = (mixed ^ mixed >> 32).wrapping_mul(MULTIPLIER);
        let mixed = (mixed ^ mixed >> 32).wrapping_mul(MULTIPLIER);
        mixed ^ mixed >> 32
    }

    fn mask(&self) -> usize {
        self.index.len().wrapping_sub(1)
    }

    /// The first stage of a lookup ahead of time: asks for the index slot's cache line.
    #[inline(always)]
    fn prefetch_slot(&self, hash: u64) {
        if let Some(slot) = self.index.get(hash as usize & self.mask()) {
            prefetch(slot);
        }
    }

    /// The second stage: finds the row by hash alone (the slot is in cache by now) and
    /// asks for its cache line. A hash collision only wastes the hint.
    #[inline(always)]
    fn prefetch_row(&self, hash: u64) {
        if let Some(row) = self.probe(hash).and_then(|row| self.rows.get(row)) {
            prefetch(row);
        }
    }

    /// The row whose index entry carries `hash`'s top half, if any.
    #[inline(always)]
    fn probe(&self, hash: u64) -> Option<usize> {
        let mut slot = hash as usize & self.mask();
        loop {
            let entry = *self.index.get(slot)?;
            if entry == 0 {
                return None;
            }
            if entry >> 32 == hash >> 32 {
                return Some((entry as u32 - 1) as usize);
            }
            slot = (slot + 1) & self.mask();
        }
    }

    fn find(&self, key: RowKey, hash: u64) -> Option<usize> {
        let mut slot = hash as usize & self.mask();
        loop {
            let entry = *self.index.get(slot)?;
            if entry == 0 {
                return None;
            }
            let row = (entry as u32 - 1) as usize;
            if entry >> 32 == hash >> 32 && self.rows[row].key == key {
                return Some(row);
            }
            slot = (slot + 1) & self.mask();
        }
    }

    fn get(&self, key: RowKey) -> Option<&Row> {
        self.find(key, self.hash(key)).map(|row| &self.rows[row])
    }

    #[inline(always)]
    fn find_or_insert(&mut self, sample: &Sample) -> &mut Row {
        let row = match self.find(sample.key, sample.hash) {
            Some(row) => row,
            None => self.insert(sample),
        };
        &mut self.rows[row]
    }

    #[cold]
    fn insert(&mut self, sample: &Sample) -> usize {
        if (self.rows.len() + 1) * 4 > self.index.len() * 3 {
            self.grow();
        }
        let row = self.rows.len();
        self.rows.push(Row::new(sample.key, sample.offset));
        self.place(sample.hash, row);
        row
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
        self.index = vec![0; (self.index.len() * 2).max(64)];
        for row in 0..self.rows.len() {
            let hash = self.hash(self.rows[row].key);
            self.place(hash, row);
        }
    }
}

/// A hint that `value` will be read soon; nothing where the processor has no such hint.
#[inline(always)]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it reads nothing the program sees and never faults.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// How many REJECTs wait before they are applied together. Their rows are mostly not in
/// the processor's caches (a busy hour has tens of thousands of them), so each lookup is
/// started early in two steps: the index slot's line is asked for when the REJECT is read,
/// the row's line [`ROW_PREFETCH_LAG`] REJECTs later, and both are there by the time the
/// batch is applied.
const BATCH: usize = 64;
const ROW_PREFETCH_LAG: usize = 16;

/// A text of 8 to 24 bytes as its length and three (possibly overlapping) words, which
/// together determine it: compared and hashed in a few operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ShortText {
    words: [u64; 3],
    len: usize,
}

impl ShortText {
    #[inline(always)]
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

    #[inline(always)]
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
    #[inline(always)]
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

/// A list held inline up to `N` values and on the heap past that, read as a slice: the
/// short lists of an [`AggregateSummary`], which a report reads for every row, without an
/// allocation each.
#[derive(Clone)]
pub struct ShortList<T, const N: usize> {
    inline: [T; N],
    len: usize,
    /// Every value, once there are more than `N`.
    spilled: Vec<T>,
}

impl<T: Copy + Default, const N: usize> ShortList<T, N> {
    fn push(&mut self, value: T) {
        if self.len < N {
            self.inline[self.len] = value;
        } else {
            if self.len == N {
                self.spilled.extend_from_slice(&self.inline);
            }
            self.spilled.push(value);
        }
        self.len += 1;
    }
}

impl<T: Copy + Default, const N: usize> FromIterator<T> for ShortList<T, N> {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> Self {
        let mut list = ShortList {
            inline: [T::default(); N],
            len: 0,
            spilled: Vec::new(),
        };
        for value in values {
            list.push(value);
        }
        list
    }
}

impl<T, const N: usize> std::ops::Deref for ShortList<T, N> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self.inline.get(..self.len) {
            Some(inline) => inline,
            None => &self.spilled,
        }
    }
}

impl<T, const N: usize> std::ops::DerefMut for ShortList<T, N> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self.inline.get_mut(..self.len) {
            Some(inline) => inline,
            None => &mut self.spilled,
        }
    }
}

impl<T: std::fmt::Debug, const N: usize> std::fmt::Debug for ShortList<T, N> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_list().entries(self.iter()).finish()
    }
}

impl<T: PartialEq, const N: usize> PartialEq for ShortList<T, N> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Eq, const N: usize> Eq for ShortList<T, N> {}

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
        let summary = aggregate.summary();
        SourceReport {
            source: summary.key.source,
            window_start: summary.key.window_start,
            rejects: summary.rejects,
            packets: summary.packets,
            bytes: summary.bytes,
            distinct_dst_ports: summary.distinct_dst_ports,
            distinct_dst_addrs: summary.distinct_dst_addrs,
            distinct_dst_addrs_exact: summary.dst_addrs_exact,
            first_seen: summary.first_seen,
            last_seen: summary.last_seen,
            protocols: summary
                .protocols
                .iter()
                .map(|&(protocol, rejects)| ProtocolCount { protocol, rejects })
                .collect(),
            reject_reasons: summary
                .reject_reasons
                .into_iter()
                .map(|(reason, rejects)| ReasonCount {
                    reason: reason.to_owned(),
                    rejects,
                })
                .collect(),
            interfaces: summary
                .interfaces
                .iter()
                .map(|&interface| interface.to_owned())
                .collect(),
        }
    }
}

impl RejectTally {
    /// The report of this tally, with at most `limit` sources (all when `None`).
    pub fn report(&self, limit: Option<usize>) -> TallyReport {
        let ranking = self.ranking(limit);
        TallyReport {
            totals: self.totals(),
            window_seconds: self.options.window_seconds,
            sources_omitted: ranking.omitted() as u64,
            sources: ranking.iter().map(SourceReport::from).collect(),
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
        assert_eq!(std::mem::size_of::<Row>(), 64);

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
    fn a_summary_gives_what_the_accessors_give_before_and_after_applying() {
        let format = FlowFormat::from_log_format(
            "${interface-id} ${srcaddr} ${dstaddr} ${dstport} ${protocol} ${start} ${action} \
             ${reject-reason}",
        )
        .unwrap();
        let mut parser = RecordParser::new(format);
        let mut tally = RejectTally::default();
        for i in 0..2 * BATCH + 9 {
            let line = format!(
                "eni-{} 10.0.{}.{} 10.1.{}.{} {} {} {} REJECT {}",
                i % 5,
                i % 3,
                i % 4,
                i % 7,
                i % 6,
                20 + i % 5,
                [6, 17, 1, 58, 47, 50, 132][i % 7],
                1_700_000_000 + 3 * i,
                ["-", "BPA", "-", "OTHER", "-"][i % 5],
            );
            tally.add(&parser.parse(&line).unwrap());
        }
        assert!(!tally.pending.is_empty());
        let spilled = tally.aggregates().filter(|a| a.stats().detail.is_some());
        assert!((1..tally.len()).contains(&spilled.count()));
        let most_protocols = tally.aggregates().map(|a| a.protocols().len()).max();
        assert!(most_protocols > Some(INLINE_PROTOCOLS));
        let mut applied = tally.clone();
        applied.apply_pending();
        for tally in [&tally, &applied] {
            for aggregate in tally.aggregates() {
                let expected = AggregateSummary {
                    key: aggregate.key,
                    rejects: aggregate.rejects(),
                    packets: aggregate.packets(),
                    bytes: aggregate.bytes(),
                    first_seen: aggregate.first_seen(),
                    last_seen: aggregate.last_seen(),
                    distinct_dst_ports: aggregate.distinct_dst_ports(),
                    distinct_dst_addrs: aggregate.distinct_dst_addrs(),
                    dst_addrs_exact: aggregate.dst_addrs_exact(),
                    protocols: aggregate.protocols().into_iter().collect(),
                    reject_reasons: aggregate.reject_reasons(),
                    interfaces: aggregate.sample_interfaces().into_iter().collect(),
                };
                assert_eq!(aggregate.summary(), expected);
            }
        }
        let summaries = |tally: &RejectTally| -> Vec<String> {
            let summaries = tally.aggregates().map(|aggregate| aggregate.summary());
            summaries.map(|summary| format!("{summary:?}")).collect()
        };
        assert_eq!(summaries(&tally), summaries(&applied));
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
    fn ipv6_destinations_past_the_interning_cap_keep_memory_bounded() {
        // One source sweeping IPv6 space: destinations past the cap are kept as
        // fingerprints in the source's bounded detail, not interned.
        let format =
            FlowFormat::from_log_format("${srcaddr} ${dstaddr} ${start} ${action}").unwrap();
        let mut parser = RecordParser::new(format);
        let mut tally = RejectTally::default();
        let sweep = V6_DESTINATION_IDS as u128 + 20_000;
        for host in 0..sweep {
            let destination = Ipv6Addr::from_bits(0x2001_0db8 << 96 | host);
            let line = format!("2001:db8::5 {destination} 1700000000 REJECT");
            tally.add(&parser.parse(&line).unwrap());
        }
        // A source with two of the interned destinations still needs no detail.
        for host in [1, 2] {
            let destination = Ipv6Addr::from_bits(0x2001_0db8 << 96 | host);
            let line = format!("2001:db8::6 {destination} 1700000000 REJECT");
            tally.add(&parser.parse(&line).unwrap());
        }
        assert_eq!(tally.v6_destinations.len(), V6_DESTINATION_IDS);
        let ranked = tally.by_rejects();
        let estimate = ranked[0].distinct_dst_addrs() as f64;
        let truth = sweep as f64;
        assert!(
            (estimate - truth).abs() / truth < 0.05,
            "{estimate} vs {truth}"
        );
        assert!(ranked[1].stats().detail.is_none());
        assert_eq!(ranked[1].distinct_dst_addrs(), 2);
        assert_eq!(
            ranked[1].dst_host_examples(2),
            [1, 2]
                .map(|host| {
                    address_fingerprint(IpAddr::V6(Ipv6Addr::from_bits(0x2001_0db8 << 96 | host)))
                })
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
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
    fn ranking_is_the_by_rejects_order_cut_to_the_limit() {
        // IPv6 sources first seen out of address order, ties in REJECT counts, several
        // windows, and rows only the waiting batch has.
        let sources = [
            "2001:db8::9",
            "10.0.0.2",
            "2001:db8::1",
            "fe80::1",
            "10.0.0.1",
            "2001:db8::5",
            "192.0.2.7",
        ];
        let format = FlowFormat::from_log_format("${srcaddr} ${start} ${action}").unwrap();
        let mut parser = RecordParser::new(format);
        let mut tally = RejectTally::default();
        let mut n_records = 0;
        for round in 0..40 {
            for (index, source) in sources.iter().enumerate() {
                if (round * 7 + index * 3) % 5 < 2 {
                    let time = 1_700_000_000 + 300 * ((round + index) % 4);
                    tally.add(&parser.parse(&format!("{source} {time} REJECT")).unwrap());
                    n_records += 1;
                }
            }
        }
        for late in [
            "2001:db8::3 1700000000 REJECT",
            "10.0.0.3 1700003000 REJECT",
        ] {
            tally.add(&parser.parse(late).unwrap());
            n_records += 1;
        }
        assert_eq!(tally.pending_only_keys().count(), 2, "{n_records} records");
        let mut expected: Vec<SourceAggregate<'_>> = tally.aggregates().collect();
        expected.sort_by(|a, b| b.rejects().cmp(&a.rejects()).then(a.key.cmp(&b.key)));
        let tied = |alike: fn(&SourceWindow, &SourceWindow) -> bool| {
            let mut pairs = expected.windows(2);
            pairs.any(|pair| {
                pair[0].rejects() == pair[1].rejects() && alike(&pair[0].key, &pair[1].key)
            })
        };
        assert!(tied(|a, b| a.source.is_ipv6() && b.source.is_ipv6()));
        assert!(tied(|a, b| a.source.is_ipv4() && b.source.is_ipv4()));
        assert!(tied(|a, b| a.source.is_ipv4() && b.source.is_ipv6()));
        assert!(tied(|a, b| a.source == b.source));
        let expected: Vec<SourceWindow> = expected.iter().map(|a| a.key).collect();
        for limit in [
            None,
            Some(0),
            Some(1),
            Some(5),
            Some(expected.len()),
            Some(99),
        ] {
            let ranking = tally.ranking(limit);
            let shown = limit.unwrap_or(expected.len()).min(expected.len());
            let keys: Vec<SourceWindow> = ranking.iter().map(|a| a.key).collect();
            assert_eq!(keys, expected[..shown], "limit {limit:?}");
            assert_eq!(ranking.omitted(), expected.len() - shown);
        }
        let ranked = |tally: &RejectTally| -> Vec<(SourceWindow, u64)> {
            let ranking = tally.ranking(None);
            ranking.iter().map(|a| (a.key, a.rejects())).collect()
        };
        let mut applied = tally.clone();
        applied.apply_pending();
        assert_eq!(ranked(&tally), ranked(&applied));
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
