//! A moto server on a free loopback port, for tests that talk to real HTTP endpoints.
//!
//! The server is started by the test and stopped when the handle drops. It is moto's own
//! server application, launched by `tools/moto_serial.py` to serve one request at a time,
//! because the threaded `moto_server` does not make DynamoDB conditional writes atomic (see
//! that file). When moto is not installed the test fails with the command that installs
//! it; it never skips.

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use rejectwatch_aws::dynamodb::{
    BY_WINDOW_INDEX, EXPIRES_AT, GSI1_PK, PK, REJECTS, SK, counter_from_item,
};
use rejectwatch_core::counters::StoredCounter;

/// A running moto server.
pub struct MotoServer {
    child: Child,
    pub endpoint: String,
}

/// The Python of the project's virtualenv (`scripts/setup-tools`), or `REJECTWATCH_PYTHON`.
pub(crate) fn python_with_moto() -> PathBuf {
    let python = std::env::var_os("REJECTWATCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"));
    let has_moto = Command::new(&python)
        .args(["-c", "import moto.moto_server.werkzeug_app"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        has_moto,
        "moto is not installed for {}: run ./scripts/setup-tools (it installs moto[server], \
         cargo-lambda and awscli into .venv), or point REJECTWATCH_PYTHON at a Python with \
         `pip install 'moto[server]'`",
        python.display()
    );
    python
}

pub(crate) fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free loopback port");
    listener.local_addr().expect("a bound address").port()
}

impl MotoServer {
    /// Starts `moto_server -H 127.0.0.1 -p <free port>` and waits until it accepts
    /// connections.
    pub fn start() -> MotoServer {
        let python = python_with_moto();
        let launcher = workspace().join("tools/moto_serial.py");
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(&python)
                .arg(&launcher)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|error| panic!("starting {}: {error}", launcher.display()));
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return MotoServer {
                        child,
                        endpoint: format!("http://127.0.0.1:{port}"),
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto did not start on a free loopback port in 30 s");
    }

    /// SDK settings that reach this server with dummy credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
            .load()
            .await
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates the counters table as `template.yaml` defines it: `pk`/`sk` keys, the
/// `by-window` index sorted by `rejects`, on-demand billing, TTL on `expires_at`.
pub async fn create_counters_table(client: &aws_sdk_dynamodb::Client, table: &str) {
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key")
    };
    let attribute = |name: &str, kind: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .expect("attribute")
    };
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(PK, ScalarAttributeType::S))
        .attribute_definitions(attribute(SK, ScalarAttributeType::S))
        .attribute_definitions(attribute(GSI1_PK, ScalarAttributeType::S))
        .attribute_definitions(attribute(REJECTS, ScalarAttributeType::N))
        .key_schema(key(PK, KeyType::Hash))
        .key_schema(key(SK, KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(BY_WINDOW_INDEX)
                .key_schema(key(GSI1_PK, KeyType::Hash))
                .key_schema(key(REJECTS, KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .expect("index"),
        )
        .send()
        .await
        .expect("creating the counters table");
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(EXPIRES_AT)
                .enabled(true)
                .build()
                .expect("ttl"),
        )
        .send()
        .await
        .expect("enabling TTL");
}

/// Every counter row of the table, keyed by (source, window start), read back the way a
/// user would (a scan).
pub async fn counter_rows(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> HashMap<(String, u64), StoredCounter> {
    let items: Vec<HashMap<String, AttributeValue>> = client
        .scan()
        .table_name(table)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("scanning the table");
    items
        .iter()
        .filter_map(counter_from_item)
        .map(|row| {
            (
                (row.source.expect("a source").to_string(), row.window_start),
                row,
            )
        })
        .collect()
}
