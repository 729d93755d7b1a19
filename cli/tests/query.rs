//! `rejectwatch top` and `rejectwatch source` against a real DynamoDB endpoint: a moto
//! server on loopback, with counters written by the ingest function's own store adapter.

use std::process::Command;

use rejectwatch_aws::dynamodb::DynamoCounterStore;
use rejectwatch_core::counters::{BatchId, CounterBatch};
use rejectwatch_core::ports::CounterStore;
use rejectwatch_tests::counter_update;
use rejectwatch_tests::moto::{MotoServer, create_counters_table};
use serde_json::Value;

const TABLE: &str = "rejectwatch-counters";
const WINDOW: u64 = 1_714_566_000;

/// A moto server holding three sources' counters in two windows.
fn stack() -> MotoServer {
    let moto = MotoServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
        create_counters_table(&client, TABLE).await;
        let store = DynamoCounterStore::new(client, TABLE, 86_400, 4);
        let batch = CounterBatch {
            id: BatchId::for_s3_object("bucket", "key", None, Some("etag")),
            updates: vec![
                counter_update("198.51.100.7", WINDOW, 900, 40, 1),
                counter_update("198.51.100.7", WINDOW + 300, 30, 2, 1),
                counter_update("203.0.113.9", WINDOW, 50, 1, 1),
                counter_update("2001:db8::5", WINDOW, 400, 3, 1),
            ],
            gaps: Vec::new(),
        };
        store.apply(&batch).await.expect("writing counters");
    });
    moto
}

fn rejectwatch(moto: &MotoServer, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_rejectwatch"))
        .args(args)
        .args(["--table", TABLE, "--json"])
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("running rejectwatch");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

fn sources(document: &Value, list: &str) -> Vec<(String, u64)> {
    document[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["source"].as_str().unwrap().to_owned(),
                row["rejects"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn top_lists_a_windows_sources_most_rejects_first_and_source_lists_its_windows() {
    let moto = stack();
    let top = rejectwatch(&moto, &["top", "--window", &WINDOW.to_string()]);
    assert_eq!(top["window_start"], WINDOW);
    assert_eq!(
        sources(&top, "sources"),
        vec![
            ("198.51.100.7".to_owned(), 900),
            ("2001:db8::5".to_owned(), 400),
            ("203.0.113.9".to_owned(), 50)
        ]
    );
    let scanner = &top["sources"][0];
    let ports = scanner["distinct_dst_ports"].as_u64().unwrap();
    assert!(
        rejectwatch_core::sketch::within_expected_error(ports, 40),
        "{ports}"
    );
    assert_eq!(scanner["sample_ports"].as_array().unwrap().len(), 10);
    assert_eq!(scanner["sample_hosts"], serde_json::json!(["10.0.0.1"]));

    let limited = rejectwatch(
        &moto,
        &["top", "--window", &WINDOW.to_string(), "--limit", "1"],
    );
    assert_eq!(sources(&limited, "sources").len(), 1);

    let history = rejectwatch(
        &moto,
        &[
            "source",
            "198.51.100.7",
            "--since",
            &(WINDOW - 3600).to_string(),
        ],
    );
    let windows: Vec<u64> = history["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["window_start"].as_u64().unwrap())
        .collect();
    assert_eq!(windows, vec![WINDOW, WINDOW + 300]);
}
