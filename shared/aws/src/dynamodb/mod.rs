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

/// What the request-pinning tests share: a store on a client that answers from canned
/// rules and never goes out, and the requests it sent.
#[cfg(test)]
mod test_support {
    use std::sync::{Arc, Mutex};

    use aws_sdk_dynamodb::config::retry::RetryConfig;
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client};

    use super::DynamoCounterStore;

    pub(super) const TABLE: &str = "counters";
    /// Retention long enough that every expiry is the rows' own, not the ledger's floor
    /// (which counts from the wall clock).
    pub(super) const RETENTION: u64 = 10_000_000_000;

    /// A store whose client answers the requests from `rules`, in this order; a request
    /// that the next rule does not expect fails the test. The SDK does not retry, so the
    /// store's own handling of an error is what a test sees.
    pub(super) fn store(rules: &[&Rule]) -> DynamoCounterStore {
        store_in(RuleMode::Sequential, rules)
    }

    /// A store whose client answers each request from the first of `rules` that matches
    /// it, whatever the order of the requests (the shards of a window are read at once).
    pub(super) fn store_matching(rules: &[&Rule]) -> DynamoCounterStore {
        store_in(RuleMode::MatchAny, rules)
    }

    fn store_in(mode: RuleMode, rules: &[&Rule]) -> DynamoCounterStore {
        let mut interceptor = MockResponseInterceptor::new().rule_mode(mode);
        for rule in rules {
            interceptor = interceptor.with_rule(rule);
        }
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .idempotency_token_provider("00000000-0000-4000-8000-000000000000")
            .retry_config(RetryConfig::disabled())
            .http_client(create_mock_http_client())
            .interceptor(interceptor)
            .build();
        DynamoCounterStore::new(
            aws_sdk_dynamodb::Client::from_conf(config),
            TABLE,
            RETENTION,
            1,
        )
        .with_index_shards(2)
    }

    /// The requests a rule matched, recorded for exact comparison.
    pub(super) type Sent<I> = Arc<Mutex<Vec<I>>>;

    /// A request matcher that accepts every request of its operation and records it.
    pub(super) fn record<I: Clone + Send + 'static>() -> (Sent<I>, impl Fn(&I) -> bool + Send + Sync)
    {
        let sent: Sent<I> = Arc::default();
        let log = Arc::clone(&sent);
        (sent, move |input: &I| {
            log.lock().unwrap().push(input.clone());
            true
        })
    }

    /// A request matcher that accepts the requests of its operation for which `accept`
    /// holds, and records them.
    pub(super) fn record_if<I: Clone + Send + 'static>(
        accept: impl Fn(&I) -> bool + Send + Sync,
    ) -> (Sent<I>, impl Fn(&I) -> bool + Send + Sync) {
        let sent: Sent<I> = Arc::default();
        let log = Arc::clone(&sent);
        (sent, move |input: &I| {
            let accepted = accept(input);
            if accepted {
                log.lock().unwrap().push(input.clone());
            }
            accepted
        })
    }

    /// The requests recorded.
    pub(super) fn sent<I: Clone>(sent: &Sent<I>) -> Vec<I> {
        sent.lock().unwrap().clone()
    }

    /// Error metadata with a service error code, as DynamoDB's JSON errors carry.
    pub(super) fn code(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder()
            .code(code)
            .message("canned")
            .build()
    }
}
