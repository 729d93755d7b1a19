//! The table's key schema and attribute names, in one place: the partition and sort keys of
//! every kind of item, the `by-window` index, and the attribute names the other modules read
//! and write.

use std::net::IpAddr;

use rejectwatch_core::counters::{BatchId, RowUpdate};

pub const PK: &str = "pk";
pub const SK: &str = "sk";
/// Partition key of the `by-window` index: `WIN#<window start>#<shard>`.
pub const GSI1_PK: &str = "gsi1pk";
/// The `by-window` index, sorted by `rejects`.
pub const BY_WINDOW_INDEX: &str = "by-window";
pub const SOURCE: &str = "source";
pub const WINDOW_START: &str = "window_start";
pub const WINDOW_SECONDS: &str = "window_seconds";
pub const REJECTS: &str = "rejects";
pub const PACKETS: &str = "packets";
pub const BYTES: &str = "bytes";
/// Number set: the distinct-port sketch's elements (see [`rejectwatch_core::sketch`]), a union.
pub const PORT_SKETCH: &str = "port_sketch";
/// Number set: the distinct-destination sketch's elements, a union.
pub const HOST_SKETCH: &str = "host_sketch";
/// Number set: the deliveries' exact destination ports, a union kept to at most
/// [`EXACT_VALUES`] members by a condition on its size, then [`OVER_MARKER`] (see
/// [`ExactValues`]).
pub const PORT_VALUES: &str = "port_values";
/// Number set: the deliveries' exact destination fingerprints, likewise.
pub const HOST_VALUES: &str = "host_values";
/// The member of a value set that says the row has more values than it keeps: no port or
/// fingerprint is negative.
pub const OVER_MARKER: &str = "-1";
/// Number set: example destination ports, from the first delivery.
pub const SAMPLE_PORTS: &str = "sample_ports";
/// Number set: example destination-address fingerprints, from the first delivery.
pub const SAMPLE_HOSTS: &str = "sample_hosts";
/// String set: example interfaces, from the first delivery.
pub const INTERFACES: &str = "interfaces";
/// Number set: each delivery's earliest `start`; the smallest is the first seen.
pub const FIRST_SEEN: &str = "first_seen";
/// Number set: each delivery's latest `end`; the largest is the last seen.
pub const LAST_SEEN: &str = "last_seen";
/// Counter attributes `proto_<number>`: REJECTs per IANA protocol.
pub const PROTOCOL_PREFIX: &str = "proto_";
/// Counter attributes `reason_<name>`: REJECTs per reject reason.
pub const REASON_PREFIX: &str = "reason_";
/// Ledger item: the number of rows its chunk applied; manifest: of the whole delivery.
pub const ROWS: &str = "rows";
/// Manifest: the delivery was fully applied, so later deliveries skip it unread.
pub const DONE: &str = "done";
/// Ledger item: a digest of the keys of the rows its chunk applied, so that a redelivery
/// that would chunk differently (the configuration changed in between) is caught.
pub const ROWS_DIGEST: &str = "rows_digest";
pub const INTERFACE: &str = "interface";
pub const NODATA: &str = "nodata";
pub const SKIPDATA: &str = "skipdata";
/// Unix seconds after which DynamoDB's TTL deletes the item.
pub const EXPIRES_AT: &str = "expires_at";
/// Alert state: the level (1-3) last claimed.
pub const LEVEL: &str = "level";
/// Alert state: the evaluation time of the claim (cooldowns count from it).
pub const CLAIMED_AT: &str = "claimed_at";
/// Alert state: wall-clock time after which an unpublished claim is abandoned.
pub const HELD_UNTIL: &str = "held_until";
/// Alert state: whether the claimed alert was published.
pub const PUBLISHED: &str = "published";
/// Alert state: the run holding the claim.
pub const CLAIM_ID: &str = "claim_id";
/// Alert state: `level`, `claimed_at` and `published` as they were before the current
/// claim, put back if its publish fails.
pub const PREVIOUS_LEVEL: &str = "previous_level";
pub const PREVIOUS_CLAIMED_AT: &str = "previous_claimed_at";
pub const PREVIOUS_PUBLISHED: &str = "previous_published";
pub const PREVIOUS_HELD_UNTIL: &str = "previous_held_until";
/// Digest record (`pk` `ALERT#RUN#<run id>`, `sk` `DIGEST`): sources in the digest.
pub const SOURCE_COUNT: &str = "source_count";
/// Digest record: when the digest was published (wall clock).
pub const PUBLISHED_AT: &str = "published_at";
/// The evaluator's progress item (`pk` [`PROGRESS_KEY`], `sk` `PROGRESS`): the latest
/// window fully evaluated, in `window_start`.
pub const PROGRESS_KEY: &str = "ALERT#evaluator";

/// Sort key of a delivery's manifest (partition `BATCH#<batch id>`).
pub(crate) const MANIFEST_SK: &str = "MANIFEST";
/// Sort key of a source's alert state (partition [`alert_key`]).
pub(crate) const STATE_SK: &str = "STATE";
/// Sort key of a run's digest record (partition `ALERT#RUN#<run id>`).
pub(crate) const DIGEST_SK: &str = "DIGEST";
/// Sort key of the evaluator's progress item (partition [`PROGRESS_KEY`]).
pub(crate) const PROGRESS_SK: &str = "PROGRESS";

/// How every counter item's partition key begins.
pub(crate) const SOURCE_PREFIX: &str = "SRC#";
/// How a counter item's sort key and its `by-window` partition begin.
const WINDOW_PREFIX: &str = "WIN#";

/// The counter item's partition key for a source.
pub fn source_key(source: IpAddr) -> String {
    format!("{SOURCE_PREFIX}{source}")
}

/// The counter item's sort key for a window (zero-padded so keys sort by time).
pub fn window_key(window_start: u64) -> String {
    format!("{WINDOW_PREFIX}{window_start:010}")
}

/// The `by-window` index partition of a window and shard.
pub fn window_shard_key(window_start: u64, shard: u8) -> String {
    format!("{WINDOW_PREFIX}{window_start:010}#{shard:02}")
}

/// The AWS CLI command that lists a window's rows, by REJECTs, from the `by-window`
/// index, for the alert's text: one query per window and shard (`00` to `last_shard`).
pub fn window_query_command(table: &str, last_shard: u8) -> String {
    format!(
        "aws dynamodb query --table-name {table} --index-name {BY_WINDOW_INDEX} \
         --key-condition-expression '{GSI1_PK} = :w' \
         --expression-attribute-values '{{\":w\":{{\"S\":\"{WINDOW_PREFIX}<window>#<shard>\"}}}}' \
         for each window above and each shard 00..{last_shard:02}"
    )
}

/// The partition holding one shard of a window's capture gaps.
pub fn gap_key(window_start: u64, shard: u8) -> String {
    format!("GAP#{window_start:010}#{shard:02}")
}

/// The partition of a source's alert state (sort key `STATE`).
pub fn alert_key(source: IpAddr) -> String {
    format!("ALERT#{source}")
}

/// The partition of a run's digest record (sort key `DIGEST`); under `ALERT#` with the
/// alert state, which only the evaluator writes.
pub(crate) fn digest_key(run_id: &str) -> String {
    format!("ALERT#RUN#{run_id}")
}

pub(crate) fn batch_key(batch: &BatchId) -> String {
    format!("BATCH#{batch}")
}

pub(crate) fn chunk_key(index: usize) -> String {
    format!("CHUNK#{index:05}")
}

/// The sort key of an interface's capture-gap item (partition [`gap_key`]).
pub(crate) fn interface_key(interface: &str) -> String {
    format!("ENI#{interface}")
}

/// The `pk` and `sk` of the item a row updates.
pub(crate) fn row_key(row: &RowUpdate<'_>) -> (String, String) {
    match row {
        RowUpdate::Counter(update) => (source_key(update.source), window_key(update.window_start)),
        RowUpdate::Gap(gap) => (
            gap_key(gap.window_start, gap.shard),
            interface_key(&gap.interface),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_zero_padded_and_prefixed() {
        let source = "198.51.100.7".parse().unwrap();
        assert_eq!(source_key(source), "SRC#198.51.100.7");
        assert_eq!(window_key(300), "WIN#0000000300");
        assert_eq!(window_shard_key(300, 7), "WIN#0000000300#07");
        assert_eq!(gap_key(300, 7), "GAP#0000000300#07");
        assert_eq!(interface_key("eni-1"), "ENI#eni-1");
        assert_eq!(alert_key(source), "ALERT#198.51.100.7");
        assert_eq!(digest_key("run-1"), "ALERT#RUN#run-1");
        assert_eq!(chunk_key(7), "CHUNK#00007");
    }

    #[test]
    fn the_window_query_command_names_the_index_and_its_partitions() {
        assert_eq!(
            window_query_command("counters", 15),
            "aws dynamodb query --table-name counters --index-name by-window \
             --key-condition-expression 'gsi1pk = :w' \
             --expression-attribute-values '{\":w\":{\"S\":\"WIN#<window>#<shard>\"}}' \
             for each window above and each shard 00..15"
        );
    }
}
