//! The tally's small and bounded containers: destination ports ([`PortSet`]) and addresses
//! ([`AddressSet`]) that stay within a fixed size however far a source spreads,
//! [`ShortList`] (inline up to `N` values), and the direct-mapped cache of recently interned
//! interface ids ([`RecentIds`], keyed by [`ShortText`]).

use std::collections::HashSet;

use foldhash::fast::RandomState;

use super::EXACT_ADDRESSES;
use crate::sketch::DistinctSketch;

/// A text of 8 to 24 bytes as its length and three (possibly overlapping) words, which
/// together determine it: compared and hashed in a few operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ShortText {
    words: [u64; 3],
    len: usize,
}

impl ShortText {
    #[inline(always)]
    pub(super) fn new(text: &str) -> Option<Self> {
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
pub(super) struct RecentIds {
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
    pub(super) fn get(&self, key: &ShortText) -> Option<u32> {
        let (known, id) = &self.entries[key.slot()];
        (known == key).then_some(*id)
    }

    pub(super) fn put(&mut self, key: ShortText, id: u32) {
        self.entries[key.slot()] = (key, id);
    }
}

/// A list held inline up to `N` values and on the heap past that, read as a slice: the
/// short lists of an [`AggregateSummary`](super::AggregateSummary), which a report reads for every row, without an
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

/// Distinct destination ports: a short list for the common case, a 65,536-bit map (8 KiB)
/// once a source has touched many ports, so a full sweep costs the same as a wide one.
#[derive(Clone, Debug)]
pub(super) enum PortSet {
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
    pub(super) fn insert(&mut self, port: u16) {
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

    pub(super) fn len(&self) -> u32 {
        match self {
            PortSet::Inline { len, .. } => u32::from(*len),
            PortSet::Few(ports) => ports.len() as u32,
            PortSet::Bitmap { len, .. } => *len,
        }
    }

    pub(super) fn to_vec(&self) -> Vec<u16> {
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
pub(super) enum AddressSet {
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
    pub(super) fn insert(&mut self, fingerprint: u64) {
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

    pub(super) fn len(&self) -> u64 {
        match self {
            AddressSet::Few(_, len) => u64::from(*len),
            AddressSet::Many(addresses) => addresses.len() as u64,
            AddressSet::Sketch(sketch) => sketch.0.estimate(),
        }
    }

    /// The stored-counter sketch of the fingerprints.
    pub(super) fn sketch(&self) -> DistinctSketch {
        match self {
            AddressSet::Few(addresses, len) => {
                DistinctSketch::from_values(addresses[..usize::from(*len)].iter().copied())
            }
            AddressSet::Many(addresses) => DistinctSketch::from_values(addresses.iter().copied()),
            AddressSet::Sketch(sketch) => sketch.1.clone(),
        }
    }

    /// Up to `limit` of the smallest fingerprints known exactly.
    pub(super) fn examples(&self, limit: usize) -> Vec<u64> {
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
