//! The labelled scenario suite (issue 14) through ingest and the evaluator with in-memory
//! fakes: every planted scan alerted, no look-alike or background source alerted.
//! `cargo test -p rejectwatch-tests --test scenarios -- --nocapture` prints the table.

use rejectwatch_testkit::scenarios::Outcome;
use rejectwatch_tests::scenarios::run_in_memory;

#[tokio::test]
async fn every_scan_is_alerted_and_no_look_alike_is() {
    let report = run_in_memory(1, 5_000, &[]).await;
    println!("{}", report.table());
    let summary = report.summary();
    println!("{summary}");
    for result in &report.results {
        assert!(
            result.ok(),
            "{}: expected {:?}, got {:?}",
            result.name,
            result.expect,
            result.got
        );
    }
    assert_eq!(report.background_alerts, Vec::<std::net::IpAddr>::new());
    assert_eq!(summary["recall"], 1.0);
    assert_eq!(summary["false_alerts"], 0);
    assert!(summary["scans_planted"].as_u64() >= Some(7), "{summary}");
}

/// The suite tells settings apart: without spans the edge and slow scans slip through,
/// and without the ignored port the health checks alert.
#[tokio::test]
async fn the_suite_catches_a_detector_without_spans_or_ignored_ports() {
    let report = run_in_memory(
        1,
        1_000,
        &[("SCAN_SPAN_MINUTES", "5"), ("IGNORED_DST_PORTS", "")],
    )
    .await;
    let got = |name: &str| {
        report
            .results
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.got.clone())
            .unwrap()
    };
    assert_eq!(got("window-edge-scan"), Outcome::Silent);
    assert_eq!(got("slow-scan"), Outcome::Silent);
    assert_eq!(
        got("health-checks-on-an-ignored-port"),
        Outcome::Alert(vec!["volume", "host-sweep"])
    );
    assert_eq!(
        got("fast-port-scan"),
        Outcome::Alert(vec!["volume", "port-scan"])
    );
    assert_eq!(report.recall(), (5, 7));
    assert_eq!(report.false_alerts(), 1);
}
