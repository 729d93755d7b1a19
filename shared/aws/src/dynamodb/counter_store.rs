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

/// The counter store's requests, pinned: the manifest, the chunk transaction (its items,
/// their expressions and conditions, the ledger item) and the done marker, and what each
/// failed condition comes to.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::Client;
    use aws_sdk_dynamodb::operation::get_item::{GetItemInput, GetItemOutput};
    use aws_sdk_dynamodb::operation::transact_write_items::{
        TransactWriteItemsError, TransactWriteItemsInput, TransactWriteItemsOutput,
    };
    use aws_sdk_dynamodb::operation::update_item::{
        UpdateItemError, UpdateItemInput, UpdateItemOutput,
    };
    use aws_sdk_dynamodb::types::error::{
        ConditionalCheckFailedException, TransactionCanceledException,
    };
    use aws_sdk_dynamodb::types::{
        AttributeValue, CancellationReason, Put, ReturnValuesOnConditionCheckFailure,
        TransactWriteItem, Update,
    };
    use aws_smithy_mocks::mock;
    use rejectwatch_core::counters::{BatchId, CounterBatch, CounterUpdate, GapUpdate};
    use rejectwatch_core::ports::{ApplyReport, CounterStore};

    use super::super::test_support::{TABLE, record, sent, store};

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.to_owned())
    }

    fn n(value: u64) -> AttributeValue {
        AttributeValue::N(value.to_string())
    }

    fn ns(members: &[&str]) -> AttributeValue {
        AttributeValue::Ns(members.iter().map(|&member| member.to_owned()).collect())
    }

    fn map<V: Clone>(entries: &[(&str, V)]) -> HashMap<String, V> {
        entries
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone()))
            .collect()
    }

    const BATCH: &str = "0123456789abcdef0123456789abcdef";
    /// The digest of the batch's row keys (`SRC#198.51.100.7`/`WIN#1714566000`, then
    /// `GAP#1714566000#01`/`ENI#eni-2`).
    const DIGEST: &str = "d736ca46ecd28a0fa40c5a504f52b20c";
    /// The counter row's window end plus the store's retention: the latest expiry of the
    /// batch's rows, which the manifest and the ledger item share.
    const ROWS_EXPIRE: u64 = 1_714_566_300 + 10_000_000_000;

    /// One counter row and one capture-gap row: one chunk.
    fn batch() -> CounterBatch {
        CounterBatch {
            id: BatchId::parse(BATCH).unwrap(),
            updates: vec![CounterUpdate {
                source: "198.51.100.7".parse().unwrap(),
                window_start: 1_714_566_000,
                window_seconds: 300,
                shard: 3,
                rejects: 12,
                packets: 14,
                bytes: 840,
                first_seen: 1_714_566_010,
                last_seen: 1_714_566_250,
                port_sketch: vec![17, 4],
                host_sketch: vec![9],
                exact_ports: Some(vec![80, 22]),
                exact_hosts: Some(vec![7]),
                sample_ports: vec![22, 80],
                sample_hosts: vec![7],
                protocols: vec![(6, 12)],
                reject_reasons: vec![("blocked".into(), 12)],
                interfaces: vec!["eni-1".into()],
            }],
            gaps: vec![GapUpdate {
                interface: "eni-2".into(),
                window_start: 1_714_566_000,
                shard: 1,
                nodata: 2,
                skipdata: 1,
            }],
        }
    }

    fn manifest() -> UpdateItemInput {
        UpdateItemInput::builder()
            .table_name(TABLE)
            .key("pk", s(&format!("BATCH#{BATCH}")))
            .key("sk", s("MANIFEST"))
            .update_expression("SET #digest = :digest, #rows = :rows, #expires = :expires")
            .condition_expression("attribute_not_exists(#pk) OR #digest = :digest")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .set_expression_attribute_names(Some(map(&[
                ("#pk", "pk".to_owned()),
                ("#digest", "rows_digest".to_owned()),
                ("#rows", "rows".to_owned()),
                ("#expires", "expires_at".to_owned()),
            ])))
            .set_expression_attribute_values(Some(map(&[
                (":digest", s(DIGEST)),
                (":rows", n(2)),
                (":expires", n(ROWS_EXPIRE)),
            ])))
            .build()
            .unwrap()
    }

    fn counter_row() -> Update {
        Update::builder()
            .table_name(TABLE)
            .key("pk", s("SRC#198.51.100.7"))
            .key("sk", s("WIN#1714566000"))
            .update_expression(
                "SET #n0 = :v0, #n1 = :v1, #n2 = :v2, #n3 = :v3, #n4 = :v4, \
                 #n14 = if_not_exists(#n14, :v16), #n15 = if_not_exists(#n15, :v17), \
                 #n16 = if_not_exists(#n16, :v18) \
                 ADD #n5 :v5, #n6 :v6, #n7 :v7, #n8 :v8, #n9 :v9, #n10 :v10, #n11 :v11, \
                 #n12 :v13, #n13 :v15, #n17 :v19, #n18 :v20",
            )
            // The value sets keep at most 64 members: room for 62 before 2 ports, 63
            // before 1 host.
            .condition_expression(
                "(attribute_not_exists(#n12) OR size(#n12) <= :v12) \
                 AND (attribute_not_exists(#n13) OR size(#n13) <= :v14)",
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .set_expression_attribute_names(Some(map(&[
                ("#n0", "source".to_owned()),
                ("#n1", "window_start".to_owned()),
                ("#n2", "window_seconds".to_owned()),
                ("#n3", "gsi1pk".to_owned()),
                ("#n4", "expires_at".to_owned()),
                ("#n5", "rejects".to_owned()),
                ("#n6", "packets".to_owned()),
                ("#n7", "bytes".to_owned()),
                ("#n8", "first_seen".to_owned()),
                ("#n9", "last_seen".to_owned()),
                ("#n10", "port_sketch".to_owned()),
                ("#n11", "host_sketch".to_owned()),
                ("#n12", "port_values".to_owned()),
                ("#n13", "host_values".to_owned()),
                ("#n14", "sample_ports".to_owned()),
                ("#n15", "sample_hosts".to_owned()),
                ("#n16", "interfaces".to_owned()),
                ("#n17", "proto_6".to_owned()),
                ("#n18", "reason_blocked".to_owned()),
            ])))
            .set_expression_attribute_values(Some(map(&[
                (":v0", s("198.51.100.7")),
                (":v1", n(1_714_566_000)),
                (":v2", n(300)),
                (":v3", s("WIN#1714566000#03")),
                (":v4", n(ROWS_EXPIRE)),
                (":v5", n(12)),
                (":v6", n(14)),
                (":v7", n(840)),
                (":v8", ns(&["1714566010"])),
                (":v9", ns(&["1714566250"])),
                // Set members sorted as text.
                (":v10", ns(&["17", "4"])),
                (":v11", ns(&["9"])),
                (":v12", n(62)),
                (":v13", ns(&["22", "80"])),
                (":v14", n(63)),
                (":v15", ns(&["7"])),
                (":v16", ns(&["22", "80"])),
                (":v17", ns(&["7"])),
                (":v18", AttributeValue::Ss(vec!["eni-1".to_owned()])),
                (":v19", n(12)),
                (":v20", n(12)),
            ])))
            .build()
            .unwrap()
    }

    fn gap_row() -> Update {
        Update::builder()
            .table_name(TABLE)
            .key("pk", s("GAP#1714566000#01"))
            .key("sk", s("ENI#eni-2"))
            .update_expression("SET #n0 = :v0, #n1 = :v1, #n2 = :v2 ADD #n3 :v3, #n4 :v4")
            .set_expression_attribute_names(Some(map(&[
                ("#n0", "interface".to_owned()),
                ("#n1", "window_start".to_owned()),
                ("#n2", "expires_at".to_owned()),
                ("#n3", "nodata".to_owned()),
                ("#n4", "skipdata".to_owned()),
            ])))
            .set_expression_attribute_values(Some(map(&[
                (":v0", s("eni-2")),
                (":v1", n(1_714_566_000)),
                (":v2", n(1_714_566_000 + 10_000_000_000)),
                (":v3", n(2)),
                (":v4", n(1)),
            ])))
            .build()
            .unwrap()
    }

    fn ledger_item() -> Put {
        Put::builder()
            .table_name(TABLE)
            .item("pk", s(&format!("BATCH#{BATCH}")))
            .item("sk", s("CHUNK#00000"))
            .item("rows", n(2))
            .item("rows_digest", s(DIGEST))
            .item("expires_at", n(ROWS_EXPIRE))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", "pk")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .unwrap()
    }

    fn chunk_transaction() -> TransactWriteItemsInput {
        TransactWriteItemsInput::builder()
            .transact_items(TransactWriteItem::builder().update(counter_row()).build())
            .transact_items(TransactWriteItem::builder().update(gap_row()).build())
            .transact_items(TransactWriteItem::builder().put(ledger_item()).build())
            // The SDK's idempotency token (the tests' fixed one).
            .client_request_token("00000000-0000-4000-8000-000000000000")
            .build()
            .unwrap()
    }

    fn written() -> UpdateItemOutput {
        UpdateItemOutput::builder().build()
    }

    /// A chunk transaction cancelled for these reasons, one per item.
    fn cancelled(
        reasons: Vec<CancellationReason>,
    ) -> impl Fn() -> TransactWriteItemsError + Send + Sync {
        move || {
            TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder()
                    .message("Transaction cancelled")
                    .set_cancellation_reasons(Some(reasons.clone()))
                    .build(),
            )
        }
    }

    fn reason(code: &str) -> CancellationReason {
        CancellationReason::builder().code(code).build()
    }

    /// The batch applied against a manifest write that succeeds and a chunk transaction
    /// that answers `chunk`; the requests are checked.
    async fn apply(
        chunk: impl Fn(
            aws_smithy_mocks::RuleBuilder<
                TransactWriteItemsInput,
                TransactWriteItemsOutput,
                TransactWriteItemsError,
            >,
        ) -> aws_smithy_mocks::Rule,
    ) -> Result<ApplyReport, rejectwatch_core::ports::StoreError> {
        let (manifests, matcher) = record::<UpdateItemInput>();
        let manifest_written = mock!(Client::update_item)
            .match_requests(matcher)
            .then_output(written);
        let (chunks, matcher) = record::<TransactWriteItemsInput>();
        let chunk = chunk(mock!(Client::transact_write_items).match_requests(matcher));
        let store = store(&[&manifest_written, &chunk]);
        let report = store.apply(&batch()).await;
        assert_eq!(sent(&manifests), [manifest()]);
        assert_eq!(sent(&chunks), [chunk_transaction()]);
        report
    }

    #[tokio::test]
    async fn apply_writes_the_manifest_then_each_chunk_with_its_ledger_item() {
        let report = apply(|rule| rule.then_output(|| TransactWriteItemsOutput::builder().build()))
            .await
            .unwrap();
        assert_eq!(
            report,
            ApplyReport {
                applied: 2,
                already_applied: 0,
                requests: 2,
            }
        );
    }

    #[tokio::test]
    async fn a_chunk_whose_ledger_item_exists_was_applied_already() {
        let applied = CancellationReason::builder()
            .code("ConditionalCheckFailed")
            .item("rows_digest", s(DIGEST))
            .build();
        let report = apply(|rule| {
            rule.then_error(cancelled(vec![
                reason("None"),
                reason("None"),
                applied.clone(),
            ]))
        })
        .await
        .unwrap();
        assert_eq!(
            report,
            ApplyReport {
                applied: 0,
                already_applied: 2,
                requests: 2,
            }
        );
    }

    #[tokio::test]
    async fn a_chunk_applied_with_other_rows_is_refused_for_good() {
        let other_rows = CancellationReason::builder()
            .code("ConditionalCheckFailed")
            .item("rows_digest", s("00000000000000000000000000000000"))
            .build();
        let error = apply(|rule| {
            rule.then_error(cancelled(vec![
                reason("None"),
                reason("None"),
                other_rows.clone(),
            ]))
        })
        .await
        .unwrap_err();
        assert!(!error.is_retryable(), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!("applying chunk 0 of batch {BATCH} in table counters")
        );
        assert_eq!(
            std::error::Error::source(&error).unwrap().to_string(),
            "an earlier delivery applied this chunk with other rows: WINDOW_MINUTES, \
             INDEX_SHARDS or IGNORED_DST_PORTS changed since, so it is refused rather than \
             counted twice"
        );
    }

    #[tokio::test]
    async fn a_manifest_of_other_rows_refuses_the_delivery() {
        let (manifests, matcher) = record::<UpdateItemInput>();
        let refused = mock!(Client::update_item)
            .match_requests(matcher)
            .then_error(|| {
                UpdateItemError::ConditionalCheckFailedException(
                    ConditionalCheckFailedException::builder()
                        .message("The conditional request failed")
                        .item("rows", n(5))
                        .build(),
                )
            });
        let store = store(&[&refused]);
        let error = store.apply(&batch()).await.unwrap_err();
        assert!(!error.is_retryable(), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!("writing the manifest of batch {BATCH} in table counters")
        );
        assert!(
            std::error::Error::source(&error)
                .unwrap()
                .to_string()
                .starts_with(
                    "an earlier delivery of this batch began applying other rows (5 then, 2 now)"
                ),
            "{error:?}"
        );
        assert_eq!(sent(&manifests), [manifest()]);
    }

    #[tokio::test]
    async fn is_done_reads_the_manifest_and_mark_done_sets_it() {
        let (reads, matcher) = record::<GetItemInput>();
        let done = mock!(Client::get_item)
            .match_requests(matcher)
            .then_output(|| {
                GetItemOutput::builder()
                    .set_item(Some(map(&[("done", AttributeValue::Bool(true))])))
                    .build()
            });
        let (_, matcher) = record::<GetItemInput>();
        let absent = mock!(Client::get_item)
            .match_requests(matcher)
            .then_output(|| GetItemOutput::builder().build());
        let (marks, matcher) = record::<UpdateItemInput>();
        let marked = mock!(Client::update_item)
            .match_requests(matcher)
            .then_output(written);
        let (_, matcher) = record::<UpdateItemInput>();
        // An empty batch has no manifest: nothing to mark, and no error.
        let no_manifest = mock!(Client::update_item)
            .match_requests(matcher)
            .then_error(|| {
                UpdateItemError::ConditionalCheckFailedException(
                    ConditionalCheckFailedException::builder().build(),
                )
            });
        let store = store(&[&done, &absent, &marked, &no_manifest]);
        let batch = BatchId::parse(BATCH).unwrap();

        assert!(store.is_done(&batch).await.unwrap());
        assert!(!store.is_done(&batch).await.unwrap());
        store.mark_done(&batch, 0).await.unwrap();
        store.mark_done(&batch, 0).await.unwrap();

        assert_eq!(
            sent(&reads),
            [GetItemInput::builder()
                .table_name(TABLE)
                .key("pk", s(&format!("BATCH#{BATCH}")))
                .key("sk", s("MANIFEST"))
                .projection_expression("#done")
                .expression_attribute_names("#done", "done")
                .build()
                .unwrap()]
        );
        assert_eq!(
            sent(&marks),
            [UpdateItemInput::builder()
                .table_name(TABLE)
                .key("pk", s(&format!("BATCH#{BATCH}")))
                .key("sk", s("MANIFEST"))
                .update_expression("SET #done = :true")
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#done", "done")
                .expression_attribute_names("#pk", "pk")
                .expression_attribute_values(":true", AttributeValue::Bool(true))
                .build()
                .unwrap()]
        );
    }
}
