//! The counter store (`impl CounterStore`): a delivery's manifest, its chunks applied in
//! `TransactWriteItems` with their ledger items, the value sets' conditions, and what a
//! cancelled transaction means (applied already, conflict, full value sets).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::{BuildError, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use futures_util::{StreamExt, TryStreamExt, stream};
use sha2::{Digest, Sha256};

use rejectwatch_core::counters::{
    BatchChunk, BatchId, CounterBatch, CounterUpdate, EXACT_VALUES, ExactValues, GapUpdate,
    RowUpdate,
};
use rejectwatch_core::ports::{ApplyReport, CounterStore, StoreError};
use rejectwatch_core::sketch::stable_hash;

use super::expression::UpdateExpression;
use super::item::{exact_values_of, number, numbers, strings};
use super::schema::*;
use super::{DynamoCounterStore, is_retryable};

/// How long after being written a ledger item is kept at least: SQS's longest retention
/// (14 days) plus a day, so any redelivery still finds it.
const LEDGER_MIN_SECONDS: u64 = 15 * 86_400;

/// Attempts of a chunk whose transaction collided with another one on the same rows (two
/// deliveries adding to a busy source at once); the waits between them double from
/// [`CONFLICT_BACKOFF`].
const CONFLICT_ATTEMPTS: u32 = 10;
const CONFLICT_BACKOFF: Duration = Duration::from_millis(25);
/// Attempts of a chunk whose value sets had too little room: each narrows the offers of
/// the rows that failed, so two do unless other deliveries fill the same sets meanwhile.
const VALUE_ATTEMPTS: u32 = 10;

type SetKey = (String, String, &'static str);

/// Value sets (by item `pk`, `sk` and attribute) as failed conditions returned them. Sets
/// only grow, so a delivery may offer only what a set lacked then, or the marker to a set
/// that was over, and a busy row does not cancel a transaction on every delivery. Kept for
/// the warm container's life; forgotten when it grows large.
#[derive(Clone, Debug, Default)]
pub(super) struct KnownSets(Arc<Mutex<HashMap<SetKey, ExactValues<u64>>>>);

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

impl CounterStore for DynamoCounterStore {
    async fn is_done(&self, batch: &BatchId) -> Result<bool, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(batch_key(batch)))
            .key(SK, AttributeValue::S(MANIFEST_SK.into()))
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
            .key(SK, AttributeValue::S(MANIFEST_SK.into()))
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
            .key(SK, AttributeValue::S(MANIFEST_SK.into()))
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
