//! In-memory fakes of the ports, for handler tests. Behind the `testing` feature.
//!
//! The fakes keep the same promises as the AWS adapters (a row changes at most once per
//! batch id) and can be told to fail part-way, so crash-and-retry paths can be tested.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use bytes::Bytes;

use rejectwatch_core::alert::{AlertState, ClaimDecision, Digest, decide_claim};
use rejectwatch_core::counters::{BatchId, CounterBatch, GapUpdate, RowUpdate, StoredCounter};
use rejectwatch_core::ports::{
    AlertPublisher, AlertStateStore, ApplyReport, ByteRange, Claim, ClaimOutcome, CounterReader,
    CounterStore, DigestLog, EvaluationProgress, FetchError, ObjectBody, ObjectRange, ObjectRef,
    ObjectSource, PublishError, StoreError,
};

#[derive(Default)]
struct Rows {
    counters: HashMap<(IpAddr, u64), StoredCounter>,
    gaps: HashMap<(String, u64), GapUpdate>,
    /// The manifests: the row keys of each batch's first delivery.
    manifests: HashMap<BatchId, Vec<String>>,
    /// The ledger: the row keys each (batch, chunk index) applied.
    chunks: HashMap<(BatchId, usize), Vec<String>>,
    done: HashSet<BatchId>,
    /// Per source: the state, the run holding it, and the state before that claim.
    alerts: HashMap<IpAddr, (AlertState, String, AlertState)>,
    /// Runs that recorded their digest as published.
    published_runs: HashSet<String>,
    evaluated_through: Option<u64>,
    /// Confirms and digest records still to fail (transient errors after a publish).
    failing_confirms: u32,
    failing_releases: u32,
    failing_digest_records: u32,
    requests: u64,
    /// Row updates still allowed before every call fails (`None`: never fail).
    failures_after: Option<u64>,
}

/// Counters in memory, applied in the same chunks as the DynamoDB store, each at most once
/// per batch id.
#[derive(Default)]
pub struct InMemoryCounterStore {
    rows: Mutex<Rows>,
}

impl InMemoryCounterStore {
    /// Makes the store fail every write request after `requests` more succeed (a chunk or
    /// a manifest or its done mark each): a crash part-way.
    pub fn fail_after(&self, requests: u64) {
        self.lock().failures_after = Some(requests);
    }

    /// Stops failing.
    pub fn heal(&self) {
        self.lock().failures_after = None;
    }

    /// The row of a source in a window.
    pub fn counter(&self, source: IpAddr, window_start: u64) -> Option<StoredCounter> {
        self.lock().counters.get(&(source, window_start)).cloned()
    }

    /// Every counter row.
    pub fn counters(&self) -> Vec<StoredCounter> {
        let mut rows: Vec<StoredCounter> = self.lock().counters.values().cloned().collect();
        rows.sort_by_key(|row| (row.source, row.window_start));
        rows
    }

    /// Summed gap counts of an interface in a window.
    pub fn gap(&self, interface: &str, window_start: u64) -> Option<GapUpdate> {
        self.lock()
            .gaps
            .get(&(interface.to_owned(), window_start))
            .cloned()
    }

    /// Adds a counter row directly (for evaluator tests).
    pub fn insert_counter(&self, row: StoredCounter) {
        if let Some(source) = row.source {
            self.lock().counters.insert((source, row.window_start), row);
        }
    }

    /// Adds a capture-gap row directly (for evaluator tests).
    pub fn insert_gap(&self, gap: GapUpdate) {
        self.lock()
            .gaps
            .insert((gap.interface.clone(), gap.window_start), gap);
    }

    /// A source's alert state.
    pub fn alert_state(&self, source: IpAddr) -> Option<AlertState> {
        self.lock().alerts.get(&source).map(|(state, _, _)| *state)
    }

    /// Makes the next `times` confirms fail, as a throttled or unavailable table would.
    pub fn fail_next_confirms(&self, times: u32) {
        self.lock().failing_confirms = times;
    }

    /// Makes the next `times` releases fail (a run that dies before giving claims back).
    pub fn fail_next_releases(&self, times: u32) {
        self.lock().failing_releases = times;
    }

    /// Makes the next `times` digest records fail.
    pub fn fail_next_digest_records(&self, times: u32) {
        self.lock().failing_digest_records = times;
    }

    /// Write requests received (manifests, chunks and done marks).
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rows> {
        // A panic while holding the lock is a test failure already; keep its state.
        self.rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn injected_failure() -> StoreError {
    StoreError::Service {
        action: "updating counters (injected failure)".into(),
        table: "in-memory".into(),
        retryable: true,
        source: "injected failure".into(),
    }
}

impl Rows {
    fn spend_one_update(&mut self) -> Result<(), StoreError> {
        self.requests += 1;
        match self.failures_after {
            Some(0) => Err(injected_failure()),
            Some(left) => {
                self.failures_after = Some(left - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl CounterStore for InMemoryCounterStore {
    async fn is_done(&self, batch: &BatchId) -> Result<bool, StoreError> {
        Ok(self.lock().done.contains(batch))
    }

    async fn apply(&self, batch: &CounterBatch) -> Result<ApplyReport, StoreError> {
        let mut report = ApplyReport::default();
        let chunks = batch.chunks();
        {
            // The manifest first: a redelivery with other rows is refused as a whole.
            let mut rows = self.lock();
            rows.spend_one_update()?;
            report.requests += 1;
            let keys: Vec<String> = chunks
                .iter()
                .flat_map(|chunk| chunk.rows.iter().map(row_key))
                .collect();
            match rows.manifests.get(&batch.id) {
                Some(applied) if *applied != keys => {
                    return Err(StoreError::Service {
                        action: format!("writing the manifest of batch {}", batch.id),
                        table: "in-memory".into(),
                        retryable: false,
                        source: "an earlier delivery of this batch began applying other rows"
                            .into(),
                    });
                }
                Some(_) => {}
                None => {
                    rows.manifests.insert(batch.id.clone(), keys);
                }
            }
        }
        for chunk in chunks {
            let mut rows = self.lock();
            rows.spend_one_update()?;
            report.requests += 1;
            let n_rows = chunk.rows.len() as u64;
            let keys: Vec<String> = chunk.rows.iter().map(row_key).collect();
            match rows.chunks.get(&(batch.id.clone(), chunk.index)) {
                Some(applied) if *applied == keys => {
                    report.already_applied += n_rows;
                    continue;
                }
                Some(_) => {
                    return Err(StoreError::Service {
                        action: format!("applying chunk {} of batch {}", chunk.index, batch.id),
                        table: "in-memory".into(),
                        retryable: false,
                        source: "an earlier delivery applied this chunk with other rows".into(),
                    });
                }
                None => {}
            }
            rows.chunks.insert((batch.id.clone(), chunk.index), keys);
            for row in &chunk.rows {
                match row {
                    RowUpdate::Counter(update) => {
                        let key = (update.source, update.window_start);
                        rows.counters.entry(key).or_default().merge(update);
                    }
                    RowUpdate::Gap(gap) => {
                        let key = (gap.interface.clone(), gap.window_start);
                        let stored = rows.gaps.entry(key).or_insert_with(|| GapUpdate {
                            nodata: 0,
                            skipdata: 0,
                            ..(*gap).clone()
                        });
                        stored.nodata += gap.nodata;
                        stored.skipdata += gap.skipdata;
                    }
                }
            }
            report.applied += n_rows;
        }
        Ok(report)
    }

    async fn mark_done(&self, batch: &BatchId, _expires_at: u64) -> Result<(), StoreError> {
        let mut rows = self.lock();
        rows.spend_one_update()?;
        rows.done.insert(batch.clone());
        Ok(())
    }
}

impl CounterReader for InMemoryCounterStore {
    async fn window_counters(
        &self,
        window_start: u64,
        min_rejects: u64,
    ) -> Result<Vec<StoredCounter>, StoreError> {
        Ok(self
            .counters()
            .into_iter()
            .filter(|row| row.window_start == window_start && row.rejects >= min_rejects)
            .collect())
    }

    async fn source_counters(
        &self,
        source: std::net::IpAddr,
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredCounter>, StoreError> {
        Ok(self
            .counters()
            .into_iter()
            .filter(|row| row.source == Some(source) && (from..=to).contains(&row.window_start))
            .collect())
    }

    async fn window_gaps(&self, window_start: u64) -> Result<Vec<GapUpdate>, StoreError> {
        Ok(self
            .lock()
            .gaps
            .values()
            .filter(|gap| gap.window_start == window_start)
            .cloned()
            .collect())
    }
}

fn row_key(row: &RowUpdate<'_>) -> String {
    match row {
        RowUpdate::Counter(update) => format!("{}/{}", update.source, update.window_start),
        // The shard is part of the stored key, as in DynamoDB's `GAP#<window>#<shard>`.
        RowUpdate::Gap(gap) => format!("{}@{}#{}", gap.interface, gap.window_start, gap.shard),
    }
}

fn empty_state() -> AlertState {
    AlertState {
        level: 0,
        claimed_at: 0,
        held_until: 0,
        published: false,
    }
}

impl AlertStateStore for InMemoryCounterStore {
    async fn claim(
        &self,
        source: IpAddr,
        level: u8,
        activity_end: u64,
        claim: &Claim,
    ) -> Result<ClaimOutcome, StoreError> {
        let mut rows = self.lock();
        let held = rows.alerts.get(&source).cloned();
        let state = held.as_ref().map(|(state, _, _)| *state);
        let held_by_this_run = held
            .as_ref()
            .is_some_and(|(state, run, _)| !state.published && *run == claim.run_id);
        match decide_claim(state, held_by_this_run, level, activity_end, claim) {
            ClaimDecision::Claim => {}
            ClaimDecision::Cooldown => return Ok(ClaimOutcome::Cooldown),
            ClaimDecision::HeldElsewhere => return Ok(ClaimOutcome::ClaimedElsewhere),
            ClaimDecision::Abandoned => {
                let holder = held.map(|(_, run, _)| run).unwrap_or_default();
                return Ok(ClaimOutcome::Abandoned { holder });
            }
        }
        // A retry of the run keeps what was there before its first claim.
        let previous = match held {
            Some((_, _, previous)) if held_by_this_run => previous,
            _ => state.unwrap_or_else(empty_state),
        };
        rows.alerts.insert(
            source,
            (claimed(level, claim), claim.run_id.clone(), previous),
        );
        Ok(ClaimOutcome::Won)
    }

    async fn take_over(
        &self,
        source: IpAddr,
        level: u8,
        claim: &Claim,
        holder: &str,
    ) -> Result<ClaimOutcome, StoreError> {
        let mut rows = self.lock();
        match rows.alerts.get_mut(&source) {
            Some((state, run, _))
                if !state.published
                    && ((run == holder && state.held_until <= claim.wall_now)
                        || *run == claim.run_id) =>
            {
                *state = claimed(level, claim);
                *run = claim.run_id.clone();
                Ok(ClaimOutcome::Won)
            }
            _ => Ok(ClaimOutcome::ClaimedElsewhere),
        }
    }

    async fn confirm(&self, source: IpAddr, run_id: &str) -> Result<(), StoreError> {
        let mut rows = self.lock();
        if rows.failing_confirms > 0 {
            rows.failing_confirms -= 1;
            return Err(injected_failure());
        }
        if let Some((state, run, _)) = rows.alerts.get_mut(&source)
            && run == run_id
            && !state.published
        {
            state.published = true;
        }
        Ok(())
    }

    async fn release(&self, source: IpAddr, claim: &Claim) -> Result<(), StoreError> {
        let mut rows = self.lock();
        if rows.failing_releases > 0 {
            rows.failing_releases -= 1;
            return Err(injected_failure());
        }
        if let Some((state, run, previous)) = rows.alerts.get_mut(&source)
            && *run == claim.run_id
            && !state.published
        {
            *state = *previous;
        }
        Ok(())
    }
}

impl EvaluationProgress for InMemoryCounterStore {
    async fn evaluated_through(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().evaluated_through)
    }

    async fn mark_evaluated_through(&self, window_start: u64) -> Result<(), StoreError> {
        let mut rows = self.lock();
        rows.evaluated_through = rows.evaluated_through.max(Some(window_start));
        Ok(())
    }
}

fn claimed(level: u8, claim: &Claim) -> AlertState {
    AlertState {
        level,
        claimed_at: claim.now,
        held_until: claim.held_until,
        published: false,
    }
}

impl DigestLog for InMemoryCounterStore {
    async fn is_published(&self, run_id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().published_runs.contains(run_id))
    }

    async fn record_published(
        &self,
        run_id: &str,
        _source_count: u64,
        _published_at: u64,
        _expires_at: u64,
    ) -> Result<(), StoreError> {
        let mut rows = self.lock();
        if rows.failing_digest_records > 0 {
            rows.failing_digest_records -= 1;
            return Err(injected_failure());
        }
        rows.published_runs.insert(run_id.to_owned());
        Ok(())
    }
}

/// Keeps every digest it is asked to publish; can be told to fail.
#[derive(Default)]
pub struct RecordingPublisher {
    published: Mutex<Vec<Digest>>,
    failures_left: Mutex<u32>,
    lost_answers_left: Mutex<u32>,
}

impl RecordingPublisher {
    /// Makes the next `times` publishes fail.
    pub fn fail_next(&self, times: u32) {
        *self
            .failures_left
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = times;
    }

    /// Makes the next `times` publishes reach the topic but fail all the same, as when the
    /// answer is lost: the digest counts as published, the error is ambiguous.
    pub fn lose_next_answers(&self, times: u32) {
        *self
            .lost_answers_left
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = times;
    }

    /// The digests published so far.
    pub fn published(&self) -> Vec<Digest> {
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl AlertPublisher for RecordingPublisher {
    async fn publish(&self, digest: &Digest) -> Result<(), PublishError> {
        let mut failures = self
            .failures_left
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *failures > 0 {
            *failures -= 1;
            return Err(PublishError {
                topic: "in-memory".into(),
                ambiguous: false,
                source: "injected failure".into(),
            });
        }
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(digest.clone());
        let mut lost = self
            .lost_answers_left
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *lost > 0 {
            *lost -= 1;
            return Err(PublishError {
                topic: "in-memory".into(),
                ambiguous: true,
                source: "injected lost answer".into(),
            });
        }
        Ok(())
    }
}

/// Objects in memory, served in chunks of a chosen size.
#[derive(Default)]
pub struct InMemoryObjectSource {
    objects: Mutex<HashMap<(String, String), Vec<u8>>>,
    chunk_bytes: usize,
}

impl InMemoryObjectSource {
    /// An empty source serving 64 KiB chunks.
    pub fn new() -> Self {
        InMemoryObjectSource {
            objects: Mutex::default(),
            chunk_bytes: 64 << 10,
        }
    }

    /// Stores an object.
    pub fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((bucket.to_owned(), key.to_owned()), bytes);
    }
}

impl InMemoryObjectSource {
    /// `read` of the object's bytes, or `NotFound` as S3 answers.
    fn read<T>(&self, object: &ObjectRef, read: impl FnOnce(&[u8]) -> T) -> Result<T, FetchError> {
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(object.bucket.clone(), object.key.clone()))
            .map(|bytes| read(bytes))
            .ok_or_else(|| FetchError::NotFound {
                bucket: object.bucket.clone(),
                key: object.key.clone(),
            })
    }
}

/// The chunks of an in-memory object.
pub struct InMemoryBody {
    chunks: VecDeque<Bytes>,
}

impl ObjectBody for InMemoryBody {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        Ok(self.chunks.pop_front())
    }
}

impl ObjectSource for InMemoryObjectSource {
    type Body = InMemoryBody;

    async fn open(&self, object: &ObjectRef) -> Result<InMemoryBody, FetchError> {
        let chunks = self.read(object, |bytes| {
            bytes
                .chunks(self.chunk_bytes.max(1))
                .map(Bytes::copy_from_slice)
                .collect()
        })?;
        Ok(InMemoryBody { chunks })
    }

    async fn read_range(
        &self,
        object: &ObjectRef,
        range: ByteRange,
    ) -> Result<ObjectRange, FetchError> {
        self.read(object, |bytes| {
            let size = bytes.len();
            // Clamped as S3 clamps a range that runs past the end.
            let (start, end) = match range {
                ByteRange::Suffix(length) => (size.saturating_sub(length as usize), size),
                ByteRange::Span { start, end } => (
                    (start as usize).min(size),
                    (end as usize).min(size).max((start as usize).min(size)),
                ),
            };
            ObjectRange {
                bytes: Bytes::copy_from_slice(&bytes[start..end]),
                object_size: size as u64,
            }
        })
    }
}
