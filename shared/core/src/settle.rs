//! When a window's counters stop changing, and which windows an evaluation reads.
//!
//! A window's rows keep arriving well after the window ends: AWS aggregates flows for up
//! to the flow log's aggregation interval, publishes them minutes later, and a delivery
//! that fails is retried (by SQS, or by Lambda for CloudWatch Logs) for a bounded time.
//! A window is *settled* once all of that is over; until then the evaluator reads it
//! again on every run, so a finding that late data creates is still alerted. Progress is
//! only ever recorded for settled windows.
//!
//! Pure: times are arguments, nothing here reads the clock.

/// AWS's own allowance between a flow record's capture window closing and its delivery:
/// S3 log files are published "at 5-minute intervals" and typically arrive within about
/// 10 minutes, CloudWatch Logs within about 5. This is that, with 5 minutes of margin for
/// the S3 event notification and queueing. Data later than this is counted but reported
/// as late (see [`is_settled`]).
pub const PUBLISH_ALLOWANCE_SECONDS: u64 = 15 * 60;

/// `SETTLE_MINUTES` when unset: what the template's data path needs (the template sets
/// it, and a test checks it against [`required_settle_seconds`] of the template's values).
pub const DEFAULT_SETTLE_MINUTES: u64 = 50;

/// The bounds of the data path that decide how long a window can still change. The
/// template sets each of them; `tests/tests/template.rs` checks that the evaluator's
/// `SETTLE_MINUTES` covers the path they describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryPath {
    /// The flow log's `MaxAggregationInterval` (60 or 600 seconds): a record starts up to
    /// this long before it is closed and handed to delivery.
    pub aggregation_seconds: u64,
    /// See [`PUBLISH_ALLOWANCE_SECONDS`].
    pub publish_seconds: u64,
    /// The S3 path: the object queue's visibility timeout and `maxReceiveCount`. The last
    /// receive starts at most `visibility x (receives - 1)` after the first and, as the
    /// function's timeout is within the visibility timeout, ends within one more.
    pub object_queue_visibility_seconds: u64,
    pub object_queue_max_receives: u64,
    /// The CloudWatch Logs path: asynchronous invocations are retried (and queued while
    /// throttled) for at most the function's `MaximumEventAgeInSeconds`, and the last one
    /// runs for at most the function's timeout.
    pub async_max_event_age_seconds: u64,
    pub ingest_timeout_seconds: u64,
}

/// How long after a window ends its rows may still arrive through `path`.
pub fn required_settle_seconds(path: &DeliveryPath) -> u64 {
    let object_retries = path
        .object_queue_visibility_seconds
        .saturating_mul(path.object_queue_max_receives.max(1));
    let async_retries = path
        .async_max_event_age_seconds
        .saturating_add(path.ingest_timeout_seconds);
    path.aggregation_seconds
        .saturating_add(path.publish_seconds)
        .saturating_add(object_retries.max(async_retries))
}

/// Whether the window starting at `window_start` is settled at `now`: it ended at least
/// `settle_seconds` ago, so no on-time delivery can change it any more. A row written to
/// a settled window is *late*: counted, but possibly after the evaluator stopped reading it.
pub fn is_settled(window_start: u64, window_seconds: u64, settle_seconds: u64, now: u64) -> bool {
    window_start
        .saturating_add(window_seconds)
        .saturating_add(settle_seconds)
        <= now
}

/// What one evaluation reads, and the progress it may record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvaluationPlan {
    /// Window starts, oldest first: every completed window that is not settled yet, and
    /// before them the settled windows after the recorded progress (at most
    /// `max_catch_up_seconds` of them).
    pub windows: Vec<u64>,
    /// Settled windows after the progress that the catch-up cap left unread: their
    /// findings, if any, are given up (reported, so that it is never silent).
    pub given_up: u64,
    /// The latest settled window: once every finding of `windows` is alerted (or held by
    /// a cooldown), progress may move here, and no later run reads it again.
    pub settled_through: Option<u64>,
}

/// Plans the evaluation at `now`. `evaluated_through` is the recorded progress: the
/// latest window that is settled and was fully alerted.
///
/// Windows that settled since the last successful run (or during an outage) are read
/// once more after settling, however many runs failed in between; those older than
/// `max_catch_up_seconds` before the first unsettled window are given up, so that one
/// long outage cannot make every later run slow.
pub fn plan_evaluation(
    now: u64,
    window_seconds: u64,
    settle_seconds: u64,
    max_catch_up_seconds: u64,
    evaluated_through: Option<u64>,
) -> EvaluationPlan {
    let window_seconds = window_seconds.max(1);
    // The window still open at `now` is never read: it has barely begun to arrive.
    let open = now - now % window_seconds;
    let Some(latest_completed) = open.checked_sub(window_seconds) else {
        return EvaluationPlan {
            windows: Vec::new(),
            given_up: 0,
            settled_through: None,
        };
    };
    // The first window not settled yet: the smallest start `w` (a multiple of the window)
    // with `w + window + settle > now`.
    let first_unsettled = match now.checked_sub(window_seconds + settle_seconds) {
        None => 0,
        Some(bound) => (bound / window_seconds + 1) * window_seconds,
    };
    let settled_through = first_unsettled.checked_sub(window_seconds);
    let catch_up_windows = (max_catch_up_seconds / window_seconds).max(1);
    let catch_up_floor = first_unsettled.saturating_sub(catch_up_windows * window_seconds);
    let mut given_up = 0;
    let first = match (evaluated_through, settled_through) {
        // Every settled window after the progress, within the catch-up cap. (The next
        // window start after it: aligned, should the window length have changed since.)
        (Some(through), Some(_)) => {
            let next = through - through % window_seconds + window_seconds;
            given_up = catch_up_floor.saturating_sub(next) / window_seconds;
            next.max(catch_up_floor)
        }
        // The first run ever reads the latest settled window too (with no settle time,
        // the only one there is); the windows before it were over before it started.
        (None, Some(latest_settled)) => latest_settled,
        (_, None) => first_unsettled,
    };
    let windows = (first..=latest_completed)
        .step_by(window_seconds as usize)
        .collect();
    EvaluationPlan {
        windows,
        given_up,
        settled_through,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(now: u64, through: Option<u64>) -> EvaluationPlan {
        // 5-minute windows, settled 15 minutes after they end, an hour of catch-up.
        plan_evaluation(now, 300, 900, 3_600, through)
    }

    #[test]
    fn a_run_reads_every_completed_window_not_settled_yet() {
        // Window 9_600 ended at 9_900; it settles at 10_800.
        assert_eq!(
            plan(10_000, Some(8_700)),
            EvaluationPlan {
                windows: vec![9_000, 9_300, 9_600],
                given_up: 0,
                settled_through: Some(8_700),
            }
        );
        // The first run reads the latest settled window as well.
        assert_eq!(plan(10_000, None).windows, vec![8_700, 9_000, 9_300, 9_600]);
        // With no settle time, each window is read once, the run after it ends.
        assert_eq!(
            plan_evaluation(10_000, 300, 0, 3_600, None).windows,
            vec![9_600]
        );
        assert_eq!(
            plan_evaluation(10_600, 300, 0, 3_600, Some(9_600)).windows,
            vec![9_900, 10_200]
        );
        assert_eq!(
            plan(10_799, Some(8_700)).windows,
            vec![9_000, 9_300, 9_600, 9_900, 10_200]
        );
        assert_eq!(plan(10_800, Some(8_700)).settled_through, Some(9_600));
    }

    #[test]
    fn settled_windows_are_read_once_more_after_the_last_successful_run() {
        // The runs at 10_300 and 10_600 failed: the run at 10_900 reads from the window
        // after the progress (8_700), so window 9_600 is read once settled.
        assert_eq!(
            plan(10_900, Some(8_700)),
            EvaluationPlan {
                windows: vec![9_000, 9_300, 9_600, 9_900, 10_200, 10_500],
                given_up: 0,
                settled_through: Some(9_600),
            }
        );
        // After a successful run the progress is 9_600 and it is not read again.
        assert_eq!(
            plan(11_200, Some(9_600)).windows,
            vec![9_900, 10_200, 10_500, 10_800]
        );
    }

    #[test]
    fn a_long_outage_catches_up_at_most_the_cap() {
        let plan = plan_evaluation(100_000, 300, 900, 1_200, Some(0));
        // Three unsettled windows, four settled ones (20 minutes) before them; the 323
        // settled windows before those (300 to 97_500) are given up, and said so.
        assert_eq!(plan.windows.len(), 7);
        assert_eq!(plan.settled_through, Some(98_700));
        assert_eq!(plan.windows[0], 98_700 - 3 * 300);
        assert_eq!(plan.given_up, 325);
    }

    #[test]
    fn after_the_window_length_changed_the_windows_read_still_line_up() {
        // Progress recorded with 5-minute windows; now they are 15 minutes long.
        let plan = plan_evaluation(10_000, 900, 900, 3_600, Some(8_700));
        assert!(
            plan.windows.iter().all(|window| window % 900 == 0),
            "{plan:?}"
        );
        assert_eq!(plan.windows[0], 9_000);
    }

    #[test]
    fn nothing_is_read_before_the_first_window_completes() {
        assert_eq!(plan(100, None).windows, Vec::<u64>::new());
        assert_eq!(plan(700, None).windows, vec![0, 300]);
        assert_eq!(plan(700, None).settled_through, None);
        assert_eq!(plan(1_500, None).windows, vec![300, 600, 900, 1_200]);
    }

    #[test]
    fn a_window_is_settled_once_the_settle_time_after_its_end_has_passed() {
        assert!(!is_settled(9_600, 300, 900, 10_799));
        assert!(is_settled(9_600, 300, 900, 10_800));
    }

    #[test]
    fn the_slower_of_the_two_delivery_paths_decides() {
        let path = DeliveryPath {
            aggregation_seconds: 600,
            publish_seconds: PUBLISH_ALLOWANCE_SECONDS,
            object_queue_visibility_seconds: 300,
            object_queue_max_receives: 5,
            async_max_event_age_seconds: 1_200,
            ingest_timeout_seconds: 120,
        };
        assert_eq!(required_settle_seconds(&path), 600 + 900 + 1_500);
        let slow_async = DeliveryPath {
            async_max_event_age_seconds: 3_600,
            ..path
        };
        assert_eq!(required_settle_seconds(&slow_async), 600 + 900 + 3_720);
    }
}
