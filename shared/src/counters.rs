//! What one delivery adds to the stored counters: one [`CounterUpdate`] per (source,
//! window), one [`GapUpdate`] per (interface, window) with NODATA/SKIPDATA, and the
//! [`BatchId`] that lets the store apply each of them at most once however often AWS
//! delivers the same object or batch.
//!
//! Pure: built from a [`RejectTally`] and the delivery's identity; no I/O, no clock.

use std::fmt;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::settle::is_settled;
use crate::sketch::{DistinctSketch, stable_hash};
use crate::tally::{RejectTally, SourceAggregate, address_fingerprint};

/// Identifies one delivery (an S3 object version, or a CloudWatch Logs batch): 32 hex
/// digits of a SHA-256 over a canonical description, stable across releases.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(String);

impl BatchId {
    /// An S3 object: bucket, (decoded) key, and the version id or, without versioning, the
    /// ETag, so that an overwritten object counts again but a re-delivered one does not.
    pub fn for_s3_object(
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        etag: Option<&str>,
    ) -> Self {
        BatchId::from_parts(&[
            "s3",
            bucket,
            key,
            version_id.unwrap_or(""),
            etag.unwrap_or(""),
        ])
    }

    /// A CloudWatch Logs batch: log group, log stream, and every event id in it.
    pub fn for_cloudwatch_batch<'a>(
        log_group: &'a str,
        log_stream: &'a str,
        event_ids: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut parts = vec!["cloudwatch", log_group, log_stream];
        parts.extend(event_ids);
        BatchId::from_parts(&parts)
    }

    fn from_parts(parts: &[&str]) -> Self {
        let mut hasher = Sha256::new();
        for part in parts {
            // Length-prefixed, so no two part lists hash the same input.
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        let digest = hasher.finalize();
        BatchId(
            digest[..16]
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect(),
        )
    }

    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A batch id as stored (for tests and fakes); `None` unless it is 32 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| BatchId(text.to_ascii_lowercase()))
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest reject reason stored as its own counter; longer or odd ones count as `other`.
const MAX_REASON_LENGTH: usize = 32;
/// Reject reasons per row and delivery stored under their own names.
const NAMED_REASONS: usize = 4;
/// Destination ports kept per row as examples.
pub const PORT_EXAMPLES: usize = 10;
/// Destination addresses kept per row as examples.
pub const HOST_EXAMPLES: usize = 5;
/// Row updates per stored chunk. A chunk and its ledger item are one DynamoDB transaction,
/// which takes at most 100 actions. Deliveries already partly applied are re-chunked the
/// same way on retry only while this stays the same, so it must never change.
pub const ROWS_PER_CHUNK: usize = 99;

/// What one delivery adds to the counters of one (source, window).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterUpdate {
    pub source: IpAddr,
    pub window_start: u64,
    pub window_seconds: u64,
    /// Which of the window's index partitions the row lives in (see [`shard_of`]).
    pub shard: u8,
    pub rejects: u64,
    pub packets: u64,
    pub bytes: u64,
    pub first_seen: u64,
    pub last_seen: u64,
    /// The distinct-port sketch's elements (see [`crate::sketch`]).
    pub port_sketch: Vec<u16>,
    /// The distinct-destination sketch's elements, over address fingerprints.
    pub host_sketch: Vec<u16>,
    /// The smallest destination ports, at most [`PORT_EXAMPLES`]: examples for alerts.
    pub sample_ports: Vec<u16>,
    /// The smallest destination-address fingerprints, at most [`HOST_EXAMPLES`].
    pub sample_hosts: Vec<u64>,
    /// REJECTs per IANA protocol number.
    pub protocols: Vec<(u8, u64)>,
    /// REJECTs per reject reason, names limited to `[A-Za-z0-9_-]{1,32}` (else `other`).
    pub reject_reasons: Vec<(String, u64)>,
    /// Up to three interfaces that logged the REJECTs.
    pub interfaces: Vec<String>,
}

/// NODATA/SKIPDATA reports of one interface in one window, from one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GapUpdate {
    pub interface: String,
    pub window_start: u64,
    /// Which of the window's gap partitions the row lives in (see [`gap_shard_of`]).
    pub shard: u8,
    pub nodata: u64,
    pub skipdata: u64,
}

/// Everything one delivery adds to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterBatch {
    pub id: BatchId,
    /// One per (source, window), ordered by source then window.
    pub updates: Vec<CounterUpdate>,
    /// One per (interface, window) with NODATA or SKIPDATA records.
    pub gaps: Vec<GapUpdate>,
}

impl CounterBatch {
    /// The updates of a tally, in a stable order, with rows spread over `shards` index
    /// partitions per window.
    pub fn from_tally(id: BatchId, tally: &RejectTally, shards: u8) -> Self {
        let window_seconds = tally.options().window_seconds;
        let mut updates: Vec<CounterUpdate> = tally
            .aggregates()
            .map(|aggregate| counter_update(&aggregate, window_seconds, shards))
            .collect();
        updates.sort_by_key(|update| (update.source, update.window_start));
        let gaps = tally
            .capture_gaps()
            .into_iter()
            .map(|(interface, window_start, gaps)| GapUpdate {
                interface: interface.to_owned(),
                window_start,
                shard: gap_shard_of(interface, shards),
                nodata: gaps.nodata,
                skipdata: gaps.skipdata,
            })
            .collect();
        CounterBatch { id, updates, gaps }
    }

    /// Whether the delivery adds nothing (only ACCEPTs, or a control message).
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.gaps.is_empty()
    }

    /// The counter rows whose window had settled at `now` (see
    /// [`crate::settle::is_settled`]): their count, and their windows, oldest first.
    /// (Capture-gap rows only qualify counts, so they are left out.)
    pub fn late_rows(&self, settle_seconds: u64, now: u64) -> LateRows {
        let mut late = LateRows::default();
        for update in &self.updates {
            if is_settled(
                update.window_start,
                update.window_seconds,
                settle_seconds,
                now,
            ) {
                late.rows += 1;
                late.windows.push(update.window_start);
            }
        }
        late.windows.sort_unstable();
        late.windows.dedup();
        late
    }

    /// The rows in stored chunks of [`ROWS_PER_CHUNK`]: counters first, then gaps, in the
    /// batch's stable order, so every delivery of the same input chunks alike.
    pub fn chunks(&self) -> Vec<BatchChunk<'_>> {
        let rows: Vec<RowUpdate<'_>> = self
            .updates
            .iter()
            .map(RowUpdate::Counter)
            .chain(self.gaps.iter().map(RowUpdate::Gap))
            .collect();
        rows.chunks(ROWS_PER_CHUNK)
            .enumerate()
            .map(|(index, rows)| BatchChunk {
                batch: &self.id,
                index,
                rows: rows.to_vec(),
            })
            .collect()
    }
}

/// Counter rows of a batch that arrived after their window settled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LateRows {
    pub rows: u64,
    /// The windows they belong to, oldest first.
    pub windows: Vec<u64>,
}

/// One row a chunk changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowUpdate<'a> {
    Counter(&'a CounterUpdate),
    Gap(&'a GapUpdate),
}

/// Up to [`ROWS_PER_CHUNK`] rows of a batch, applied all together or not at all, at most
/// once: the unit of exactly-once counting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchChunk<'a> {
    pub batch: &'a BatchId,
    /// The chunk's place in the batch, from 0.
    pub index: usize,
    pub rows: Vec<RowUpdate<'a>>,
}

fn counter_update(
    aggregate: &SourceAggregate<'_>,
    window_seconds: u64,
    shards: u8,
) -> CounterUpdate {
    let summary = aggregate.summary();
    // The most frequent few reasons keep their names; the rest count as `other`, so a
    // row never gains more than a few attributes from log text.
    let mut named = summary.reject_reasons;
    named.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut reasons: Vec<(String, u64)> = Vec::new();
    for (rank, (reason, count)) in named.into_iter().enumerate() {
        let name = if rank < NAMED_REASONS && is_safe_reason(reason) {
            reason
        } else {
            "other"
        };
        match reasons.iter_mut().find(|(known, _)| known == name) {
            Some((_, total)) => *total += count,
            None => reasons.push((name.to_owned(), count)),
        }
    }
    CounterUpdate {
        source: summary.key.source,
        window_start: summary.key.window_start,
        window_seconds,
        shard: shard_of(summary.key.source, shards),
        rejects: summary.rejects,
        packets: summary.packets,
        bytes: summary.bytes,
        first_seen: summary.first_seen,
        last_seen: summary.last_seen,
        port_sketch: aggregate.dst_port_sketch().elements(),
        host_sketch: aggregate.dst_host_sketch().elements(),
        sample_ports: {
            let mut ports = aggregate.dst_ports();
            ports.truncate(PORT_EXAMPLES);
            ports
        },
        sample_hosts: aggregate.dst_host_examples(HOST_EXAMPLES),
        protocols: summary.protocols.to_vec(),
        reject_reasons: reasons,
        interfaces: summary
            .interfaces
            .iter()
            .map(|&name| name.to_owned())
            .collect(),
    }
}

/// Reject reasons come from log lines; only plain short names become attribute names.
fn is_safe_reason(reason: &str) -> bool {
    !reason.is_empty()
        && reason.len() <= MAX_REASON_LENGTH
        && reason
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The index partition of a source: a stable hash of its address, modulo `shards`.
///
/// Every invocation writes rows of the current window; spreading them over `shards`
/// partitions keeps one window from being capped by a single partition's write rate.
pub fn shard_of(source: IpAddr, shards: u8) -> u8 {
    (stable_hash(address_fingerprint(source)) % u64::from(shards.max(1))) as u8
}

/// The gap partition of an interface: a stable hash of its id, modulo `shards`, so that
/// the NODATA reports of thousands of interfaces do not all land on one partition.
pub fn gap_shard_of(interface: &str, shards: u8) -> u8 {
    let hash = interface
        .bytes()
        .fold(0u64, |hash, byte| stable_hash(hash ^ u64::from(byte)));
    (hash % u64::from(shards.max(1))) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow_log::{FlowFormat, RecordParser};
    use crate::tally::TallyOptions;

    fn tally(lines: &[&str]) -> RejectTally {
        let format = FlowFormat::from_log_format(
            "${interface-id} ${srcaddr} ${dstaddr} ${dstport} ${protocol} ${start} ${action} ${log-status} ${reject-reason}",
        )
        .unwrap();
        let mut parser = RecordParser::new(format);
        let mut tally = RejectTally::new(TallyOptions::default());
        for line in lines {
            tally.add(&parser.parse(line).unwrap());
        }
        tally
    }

    #[test]
    fn a_row_names_at_most_a_few_reject_reasons_and_counts_the_rest_as_other() {
        let lines: Vec<String> = [
            "BPA", "BPA", "BPA", "A1", "A1", "B2", "C3", "D4", "E5", "x.y",
        ]
        .iter()
        .map(|reason| format!("eni-1 10.0.0.9 10.0.1.1 22 6 1700000000 REJECT OK {reason}"))
        .collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let id = BatchId::for_s3_object("bucket", "key", None, Some("etag"));
        let batch = CounterBatch::from_tally(id, &tally(&lines), 8);
        let mut reasons = batch.updates[0].reject_reasons.clone();
        reasons.sort();
        assert_eq!(
            reasons,
            vec![
                ("A1".to_owned(), 2),
                ("B2".to_owned(), 1),
                ("BPA".to_owned(), 3),
                ("C3".to_owned(), 1),
                ("other".to_owned(), 3),
            ]
        );
    }

    #[test]
    fn an_ipv4_source_and_its_ipv4_mapped_form_share_one_row() {
        let tally = tally(&[
            "eni-1 198.51.100.7 10.0.1.1 22 6 1700000000 REJECT OK -",
            "eni-1 ::ffff:198.51.100.7 ::ffff:10.0.1.1 23 6 1700000001 REJECT OK -",
        ]);
        let id = BatchId::for_s3_object("bucket", "key", None, Some("etag"));
        let batch = CounterBatch::from_tally(id, &tally, 8);
        assert_eq!(batch.updates.len(), 1);
        let row = &batch.updates[0];
        assert_eq!(row.source.to_string(), "198.51.100.7");
        assert_eq!((row.rejects, row.sample_ports.clone()), (2, vec![22, 23]));
    }

    #[test]
    fn rows_of_settled_windows_are_late() {
        let tally = tally(&[
            "eni-1 10.0.0.9 10.0.1.1 22 6 1700000000 REJECT OK -",
            "eni-1 10.0.0.9 10.0.1.1 22 6 1700000400 REJECT OK -",
            "eni-1 10.0.0.2 10.0.1.1 22 6 1700000000 REJECT OK -",
        ]);
        let id = BatchId::for_s3_object("bucket", "key", None, Some("etag"));
        let batch = CounterBatch::from_tally(id, &tally, 8);
        // Window 1_699_999_800 ends at 1_700_000_100 and settles 600 s later.
        assert_eq!(batch.late_rows(600, 1_700_000_699), LateRows::default());
        assert_eq!(
            batch.late_rows(600, 1_700_000_700),
            LateRows {
                rows: 2,
                windows: vec![1_699_999_800]
            }
        );
    }

    #[test]
    fn one_update_per_source_and_window_in_a_stable_order() {
        let tally = tally(&[
            "eni-1 10.0.0.9 10.0.1.1 22 6 1700000000 REJECT OK -",
            "eni-1 10.0.0.2 10.0.1.1 22 6 1700000000 REJECT OK -",
            "eni-2 10.0.0.9 10.0.1.2 23 6 1700000001 REJECT OK BPA",
            "eni-1 10.0.0.9 10.0.1.1 22 6 1700000400 REJECT OK -",
            "eni-3 - - - - 1700000000 - SKIPDATA -",
        ]);
        let id = BatchId::for_s3_object("bucket", "key", None, Some("etag"));
        let batch = CounterBatch::from_tally(id, &tally, 8);
        let keys: Vec<(String, u64)> = batch
            .updates
            .iter()
            .map(|u| (u.source.to_string(), u.window_start))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("10.0.0.2".into(), 1_699_999_800),
                ("10.0.0.9".into(), 1_699_999_800),
                ("10.0.0.9".into(), 1_700_000_400)
            ]
        );
        let first = &batch.updates[1];
        assert_eq!(
            (first.rejects, first.sample_ports.clone()),
            (2, vec![22, 23])
        );
        assert_eq!(
            DistinctSketch::from_elements(first.port_sketch.iter().map(|&e| u64::from(e)))
                .estimate(),
            2
        );
        assert_eq!(first.interfaces, vec!["eni-1", "eni-2"]);
        assert_eq!(first.reject_reasons, vec![("BPA".to_owned(), 1)]);
        assert_eq!(first.sample_hosts.len(), 2);
        assert_eq!(first.host_sketch.len(), 2);
        assert_eq!(
            batch.gaps,
            vec![GapUpdate {
                interface: "eni-3".into(),
                window_start: 1_699_999_800,
                shard: gap_shard_of("eni-3", 8),
                nodata: 0,
                skipdata: 1
            }]
        );
    }

    #[test]
    fn odd_reject_reasons_are_counted_as_other() {
        let tally = tally(&[
            "eni-1 10.0.0.9 10.0.1.1 22 6 1700000000 REJECT OK ${jndi:ldap://x}",
            "eni-1 10.0.0.9 10.0.1.1 22 6 1700000000 REJECT OK a\"b",
        ]);
        let batch =
            CounterBatch::from_tally(BatchId::for_s3_object("b", "k", None, None), &tally, 1);
        assert_eq!(
            batch.updates[0].reject_reasons,
            vec![("other".to_owned(), 2)]
        );
    }

    #[test]
    fn batch_ids_distinguish_versions_and_batches() {
        let a = BatchId::for_s3_object("bucket", "key", None, Some("\"abc\""));
        assert_eq!(
            a,
            BatchId::for_s3_object("bucket", "key", None, Some("\"abc\""))
        );
        assert_ne!(
            a,
            BatchId::for_s3_object("bucket", "key", None, Some("\"abd\""))
        );
        assert_ne!(
            a,
            BatchId::for_s3_object("bucket", "key", Some("v2"), Some("\"abc\""))
        );
        assert_ne!(
            BatchId::for_s3_object("ab", "c", None, None),
            BatchId::for_s3_object("a", "bc", None, None)
        );
        let events = ["1", "2", "3"];
        let batch = BatchId::for_cloudwatch_batch("/vpc/flow", "eni-1-all", events);
        assert_eq!(
            batch,
            BatchId::for_cloudwatch_batch("/vpc/flow", "eni-1-all", events)
        );
        assert_ne!(
            batch,
            BatchId::for_cloudwatch_batch("/vpc/flow", "eni-1-all", ["1", "2"])
        );
        assert_eq!(batch.as_str().len(), 32);
        assert_eq!(BatchId::parse(batch.as_str()), Some(batch));
    }

    #[test]
    fn shards_are_stable_and_spread() {
        let shard = shard_of("203.0.113.9".parse().unwrap(), 16);
        assert_eq!(shard, shard_of("203.0.113.9".parse().unwrap(), 16));
        let used: std::collections::HashSet<u8> = (0..1000u32)
            .map(|i| shard_of(IpAddr::V4(i.into()), 16))
            .collect();
        assert_eq!(used.len(), 16);
        assert_eq!(shard_of("10.0.0.1".parse().unwrap(), 0), 0);
    }
}

/// A (source, window) row as stored: the sum of every delivery's [`CounterUpdate`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredCounter {
    pub source: Option<IpAddr>,
    pub window_start: u64,
    pub window_seconds: u64,
    pub rejects: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Union of the deliveries' distinct-port sketch elements.
    pub port_sketch: Vec<u16>,
    /// Union of the deliveries' distinct-destination sketch elements.
    pub host_sketch: Vec<u16>,
    /// The first delivery's example ports.
    pub sample_ports: Vec<u16>,
    /// The first delivery's example destination fingerprints.
    pub sample_hosts: Vec<u64>,
    /// Each delivery's earliest `start`.
    pub first_seen: Vec<u64>,
    /// Each delivery's latest `end`.
    pub last_seen: Vec<u64>,
    /// The first delivery's example interfaces.
    pub interfaces: Vec<String>,
    pub protocols: Vec<(u8, u64)>,
    pub reject_reasons: Vec<(String, u64)>,
}

/// Distinct counts below this are shown as exact: the sketch gets them right in more
/// than 97% of cases (and one under otherwise); larger ones are shown as estimates.
pub const EXACT_DISTINCT_BELOW: u64 = 8;

impl StoredCounter {
    /// Adds one delivery's update the way the store does: sums for counters, unions for
    /// sketches and times, and the examples of whichever delivery came first.
    pub fn merge(&mut self, update: &CounterUpdate) {
        self.source = Some(update.source);
        self.window_start = update.window_start;
        self.window_seconds = update.window_seconds;
        self.rejects += update.rejects;
        self.packets += update.packets;
        self.bytes += update.bytes;
        union_into(&mut self.port_sketch, update.port_sketch.iter().copied());
        union_into(&mut self.host_sketch, update.host_sketch.iter().copied());
        keep_first(&mut self.sample_ports, &update.sample_ports);
        keep_first(&mut self.sample_hosts, &update.sample_hosts);
        keep_first(&mut self.interfaces, &update.interfaces);
        union_into(&mut self.first_seen, [update.first_seen]);
        union_into(&mut self.last_seen, [update.last_seen]);
        add_counts(&mut self.protocols, update.protocols.iter().copied());
        add_counts(
            &mut self.reject_reasons,
            update.reject_reasons.iter().cloned(),
        );
    }

    /// The row with the destination fields a store holds for exactly these ports and
    /// host fingerprints (sketches and examples): for fixtures and tests.
    pub fn with_destinations(
        mut self,
        ports: impl IntoIterator<Item = u16>,
        hosts: impl IntoIterator<Item = u64>,
    ) -> Self {
        let destinations = Destinations::of(ports, hosts);
        self.port_sketch = destinations.port_sketch;
        self.host_sketch = destinations.host_sketch;
        self.sample_ports = destinations.sample_ports;
        self.sample_hosts = destinations.sample_hosts;
        self
    }

    /// Distinct destination ports (a sketch estimate), and whether it is below
    /// [`EXACT_DISTINCT_BELOW`].
    pub fn distinct_dst_ports(&self) -> (u64, bool) {
        estimate(&self.port_sketch)
    }

    /// Distinct destination addresses (a sketch estimate), and whether it is below
    /// [`EXACT_DISTINCT_BELOW`].
    pub fn distinct_dst_hosts(&self) -> (u64, bool) {
        estimate(&self.host_sketch)
    }

    /// The earliest `start` of any delivery.
    pub fn first_seen(&self) -> Option<u64> {
        self.first_seen.iter().min().copied()
    }

    /// The latest `end` of any delivery.
    pub fn last_seen(&self) -> Option<u64> {
        self.last_seen.iter().max().copied()
    }
}

impl CounterUpdate {
    /// The update with the destination fields of exactly these ports and host
    /// fingerprints (sketches and examples): for fixtures and tests.
    pub fn with_destinations(
        mut self,
        ports: impl IntoIterator<Item = u16>,
        hosts: impl IntoIterator<Item = u64>,
    ) -> Self {
        let destinations = Destinations::of(ports, hosts);
        self.port_sketch = destinations.port_sketch;
        self.host_sketch = destinations.host_sketch;
        self.sample_ports = destinations.sample_ports;
        self.sample_hosts = destinations.sample_hosts;
        self
    }
}

/// The stored destination fields of a set of ports and host fingerprints.
struct Destinations {
    port_sketch: Vec<u16>,
    host_sketch: Vec<u16>,
    sample_ports: Vec<u16>,
    sample_hosts: Vec<u64>,
}

impl Destinations {
    fn of(ports: impl IntoIterator<Item = u16>, hosts: impl IntoIterator<Item = u64>) -> Self {
        let mut ports: Vec<u16> = ports.into_iter().collect();
        let mut hosts: Vec<u64> = hosts.into_iter().collect();
        ports.sort_unstable();
        ports.dedup();
        hosts.sort_unstable();
        hosts.dedup();
        let port_sketch =
            DistinctSketch::from_values(ports.iter().map(|&port| u64::from(port))).elements();
        let host_sketch = DistinctSketch::from_values(hosts.iter().copied()).elements();
        ports.truncate(PORT_EXAMPLES);
        hosts.truncate(HOST_EXAMPLES);
        Destinations {
            port_sketch,
            host_sketch,
            sample_ports: ports,
            sample_hosts: hosts,
        }
    }
}

fn estimate(elements: &[u16]) -> (u64, bool) {
    let count = DistinctSketch::from_elements(elements.iter().map(|&e| u64::from(e))).estimate();
    (count, count < EXACT_DISTINCT_BELOW)
}

/// `if_not_exists`: the first delivery's examples stay.
fn keep_first<T: Clone>(kept: &mut Vec<T>, offered: &[T]) {
    if kept.is_empty() {
        kept.extend_from_slice(offered);
    }
}

fn union_into<T: Ord>(set: &mut Vec<T>, members: impl IntoIterator<Item = T>) {
    set.extend(members);
    set.sort();
    set.dedup();
}

fn add_counts<K: PartialEq>(counts: &mut Vec<(K, u64)>, more: impl IntoIterator<Item = (K, u64)>) {
    for (key, count) in more {
        match counts.iter_mut().find(|(known, _)| *known == key) {
            Some((_, total)) => *total += count,
            None => counts.push((key, count)),
        }
    }
}
