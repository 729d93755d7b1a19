//! The evaluate handler with in-memory fakes: rules, exceptions, cooldown, concurrency and
//! publish failures.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use evaluate_rejects::config::Config;
use evaluate_rejects::{Deps, invoke};
use rejectwatch_core::counters::{GapUpdate, StoredCounter};
use rejectwatch_core::ports::{
    AlertStateStore, Claim, ClaimOutcome, DigestLog, EvaluationProgress,
};
use rejectwatch_testkit::fakes::{InMemoryCounterStore, RecordingPublisher};
use serde_json::{Value, json};

/// Windows of 300 s, settled 15 minutes after they end: the run at 10,000 evaluates
/// 9,000, 9,300 and 9,600 (and, as the first run, the settled 8,700).
const WINDOW: u64 = 9_600;

fn deps(extra: &[(&str, &str)]) -> Deps<InMemoryCounterStore, RecordingPublisher> {
    let mut settings: HashMap<String, String> = HashMap::from([
        ("COUNTERS_TABLE_NAME".into(), "counters".into()),
        (
            "ALERT_TOPIC_ARN".into(),
            "arn:aws:sns:us-east-1:123456789012:alerts".into(),
        ),
        ("REJECT_THRESHOLD".into(), "100".into()),
        ("PORT_SCAN_THRESHOLD".into(), "20".into()),
        ("HOST_SWEEP_THRESHOLD".into(), "20".into()),
        ("ALLOWLIST_CIDRS".into(), "192.0.2.0/24".into()),
        ("SETTLE_MINUTES".into(), "15".into()),
    ]);
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Deps::new(
        InMemoryCounterStore::default(),
        RecordingPublisher::default(),
        Config::from_lookup(|name| settings.get(name).cloned()).unwrap(),
    )
}

/// Makes the handler's wall clock the returned one, set by the test.
fn wall_clock(
    deps: &mut Deps<InMemoryCounterStore, RecordingPublisher>,
    start: u64,
) -> Arc<AtomicU64> {
    let wall = Arc::new(AtomicU64::new(start));
    let read = wall.clone();
    deps.wall_clock = Box::new(move || read.load(Ordering::SeqCst));
    wall
}

/// A claim of `run_id` as a run evaluating at `now` would make it at wall-clock `wall_now`.
fn claim(run_id: &str, now: u64, wall_now: u64) -> Claim {
    Claim {
        run_id: run_id.into(),
        now,
        wall_now,
        held_until: wall_now + evaluate_rejects::CLAIM_TIMEOUT_SECONDS,
        cooldown_seconds: 3600,
        expires_at: 100_000,
    }
}

fn at(seconds: u64) -> Value {
    json!({"detail-type": "Scheduled Event", "source": "aws.events", "time": rejectwatch_core::time::format_utc(seconds)})
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn row(source: &str, window: u64, rejects: u64, ports: u16, hosts: u64) -> StoredCounter {
    StoredCounter {
        source: Some(ip(source)),
        window_start: window,
        window_seconds: 300,
        rejects,
        first_seen: vec![window + 1],
        last_seen: vec![window + 299],
        interfaces: vec!["eni-0a1b".into()],
        ..StoredCounter::default()
    }
    .with_destinations(1..=ports, 1..=hosts)
}

fn alerted(deps: &Deps<InMemoryCounterStore, RecordingPublisher>) -> Vec<Vec<String>> {
    deps.publisher
        .published()
        .iter()
        .map(|digest| {
            let json: Value = serde_json::from_str(&digest.json).unwrap();
            json["sources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["source"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn each_rule_alerts_and_quiet_sources_do_not() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    deps.store
        .insert_counter(row("198.51.100.2", WINDOW, 40, 40, 1));
    deps.store
        .insert_counter(row("198.51.100.3", WINDOW - 300, 40, 1, 40));
    deps.store
        .insert_counter(row("198.51.100.4", WINDOW, 19, 3, 3));
    deps.store
        .insert_counter(row("192.0.2.9", WINDOW, 10_000, 100, 100));
    deps.store
        .insert_counter(row("198.51.100.5", WINDOW + 300, 10_000, 100, 100));
    let summary = invoke(at(10_000), "run-1", &deps).await.unwrap();
    assert_eq!(summary["findings"], 3);
    assert_eq!(summary["published"], true);
    assert_eq!(
        alerted(&deps),
        vec![vec!["198.51.100.1", "198.51.100.2", "198.51.100.3"]]
    );
    let digest = &deps.publisher.published()[0];
    assert!(
        digest
            .subject
            .starts_with("RejectWatch low: 3 sources - top 198.51.100.1 volume (150 REJECTs)"),
        "{}",
        digest.subject
    );
}

#[tokio::test]
async fn nothing_to_report_publishes_nothing() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row("198.51.100.4", WINDOW, 19, 3, 3));
    let summary = invoke(at(10_000), "run-1", &deps).await.unwrap();
    assert_eq!(summary["published"], false);
    assert!(deps.publisher.published().is_empty());
}

#[tokio::test]
async fn cooldown_holds_then_expires_and_rising_severity_breaks_it() {
    let deps = deps(&[("ALERT_COOLDOWN_MINUTES", "60")]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    invoke(at(10_000), "run-1", &deps).await.unwrap();
    // Ten minutes later the same source is still in the look-back: held.
    let summary = invoke(at(10_600), "run-2", &deps).await.unwrap();
    assert_eq!(
        (summary["alerted"].as_u64(), summary["held"].as_u64()),
        (Some(0), Some(1))
    );
    // It gets much worse: severity high (16x), so the cooldown gives way.
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW + 600, 2_000, 1, 1));
    let summary = invoke(at(10_900), "run-3", &deps).await.unwrap();
    assert_eq!(summary["alerted"], 1);
    assert_eq!(summary["severity"], "high");
    // After the cooldown, the same level alerts again.
    deps.store
        .insert_counter(row("198.51.100.1", 14_400, 2_000, 1, 1));
    let summary = invoke(at(14_700 + 300), "run-4", &deps).await.unwrap();
    assert_eq!(summary["alerted"], 1);
    assert_eq!(deps.publisher.published().len(), 3);
}

#[tokio::test]
async fn two_concurrent_runs_send_one_alert() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    deps.store
        .insert_counter(row("198.51.100.2", WINDOW, 40, 40, 1));
    let (a, b) = tokio::join!(
        invoke(at(10_000), "run-a", &deps),
        invoke(at(10_000), "run-b", &deps)
    );
    assert_eq!(
        a.unwrap()["alerted"].as_u64().unwrap() + b.unwrap()["alerted"].as_u64().unwrap(),
        2
    );
    let sources: Vec<String> = alerted(&deps).into_iter().flatten().collect();
    assert_eq!(sources.len(), 2, "each source alerted once: {sources:?}");
}

#[tokio::test]
async fn a_failed_publish_is_retried_by_the_next_run() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    deps.publisher.fail_next(1);
    let error = invoke(at(10_000), "run-1", &deps).await.unwrap_err();
    assert_eq!(error.error_type(), "Evaluate.Publish");
    assert!(deps.publisher.published().is_empty());
    let summary = invoke(at(10_060), "run-2", &deps).await.unwrap();
    assert_eq!(summary["alerted"], 1);
    assert_eq!(alerted(&deps), vec![vec!["198.51.100.1"]]);
    assert!(
        deps.store
            .alert_state(ip("198.51.100.1"))
            .unwrap()
            .published
    );
}

#[tokio::test]
async fn a_failed_publish_is_alerted_later_even_after_its_window_settled() {
    let deps = deps(&[("SETTLE_MINUTES", "0")]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    deps.publisher.fail_next(2);
    // The run for WINDOW fails, and so does the next one; the third comes two windows
    // after WINDOW settled (with no settle time, at once).
    assert!(invoke(at(WINDOW + 360), "run-1", &deps).await.is_err());
    assert!(invoke(at(WINDOW + 660), "run-2", &deps).await.is_err());
    let summary = invoke(at(WINDOW + 960), "run-3", &deps).await.unwrap();
    assert_eq!(
        summary["windows"],
        json!([WINDOW, WINDOW + 300, WINDOW + 600])
    );
    assert_eq!(alerted(&deps), vec![vec!["198.51.100.1"]]);
    // Once it finished, the next run reads the one window that ended since.
    let summary = invoke(at(WINDOW + 1260), "run-4", &deps).await.unwrap();
    assert_eq!(summary["windows"], json!([WINDOW + 900]));
}

#[tokio::test]
async fn a_retried_run_finishes_what_its_first_attempt_claimed() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    // The first attempt claimed, then died before publishing (no release ran).
    let claim = claim("run-1", 10_000, (deps.wall_clock)());
    assert_eq!(
        deps.store
            .claim(ip("198.51.100.1"), 1, WINDOW + 300, &claim)
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    // Lambda's retry keeps the request id: it may publish at once. Another run may not.
    let other = invoke(at(10_000), "run-2", &deps).await.unwrap();
    assert_eq!(other["alerted"], 0);
    let retry = invoke(at(10_000), "run-1", &deps).await.unwrap();
    assert_eq!(retry["alerted"], 1);
    assert_eq!(alerted(&deps), vec![vec!["198.51.100.1"]]);
}

#[tokio::test]
async fn a_retry_that_fails_again_gives_back_the_state_from_before_the_first_attempt() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    invoke(at(10_000), "run-0", &deps).await.unwrap();
    // Severity rises; run-1 claims, dies before publishing, and its retry fails to publish.
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 5_000, 1, 1));
    let claim = claim("run-1", 10_060, (deps.wall_clock)());
    assert_eq!(
        deps.store
            .claim(ip("198.51.100.1"), 3, WINDOW + 300, &claim)
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    deps.publisher.fail_next(1);
    assert!(invoke(at(10_060), "run-1", &deps).await.is_err());
    let state = deps.store.alert_state(ip("198.51.100.1")).unwrap();
    assert_eq!(
        (state.level, state.claimed_at, state.published),
        (1, 10_000, true)
    );
}

#[tokio::test]
async fn findings_claimed_by_an_unfinished_run_keep_their_windows_for_later_runs() {
    let mut deps = deps(&[("SETTLE_MINUTES", "0")]);
    let wall = wall_clock(&mut deps, 50_000);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    invoke(at(WINDOW + 300), "run-0", &deps).await.unwrap();
    deps.store
        .insert_counter(row("198.51.100.2", WINDOW + 300, 150, 1, 1));
    // run-1 claims 198.51.100.2 and dies; run-2 finds it claimed elsewhere.
    let claim = claim("run-1", WINDOW + 600, 50_000);
    assert_eq!(
        deps.store
            .claim(ip("198.51.100.2"), 1, WINDOW + 600, &claim)
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    wall.store(50_010, Ordering::SeqCst);
    let held = invoke(at(WINDOW + 600), "run-2", &deps).await.unwrap();
    assert_eq!(
        (held["alerted"].as_u64(), held["held"].as_u64()),
        (Some(0), Some(1))
    );
    // The claim is abandoned (run-1 never recorded a publish); a later run reaches back
    // to the window, takes it over and alerts.
    wall.store(
        50_000 + evaluate_rejects::CLAIM_TIMEOUT_SECONDS,
        Ordering::SeqCst,
    );
    let later = invoke(at(WINDOW + 1200), "run-3", &deps).await.unwrap();
    assert_eq!(
        later["windows"],
        json!([WINDOW + 300, WINDOW + 600, WINDOW + 900])
    );
    assert_eq!(later["taken_over"], 1);
    assert_eq!(
        alerted(&deps).last().unwrap(),
        &vec!["198.51.100.2".to_owned()]
    );
}

#[tokio::test]
async fn a_released_claim_keeps_the_earlier_alerts_cooldown() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    invoke(at(10_000), "run-1", &deps).await.unwrap();
    // Severity rises; its publish fails and the claim is given back.
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 5_000, 1, 1));
    deps.publisher.fail_next(1);
    assert!(invoke(at(10_060), "run-2", &deps).await.is_err());
    let state = deps.store.alert_state(ip("198.51.100.1")).unwrap();
    assert_eq!(
        (state.level, state.claimed_at, state.published),
        (1, 10_000, true)
    );
    // The high finding still alerts next run; a low one would have been held.
    let summary = invoke(at(10_120), "run-3", &deps).await.unwrap();
    assert_eq!(summary["alerted"], 1);
}

#[tokio::test]
async fn skipdata_in_a_window_makes_counts_a_lower_bound() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    deps.store.insert_gap(GapUpdate {
        interface: "eni-0a1b".into(),
        window_start: WINDOW,
        shard: 0,
        nodata: 0,
        skipdata: 2,
    });
    invoke(at(10_000), "run-1", &deps).await.unwrap();
    let digest = &deps.publisher.published()[0];
    assert!(digest.text.contains("counts are a lower bound"));
    let json: Value = serde_json::from_str(&digest.json).unwrap();
    assert_eq!(json["sources"][0]["lower_bound"], true);
}

#[tokio::test]
async fn a_bad_event_time_is_a_clear_error() {
    let deps = deps(&[]);
    let error = invoke(json!({"time": "tomorrow"}), "run-1", &deps)
        .await
        .unwrap_err();
    assert_eq!(error.error_type(), "Evaluate.Event");
}

/// Issue 13, 1: a window that late data put over a threshold after it was first read,
/// whose publishes then failed twice, is still alerted once the runs succeed again.
#[tokio::test]
async fn late_data_found_by_failing_runs_is_alerted_once_its_window_is_read_again() {
    let deps = deps(&[]);
    let summary = invoke(at(10_000), "run-1", &deps).await.unwrap();
    assert_eq!(summary["windows"], json!([8_700, 9_000, 9_300, 9_600]));
    assert_eq!(summary["findings"], 0);
    // A late S3 object puts a source over the volume threshold in window 9_600.
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    deps.publisher.fail_next(2);
    assert!(invoke(at(10_300), "run-2", &deps).await.is_err());
    assert!(invoke(at(10_600), "run-3", &deps).await.is_err());
    let summary = invoke(at(10_900), "run-4", &deps).await.unwrap();
    assert_eq!(
        summary["windows"],
        json!([9_000, 9_300, 9_600, 9_900, 10_200, 10_500])
    );
    assert_eq!(alerted(&deps), vec![vec!["198.51.100.1"]]);
    // Window 9_600 has settled and was alerted: it is not read again.
    let summary = invoke(at(11_200), "run-5", &deps).await.unwrap();
    assert_eq!(summary["windows"], json!([9_900, 10_200, 10_500, 10_800]));
    assert_eq!(deps.publisher.published().len(), 1);
}

/// Issue 13, 4: a confirm that fails after the digest went out no longer fails the run,
/// and neither Lambda's retry of the run nor a later run taking over its unconfirmed
/// claim publishes the digest again.
#[tokio::test]
async fn a_failed_confirm_after_publishing_never_publishes_again() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    deps.store.fail_next_confirms(1);
    let summary = invoke(at(10_000), "run-1", &deps).await.unwrap();
    assert_eq!(
        (
            summary["published"].as_bool(),
            summary["unconfirmed"].as_u64()
        ),
        (Some(true), Some(1))
    );
    assert!(deps.store.is_published("run-1").await.unwrap());
    // Lambda retries the same request id (had the run failed): nothing is published.
    let retry = invoke(at(10_000), "run-1", &deps).await.unwrap();
    assert_eq!(retry["already_published"], true);
    assert!(
        deps.store
            .alert_state(ip("198.51.100.1"))
            .unwrap()
            .published
    );
    assert_eq!(deps.publisher.published().len(), 1);
}

#[tokio::test]
async fn an_abandoned_claim_of_a_run_that_published_is_confirmed_not_taken_over() {
    let mut deps = deps(&[]);
    let wall = wall_clock(&mut deps, 50_000);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    // run-1 published and recorded it, then died before confirming.
    deps.store.fail_next_confirms(1);
    invoke(at(10_000), "run-1", &deps).await.unwrap();
    assert!(
        !deps
            .store
            .alert_state(ip("198.51.100.1"))
            .unwrap()
            .published
    );
    // Past the claim timeout, run-2 finds the claim abandoned, sees run-1's record, and
    // holds the source under the cooldown of run-1's alert.
    wall.store(
        50_000 + evaluate_rejects::CLAIM_TIMEOUT_SECONDS,
        Ordering::SeqCst,
    );
    let summary = invoke(at(10_300), "run-2", &deps).await.unwrap();
    assert_eq!(
        (summary["alerted"].as_u64(), summary["taken_over"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(
        deps.store
            .alert_state(ip("198.51.100.1"))
            .unwrap()
            .published
    );
    assert_eq!(deps.publisher.published().len(), 1);
}

#[tokio::test]
async fn a_transient_failure_recording_the_digest_is_retried_within_the_run() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    deps.store.fail_next_digest_records(1);
    invoke(at(10_000), "run-1", &deps).await.unwrap();
    assert!(deps.store.is_published("run-1").await.unwrap());
    let retry = invoke(at(10_000), "run-1", &deps).await.unwrap();
    assert_eq!(retry["already_published"], true);
    assert_eq!(deps.publisher.published().len(), 1);
}

/// Issue 13, 4: a run that claims long after its scheduled time (a delayed retry) is
/// alive; the next scheduled run must not treat its claim as abandoned and publish too.
#[tokio::test]
async fn a_delayed_run_still_publishing_is_not_taken_over_by_the_next_one() {
    let mut deps = deps(&[]);
    let wall = wall_clock(&mut deps, 20_000);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    // run-1, scheduled at 10_000, claims at wall-clock 20_000 and is still publishing.
    assert_eq!(
        deps.store
            .claim(
                ip("198.51.100.1"),
                1,
                WINDOW + 300,
                &claim("run-1", 10_000, 20_000)
            )
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    wall.store(20_010, Ordering::SeqCst);
    let next = invoke(at(10_300), "run-2", &deps).await.unwrap();
    assert_eq!(
        (next["alerted"].as_u64(), next["held"].as_u64()),
        (Some(0), Some(1))
    );
    let finished = invoke(at(10_000), "run-1", &deps).await.unwrap();
    assert_eq!(finished["alerted"], 1);
    assert_eq!(alerted(&deps), vec![vec!["198.51.100.1"]]);
}

#[tokio::test]
async fn every_digest_carries_its_run_as_its_id() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    invoke(at(10_000), "run-7", &deps).await.unwrap();
    let digest = &deps.publisher.published()[0];
    assert_eq!(digest.digest_id, "run-7");
    let json: Value = serde_json::from_str(&digest.json).unwrap();
    assert_eq!(json["digest_id"], "run-7");
}

#[tokio::test]
async fn a_claim_is_held_until_its_runs_deadline_and_a_grace() {
    let mut deps = deps(&[]);
    let wall = wall_clock(&mut deps, 50_000);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    // run-1 must finish by 50_060; it claims, then its publish fails and so does the
    // release, as if it died.
    deps.publisher.fail_next(1);
    deps.store.fail_next_releases(1);
    assert!(
        evaluate_rejects::invoke_until(at(10_000), "run-1", Some(50_060), &deps)
            .await
            .is_err()
    );
    wall.store(
        50_060 + evaluate_rejects::CLAIM_GRACE_SECONDS - 1,
        Ordering::SeqCst,
    );
    let held = invoke(at(10_300), "run-2", &deps).await.unwrap();
    assert_eq!(held["held"], 1);
    wall.store(
        50_060 + evaluate_rejects::CLAIM_GRACE_SECONDS,
        Ordering::SeqCst,
    );
    let taken = invoke(at(10_300), "run-3", &deps).await.unwrap();
    assert_eq!(
        (taken["alerted"].as_u64(), taken["taken_over"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(alerted(&deps), vec![vec!["198.51.100.1"]]);
}

#[tokio::test]
async fn a_run_out_of_time_leaves_its_findings_to_the_next_run() {
    let mut deps = deps(&[]);
    wall_clock(&mut deps, 50_000);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    // A deadline already reached: nothing is claimed, nothing published, no progress.
    let out_of_time = evaluate_rejects::invoke_until(at(10_000), "run-1", Some(50_000), &deps)
        .await
        .unwrap();
    assert_eq!(
        (
            out_of_time["deferred"].as_u64(),
            out_of_time["published"].as_bool()
        ),
        (Some(1), Some(false))
    );
    let next = invoke(at(10_300), "run-2", &deps).await.unwrap();
    assert_eq!(next["alerted"], 1);
    assert_eq!(alerted(&deps), vec![vec!["198.51.100.1"]]);
}

/// Review, 1: windows are read again for the settle time; when the cooldown runs out,
/// the windows it already covered must not alert again, only activity after it.
#[tokio::test]
async fn a_scan_read_again_after_its_cooldown_alerts_once() {
    let deps = deps(&[("SETTLE_MINUTES", "50"), ("ALERT_COOLDOWN_MINUTES", "60")]);
    // A scan over six windows, 0 to 1_500, then nothing.
    for window in (0..=1_500).step_by(300) {
        deps.store
            .insert_counter(row("198.51.100.1", window, 150, 1, 1));
    }
    for now in (330..=7_530).step_by(300) {
        invoke(at(now), &format!("run-{now}"), &deps).await.unwrap();
    }
    assert_eq!(alerted(&deps), vec![vec!["198.51.100.1"]]);
    // New activity after the cooldown alerts again.
    deps.store
        .insert_counter(row("198.51.100.1", 7_500, 150, 1, 1));
    invoke(at(7_830), "run-new", &deps).await.unwrap();
    assert_eq!(alerted(&deps).len(), 2);
}

/// Review, 1: runs that fail once the alerted window settles make the next run read it
/// again (catch-up); past the cooldown, that must not alert it again.
#[tokio::test]
async fn a_window_read_again_by_a_catch_up_after_its_cooldown_does_not_alert_again() {
    let deps = deps(&[("SETTLE_MINUTES", "50"), ("ALERT_COOLDOWN_MINUTES", "55")]);
    deps.store.insert_counter(row("198.51.100.1", 0, 150, 1, 1));
    invoke(at(330), "run-0", &deps).await.unwrap();
    // Another source keeps a claim of a run that died, so no run settles its windows
    // and the progress stays before window 0 until 3_600.
    deps.store.insert_counter(row("198.51.100.2", 0, 150, 1, 1));
    let claim = claim("dead", 330, (deps.wall_clock)() + 100_000);
    deps.store
        .claim(ip("198.51.100.2"), 1, 300, &claim)
        .await
        .unwrap();
    for now in (630..=3_930).step_by(300) {
        invoke(at(now), &format!("run-{now}"), &deps).await.unwrap();
    }
    assert_eq!(alerted(&deps), vec![vec!["198.51.100.1"]]);
}

/// Review, 3: when the digest record cannot be written at all but every claim is
/// confirmed, the run succeeds and nothing publishes the digest again.
#[tokio::test]
async fn a_digest_record_that_cannot_be_written_is_covered_by_the_confirms() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    deps.store.fail_next_digest_records(10);
    let summary = invoke(at(10_000), "run-1", &deps).await.unwrap();
    assert_eq!(
        (
            summary["unrecorded"].as_bool(),
            summary["unconfirmed"].as_u64()
        ),
        (Some(true), Some(0))
    );
    invoke(at(10_000), "run-1", &deps).await.unwrap();
    invoke(at(10_300), "run-2", &deps).await.unwrap();
    assert_eq!(deps.publisher.published().len(), 1);
}

/// Review, 3: when neither the record nor the confirms can be written, the run fails,
/// and its retry publishes again under the same digest id.
#[tokio::test]
async fn with_no_record_and_no_confirm_the_retry_repeats_the_same_digest_id() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    deps.store.fail_next_digest_records(10);
    deps.store.fail_next_confirms(1);
    assert!(invoke(at(10_000), "run-1", &deps).await.is_err());
    invoke(at(10_000), "run-1", &deps).await.unwrap();
    let ids: Vec<String> = deps
        .publisher
        .published()
        .iter()
        .map(|d| d.digest_id.clone())
        .collect();
    assert_eq!(ids, vec!["run-1", "run-1"]);
}

/// Review, 4: a publish whose answer was lost may have reached subscribers; the claims
/// stay the run's, so only its retry (same digest id) publishes again, and no other run
/// does meanwhile.
#[tokio::test]
async fn a_publish_with_a_lost_answer_keeps_its_claims_for_the_same_run() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    deps.publisher.lose_next_answers(1);
    let error =
        evaluate_rejects::invoke_until(at(10_000), "run-1", Some((deps.wall_clock)() + 120), &deps)
            .await
            .unwrap_err();
    assert_eq!(error.error_type(), "Evaluate.Publish");
    let other = invoke(at(10_000), "run-2", &deps).await.unwrap();
    assert_eq!(other["alerted"], 0);
    invoke(at(10_000), "run-1", &deps).await.unwrap();
    let ids: Vec<String> = deps
        .publisher
        .published()
        .iter()
        .map(|d| d.digest_id.clone())
        .collect();
    assert_eq!(ids, vec!["run-1", "run-1"]);
}

/// Review, 5: a claim abandoned past its deadline, but taken up again by its own run's
/// retry before the take-over, stays that run's.
#[tokio::test]
async fn a_take_over_loses_to_the_holders_own_retry() {
    let mut deps = deps(&[]);
    let wall = wall_clock(&mut deps, 50_000);
    let source = ip("198.51.100.1");
    deps.store
        .claim(source, 1, 300, &claim("run-1", 10_000, 50_000))
        .await
        .unwrap();
    let late = claim(
        "run-2",
        10_300,
        50_000 + evaluate_rejects::CLAIM_TIMEOUT_SECONDS,
    );
    assert_eq!(
        deps.store.claim(source, 1, 300, &late).await.unwrap(),
        ClaimOutcome::Abandoned {
            holder: "run-1".into()
        }
    );
    // run-1's retry takes its claim up again, with a new deadline.
    let retry = claim("run-1", 10_000, late.wall_now);
    assert_eq!(
        deps.store.claim(source, 1, 300, &retry).await.unwrap(),
        ClaimOutcome::Won
    );
    assert_eq!(
        deps.store
            .take_over(source, 1, &late, "run-1")
            .await
            .unwrap(),
        ClaimOutcome::ClaimedElsewhere
    );
    wall.store(0, Ordering::SeqCst);
}

/// Review, 10: a first run whose findings are not all settled records the progress
/// before its windows, so the next run reads them again.
#[tokio::test]
async fn a_first_run_left_unsettled_still_records_where_to_come_back_to() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    let claim = claim("dead", 10_000, (deps.wall_clock)() + 100_000);
    deps.store
        .claim(ip("198.51.100.1"), 1, WINDOW + 300, &claim)
        .await
        .unwrap();
    let summary = invoke(at(10_000), "run-1", &deps).await.unwrap();
    let first = summary["windows"][0].as_u64().unwrap();
    assert_eq!(
        deps.store.evaluated_through().await.unwrap(),
        Some(first - 300)
    );
}

fn row_with(
    source: &str,
    window: u64,
    rejects: u64,
    ports: impl IntoIterator<Item = u16>,
) -> StoredCounter {
    StoredCounter {
        rejects,
        ..row(source, window, rejects, 0, 0)
    }
    .with_destinations(ports, [1])
}

/// Issue 14: a scan of 30 ports split 15 + 15 by a window edge, where the first half's
/// window was evaluated (and found nothing) by an earlier run, is alerted over the span.
#[tokio::test]
async fn a_scan_split_by_a_window_edge_across_runs_is_alerted_over_the_span() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row_with("198.51.100.1", 9_600, 15, 1..=15));
    let summary = invoke(at(10_000), "run-1", &deps).await.unwrap();
    assert_eq!(summary["findings"], 0);
    let summary = invoke(at(10_900), "run-2", &deps).await.unwrap();
    assert_eq!(summary["findings"], 0);
    // The second half arrives in window 9_900; 9_600 is settled and not evaluated again,
    // but it is the span's context.
    deps.store
        .insert_counter(row_with("198.51.100.1", 9_900, 15, 16..=30));
    let summary = invoke(at(11_200), "run-3", &deps).await.unwrap();
    assert_eq!(summary["windows"], json!([9_900, 10_200, 10_500, 10_800]));
    assert_eq!(summary["findings"], 1);
    assert_eq!(alerted(&deps), vec![vec!["198.51.100.1"]]);
    let digest = &deps.publisher.published()[0];
    let json: Value = serde_json::from_str(&digest.json).unwrap();
    assert_eq!(json["sources"][0]["rules"], json!(["port-scan"]));
    assert_eq!(
        json["sources"][0]["span"],
        json!({"start": 9_600, "end": 10_200})
    );
    assert_eq!(json["sources"][0]["windows"], json!([9_600, 9_900]));
    assert!(
        digest
            .text
            .contains("over 10 minutes, 1970-01-01T02:40:00Z to 1970-01-01T02:50:00Z"),
        "{}",
        digest.text
    );
    // Neither half alone is news for the next runs.
    invoke(at(11_500), "run-4", &deps).await.unwrap();
    assert_eq!(deps.publisher.published().len(), 1);
}

/// Issue 14: rows under the read limit are read, from the source's own partition, where
/// with the rows read they could cross a threshold over a span: 18 ports in one window
/// and one more in each neighbour is a scan of 20.
#[tokio::test]
async fn rows_under_the_read_limit_complete_a_span_that_could_cross() {
    let deps = deps(&[]);
    deps.store
        .insert_counter(row_with("198.51.100.1", 9_000, 1, [19]));
    deps.store
        .insert_counter(row_with("198.51.100.1", 9_300, 18, 1..=18));
    deps.store
        .insert_counter(row_with("198.51.100.1", 9_600, 1, [20]));
    // A source that cannot reach a threshold in any span is not read whole.
    deps.store
        .insert_counter(row_with("198.51.100.2", 9_300, 7, 1..=7));
    let summary = invoke(at(10_000), "run-1", &deps).await.unwrap();
    assert_eq!(summary["source_reads"], 1);
    assert_eq!(summary["findings"], 1);
    // The three rows of the source read whole replace the one read by window; the other
    // source's row stays.
    assert_eq!(summary["rows"], 4);
    assert_eq!(alerted(&deps), vec![vec!["198.51.100.1"]]);
    let json: Value = serde_json::from_str(&deps.publisher.published()[0].json).unwrap();
    assert_eq!(json["sources"][0]["rejects"], 20);
    assert_eq!(json["sources"][0]["windows"], json!([9_000, 9_300, 9_600]));

    let per_window = self::deps(&[("SCAN_SPAN_MINUTES", "5")]);
    for row in deps.store.counters() {
        per_window.store.insert_counter(row);
    }
    let summary = invoke(at(10_000), "run-1", &per_window).await.unwrap();
    assert_eq!(
        (
            summary["source_reads"].as_u64(),
            summary["findings"].as_u64()
        ),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn the_digest_shows_the_tables_query_for_its_index_shards() {
    let deps = deps(&[("INDEX_SHARDS", "4")]);
    deps.store
        .insert_counter(row("198.51.100.1", WINDOW, 150, 1, 1));
    invoke(at(10_000), "run-1", &deps).await.unwrap();
    let digest = &deps.publisher.published()[0];
    assert!(
        digest.text.contains(
            "\n  or: aws dynamodb query --table-name counters --index-name by-window \
             --key-condition-expression 'gsi1pk = :w' \
             --expression-attribute-values '{\":w\":{\"S\":\"WIN#<window>#<shard>\"}}' \
             for each window above and each shard 00..03\n"
        ),
        "{}",
        digest.text
    );
}
