//! The DynamoDB counter store: the only file that knows the table's key formats and
//! attribute names, and how exactly-once application is expressed in DynamoDB requests.
//!
//! One table holds everything (see the README's table design):
//!
//! | item | `pk` | `sk` | notes |
//! |---|---|---|---|
//! | counters | `SRC#<address>` | `WIN#<window start, 10 digits>` | `gsi1pk` = `WIN#<start>#<shard>`, GSI sort key `rejects` |
//! | capture gaps | `GAP#<window start>#<shard>` | `ENI#<interface>` | NODATA/SKIPDATA counts |
//! | manifest | `BATCH#<batch id>` | `MANIFEST` | digest of a delivery's rows; `done` once fully applied |
//! | ledger | `BATCH#<batch id>` | `CHUNK#<index, 5 digits>` | a chunk of a delivery applied |
//! | alert state | `ALERT#<address>` | `STATE` | the evaluator's claims |
//! | digest record | `ALERT#RUN#<run id>` | `DIGEST` | a run published its digest |
//! | evaluator progress | `ALERT#evaluator` | `PROGRESS` | the latest settled window fully evaluated |
//!
//! A delivery's rows are applied in chunks of
//! [`ROWS_PER_CHUNK`](rejectwatch_core::counters::ROWS_PER_CHUNK): one `TransactWriteItems` holds the
//! chunk's counter and gap updates and a put of the chunk's ledger item, on the condition
//! that the ledger item does not exist yet. The chunk is then applied entirely or
//! not at all, and at most once, however often and however concurrently the delivery is
//! processed; counter items carry no per-delivery state, so they stay small.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use futures_util::{StreamExt, TryStreamExt, stream};
use sha2::{Digest, Sha256};

use rejectwatch_core::alert::{AlertState, ClaimDecision, cooldown_cutoff, decide_claim};
use rejectwatch_core::counters::{
    BatchChunk, BatchId, CounterBatch, CounterUpdate, EXACT_VALUES, ExactValues, GapUpdate,
    RowUpdate, StoredCounter,
};
use rejectwatch_core::ports::{
    AlertStateStore, ApplyReport, Claim, ClaimOutcome, CounterReader, CounterStore, DigestLog,
    EvaluationProgress, StoreError,
};
use rejectwatch_core::sketch::stable_hash;

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
/// How long after being written a ledger item is kept at least: SQS's longest retention
/// (14 days) plus a day, so any redelivery still finds it.
const LEDGER_MIN_SECONDS: u64 = 15 * 86_400;
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

/// Attempts of a chunk whose transaction collided with another one on the same rows (two
/// deliveries adding to a busy source at once); the waits between them double from
/// [`CONFLICT_BACKOFF`].
const CONFLICT_ATTEMPTS: u32 = 10;
const CONFLICT_BACKOFF: Duration = Duration::from_millis(25);
/// Attempts of a chunk whose value sets had too little room: each narrows the offers of
/// the rows that failed, so two do unless other deliveries fill the same sets meanwhile.
const VALUE_ATTEMPTS: u32 = 10;

/// The counter item's partition key for a source.
pub fn source_key(source: IpAddr) -> String {
    format!("SRC#{source}")
}

/// The counter item's sort key for a window (zero-padded so keys sort by time).
pub fn window_key(window_start: u64) -> String {
    format!("WIN#{window_start:010}")
}

/// The `by-window` index partition of a window and shard.
pub fn window_shard_key(window_start: u64, shard: u8) -> String {
    format!("WIN#{window_start:010}#{shard:02}")
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
fn digest_key(run_id: &str) -> String {
    format!("ALERT#RUN#{run_id}")
}

fn batch_key(batch: &BatchId) -> String {
    format!("BATCH#{batch}")
}

fn chunk_key(index: usize) -> String {
    format!("CHUNK#{index:05}")
}

/// Counters in a DynamoDB table.
#[derive(Clone, Debug)]
pub struct DynamoCounterStore {
    client: Client,
    table: String,
    /// Seconds an item is kept after its window ends.
    retention_seconds: u64,
    /// Chunk transactions in flight at once.
    concurrency: usize,
    /// Partitions per window in the `by-window` index and of the capture gaps.
    index_shards: u8,
    /// What this process learnt of value sets from failed conditions (see [`KnownSets`]).
    known_sets: KnownSets,
}

type SetKey = (String, String, &'static str);

/// Value sets (by item `pk`, `sk` and attribute) as failed conditions returned them. Sets
/// only grow, so a delivery may offer only what a set lacked then, or the marker to a set
/// that was over, and a busy row does not cancel a transaction on every delivery. Kept for
/// the warm container's life; forgotten when it grows large.
#[derive(Clone, Debug, Default)]
struct KnownSets(Arc<Mutex<HashMap<SetKey, ExactValues<u64>>>>);

/// Sets remembered at most; then the memory starts over.
const KNOWN_SETS: usize = 20_000;

impl KnownSets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SetKey, ExactValues<u64>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Narrows a row's offers by what is known of its sets.
    fn narrow(&self, row: &RowUpdate<'_>, offer: &mut ValueOffer) {
        if !matches!(row, RowUpdate::Counter(_)) {
            return;
        }
        let (pk, sk) = row_key(row);
        let known = self.lock();
        for (name, values) in [
            (PORT_VALUES, &mut offer.ports),
            (HOST_VALUES, &mut offer.hosts),
        ] {
            if let Some(stored) = known.get(&(pk.clone(), sk.clone(), name)) {
                narrow_set(values, stored);
            }
        }
    }

    /// Remembers a row's sets as a failed condition returned its item.
    fn learn(&self, row: &RowUpdate<'_>, item: &HashMap<String, AttributeValue>) {
        let (pk, sk) = row_key(row);
        let mut known = self.lock();
        if known.len() >= KNOWN_SETS {
            known.clear();
        }
        for name in [PORT_VALUES, HOST_VALUES] {
            known.insert(
                (pk.clone(), sk.clone(), name),
                exact_values_of(item, name, Some),
            );
        }
    }
}

/// How a cancelled chunk transaction is handled.
enum Cancelled {
    /// The ledger item's condition failed: an earlier delivery applied the chunk.
    AlreadyApplied,
    /// The ledger item exists but records other rows: the delivery chunks differently
    /// now, and applying it would count some rows twice and others never.
    OtherRows,
    /// A conflicting transaction or throttling: the same request may succeed later.
    Retry,
    /// Value sets of these rows (indices in the chunk) had no room for the delivery's
    /// values; the item as it was tells which, when DynamoDB returned it.
    ValuesFull(Vec<(usize, Option<HashMap<String, AttributeValue>>)>),
    /// Anything else (a validation error): retrying cannot help.
    Fail,
}

impl DynamoCounterStore {
    pub fn new(
        client: Client,
        table: impl Into<String>,
        retention_seconds: u64,
        concurrency: usize,
    ) -> Self {
        DynamoCounterStore {
            client,
            table: table.into(),
            retention_seconds,
            concurrency: concurrency.max(1),
            index_shards: 16,
            known_sets: KnownSets::default(),
        }
    }

    /// Sets the partitions per window the readers query (default 16); it must equal the
    /// writers' `INDEX_SHARDS`.
    pub fn with_index_shards(mut self, shards: u8) -> Self {
        self.index_shards = shards.max(1);
        self
    }

    fn error<E>(&self, action: String, error: SdkError<E>) -> StoreError
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        let retryable = is_retryable(&error);
        StoreError::Service {
            action,
            table: self.table.clone(),
            retryable,
            source: Box::new(error),
        }
    }

    fn build_error(&self, action: String, error: BuildError) -> StoreError {
        StoreError::Service {
            action,
            table: self.table.clone(),
            retryable: false,
            source: Box::new(error),
        }
    }

    /// The update of one counter row, with the exact values `offer` adds (see
    /// [`ValueOffer`]).
    fn counter_update(
        &self,
        update: &CounterUpdate,
        offer: &ValueOffer,
    ) -> Result<Update, BuildError> {
        let mut expression = UpdateExpression::default();
        expression.set(SOURCE, AttributeValue::S(update.source.to_string()));
        expression.set(WINDOW_START, number(update.window_start));
        expression.set(WINDOW_SECONDS, number(update.window_seconds));
        expression.set(
            GSI1_PK,
            AttributeValue::S(window_shard_key(update.window_start, update.shard)),
        );
        expression.set(
            EXPIRES_AT,
            number(
                (update.window_start + update.window_seconds)
                    .saturating_add(self.retention_seconds),
            ),
        );
        expression.add(REJECTS, number(update.rejects));
        expression.add(PACKETS, number(update.packets));
        expression.add(BYTES, number(update.bytes));
        expression.add_set(FIRST_SEEN, numbers([update.first_seen]));
        expression.add_set(LAST_SEEN, numbers([update.last_seen]));
        let elements = |elements: &[u16]| numbers(elements.iter().map(|&e| u64::from(e)));
        expression.add_set(PORT_SKETCH, elements(&update.port_sketch));
        expression.add_set(HOST_SKETCH, elements(&update.host_sketch));
        expression.add_exact_values(PORT_VALUES, &offer.ports);
        expression.add_exact_values(HOST_VALUES, &offer.hosts);
        expression.set_if_absent(SAMPLE_PORTS, elements(&update.sample_ports));
        expression.set_if_absent(SAMPLE_HOSTS, numbers(update.sample_hosts.iter().copied()));
        expression.set_if_absent(INTERFACES, strings(update.interfaces.iter().cloned()));
        for (protocol, count) in &update.protocols {
            expression.add(&format!("{PROTOCOL_PREFIX}{protocol}"), number(*count));
        }
        for (reason, count) in &update.reject_reasons {
            expression.add(&format!("{REASON_PREFIX}{reason}"), number(*count));
        }
        let (pk, sk) = row_key(&RowUpdate::Counter(update));
        self.update(
            [(PK, AttributeValue::S(pk)), (SK, AttributeValue::S(sk))],
            expression,
        )
    }

    fn gap_update(&self, gap: &GapUpdate) -> Result<Update, BuildError> {
        let mut expression = UpdateExpression::default();
        expression.set(INTERFACE, AttributeValue::S(gap.interface.clone()));
        expression.set(WINDOW_START, number(gap.window_start));
        expression.set(
            EXPIRES_AT,
            number(gap.window_start.saturating_add(self.retention_seconds)),
        );
        expression.add(NODATA, number(gap.nodata));
        expression.add(SKIPDATA, number(gap.skipdata));
        let (pk, sk) = row_key(&RowUpdate::Gap(gap));
        self.update(
            [(PK, AttributeValue::S(pk)), (SK, AttributeValue::S(sk))],
            expression,
        )
    }

    fn update(
        &self,
        key: [(&str, AttributeValue); 2],
        expression: UpdateExpression,
    ) -> Result<Update, BuildError> {
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(
                key.into_iter()
                    .map(|(name, value)| (name.to_owned(), value))
                    .collect(),
            ))
            .update_expression(expression.render())
            .set_condition_expression(expression.condition())
            .set_return_values_on_condition_check_failure(
                (!expression.conditions.is_empty())
                    .then_some(ReturnValuesOnConditionCheckFailure::AllOld),
            )
            .set_expression_attribute_names(Some(expression.names))
            .set_expression_attribute_values(Some(expression.values))
            .build()
    }

    /// The chunk's ledger item, put only if absent. It lives as long as the rows it
    /// protects (a redelivery after they expired would find nothing to double), and at
    /// least as long as redeliveries go on (see `ledger_expiry`).
    ///
    /// On a failed condition DynamoDB returns the existing item, whose row digest tells an
    /// earlier delivery of these very rows from one that chunked differently.
    fn ledger_put(&self, chunk: &BatchChunk<'_>, rows_digest: &str) -> Result<Put, BuildError> {
        let expires_at = ledger_expiry(self.rows_expire(&chunk.rows));
        Put::builder()
            .table_name(&self.table)
            .item(PK, AttributeValue::S(batch_key(chunk.batch)))
            .item(SK, AttributeValue::S(chunk_key(chunk.index)))
            .item(ROWS, number(chunk.rows.len() as u64))
            .item(ROWS_DIGEST, AttributeValue::S(rows_digest.to_owned()))
            .item(EXPIRES_AT, number(expires_at))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
    }

    fn chunk_items(
        &self,
        chunk: &BatchChunk<'_>,
        offers: &[ValueOffer],
        digest: &str,
    ) -> Result<Vec<TransactWriteItem>, BuildError> {
        let mut items = Vec::with_capacity(chunk.rows.len() + 1);
        for (row, offer) in chunk.rows.iter().zip(offers) {
            let update = match row {
                RowUpdate::Counter(update) => self.counter_update(update, offer)?,
                RowUpdate::Gap(gap) => self.gap_update(gap)?,
            };
            items.push(TransactWriteItem::builder().update(update).build());
        }
        items.push(
            TransactWriteItem::builder()
                .put(self.ledger_put(chunk, digest)?)
                .build(),
        );
        Ok(items)
    }

    /// Applies one chunk and its ledger item in one transaction, at most once.
    async fn apply_chunk(&self, chunk: &BatchChunk<'_>) -> Result<ApplyReport, StoreError> {
        let action = || format!("applying chunk {} of batch {}", chunk.index, chunk.batch);
        let digest = rows_digest(&chunk.rows);
        let mut offers: Vec<ValueOffer> = chunk.rows.iter().map(ValueOffer::of).collect();
        for (row, offer) in chunk.rows.iter().zip(&mut offers) {
            self.known_sets.narrow(row, offer);
        }
        let mut items = self
            .chunk_items(chunk, &offers, &digest)
            .map_err(|error| self.build_error(action(), error))?;

        let rows = chunk.rows.len() as u64;
        let mut report = ApplyReport::default();
        let mut backoff = CONFLICT_BACKOFF;
        let (mut attempt, mut value_attempts) = (0, 0);
        loop {
            attempt += 1;
            report.requests += 1;
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let error = match result {
                Ok(_) => {
                    report.applied = rows;
                    return Ok(report);
                }
                Err(error) => error,
            };
            match cancellation(&error, &digest) {
                Cancelled::AlreadyApplied => {
                    report.already_applied = rows;
                    return Ok(report);
                }
                Cancelled::OtherRows => {
                    return Err(StoreError::Service {
                        action: action(),
                        table: self.table.clone(),
                        retryable: false,
                        source: "an earlier delivery applied this chunk with other rows: \
                                 WINDOW_MINUTES, INDEX_SHARDS or IGNORED_DST_PORTS changed \
                                 since, so it is refused rather than counted twice"
                            .into(),
                    });
                }
                Cancelled::ValuesFull(full) if value_attempts < VALUE_ATTEMPTS => {
                    // Offers shrink to what the sets lack, or to the marker: a set that had
                    // room for the union takes the rest on the next attempt. Not a conflict.
                    attempt -= 1;
                    value_attempts += 1;
                    for (index, item) in full {
                        let (Some(offer), Some(row)) =
                            (offers.get_mut(index), chunk.rows.get(index))
                        else {
                            return Err(self.error(action(), error));
                        };
                        offer.narrow(item.as_ref());
                        if let Some(item) = &item {
                            self.known_sets.learn(row, item);
                        }
                    }
                    items = self
                        .chunk_items(chunk, &offers, &digest)
                        .map_err(|error| self.build_error(action(), error))?;
                }
                Cancelled::ValuesFull(_) => {
                    return Err(StoreError::Service {
                        action: format!("{} ({VALUE_ATTEMPTS} attempts)", action()),
                        table: self.table.clone(),
                        retryable: true,
                        source: Box::new(error),
                    });
                }
                Cancelled::Retry if attempt < CONFLICT_ATTEMPTS => {
                    tokio::time::sleep(backoff + jitter(chunk, attempt, backoff)).await;
                    backoff *= 2;
                }
                Cancelled::Retry => {
                    return Err(StoreError::Service {
                        action: format!("{} ({CONFLICT_ATTEMPTS} attempts)", action()),
                        table: self.table.clone(),
                        retryable: true,
                        source: Box::new(error),
                    });
                }
                Cancelled::Fail => return Err(self.error(action(), error)),
            }
        }
    }
}

/// The exact values one counter row's update adds to its two value sets (ports, hosts):
/// `Some(values)`, on the condition that the set keeps at most [`EXACT_VALUES`] members, or
/// `None`, the [`OVER_MARKER`] without a condition. Gap rows offer nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ValueOffer {
    ports: Option<Vec<u64>>,
    hosts: Option<Vec<u64>>,
}

impl ValueOffer {
    fn of(row: &RowUpdate<'_>) -> ValueOffer {
        match row {
            RowUpdate::Counter(update) => ValueOffer {
                // More than the bound (a hand-built update) is over, as in the fake.
                ports: update
                    .exact_ports
                    .as_ref()
                    .filter(|ports| ports.len() <= EXACT_VALUES)
                    .map(|ports| ports.iter().map(|&port| u64::from(port)).collect()),
                hosts: update
                    .exact_hosts
                    .clone()
                    .filter(|hosts| hosts.len() <= EXACT_VALUES),
            },
            RowUpdate::Gap(_) => ValueOffer {
                ports: Some(Vec::new()),
                hosts: Some(Vec::new()),
            },
        }
    }

    /// After the row's condition failed, given the item as it was: each set is offered only
    /// the values it lacks, or the marker when the union would not fit (or the item is
    /// not known).
    fn narrow(&mut self, item: Option<&HashMap<String, AttributeValue>>) {
        for (name, offer) in [
            (PORT_VALUES, &mut self.ports),
            (HOST_VALUES, &mut self.hosts),
        ] {
            match item {
                Some(item) => narrow_set(offer, &exact_values_of(item, name, Some)),
                None => *offer = None,
            }
        }
    }
}

/// An offer to a set that held `stored`: only the values it lacks, or the marker when the
/// union would pass [`EXACT_VALUES`] or the set was over.
fn narrow_set(offer: &mut Option<Vec<u64>>, stored: &ExactValues<u64>) {
    let Some(values) = offer.as_mut() else {
        return;
    };
    values.retain(|value| stored.values.binary_search(value).is_err());
    if stored.over || stored.values.len() + values.len() > EXACT_VALUES {
        *offer = None;
    }
}

/// Classifies a failed chunk transaction by its cancellation reasons, which come in the
/// order of the request's items: the ledger put is the last.
fn cancellation(error: &SdkError<TransactWriteItemsError>, rows_digest: &str) -> Cancelled {
    let SdkError::ServiceError(service) = error else {
        return Cancelled::Fail;
    };
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = service.err() else {
        return if is_retryable(error) {
            Cancelled::Retry
        } else {
            Cancelled::Fail
        };
    };
    let reasons = cancelled.cancellation_reasons();
    let codes: Vec<&str> = reasons
        .iter()
        .map(|reason| reason.code().unwrap_or("None"))
        .collect();
    if codes.last() == Some(&"ConditionalCheckFailed") {
        let applied_digest = reasons
            .last()
            .and_then(|reason| reason.item())
            .and_then(|item| item.get(ROWS_DIGEST))
            .and_then(|value| value.as_s().ok());
        match applied_digest {
            Some(applied) if applied != rows_digest => Cancelled::OtherRows,
            _ => Cancelled::AlreadyApplied,
        }
    } else if codes.contains(&"ConditionalCheckFailed") {
        // Only counter rows carry conditions besides the ledger: their value sets were full.
        Cancelled::ValuesFull(
            reasons
                .iter()
                .enumerate()
                .filter(|(_, reason)| reason.code() == Some("ConditionalCheckFailed"))
                .map(|(index, reason)| (index, reason.item().cloned()))
                .collect(),
        )
    } else if codes.iter().any(|code| {
        matches!(
            *code,
            "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
        )
    }) {
        Cancelled::Retry
    } else {
        Cancelled::Fail
    }
}

/// Up to half the wait again, different per delivery, chunk and attempt, so that chunks
/// that collided once do not collide again in step.
fn jitter(chunk: &BatchChunk<'_>, attempt: u32, backoff: Duration) -> Duration {
    let delivery = chunk
        .batch
        .as_str()
        .bytes()
        .fold(0u64, |hash, byte| stable_hash(hash ^ u64::from(byte)));
    let spread = stable_hash(delivery ^ ((chunk.index as u64) << 8 | u64::from(attempt)));
    backoff.mul_f64((spread % 1000) as f64 / 2000.0)
}

/// 32 hex digits of a SHA-256 over the keys of `rows`, in order.
fn rows_digest(rows: &[RowUpdate<'_>]) -> String {
    let mut hasher = Sha256::new();
    for row in rows {
        let (pk, sk) = row_key(row);
        for part in [pk, sk] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hasher.finalize()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The `pk` and `sk` of the item a row updates.
fn row_key(row: &RowUpdate<'_>) -> (String, String) {
    match row {
        RowUpdate::Counter(update) => (source_key(update.source), window_key(update.window_start)),
        RowUpdate::Gap(gap) => (
            gap_key(gap.window_start, gap.shard),
            format!("ENI#{}", gap.interface),
        ),
    }
}

impl CounterStore for DynamoCounterStore {
    async fn is_done(&self, batch: &BatchId) -> Result<bool, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(batch_key(batch)))
            .key(SK, AttributeValue::S("MANIFEST".into()))
            .projection_expression("#done")
            .expression_attribute_names("#done", DONE)
            .send()
            .await
            .map_err(|error| self.error(format!("reading the manifest of batch {batch}"), error))?;
        Ok(output
            .item
            .as_ref()
            .and_then(|item| item.get(DONE))
            .and_then(|value| value.as_bool().ok())
            .is_some_and(|done| *done))
    }

    async fn apply(&self, batch: &CounterBatch) -> Result<ApplyReport, StoreError> {
        let chunks = batch.chunks();
        let rows: Vec<RowUpdate<'_>> = chunks
            .iter()
            .flat_map(|chunk| chunk.rows.iter().copied())
            .collect();
        self.write_manifest(&batch.id, &rows).await?;
        // Indices rather than references into `chunks` keep the stream's closure free of
        // higher-ranked lifetimes, which `Send` futures cannot express.
        let chunks = &chunks;
        stream::iter(0..chunks.len())
            .map(|index| async move { self.apply_chunk(&chunks[index]).await })
            .buffer_unordered(self.concurrency)
            .try_fold(
                ApplyReport {
                    requests: 1,
                    ..ApplyReport::default()
                },
                |mut report, chunk| async move {
                    report.applied += chunk.applied;
                    report.already_applied += chunk.already_applied;
                    report.requests += chunk.requests;
                    Ok(report)
                },
            )
            .await
    }

    async fn mark_done(&self, batch: &BatchId, _expires_at: u64) -> Result<(), StoreError> {
        // The manifest already outlives every redelivery (see `ledger_expiry`); marking it
        // done keeps its expiry. An empty batch has no manifest, and needs no marker: it
        // writes nothing however often it comes.
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(batch_key(batch)))
            .key(SK, AttributeValue::S("MANIFEST".into()))
            .update_expression("SET #done = :true")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#done", DONE)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(error))
                if error.err().is_conditional_check_failed_exception() =>
            {
                Ok(())
            }
            Err(error) => {
                Err(self.error(format!("marking batch {batch} done in its manifest"), error))
            }
        }
    }
}

impl DynamoCounterStore {
    /// Writes the delivery's manifest before any of its chunks: the digest of all its row
    /// keys, only if there is no manifest yet or it has the same digest. A redelivery
    /// whose rows differ from what the first delivery began to apply (the configuration
    /// or the parser changed in between) is refused as a whole, before it applies a
    /// single chunk: re-chunked rows would otherwise dodge the per-chunk ledger, and some
    /// would count twice.
    ///
    /// The manifest is never changed afterwards (only marked done), so every chunk applied
    /// after this write belongs to a delivery with exactly these rows; the chunk
    /// transactions need no condition on it.
    async fn write_manifest(
        &self,
        batch: &BatchId,
        rows: &[RowUpdate<'_>],
    ) -> Result<(), StoreError> {
        let digest = rows_digest(rows);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(batch_key(batch)))
            .key(SK, AttributeValue::S("MANIFEST".into()))
            .update_expression("SET #digest = :digest, #rows = :rows, #expires = :expires")
            .condition_expression("attribute_not_exists(#pk) OR #digest = :digest")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#digest", ROWS_DIGEST)
            .expression_attribute_names("#rows", ROWS)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":digest", AttributeValue::S(digest))
            .expression_attribute_values(":rows", number(rows.len() as u64))
            .expression_attribute_values(":expires", number(ledger_expiry(self.rows_expire(rows))))
            .send()
            .await;
        let action = || format!("writing the manifest of batch {batch}");
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(error))
                if error.err().is_conditional_check_failed_exception() =>
            {
                let rows_then = match error.into_err() {
                    UpdateItemError::ConditionalCheckFailedException(failed) => failed
                        .item
                        .as_ref()
                        .and_then(|item| item.get(ROWS))
                        .and_then(|value| value.as_n().ok())
                        .cloned(),
                    _ => None,
                };
                Err(StoreError::Service {
                    action: action(),
                    table: self.table.clone(),
                    retryable: false,
                    source: format!(
                        "an earlier delivery of this batch began applying other rows ({} then, \
                         {} now): WINDOW_MINUTES, INDEX_SHARDS, IGNORED_DST_PORTS or the parser \
                         changed since, so the delivery is refused rather than counted twice",
                        rows_then.as_deref().unwrap_or("unknown"),
                        rows.len()
                    )
                    .into(),
                })
            }
            Err(error) => Err(self.error(action(), error)),
        }
    }

    /// When the rows of a delivery expire: the latest row's window end plus retention.
    fn rows_expire(&self, rows: &[RowUpdate<'_>]) -> u64 {
        rows.iter()
            .map(|row| match row {
                RowUpdate::Counter(update) => update.window_start + update.window_seconds,
                RowUpdate::Gap(gap) => gap.window_start,
            })
            .max()
            .unwrap_or(0)
            .saturating_add(self.retention_seconds)
    }
}

/// When a ledger or manifest item may go: when the rows it protects expire, and never
/// before every redelivery is over ([`LEDGER_MIN_SECONDS`] from now), since an object
/// delivered late (or backfilled) has rows that expire soon.
fn ledger_expiry(rows_expire: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    rows_expire.max(now + LEDGER_MIN_SECONDS)
}

impl DynamoCounterStore {
    /// The rows of one window with at least `min_rejects` REJECTs, from every shard of
    /// the `by-window` index: a `Query` per shard, never a scan.
    pub async fn window_counters(
        &self,
        window_start: u64,
        shards: u8,
        min_rejects: u64,
    ) -> Result<Vec<StoredCounter>, StoreError> {
        // The shards are independent partitions: queried at once, a slow or retried one
        // does not hold up the others.
        let shard_rows: Vec<Vec<StoredCounter>> = stream::iter(0..shards.max(1))
            .map(|shard| async move {
                let items: Vec<HashMap<String, AttributeValue>> = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(BY_WINDOW_INDEX)
                    .key_condition_expression("#g = :g AND #r >= :min")
                    .expression_attribute_names("#g", GSI1_PK)
                    .expression_attribute_names("#r", REJECTS)
                    .expression_attribute_values(
                        ":g",
                        AttributeValue::S(window_shard_key(window_start, shard)),
                    )
                    .expression_attribute_values(":min", number(min_rejects))
                    .into_paginator()
                    .items()
                    .send()
                    .try_collect()
                    .await
                    .map_err(|error| {
                        self.error(
                            format!("reading window {window_start} shard {shard}"),
                            error,
                        )
                    })?;
                Ok::<_, StoreError>(items.iter().filter_map(counter_from_item).collect())
            })
            .buffer_unordered(usize::from(shards.max(1)))
            .try_collect()
            .await?;
        Ok(shard_rows.into_iter().flatten().collect())
    }

    /// The rows of one window with the most REJECTs, most first: each shard's top `limit`
    /// merged (the index is sorted by `rejects`), or every row when `limit` is `None`.
    pub async fn top_in_window(
        &self,
        window_start: u64,
        limit: Option<usize>,
    ) -> Result<Vec<StoredCounter>, StoreError> {
        let mut rows = match limit {
            None => {
                DynamoCounterStore::window_counters(self, window_start, self.index_shards, 0)
                    .await?
            }
            Some(limit) => {
                let mut rows = Vec::new();
                for shard in 0..self.index_shards {
                    let output = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .index_name(BY_WINDOW_INDEX)
                        .key_condition_expression("#g = :g")
                        .expression_attribute_names("#g", GSI1_PK)
                        .expression_attribute_values(
                            ":g",
                            AttributeValue::S(window_shard_key(window_start, shard)),
                        )
                        .scan_index_forward(false)
                        .limit(limit.clamp(1, 1000) as i32)
                        .send()
                        .await
                        .map_err(|error| {
                            self.error(
                                format!("reading window {window_start} shard {shard}"),
                                error,
                            )
                        })?;
                    rows.extend(
                        output
                            .items
                            .unwrap_or_default()
                            .iter()
                            .filter_map(counter_from_item),
                    );
                }
                rows
            }
        };
        rows.sort_by(|a, b| b.rejects.cmp(&a.rejects).then(a.source.cmp(&b.source)));
        if let Some(limit) = limit {
            rows.truncate(limit);
        }
        Ok(rows)
    }

    /// One source's rows with windows starting in `from..=to`.
    pub async fn source_counters(
        &self,
        source: IpAddr,
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredCounter>, StoreError> {
        let items: Vec<HashMap<String, AttributeValue>> = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :to")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", AttributeValue::S(source_key(source)))
            .expression_attribute_values(":from", AttributeValue::S(window_key(from)))
            .expression_attribute_values(":to", AttributeValue::S(window_key(to)))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|error| self.error(format!("reading counters of {source}"), error))?;
        Ok(items.iter().filter_map(counter_from_item).collect())
    }
}

impl CounterReader for DynamoCounterStore {
    async fn window_counters(
        &self,
        window_start: u64,
        min_rejects: u64,
    ) -> Result<Vec<StoredCounter>, StoreError> {
        DynamoCounterStore::window_counters(self, window_start, self.index_shards, min_rejects)
            .await
    }

    async fn source_counters(
        &self,
        source: IpAddr,
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredCounter>, StoreError> {
        DynamoCounterStore::source_counters(self, source, from, to).await
    }

    async fn window_gaps(&self, window_start: u64) -> Result<Vec<GapUpdate>, StoreError> {
        let number_of = |item: &HashMap<String, AttributeValue>, name: &str| {
            item.get(name)
                .and_then(|value| value.as_n().ok())
                .and_then(|text| text.parse().ok())
                .unwrap_or(0)
        };
        let shard_gaps: Vec<Vec<GapUpdate>> = stream::iter(0..self.index_shards)
            .map(|shard| async move {
                let items: Vec<HashMap<String, AttributeValue>> = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("#pk = :pk")
                    .expression_attribute_names("#pk", PK)
                    .expression_attribute_values(
                        ":pk",
                        AttributeValue::S(gap_key(window_start, shard)),
                    )
                    .into_paginator()
                    .items()
                    .send()
                    .try_collect()
                    .await
                    .map_err(|error| {
                        self.error(
                            format!("reading capture gaps of window {window_start} shard {shard}"),
                            error,
                        )
                    })?;
                Ok::<_, StoreError>(
                    items
                        .iter()
                        .filter_map(|item| {
                            Some(GapUpdate {
                                interface: item.get(INTERFACE)?.as_s().ok()?.clone(),
                                window_start,
                                shard,
                                nodata: number_of(item, NODATA),
                                skipdata: number_of(item, SKIPDATA),
                            })
                        })
                        .collect(),
                )
            })
            .buffer_unordered(usize::from(self.index_shards.max(1)))
            .try_collect()
            .await?;
        Ok(shard_gaps.into_iter().flatten().collect())
    }
}

impl AlertStateStore for DynamoCounterStore {
    async fn claim(
        &self,
        source: IpAddr,
        level: u8,
        activity_end: u64,
        claim: &Claim,
    ) -> Result<ClaimOutcome, StoreError> {
        // The `Claim` branches of `alert::decide_claim`, evaluated atomically by DynamoDB:
        // no state (or a first claim given back, level 0), or a published alert past its
        // cooldown for this activity (no cutoff: -1, which no `claimed_at` is below) or
        // at a lower level. The
        // values before the claim are kept (right-hand sides read the item as it was), so
        // that a release can put them back. The other branches (a retry of this run, an
        // abandoned claim) are decided below from the item the failed condition returns.
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(alert_key(source)))
            .key(SK, AttributeValue::S("STATE".into()))
            .update_expression(
                "SET #prev_level = if_not_exists(#level, :zero), \
                 #prev_claimed = if_not_exists(#claimed, :zero), \
                 #prev_held = if_not_exists(#held, :zero), \
                 #prev_published = if_not_exists(#published, :false), \
                 #source = :source, #level = :level, #claimed = :now, #held = :held, \
                 #published = :false, #claim = :run, #expires = :expires",
            )
            .condition_expression(
                "attribute_not_exists(#pk) \
                 OR (#published = :false AND #level = :zero) \
                 OR (#published = :true AND (#claimed <= :cooldown_cutoff OR #level < :level))",
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#source", SOURCE)
            .expression_attribute_names("#level", LEVEL)
            .expression_attribute_names("#claimed", CLAIMED_AT)
            .expression_attribute_names("#held", HELD_UNTIL)
            .expression_attribute_names("#published", PUBLISHED)
            .expression_attribute_names("#claim", CLAIM_ID)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_names("#prev_level", PREVIOUS_LEVEL)
            .expression_attribute_names("#prev_claimed", PREVIOUS_CLAIMED_AT)
            .expression_attribute_names("#prev_held", PREVIOUS_HELD_UNTIL)
            .expression_attribute_names("#prev_published", PREVIOUS_PUBLISHED)
            .expression_attribute_values(":source", AttributeValue::S(source.to_string()))
            .expression_attribute_values(":level", number(u64::from(level)))
            .expression_attribute_values(":now", number(claim.now))
            .expression_attribute_values(":held", number(claim.held_until))
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":run", AttributeValue::S(claim.run_id.clone()))
            .expression_attribute_values(":expires", number(claim.expires_at))
            .expression_attribute_values(
                ":cooldown_cutoff",
                AttributeValue::N(
                    cooldown_cutoff(claim.now, activity_end, claim.cooldown_seconds)
                        .map_or_else(|| "-1".to_owned(), |cutoff| cutoff.to_string()),
                ),
            )
            .send()
            .await;
        let held = match result {
            Ok(_) => return Ok(ClaimOutcome::Won),
            Err(SdkError::ServiceError(error))
                if error.err().is_conditional_check_failed_exception() =>
            {
                match error.into_err() {
                    UpdateItemError::ConditionalCheckFailedException(failed) => failed.item,
                    _ => None,
                }
            }
            Err(error) => {
                return Err(self.error(format!("claiming the alert state of {source}"), error));
            }
        };
        let Some(held) = held else {
            // The condition failed on an item that is gone now: try once more later.
            return Ok(ClaimOutcome::ClaimedElsewhere);
        };
        let holder = held
            .get(CLAIM_ID)
            .and_then(|value| value.as_s().ok())
            .cloned()
            .unwrap_or_default();
        let state = alert_state_from_item(&held);
        let held_by_this_run = !state.published && holder == claim.run_id;
        match decide_claim(Some(state), held_by_this_run, level, activity_end, claim) {
            ClaimDecision::Claim if held_by_this_run => self.reclaim(source, level, claim).await,
            // The item changed between the write and its check: another run's doing.
            ClaimDecision::Claim | ClaimDecision::HeldElsewhere => {
                Ok(ClaimOutcome::ClaimedElsewhere)
            }
            ClaimDecision::Cooldown => Ok(ClaimOutcome::Cooldown),
            ClaimDecision::Abandoned => Ok(ClaimOutcome::Abandoned { holder }),
        }
    }

    async fn take_over(
        &self,
        source: IpAddr,
        level: u8,
        claim: &Claim,
        holder: &str,
    ) -> Result<ClaimOutcome, StoreError> {
        // The previous_* values stay as they are: the state from before the abandoned
        // claim, which a release of this claim puts back.
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(alert_key(source)))
            .key(SK, AttributeValue::S("STATE".into()))
            .update_expression(
                "SET #level = :level, #claimed = :now, #held = :held, #claim = :run, \
                 #expires = :expires",
            )
            // The holder's claim only while it is still past its `held_until` (its own
            // retry may have taken it up again); this run's own claim too: an attempt that
            // was applied but whose answer was lost is retried by the SDK, and must not
            // read as another run's success.
            .condition_expression(
                "#published = :false \
                 AND ((#claim = :holder AND #held <= :wall_now) OR #claim = :run)",
            )
            .expression_attribute_values(":wall_now", number(claim.wall_now))
            .expression_attribute_names("#level", LEVEL)
            .expression_attribute_names("#claimed", CLAIMED_AT)
            .expression_attribute_names("#held", HELD_UNTIL)
            .expression_attribute_names("#claim", CLAIM_ID)
            .expression_attribute_names("#published", PUBLISHED)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":level", number(u64::from(level)))
            .expression_attribute_values(":now", number(claim.now))
            .expression_attribute_values(":held", number(claim.held_until))
            .expression_attribute_values(":run", AttributeValue::S(claim.run_id.clone()))
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":expires", number(claim.expires_at))
            .send()
            .await;
        match result {
            Ok(_) => Ok(ClaimOutcome::Won),
            Err(SdkError::ServiceError(error))
                if error.err().is_conditional_check_failed_exception() =>
            {
                Ok(ClaimOutcome::ClaimedElsewhere)
            }
            Err(error) => Err(self.error(
                format!("taking over the alert state of {source} from run {holder}"),
                error,
            )),
        }
    }

    async fn confirm(&self, source: IpAddr, run_id: &str) -> Result<(), StoreError> {
        self.on_own_claim(
            source,
            run_id,
            "SET #published = :true",
            &[],
            &[(":true", AttributeValue::Bool(true))],
            "confirming",
        )
        .await
    }

    async fn release(&self, source: IpAddr, claim: &Claim) -> Result<(), StoreError> {
        self.on_own_claim(
            source,
            &claim.run_id,
            // `if_not_exists` covers claims written before the previous values were kept.
            "SET #level = if_not_exists(#prev_level, :zero), \
             #claimed = if_not_exists(#prev_claimed, :zero), \
             #held = if_not_exists(#prev_held, :zero), \
             #published = if_not_exists(#prev_published, :false)",
            &[
                ("#level", LEVEL),
                ("#claimed", CLAIMED_AT),
                ("#held", HELD_UNTIL),
                ("#prev_level", PREVIOUS_LEVEL),
                ("#prev_claimed", PREVIOUS_CLAIMED_AT),
                ("#prev_held", PREVIOUS_HELD_UNTIL),
                ("#prev_published", PREVIOUS_PUBLISHED),
            ],
            &[(":zero", number(0))],
            "releasing",
        )
        .await
    }
}

impl EvaluationProgress for DynamoCounterStore {
    async fn evaluated_through(&self) -> Result<Option<u64>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(PROGRESS_KEY.into()))
            .key(SK, AttributeValue::S("PROGRESS".into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| self.error("reading the evaluator's progress".into(), error))?;
        Ok(output
            .item
            .as_ref()
            .and_then(|item| item.get(WINDOW_START))
            .and_then(|value| value.as_n().ok())
            .and_then(|text| text.parse().ok()))
    }

    async fn mark_evaluated_through(&self, window_start: u64) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(PROGRESS_KEY.into()))
            .key(SK, AttributeValue::S("PROGRESS".into()))
            .update_expression("SET #window = :window")
            .condition_expression("attribute_not_exists(#window) OR #window < :window")
            .expression_attribute_names("#window", WINDOW_START)
            .expression_attribute_values(":window", number(window_start))
            .send()
            .await;
        match result {
            // A concurrent run recorded a later window already: nothing to move.
            Err(SdkError::ServiceError(error))
                if error.err().is_conditional_check_failed_exception() =>
            {
                Ok(())
            }
            Err(error) => Err(self.error("recording the evaluator's progress".into(), error)),
            Ok(_) => Ok(()),
        }
    }
}

impl DigestLog for DynamoCounterStore {
    async fn is_published(&self, run_id: &str) -> Result<bool, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(digest_key(run_id)))
            .key(SK, AttributeValue::S("DIGEST".into()))
            .projection_expression("#pk")
            .expression_attribute_names("#pk", PK)
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| {
                self.error(format!("reading the digest record of run {run_id}"), error)
            })?;
        Ok(output.item.is_some())
    }

    async fn record_published(
        &self,
        run_id: &str,
        source_count: u64,
        published_at: u64,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item(PK, AttributeValue::S(digest_key(run_id)))
            .item(SK, AttributeValue::S("DIGEST".into()))
            .item(SOURCE_COUNT, number(source_count))
            .item(PUBLISHED_AT, number(published_at))
            .item(EXPIRES_AT, number(expires_at))
            .send()
            .await
            .map_err(|error| self.error(format!("recording the digest of run {run_id}"), error))?;
        Ok(())
    }
}

/// How long claims written by releases before `held_until` held.
const LEGACY_CLAIM_SECONDS: u64 = 300;

/// The alert state in an item; attributes written by older releases default as they
/// did then (no `held_until`: the evaluation time and the old fixed timeout stand in).
fn alert_state_from_item(item: &HashMap<String, AttributeValue>) -> AlertState {
    let number_of = |name: &str| {
        item.get(name)
            .and_then(|value| value.as_n().ok())
            .and_then(|text| text.parse::<u64>().ok())
    };
    let claimed_at = number_of(CLAIMED_AT).unwrap_or(0);
    AlertState {
        level: number_of(LEVEL).map_or(0, |level| level.min(u64::from(u8::MAX)) as u8),
        claimed_at,
        held_until: number_of(HELD_UNTIL).unwrap_or(claimed_at + LEGACY_CLAIM_SECONDS),
        published: item
            .get(PUBLISHED)
            .and_then(|value| value.as_bool().ok())
            .copied()
            .unwrap_or(false),
    }
}

impl DynamoCounterStore {
    /// A retry of the run that holds an unpublished claim (Lambda keeps the request id):
    /// it takes the claim up again, keeping the state from before the first attempt.
    async fn reclaim(
        &self,
        source: IpAddr,
        level: u8,
        claim: &Claim,
    ) -> Result<ClaimOutcome, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(alert_key(source)))
            .key(SK, AttributeValue::S("STATE".into()))
            .update_expression(
                "SET #level = :level, #claimed = :now, #held = :held, #expires = :expires",
            )
            .condition_expression("#claim = :run AND #published = :false")
            .expression_attribute_names("#level", LEVEL)
            .expression_attribute_names("#claimed", CLAIMED_AT)
            .expression_attribute_names("#held", HELD_UNTIL)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_names("#claim", CLAIM_ID)
            .expression_attribute_names("#published", PUBLISHED)
            .expression_attribute_values(":level", number(u64::from(level)))
            .expression_attribute_values(":now", number(claim.now))
            .expression_attribute_values(":held", number(claim.held_until))
            .expression_attribute_values(":expires", number(claim.expires_at))
            .expression_attribute_values(":run", AttributeValue::S(claim.run_id.clone()))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .send()
            .await;
        match result {
            Ok(_) => Ok(ClaimOutcome::Won),
            // Taken over or published meanwhile.
            Err(SdkError::ServiceError(error))
                if error.err().is_conditional_check_failed_exception() =>
            {
                Ok(ClaimOutcome::ClaimedElsewhere)
            }
            Err(error) => {
                Err(self.error(format!("re-claiming the alert state of {source}"), error))
            }
        }
    }

    /// Updates alert state that run `run_id` claimed and has not published; a claim
    /// another run took over meanwhile is left alone.
    async fn on_own_claim(
        &self,
        source: IpAddr,
        run_id: &str,
        update_expression: &str,
        names: &[(&str, &str)],
        values: &[(&str, AttributeValue)],
        action: &str,
    ) -> Result<(), StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(alert_key(source)))
            .key(SK, AttributeValue::S("STATE".into()))
            .update_expression(update_expression)
            .condition_expression("#claim = :run AND #published = :false")
            .expression_attribute_names("#claim", CLAIM_ID)
            .expression_attribute_names("#published", PUBLISHED)
            .expression_attribute_values(":run", AttributeValue::S(run_id.to_owned()))
            .expression_attribute_values(":false", AttributeValue::Bool(false));
        for (placeholder, name) in names {
            request = request.expression_attribute_names(*placeholder, *name);
        }
        for (placeholder, value) in values {
            request = request.expression_attribute_values(*placeholder, value.clone());
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(error))
                if error.err().is_conditional_check_failed_exception() =>
            {
                Ok(())
            }
            Err(error) => Err(self.error(format!("{action} the alert state of {source}"), error)),
        }
    }
}

/// Reads a counter item; `None` for items that are not counters.
pub fn counter_from_item(item: &HashMap<String, AttributeValue>) -> Option<StoredCounter> {
    if !item.get(PK)?.as_s().ok()?.starts_with("SRC#") {
        return None;
    }
    let number_of = |name: &str| -> u64 {
        item.get(name)
            .and_then(|value| value.as_n().ok())
            .and_then(|text| text.parse().ok())
            .unwrap_or(0)
    };
    let numbers_of = |name: &str| -> Vec<u64> {
        let mut values: Vec<u64> = item
            .get(name)
            .and_then(|value| value.as_ns().ok())
            .map(|members| {
                members
                    .iter()
                    .filter_map(|text| text.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        values.sort_unstable();
        values
    };
    let small_numbers_of = |name: &str| -> Vec<u16> {
        numbers_of(name)
            .into_iter()
            .filter_map(|value| u16::try_from(value).ok())
            .collect()
    };
    let mut protocols = Vec::new();
    let mut reject_reasons = Vec::new();
    for (name, value) in item {
        let count = value.as_n().ok().and_then(|text| text.parse::<u64>().ok());
        if let (Some(protocol), Some(count)) = (name.strip_prefix(PROTOCOL_PREFIX), count)
            && let Ok(protocol) = protocol.parse::<u8>()
        {
            protocols.push((protocol, count));
        } else if let (Some(reason), Some(count)) = (name.strip_prefix(REASON_PREFIX), count) {
            reject_reasons.push((reason.to_owned(), count));
        }
    }
    protocols.sort_unstable();
    reject_reasons.sort();
    let mut interfaces: Vec<String> = item
        .get(INTERFACES)
        .and_then(|value| value.as_ss().ok())
        .cloned()
        .unwrap_or_default();
    interfaces.sort();
    Some(StoredCounter {
        source: item.get(SOURCE)?.as_s().ok()?.parse().ok(),
        window_start: number_of(WINDOW_START),
        window_seconds: number_of(WINDOW_SECONDS),
        rejects: number_of(REJECTS),
        packets: number_of(PACKETS),
        bytes: number_of(BYTES),
        port_sketch: small_numbers_of(PORT_SKETCH),
        host_sketch: small_numbers_of(HOST_SKETCH),
        exact_ports: exact_values_of(item, PORT_VALUES, |v| u16::try_from(v).ok()),
        exact_hosts: exact_values_of(item, HOST_VALUES, Some),
        sample_ports: small_numbers_of(SAMPLE_PORTS),
        sample_hosts: numbers_of(SAMPLE_HOSTS),
        first_seen: numbers_of(FIRST_SEEN),
        last_seen: numbers_of(LAST_SEEN),
        interfaces,
        protocols,
        reject_reasons,
    })
}

/// A stored value set: its values, and whether it holds [`OVER_MARKER`] (or anything that is
/// not a value, which no release writes).
fn exact_values_of<T: Ord>(
    item: &HashMap<String, AttributeValue>,
    name: &str,
    value_of: impl Fn(u64) -> Option<T>,
) -> ExactValues<T> {
    let mut exact = ExactValues::default();
    let members = item.get(name).and_then(|value| value.as_ns().ok());
    for member in members.into_iter().flatten() {
        match member.parse().ok().and_then(&value_of) {
            Some(value) => exact.values.push(value),
            None => exact.over = true,
        }
    }
    if exact.over {
        exact.values.clear();
    }
    exact.values.sort_unstable();
    exact
}

/// Builds `SET a = :a, ... ADD b :b, ...` with placeholders for every name and value, so no
/// attribute name (some are reserved words, some come from log data) is ever spliced in.
#[derive(Default)]
struct UpdateExpression {
    sets: Vec<String>,
    adds: Vec<String>,
    /// Conditions, all of which must hold.
    conditions: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl UpdateExpression {
    fn name(&mut self, attribute: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, name)| *name == attribute) {
            return placeholder.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), attribute.to_owned());
        placeholder
    }

    fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    fn set(&mut self, attribute: &str, value: AttributeValue) {
        let clause = format!("{} = {}", self.name(attribute), self.value(value));
        self.sets.push(clause);
    }

    /// `SET a = if_not_exists(a, :v)`: the first writer's value stays. Empty sets, which
    /// DynamoDB refuses, are left out.
    fn set_if_absent(&mut self, attribute: &str, members: AttributeValue) {
        if is_empty_set(&members) {
            return;
        }
        let name = self.name(attribute);
        let clause = format!("{name} = if_not_exists({name}, {})", self.value(members));
        self.sets.push(clause);
    }

    fn add(&mut self, attribute: &str, value: AttributeValue) {
        let clause = format!("{} {}", self.name(attribute), self.value(value));
        self.adds.push(clause);
    }

    /// Adds set members; DynamoDB refuses empty sets, so empty ones are left out.
    fn add_set(&mut self, attribute: &str, members: AttributeValue) {
        if !is_empty_set(&members) {
            self.add(attribute, members);
        }
    }

    /// Adds a delivery's exact values to a value set on the condition that it keeps at
    /// most [`EXACT_VALUES`] members, or (`None`) marks the set over.
    fn add_exact_values(&mut self, attribute: &str, values: &Option<Vec<u64>>) {
        match values {
            Some(values) if values.is_empty() => {}
            Some(values) => {
                let room = EXACT_VALUES.saturating_sub(values.len()) as u64;
                let name = self.name(attribute);
                let room = self.value(number(room));
                self.conditions.push(format!(
                    "(attribute_not_exists({name}) OR size({name}) <= {room})"
                ));
                self.add(attribute, numbers(values.iter().copied()));
            }
            None => self.add(attribute, AttributeValue::Ns(vec![OVER_MARKER.to_owned()])),
        }
    }

    fn condition(&self) -> Option<String> {
        (!self.conditions.is_empty()).then(|| self.conditions.join(" AND "))
    }

    fn render(&self) -> String {
        let mut expression = String::new();
        if !self.sets.is_empty() {
            expression.push_str("SET ");
            expression.push_str(&self.sets.join(", "));
        }
        if !self.adds.is_empty() {
            if !expression.is_empty() {
                expression.push(' ');
            }
            expression.push_str("ADD ");
            expression.push_str(&self.adds.join(", "));
        }
        expression
    }
}

fn is_empty_set(value: &AttributeValue) -> bool {
    match value {
        AttributeValue::Ns(members) | AttributeValue::Ss(members) => members.is_empty(),
        _ => false,
    }
}

fn number(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn numbers(values: impl IntoIterator<Item = u64>) -> AttributeValue {
    let mut members: Vec<String> = values.into_iter().map(|value| value.to_string()).collect();
    members.sort();
    members.dedup();
    AttributeValue::Ns(members)
}

fn strings(values: impl IntoIterator<Item = String>) -> AttributeValue {
    let mut members: Vec<String> = values.into_iter().collect();
    members.sort();
    members.dedup();
    AttributeValue::Ss(members)
}

/// Throttling, timeouts, dispatch failures and 5xx may pass; validation errors will not.
pub(crate) fn is_retryable<E: ProvideErrorMetadata>(error: &SdkError<E>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            status >= 500 || status == 429 || {
                let code = service.err().code();
                matches!(
                    code,
                    Some(
                        "ProvisionedThroughputExceededException"
                            | "RequestLimitExceeded"
                            | "ThrottlingException"
                            | "TransactionConflictException"
                    )
                )
            }
        }
        _ => false,
    }
}
