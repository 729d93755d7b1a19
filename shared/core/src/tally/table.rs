//! The tally's private hash table: one 64-byte [`Row`] per (source, window), found through
//! an open-addressing index whose slots and rows are prefetched ahead of use (see
//! [`BATCH`]); a row's [`Detail`] once its source spreads out; and the [`Sample`] each REJECT
//! leaves waiting in the batch.

use foldhash::fast::RandomState;
use indexmap::IndexSet;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};

use super::bounded::{AddressSet, PortSet};
use super::{INLINE_PROTOCOLS, SAMPLE_INTERFACES, address_fingerprint};

/// An address in 32 bits and a flag: an IPv4 address's bits, or the id under which the
/// tally interned an IPv6 address (a source in [`RejectTally::v6_sources`](super::RejectTally::v6_sources), a destination in
/// [`RejectTally::v6_destinations`](super::RejectTally::v6_destinations)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct AddressId {
    pub(super) bits: u32,
    pub(super) is_v6: bool,
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
pub(super) struct RowKey(u64);

impl RowKey {
    /// The largest window index a key holds: 2^31 one-minute windows reach past the
    /// year 6000, so [`RejectTally::window_index`](super::RejectTally::window_index) treats later times as absurd.
    pub(super) const MAX_WINDOW_INDEX: u32 = (1 << 31) - 1;

    /// The key of `source` in window `window_index`, which is at most
    /// [`RowKey::MAX_WINDOW_INDEX`].
    pub(super) fn new(source: AddressId, window_index: u32) -> RowKey {
        debug_assert!(window_index <= RowKey::MAX_WINDOW_INDEX);
        RowKey(u64::from(window_index & RowKey::MAX_WINDOW_INDEX) << 33 | source.packed())
    }

    pub(super) fn source(self) -> AddressId {
        AddressId {
            bits: self.0 as u32,
            is_v6: self.0 >> 32 & 1 == 1,
        }
    }

    pub(super) fn window_index(self) -> u32 {
        (self.0 >> 33) as u32
    }
}

/// What one REJECT record contributes, read from it once, so that it can wait in
/// [`RejectTally`](super::RejectTally)'s batch after the line is gone.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sample {
    pub(super) key: RowKey,
    pub(super) hash: u64,
    pub(super) packets: u64,
    pub(super) bytes: u64,
    pub(super) offset: u32,
    pub(super) last_offset: u32,
    pub(super) dst_address: Option<Destination>,
    /// Interned in [`RejectTally::interfaces`](super::RejectTally::interfaces).
    pub(super) interface: Option<u32>,
    /// Interned in [`RejectTally::reasons`](super::RejectTally::reasons).
    pub(super) reject_reason: Option<u32>,
    pub(super) dst_port: Option<u16>,
    pub(super) protocol: Option<u8>,
}

/// A destination as a sample carries it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Destination {
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
pub(super) const V6_DESTINATION_IDS: usize = 1 << 16;

/// Two bits per kind of inline value in [`Row::used`]: how many of its two places hold one.
pub(super) const PORTS: u32 = 0;
pub(super) const ADDRESSES: u32 = 2;
pub(super) const PROTOCOLS: u32 = 4;
pub(super) const INTERFACES: u32 = 6;
/// [`Row::used`] of a row whose values all live in its [`Detail`].
pub(super) const SPILLED: u8 = u8::MAX;

/// One aggregate: a single cache line. Up to two distinct destination ports, hosts,
/// protocols and interfaces are kept inline, which covers ordinary sources; a [`Detail`]
/// takes over when a third one (or a reject reason) appears.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(super) struct Row {
    pub(super) key: RowKey,
    pub(super) packets: u64,
    pub(super) bytes: u64,
    pub(super) rejects: u32,
    /// Seconds from the window start to the earliest `start`.
    pub(super) first_offset: u32,
    /// Seconds from the window start to the latest `end`.
    pub(super) last_offset: u32,
    /// REJECTs per inline protocol.
    pub(super) protocol_rejects: [u32; 2],
    /// Inline destinations ([`AddressId`] bits, IPv6 flags in `v6_addresses`); once the
    /// row has spilled, the index of its detail.
    dst_addresses: [u32; 2],
    pub(super) dst_ports: [u16; 2],
    /// Interface ids below 2^16; a row meeting a larger one spills.
    pub(super) interfaces: [u16; 2],
    pub(super) protocols: [u8; 2],
    /// Places in use, two bits per kind (see [`PORTS`]), or [`SPILLED`].
    pub(super) used: u8,
    /// Bit `i` set when `dst_addresses[i]` is an IPv6 id.
    v6_addresses: u8,
}

impl Row {
    pub(super) fn new(key: RowKey, offset: u32) -> Self {
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

    pub(super) fn used(&self, kind: u32) -> usize {
        usize::from(self.used >> kind & 3)
    }

    /// The index of the row's detail, once it has one.
    pub(super) fn detail(&self) -> Option<usize> {
        (self.used == SPILLED).then_some(self.dst_addresses[0] as usize)
    }

    pub(super) fn dst_address(&self, index: usize) -> AddressId {
        AddressId {
            bits: self.dst_addresses[index],
            is_v6: self.v6_addresses >> index & 1 == 1,
        }
    }

    /// The counts every REJECT adds, inline or not.
    #[inline(always)]
    pub(super) fn count(&mut self, sample: &Sample) {
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
    pub(super) fn add_inline(&mut self, sample: &Sample) -> bool {
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
    pub(super) fn spill(
        &mut self,
        index: usize,
        v6_destinations: &IndexSet<u128, RandomState>,
    ) -> Detail {
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
pub(super) struct Detail {
    pub(super) dst_ports: PortSet,
    pub(super) dst_addresses: AddressSet,
    /// Records per protocol; a source rarely uses more than a few, so they live inline.
    protocols: [(u8, u32); INLINE_PROTOCOLS],
    protocol_kinds: u8,
    /// What few sources have: more protocols than fit inline, and reject reasons (v8).
    pub(super) rare: Option<Box<RareDetail>>,
    interfaces: [u32; SAMPLE_INTERFACES],
    interface_count: u8,
}

#[derive(Clone, Debug, Default)]
pub(super) struct RareDetail {
    more_protocols: Vec<(u8, u32)>,
    /// (interned reason, records).
    pub(super) reject_reasons: Vec<(u32, u32)>,
}

impl Detail {
    pub(super) fn add(&mut self, sample: &Sample, v6_destinations: &IndexSet<u128, RandomState>) {
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

    pub(super) fn protocols(&self) -> impl Iterator<Item = (u8, u32)> + '_ {
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

    pub(super) fn interfaces(&self) -> &[u32] {
        &self.interfaces[..usize::from(self.interface_count)]
    }
}

/// The fingerprint (see [`address_fingerprint`]) of a destination the tally holds as an id.
pub(super) fn fingerprint_of(
    address: AddressId,
    v6_destinations: &IndexSet<u128, RandomState>,
) -> u64 {
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
pub(super) struct Table {
    pub(super) rows: Vec<Row>,
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
    pub(super) fn hash(&self, key: RowKey) -> u64 {
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
    pub(super) fn prefetch_slot(&self, hash: u64) {
        if let Some(slot) = self.index.get(hash as usize & self.mask()) {
            prefetch(slot);
        }
    }

    /// The second stage: finds the row by hash alone (the slot is in cache by now) and
    /// asks for its cache line. A hash collision only wastes the hint.
    #[inline(always)]
    pub(super) fn prefetch_row(&self, hash: u64) {
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

    pub(super) fn find(&self, key: RowKey, hash: u64) -> Option<usize> {
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

    pub(super) fn get(&self, key: RowKey) -> Option<&Row> {
        self.find(key, self.hash(key)).map(|row| &self.rows[row])
    }

    #[inline(always)]
    pub(super) fn find_or_insert(&mut self, sample: &Sample) -> &mut Row {
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
pub(super) const BATCH: usize = 64;
pub(super) const ROW_PREFETCH_LAG: usize = 16;
