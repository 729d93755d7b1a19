//! The DynamoDB counter store: the only module that knows the table's key formats and
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
//!
//! - [`schema`]: the key schema and attribute names;
//! - `counter_store`: `impl CounterStore` (manifests, chunk transactions, value sets);
//! - `counter_reader`: `impl CounterReader` and the CLI's queries;
//! - `alert_state`: `impl AlertStateStore`, `impl EvaluationProgress`, `impl DigestLog`;
//! - `item`: items to domain types and back; `expression`: the update-expression builder.

mod alert_state;
mod counter_reader;
mod counter_store;
mod expression;
mod item;
pub mod schema;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};

use rejectwatch_core::ports::StoreError;

use counter_store::KnownSets;

pub use item::counter_from_item;
pub use schema::*;

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
