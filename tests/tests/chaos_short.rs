//! A short chaos run in every test pass (the full one is `./scripts/chaos`): the real
//! function binaries, moto behind fault proxies, late and duplicate deliveries, kills.
//! Judged against the generator's truth: nothing lost or counted twice, every expected
//! alert exactly once.

use rejectwatch_tests::chaos::{MUST_BE_ZERO, Options, run};

#[test]
fn a_short_run_under_faults_and_kills_loses_doubles_misses_and_repeats_nothing() {
    // Half an hour of traffic and a 20-minute cooldown: the scanners' windows are still
    // read after their first alert's cooldown ran out.
    let options = Options {
        seed: 7,
        records: 12_000,
        fault_rate: 0.05,
        kills: 3,
        windows: 6,
        settle_minutes: 15,
        cooldown_minutes: 20,
    };
    let report = run(&options);
    println!("{report}");
    for name in MUST_BE_ZERO {
        assert_eq!(report[name], 0, "{name} in {report}");
    }
    // Counts at a threshold are exact (up to 64 values per row), so no alert is unexplained.
    assert_eq!(report["alerts_unexpected"], 0, "{report}");
    assert!(report["alerts_expected"].as_u64() > Some(0), "{report}");
    assert!(report["faults_injected"].as_u64() > Some(0), "{report}");
}
