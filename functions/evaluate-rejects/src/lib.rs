//! The evaluate handler: on a schedule, reads the counters of every window that may still
//! change (and of settled windows not yet fully alerted), lets the core decide which
//! sources deserve an alert, claims each alert in DynamoDB (a conditional write, so
//! concurrent runs and the cooldown agree), publishes one digest, records that it did,
//! and confirms the claims. A failed publish gives the claims back, so the next run
//! alerts instead; a run that dies after publishing is never published again.
//!
//! [`handle`] takes a typed [`ScheduleEvent`] and returns the run's [`Summary`]; [`invoke`]
//! is the same with JSON in and out, for tests.
//!
//! It may not hold decisions of its own (which windows to read, who crosses a threshold,
//! what the digest says are `rejectwatch-core` functions) nor call AWS except through the
//! core's ports; `main.rs` alone builds the `rejectwatch-aws` adapters, and the digest's
//! query hint comes from there. The test kit is a dev-dependency only.

pub mod config;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt, TryStreamExt, stream};
use rejectwatch_aws::dynamodb::window_query_command;
use rejectwatch_core::alert::{
    DigestContext, Finding, evaluate_since, incomplete_spans, render_digest,
};
use rejectwatch_core::metrics::{emf_line, summary_line};
use rejectwatch_core::ports::{
    AlertPublisher, AlertStateStore, Claim, ClaimOutcome, CounterReader, DigestLog,
    EvaluationProgress, PublishError, StoreError,
};
use rejectwatch_core::settle::plan_evaluation;
use rejectwatch_core::time::parse_utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

use crate::config::{Config, MAX_CATCH_UP_SECONDS};

/// How long (wall clock) a claim of a run that knows no deadline (a direct call, a
/// test) is held before another run may treat it as abandoned. Longer than the function's
/// timeout (`template.yaml`; a test checks); Lambda runs hold theirs to their deadline.
pub const CLAIM_TIMEOUT_SECONDS: u64 = 300;
/// Added to a run's deadline before its claims count as abandoned: clocks of different
/// hosts differ a little.
pub const CLAIM_GRACE_SECONDS: u64 = 30;
/// Store requests (claims, confirms, window reads) in flight at once.
const STORE_CONCURRENCY: usize = 16;
/// Attempts at recording a published digest; the SDK retries each attempt as well.
const DIGEST_RECORD_ATTEMPTS: u32 = 4;

/// What the handler needs from outside.
pub struct Deps<S, P> {
    pub store: S,
    pub publisher: P,
    pub config: Config,
    /// Unix seconds now: claim timeouts count on the wall clock.
    pub wall_clock: Box<dyn Fn() -> u64 + Send + Sync>,
    /// How the digest tells its reader to list a window's rows straight from the table:
    /// the DynamoDB adapter's command for `config`'s table and index shards.
    pub query_hint: String,
}

impl<S, P> Deps<S, P> {
    /// Dependencies that read the system clock.
    pub fn new(store: S, publisher: P, config: Config) -> Self {
        let query_hint = window_query_command(&config.table_name, config.index_shards.max(1) - 1);
        Deps {
            store,
            publisher,
            config,
            wall_clock: Box::new(unix_now),
            query_hint,
        }
    }
}

/// Unix seconds now, on the system clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Why a run failed; Lambda retries it with the same request id (and so the same claims).
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error("event time {0:?} is not an RFC 3339 UTC time")]
    EventTime(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl EvaluateError {
    /// A stable name for searches and alarms.
    pub fn error_type(&self) -> &'static str {
        match self {
            EvaluateError::EventTime(_) => "Evaluate.Event",
            EvaluateError::Store(_) => "Evaluate.Store",
            EvaluateError::Publish(_) => "Evaluate.Publish",
        }
    }
}

impl From<EvaluateError> for lambda_runtime::Diagnostic {
    fn from(error: EvaluateError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.error_type().to_owned(),
            error_message: error_chain(&error),
        }
    }
}

pub use rejectwatch_core::ports::error_chain;

/// Counts for one run: logged as one JSON line and returned.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub evaluated_at: u64,
    pub windows: Vec<u64>,
    /// The latest settled window, recorded as evaluated when every finding is settled.
    pub settled_through: Option<u64>,
    /// Rows evaluated: those of the windows (and of the span before them) at or above the
    /// read limit, and every row of the sources read whole.
    pub rows: u64,
    /// Sources read whole over a span (their rows under the read limit could add up to a
    /// threshold): one `Query` each.
    pub source_reads: u64,
    pub findings: u64,
    /// Findings this run claimed and alerted.
    pub alerted: u64,
    /// Findings held back: cooldown, or claimed by another run.
    pub held: u64,
    /// Claims of runs that died unconfirmed, taken over (that run had not published).
    pub taken_over: u64,
    /// Findings left unclaimed for the next run, as this one was running out of time.
    pub deferred: u64,
    pub published: bool,
    /// A retry of a run whose earlier attempt published: nothing published again.
    pub already_published: bool,
    /// Claims left unconfirmed after the publish (harmless: the digest record covers them).
    pub unconfirmed: u64,
    /// The digest went out but its record could not be written (harmless: every claim
    /// was confirmed).
    pub unrecorded: bool,
    /// The publish failed in a way that SNS may have accepted it: the claims were kept for
    /// Lambda's retry of this run.
    pub ambiguous_publish: bool,
    /// Settled windows after the progress left unread by the catch-up cap (an outage of
    /// over an hour): their findings, if any, are not alerted.
    pub given_up_windows: u64,
    pub severity: Option<&'static str>,
    pub subject: Option<String>,
    pub duration_ms: u64,
}

/// The scheduled event that starts a run. Only its `time` matters: a retried event
/// evaluates the same windows. Any other payload (a direct invocation, `{}`) is read
/// leniently as one without a time, which runs at the wall clock's now, so the runtime's
/// deserialisation into this type never fails.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScheduleEvent {
    /// The event's `time`, as sent (an RFC 3339 UTC time when EventBridge sends it).
    pub time: Option<String>,
}

impl ScheduleEvent {
    /// Reads `time` if it is a string; everything else in the payload is ignored.
    pub fn from_payload(payload: &Value) -> Self {
        ScheduleEvent {
            time: payload
                .get("time")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }

    /// The evaluation time: the event's `time`, else `wall_clock_now`.
    pub fn evaluation_time(&self, wall_clock_now: u64) -> Result<u64, EvaluateError> {
        match &self.time {
            Some(text) => parse_utc(text)
                .ok_or_else(|| EvaluateError::EventTime(text.chars().take(64).collect())),
            None => Ok(wall_clock_now),
        }
    }
}

impl<'de> Deserialize<'de> for ScheduleEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(|payload| ScheduleEvent::from_payload(&payload))
    }
}

/// What the evaluator needs of its store: the counters, the per-source claims, its
/// progress mark and the digest log (one DynamoDB table, or the test kit's fake).
pub trait EvaluatorStore:
    CounterReader + AlertStateStore + EvaluationProgress + DigestLog + Sync
{
}

impl<T> EvaluatorStore for T where
    T: CounterReader + AlertStateStore + EvaluationProgress + DigestLog + Sync
{
}

/// Runs one evaluation. `run_id` identifies the run (the Lambda request id).
pub async fn handle(
    event: ScheduleEvent,
    run_id: &str,
    deps: &Deps<impl EvaluatorStore, impl AlertPublisher + Sync>,
) -> Result<Summary, EvaluateError> {
    handle_until(event, run_id, None, deps).await
}

/// [`handle`] for a run that Lambda stops at `deadline` (unix seconds, wall clock): its
/// claims are held until then, and a grace, before other runs may take them over.
pub async fn handle_until(
    event: ScheduleEvent,
    run_id: &str,
    deadline: Option<u64>,
    deps: &Deps<impl EvaluatorStore, impl AlertPublisher + Sync>,
) -> Result<Summary, EvaluateError> {
    let started = Instant::now();
    let mut summary = Summary::default();
    let run_context = Run {
        id: run_id,
        deadline,
    };
    let result = run(&event, &run_context, deps, &mut summary).await;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    println!("{}", summary_line("evaluation summary", &result, &summary));
    println!(
        "{}",
        emf_line(
            summary.evaluated_at * 1000,
            &[("Function", "evaluate-rejects")],
            &[
                ("Rows", summary.rows),
                ("SourceReads", summary.source_reads),
                ("Findings", summary.findings),
                ("Alerted", summary.alerted),
                ("Held", summary.held),
                ("TakenOver", summary.taken_over),
                ("Deferred", summary.deferred),
                ("Published", u64::from(summary.published)),
                ("Unconfirmed", summary.unconfirmed),
                ("GivenUpWindows", summary.given_up_windows),
            ],
        )
    );
    result.map(|()| summary)
}

/// A direct invocation, JSON in and JSON out as Lambda sees it: what the tests call.
pub async fn invoke(
    payload: Value,
    run_id: &str,
    deps: &Deps<impl EvaluatorStore, impl AlertPublisher + Sync>,
) -> Result<Value, EvaluateError> {
    invoke_until(payload, run_id, None, deps).await
}

/// [`invoke`] with a deadline (unix seconds).
pub async fn invoke_until(
    payload: Value,
    run_id: &str,
    deadline: Option<u64>,
    deps: &Deps<impl EvaluatorStore, impl AlertPublisher + Sync>,
) -> Result<Value, EvaluateError> {
    let event = ScheduleEvent::from_payload(&payload);
    let summary = handle_until(event, run_id, deadline, deps).await?;
    Ok(serde_json::to_value(summary).expect("the summary serialises"))
}

/// The invocation: its id, which Lambda's retries keep, and its deadline.
struct Run<'a> {
    id: &'a str,
    deadline: Option<u64>,
}

async fn run<S, P>(
    event: &ScheduleEvent,
    run: &Run<'_>,
    deps: &Deps<S, P>,
    summary: &mut Summary,
) -> Result<(), EvaluateError>
where
    S: EvaluatorStore,
    P: AlertPublisher + Sync,
{
    let config = &deps.config;
    let now = event.evaluation_time((deps.wall_clock)())?;
    let evaluated_through = deps.store.evaluated_through().await?;
    let plan = plan_evaluation(
        now,
        config.window_seconds,
        config.settle_seconds,
        MAX_CATCH_UP_SECONDS,
        evaluated_through,
    );
    summary.evaluated_at = now;
    summary.windows = plan.windows.clone();
    summary.settled_through = plan.settled_through;
    summary.given_up_windows = plan.given_up;
    if plan.given_up > 0 {
        warn!(
            given_up_windows = plan.given_up,
            "settled windows older than the catch-up limit were not evaluated"
        );
    }

    let outcome = evaluate_windows(&plan.windows, now, run, deps, summary).await;
    match outcome {
        // Only a run that alerted, or held for a cooldown, everything it found moves the
        // progress on, and only to a settled window; every other window is read again.
        Ok(Settled::Yes) => {
            if let Some(through) = plan.settled_through {
                deps.store.mark_evaluated_through(through).await?;
            }
            Ok(())
        }
        // The first run ever has no progress to come back to: record that the windows
        // before these were evaluated, so the next run reaches back to these. The run's
        // own error, if any, is the one to report.
        Ok(Settled::NotYet) => {
            if evaluated_through.is_none() {
                mark_before(&plan.windows, deps).await;
            }
            Ok(())
        }
        Err(error) => {
            if evaluated_through.is_none() {
                mark_before(&plan.windows, deps).await;
            }
            Err(error)
        }
    }
}

/// Records the window before `windows` as evaluated; a failure is logged.
async fn mark_before<S, P>(windows: &[u64], deps: &Deps<S, P>)
where
    S: EvaluationProgress + Sync,
{
    if let Some(before) = windows
        .first()
        .and_then(|window| window.checked_sub(deps.config.window_seconds))
        && let Err(marking) = deps.store.mark_evaluated_through(before).await
    {
        warn!(error = %error_chain(&marking), "recording the evaluator's progress failed");
    }
}

/// Reads the windows, evaluates them and alerts what is found.
async fn evaluate_windows<S, P>(
    windows: &[u64],
    now: u64,
    run: &Run<'_>,
    deps: &Deps<S, P>,
    summary: &mut Summary,
) -> Result<Settled, EvaluateError>
where
    S: CounterReader + AlertStateStore + DigestLog + Sync,
    P: AlertPublisher + Sync,
{
    let config = &deps.config;
    let policy = &config.policy;
    let window_seconds = config.window_seconds;
    // Spans that end in these windows reach back into windows evaluated before: their
    // rows are read too, as context that never fires alone.
    let (Some(&first), Some(&last)) = (windows.first(), windows.last()) else {
        return Ok(Settled::Yes);
    };
    let context = (1..policy.span_windows(window_seconds))
        .rev()
        .filter_map(|back| first.checked_sub(back * window_seconds));
    let read_limit = policy.min_rejects_to_read(window_seconds);
    let read: Vec<(u64, Vec<_>, bool)> = stream::iter(context.chain(windows.iter().copied()))
        .map(|window| async move {
            let rows = deps.store.window_counters(window, read_limit).await?;
            let gaps = deps.store.window_gaps(window).await?;
            let skipped = gaps.iter().any(|gap| gap.skipdata > 0);
            Ok::<_, StoreError>((window, rows, skipped))
        })
        .buffered(4)
        .try_collect()
        .await?;
    let mut rows = Vec::new();
    let mut skipped_windows = BTreeSet::new();
    for (window, window_rows, skipped) in read {
        rows.extend(window_rows);
        if skipped {
            skipped_windows.insert(window);
        }
    }
    // A source whose span could cross a threshold with the rows under the read limit is
    // read whole over it, from its own partition, so that its spans are exact.
    let incomplete = incomplete_spans(&rows, policy, window_seconds, (first, last), read_limit);
    summary.source_reads = incomplete.len() as u64;
    let complete: Vec<(IpAddr, u64, u64, Vec<_>)> = stream::iter(incomplete)
        .map(|(source, from, to)| async move {
            let rows = deps.store.source_counters(source, from, to).await?;
            Ok::<_, StoreError>((source, from, to, rows))
        })
        .buffer_unordered(STORE_CONCURRENCY)
        .try_collect()
        .await?;
    // Their rows replace those read by window, in one pass.
    let replaced: HashMap<IpAddr, (u64, u64)> = complete
        .iter()
        .map(|(source, from, to, _)| (*source, (*from, *to)))
        .collect();
    rows.retain(|row| {
        let range = row.source.and_then(|source| replaced.get(&source));
        range.is_none_or(|&(from, to)| !(from..=to).contains(&row.window_start))
    });
    rows.extend(
        complete
            .into_iter()
            .flat_map(|(_, _, _, source_rows)| source_rows),
    );
    summary.rows = rows.len() as u64;
    let skipped: Vec<u64> = skipped_windows.into_iter().collect();
    let findings = evaluate_since(&rows, &skipped, policy, first);
    summary.findings = findings.len() as u64;
    if findings.is_empty() {
        return Ok(Settled::Yes);
    }
    alert(&findings, now, windows, run, deps, summary).await
}

/// Whether every finding of a run is settled: alerted, or held by a published alert's
/// cooldown. One claimed by another run that has not published may still come back.
enum Settled {
    Yes,
    NotYet,
}

/// Claims the findings, publishes one digest of those this run won, records the
/// publish, and confirms the claims; a failed publish gives the claims back.
async fn alert<S, P>(
    findings: &[Finding],
    now: u64,
    windows: &[u64],
    run: &Run<'_>,
    deps: &Deps<S, P>,
    summary: &mut Summary,
) -> Result<Settled, EvaluateError>
where
    S: AlertStateStore + DigestLog + Sync,
    P: AlertPublisher + Sync,
{
    let config = &deps.config;
    let run_id = run.id;
    if deps.store.is_published(run_id).await? {
        // Lambda retried a run whose earlier attempt published and recorded it, then
        // failed (confirming, or recording progress). Publishing again would repeat the
        // digest: finish its confirms instead, and leave anything new to the next run.
        summary.already_published = true;
        let sources: Vec<IpAddr> = findings.iter().map(|finding| finding.source).collect();
        summary.unconfirmed = confirm_all(&sources, run_id, deps).await;
        return Ok(Settled::NotYet);
    }
    let wall_now = (deps.wall_clock)();
    let claim = Claim {
        run_id: run_id.to_owned(),
        now,
        wall_now,
        held_until: run
            .deadline
            .map_or(wall_now + CLAIM_TIMEOUT_SECONDS, |deadline| {
                deadline.max(wall_now) + CLAIM_GRACE_SECONDS
            }),
        cooldown_seconds: config.cooldown_seconds,
        expires_at: now + config.cooldown_seconds + config.retention_seconds,
    };
    // Claims and confirms take about as long each (a request per finding); claiming
    // stops once 40% of the run's time is gone, leaving time to publish and confirm what
    // it claimed. Findings come most severe first; the rest wait for the next run.
    let claim_until = run.deadline.map(|deadline| {
        Instant::now() + Duration::from_secs(deadline.saturating_sub(wall_now)) * 2 / 5
    });
    let claims = claim_all(findings, &claim, claim_until, deps).await?;
    summary.alerted = claims.won.len() as u64;
    summary.deferred = claims.deferred;
    summary.held = findings.len() as u64 - claims.won.len() as u64 - claims.deferred;
    summary.taken_over = claims.taken_over;
    let settled = if claims.claimed_elsewhere || claims.deferred > 0 {
        Settled::NotYet
    } else {
        Settled::Yes
    };
    let context = DigestContext {
        digest_id: run_id,
        evaluated_at: now,
        windows,
        window_seconds: config.window_seconds,
        table_name: &config.table_name,
        query_hint: &deps.query_hint,
        max_listed: config.max_listed,
    };
    let Some(digest) = render_digest(&claims.won, &context) else {
        return Ok(settled);
    };
    summary.severity = Some(digest.severity.name());
    summary.subject = Some(digest.subject.clone());
    if let Err(error) = deps.publisher.publish(&digest).await {
        if error.ambiguous {
            // SNS may have accepted the digest (a timeout, a dropped connection, a 5xx).
            // The claims stay this run's: only Lambda's retry of this very run (same id,
            // so the same digest id, which subscribers can drop) publishes them again.
            summary.ambiguous_publish = true;
        } else {
            // Refused: give every claim back, so the next run (or Lambda's retry) alerts
            // instead; a claim that cannot be given back is abandoned after its deadline.
            for finding in &claims.won {
                if let Err(release) = deps.store.release(finding.source, &claim).await {
                    warn!(source_addr = %finding.source, error = %error_chain(&release), "releasing a claim failed");
                }
            }
        }
        return Err(error.into());
    }
    summary.published = true;
    // One write says the digest went out, then each claim is confirmed: either is enough
    // for no later run to publish the finding again. Only if both fail does the run fail,
    // and Lambda's retry (same id) publishes the unconfirmed ones again, under the same
    // digest id.
    let recorded = record_published(run_id, claims.won.len() as u64, &claim, deps).await;
    let sources: Vec<IpAddr> = claims.won.iter().map(|finding| finding.source).collect();
    summary.unconfirmed = confirm_all(&sources, run_id, deps).await;
    match recorded {
        Err(error) if summary.unconfirmed > 0 => Err(error.into()),
        Err(error) => {
            summary.unrecorded = true;
            warn!(error = %error_chain(&error), "recording the published digest failed; every claim is confirmed");
            Ok(settled)
        }
        Ok(()) => Ok(settled),
    }
}

async fn record_published<S, P>(
    run_id: &str,
    source_count: u64,
    claim: &Claim,
    deps: &Deps<S, P>,
) -> Result<(), StoreError>
where
    S: DigestLog + Sync,
{
    let mut wait = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        let result = deps
            .store
            .record_published(run_id, source_count, (deps.wall_clock)(), claim.expires_at)
            .await;
        match result {
            Ok(()) => return Ok(()),
            Err(error) if attempt < DIGEST_RECORD_ATTEMPTS && error.is_retryable() => {
                warn!(attempt, error = %error_chain(&error), "recording the published digest failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 4;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Confirms this run's claims on `sources`, concurrently; returns how many failed.
/// A failure is logged, not fatal: the digest record already says the run published,
/// and a run finding such a claim abandoned reads it before taking over.
async fn confirm_all<S, P>(sources: &[IpAddr], run_id: &str, deps: &Deps<S, P>) -> u64
where
    S: AlertStateStore + Sync,
{
    let failures: Vec<IpAddr> = stream::iter(sources.iter().copied())
        .map(|source| async move {
            match deps.store.confirm(source, run_id).await {
                Ok(()) => None,
                Err(error) => {
                    warn!(source_addr = %source, error = %error_chain(&error), "confirming a claim failed");
                    Some(source)
                }
            }
        })
        .buffer_unordered(STORE_CONCURRENCY)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    failures.len() as u64
}

/// The claims a run won, in the findings' order.
struct Claims {
    won: Vec<Finding>,
    /// Some finding is claimed by another run that has not published yet.
    claimed_elsewhere: bool,
    /// Abandoned claims taken over.
    taken_over: u64,
    /// Findings not claimed before `claim_until`.
    deferred: u64,
}

/// Claims each finding, concurrently, until `claim_until`. A claim another run abandoned
/// is taken over unless that run recorded its digest as published, in which case its
/// claim is confirmed on its behalf and the finding claimed again (the cooldown then
/// decides).
async fn claim_all<S, P>(
    findings: &[Finding],
    claim: &Claim,
    claim_until: Option<Instant>,
    deps: &Deps<S, P>,
) -> Result<Claims, EvaluateError>
where
    S: AlertStateStore + DigestLog + Sync,
{
    let window_seconds = deps.config.window_seconds;
    // Whether each holder of an abandoned claim published, asked once per holder.
    let holders_published: Mutex<HashMap<String, bool>> = Mutex::default();
    let holders_published = &holders_published;
    let outcomes: Vec<(usize, Option<Claimed>)> = stream::iter(0..findings.len())
        .map(|index| async move {
            if claim_until.is_some_and(|until| Instant::now() >= until) {
                return Ok((index, None));
            }
            let finding = &findings[index];
            let level = finding.severity.level();
            let activity_end = finding.windows.last().map_or(0, |w| w + window_seconds);
            let outcome = deps
                .store
                .claim(finding.source, level, activity_end, claim)
                .await?;
            let ClaimOutcome::Abandoned { holder } = outcome else {
                return Ok((index, Some(Claimed::Plain(outcome))));
            };
            let known = lock(holders_published).get(&holder).copied();
            let published = match known {
                Some(published) => published,
                None => {
                    let published = deps.store.is_published(&holder).await?;
                    lock(holders_published).insert(holder.clone(), published);
                    published
                }
            };
            if published {
                deps.store.confirm(finding.source, &holder).await?;
                let outcome = match deps
                    .store
                    .claim(finding.source, level, activity_end, claim)
                    .await?
                {
                    // Abandoned again: yet another run's claim since; leave it to it.
                    ClaimOutcome::Abandoned { .. } => ClaimOutcome::ClaimedElsewhere,
                    outcome => outcome,
                };
                Ok((index, Some(Claimed::Plain(outcome))))
            } else {
                let outcome = deps
                    .store
                    .take_over(finding.source, level, claim, &holder)
                    .await?;
                Ok::<_, EvaluateError>((index, Some(Claimed::TakenOver(outcome))))
            }
        })
        .buffer_unordered(STORE_CONCURRENCY)
        .try_collect()
        .await?;
    let mut claims = Claims {
        won: Vec::new(),
        claimed_elsewhere: false,
        taken_over: 0,
        deferred: 0,
    };
    let mut won = Vec::new();
    for (index, claimed) in outcomes {
        let outcome = match claimed {
            None => {
                claims.deferred += 1;
                continue;
            }
            Some(Claimed::TakenOver(outcome)) => {
                claims.taken_over += u64::from(outcome == ClaimOutcome::Won);
                outcome
            }
            Some(Claimed::Plain(outcome)) => outcome,
        };
        match outcome {
            ClaimOutcome::Won => won.push(index),
            ClaimOutcome::ClaimedElsewhere | ClaimOutcome::Abandoned { .. } => {
                claims.claimed_elsewhere = true;
            }
            ClaimOutcome::Cooldown => {}
        }
    }
    won.sort_unstable();
    claims.won = won
        .into_iter()
        .map(|index| findings[index].clone())
        .collect();
    Ok(claims)
}

/// How a finding's claim ended.
enum Claimed {
    Plain(ClaimOutcome),
    /// After taking over another run's abandoned claim.
    TakenOver(ClaimOutcome),
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding it; a poisoned lock still holds a consistent map.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_event_time_is_the_evaluation_time() {
        let event: ScheduleEvent = serde_json::from_value(
            json!({"detail-type": "Scheduled Event", "time": "2024-05-01T12:05:00Z"}),
        )
        .unwrap();
        assert_eq!(event.evaluation_time(0).unwrap(), 1_714_565_100);
        assert!(matches!(
            ScheduleEvent::from_payload(&json!({"time": "noon"})).evaluation_time(0),
            Err(EvaluateError::EventTime(_))
        ));
        // No time, or one that is not a string, or no object at all: the wall clock.
        for payload in [json!({}), json!({"time": 5}), json!([1]), json!("tick")] {
            let event: ScheduleEvent = serde_json::from_value(payload).unwrap();
            assert_eq!(event.evaluation_time(1_800_000_000).unwrap(), 1_800_000_000);
        }
    }
}
