//! The evaluate handler: on a schedule, reads the counters of the last completed windows,
//! lets the core decide which sources deserve an alert, claims each alert in DynamoDB
//! (a conditional write, so concurrent runs and the cooldown agree), and publishes one
//! digest. A failed publish gives the claims back, so the next run alerts instead.

pub mod config;

use std::collections::BTreeSet;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use serde_json::{Value, json};
use shared::alert::{DigestContext, Finding, evaluate, render_digest};
use shared::metrics::emf_line;
use shared::ports::{
    AlertPublisher, AlertStateStore, Claim, ClaimOutcome, CounterReader, PublishError, StoreError,
};
use shared::time::parse_utc;
use tracing::warn;

use crate::config::Config;

/// How long a claim may stay unconfirmed before another run treats it as abandoned.
pub const CLAIM_TIMEOUT_SECONDS: u64 = 300;
/// Claims in flight at once.
const CLAIM_CONCURRENCY: usize = 16;

/// What the handler needs from outside.
pub struct Deps<S, P> {
    pub store: S,
    pub publisher: P,
    pub config: Config,
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

pub use shared::ports::error_chain;

/// Counts for one run: logged as one JSON line and returned.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub evaluated_at: u64,
    pub windows: Vec<u64>,
    /// Rows read (those at or above the lowest threshold).
    pub rows: u64,
    pub findings: u64,
    /// Findings this run claimed and alerted.
    pub alerted: u64,
    /// Findings held back: cooldown, or claimed by another run.
    pub held: u64,
    pub published: bool,
    pub severity: Option<&'static str>,
    pub subject: Option<String>,
    pub duration_ms: u64,
}

/// The evaluation time: the scheduled event's `time` (so a retried event evaluates the
/// same windows), else the clock.
pub fn evaluation_time(event: &Value) -> Result<u64, EvaluateError> {
    match event.get("time").and_then(Value::as_str) {
        Some(text) => {
            parse_utc(text).ok_or_else(|| EvaluateError::EventTime(text.chars().take(64).collect()))
        }
        None => Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs())),
    }
}

/// The windows a run evaluates, oldest first: the last `lookback` completed ones, and
/// further back to the window after `evaluated_through` (the last run that finished) when
/// runs failed in between, so that a finding whose publish failed is found again however
/// far the windows moved on; but never more than `max_catch_up` windows.
pub fn windows_to_evaluate(
    now: u64,
    window_seconds: u64,
    lookback: u64,
    max_catch_up: u64,
    evaluated_through: Option<u64>,
) -> Vec<u64> {
    let window_seconds = window_seconds.max(1);
    let latest = (now - now % window_seconds).saturating_sub(window_seconds);
    let missed =
        evaluated_through.map_or(0, |through| latest.saturating_sub(through) / window_seconds);
    let count = lookback.max(missed.min(max_catch_up));
    completed_windows(now, window_seconds, count)
}

/// The starts of the last `count` windows that ended at or before `now`, oldest first.
pub fn completed_windows(now: u64, window_seconds: u64, count: u64) -> Vec<u64> {
    let window_seconds = window_seconds.max(1);
    let current = now - now % window_seconds;
    (1..=count)
        .rev()
        .filter_map(|back| current.checked_sub(back * window_seconds))
        .collect()
}

/// Runs one evaluation. `run_id` identifies the run (the Lambda request id).
pub async fn handle<S, P>(
    event: Value,
    run_id: &str,
    deps: &Deps<S, P>,
) -> Result<Value, EvaluateError>
where
    S: CounterReader + AlertStateStore + Sync,
    P: AlertPublisher + Sync,
{
    let started = Instant::now();
    let mut summary = Summary::default();
    let result = run(&event, run_id, deps, &mut summary).await;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    let outcome = match &result {
        Ok(()) => "ok".to_owned(),
        Err(error) => error_chain(error),
    };
    println!(
        "{}",
        json!({"message": "evaluation summary", "outcome": outcome, "summary": summary})
    );
    println!(
        "{}",
        emf_line(
            summary.evaluated_at * 1000,
            &[("Function", "evaluate-rejects")],
            &[
                ("Rows", summary.rows),
                ("Findings", summary.findings),
                ("Alerted", summary.alerted),
                ("Held", summary.held),
                ("Published", u64::from(summary.published)),
            ],
        )
    );
    result.map(|()| json!(summary))
}

async fn run<S, P>(
    event: &Value,
    run_id: &str,
    deps: &Deps<S, P>,
    summary: &mut Summary,
) -> Result<(), EvaluateError>
where
    S: CounterReader + AlertStateStore + Sync,
    P: AlertPublisher + Sync,
{
    let config = &deps.config;
    let now = evaluation_time(event)?;
    let evaluated_through = deps.store.evaluated_through().await?;
    let windows = windows_to_evaluate(
        now,
        config.window_seconds,
        config.lookback_windows,
        config.max_catch_up_windows(),
        evaluated_through,
    );
    summary.evaluated_at = now;
    summary.windows = windows.clone();

    let mut rows = Vec::new();
    let mut skipped_windows = BTreeSet::new();
    for &window in &windows {
        rows.extend(
            deps.store
                .window_counters(window, config.policy.min_rejects())
                .await?,
        );
        if deps
            .store
            .window_gaps(window)
            .await?
            .iter()
            .any(|gap| gap.skipdata > 0)
        {
            skipped_windows.insert(window);
        }
    }
    summary.rows = rows.len() as u64;
    let skipped: Vec<u64> = skipped_windows.into_iter().collect();
    let findings = evaluate(&rows, &skipped, &config.policy);
    summary.findings = findings.len() as u64;
    let outcome = if findings.is_empty() {
        Ok(Settled::Yes)
    } else {
        alert(&findings, now, &windows, run_id, deps, summary).await
    };
    match outcome {
        // Only a run that alerted, or held for a cooldown, everything it found moves the
        // progress on; otherwise the next runs evaluate these windows again.
        Ok(Settled::Yes) => {
            if let Some(&latest) = windows.last() {
                deps.store.mark_evaluated_through(latest).await?;
            }
            Ok(())
        }
        Ok(Settled::NotYet) => Ok(()),
        Err(error) => {
            // The first run ever has no progress to come back to: record that the windows
            // before these were evaluated, so the next run reaches back to these. The
            // run's own error is the one to report.
            if evaluated_through.is_none()
                && let Some(before) = windows
                    .first()
                    .and_then(|w| w.checked_sub(config.window_seconds))
                && let Err(marking) = deps.store.mark_evaluated_through(before).await
            {
                warn!(error = %error_chain(&marking), "recording the evaluator's progress failed");
            }
            Err(error)
        }
    }
}

/// Whether every finding of a run is settled: alerted, or held by a published alert's
/// cooldown. One claimed by another run that has not published may still come back.
enum Settled {
    Yes,
    NotYet,
}

/// Claims the findings, publishes one digest of those this run won, and confirms them; a
/// failed publish gives the claims back.
async fn alert<S, P>(
    findings: &[Finding],
    now: u64,
    windows: &[u64],
    run_id: &str,
    deps: &Deps<S, P>,
    summary: &mut Summary,
) -> Result<Settled, EvaluateError>
where
    S: AlertStateStore + Sync,
    P: AlertPublisher + Sync,
{
    let config = &deps.config;
    let claim = Claim {
        run_id: run_id.to_owned(),
        now,
        cooldown_seconds: config.cooldown_seconds,
        claim_timeout_seconds: CLAIM_TIMEOUT_SECONDS,
        expires_at: now + config.cooldown_seconds + config.retention_seconds,
    };
    let (claimed, claimed_elsewhere) = claim_all(findings, &claim, deps).await?;
    summary.alerted = claimed.len() as u64;
    summary.held = (findings.len() - claimed.len()) as u64;
    let settled = if claimed_elsewhere {
        Settled::NotYet
    } else {
        Settled::Yes
    };
    let context = DigestContext {
        evaluated_at: now,
        windows,
        window_seconds: config.window_seconds,
        table_name: &config.table_name,
        index_shards: config.index_shards,
        max_listed: config.max_listed,
    };
    let Some(digest) = render_digest(&claimed, &context) else {
        return Ok(settled);
    };
    summary.severity = Some(digest.severity.name());
    summary.subject = Some(digest.subject.clone());
    if let Err(error) = deps.publisher.publish(&digest).await {
        // Give every claim back, so the next run (or Lambda's retry) alerts instead; a
        // claim that cannot be given back lapses after the claim timeout.
        for finding in &claimed {
            if let Err(release) = deps.store.release(finding.source, &claim).await {
                warn!(source_addr = %finding.source, error = %error_chain(&release), "releasing a claim failed");
            }
        }
        return Err(error.into());
    }
    summary.published = true;
    for finding in &claimed {
        deps.store.confirm(finding.source, &claim).await?;
    }
    Ok(settled)
}

/// Claims each finding: the ones this run won, in the findings' order, and whether any
/// was claimed by another run that has not published yet.
async fn claim_all<S, P>(
    findings: &[Finding],
    claim: &Claim,
    deps: &Deps<S, P>,
) -> Result<(Vec<Finding>, bool), EvaluateError>
where
    S: AlertStateStore + Sync,
{
    let outcomes: Vec<(usize, ClaimOutcome)> = stream::iter(0..findings.len())
        .map(|index| async move {
            let finding = &findings[index];
            deps.store
                .claim(finding.source, finding.severity.level(), claim)
                .await
                .map(|outcome| (index, outcome))
        })
        .buffer_unordered(CLAIM_CONCURRENCY)
        .try_collect()
        .await?;
    let claimed_elsewhere = outcomes
        .iter()
        .any(|(_, outcome)| *outcome == ClaimOutcome::ClaimedElsewhere);
    let mut won: Vec<usize> = outcomes
        .into_iter()
        .filter(|(_, outcome)| *outcome == ClaimOutcome::Won)
        .map(|(index, _)| index)
        .collect();
    won.sort_unstable();
    let won = won
        .into_iter()
        .map(|index| findings[index].clone())
        .collect();
    Ok((won, claimed_elsewhere))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_catch_up_on_windows_after_the_last_finished_run() {
        // Never ran before, or ran last window: the look-back only.
        assert_eq!(windows_to_evaluate(1_000, 300, 1, 12, None), vec![600]);
        assert_eq!(windows_to_evaluate(1_000, 300, 1, 12, Some(600)), vec![600]);
        // Two runs failed: the windows after the last finished one come back.
        assert_eq!(
            windows_to_evaluate(1_500, 300, 1, 12, Some(300)),
            vec![600, 900, 1200]
        );
        // A long outage catches up by at most `max_catch_up` windows.
        assert_eq!(windows_to_evaluate(100_000, 300, 3, 4, Some(0)).len(), 4);
    }

    #[test]
    fn completed_windows_end_at_or_before_now() {
        assert_eq!(completed_windows(1_000, 300, 3), vec![0, 300, 600]);
        assert_eq!(completed_windows(900, 300, 2), vec![300, 600]);
        assert_eq!(completed_windows(100, 300, 3), Vec::<u64>::new());
    }

    #[test]
    fn the_event_time_is_the_evaluation_time() {
        let event = json!({"detail-type": "Scheduled Event", "time": "2024-05-01T12:05:00Z"});
        assert_eq!(evaluation_time(&event).unwrap(), 1_714_565_100);
        assert!(matches!(
            evaluation_time(&json!({"time": "noon"})),
            Err(EvaluateError::EventTime(_))
        ));
        assert!(evaluation_time(&json!({})).unwrap() > 1_700_000_000);
    }
}
