//! `tools/fault_proxy.py` on a free loopback port, in front of a moto server: requests to
//! DynamoDB, S3 and SNS through it meet throttling, 500s, delays and dropped connections
//! at a seeded rate, or exactly where a test's rules say. Stopped when the handle drops.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use serde_json::Value;

use crate::moto::{free_port, python_with_moto, workspace};

/// A running fault proxy.
pub struct FaultProxy {
    child: Child,
    port: u16,
    pub endpoint: String,
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (an `http://127.0.0.1:PORT` endpoint),
    /// faulting `rate` of the DynamoDB, S3 and SNS requests, drawn from `seed`.
    pub fn start(upstream: &str, seed: u64, rate: f64) -> FaultProxy {
        let python = python_with_moto();
        let script = workspace().join("tools/fault_proxy.py");
        let port = free_port();
        let child = Command::new(&python)
            .arg(&script)
            .args(["--port", &port.to_string(), "--upstream", upstream])
            .args(["--seed", &seed.to_string(), "--rate", &rate.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", script.display()));
        let proxy = FaultProxy {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the fault proxy did not listen on 127.0.0.1:{port} in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        proxy
    }

    /// Replaces settings: `rate`, `seed`, `services`, `kinds`, `rules` (see the script).
    pub fn configure(&self, settings: &Value) -> Value {
        self.control("POST", &settings.to_string())
    }

    /// Requests seen and faults injected so far, per kind.
    pub fn stats(&self) -> Value {
        self.control("GET", "")
    }

    /// SDK settings that reach moto through this proxy, with dummy credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
            .load()
            .await
    }

    fn control(&self, method: &str, body: &str) -> Value {
        // One write of the whole request, and one retry should the exchange fail (the
        // proxy's threads are busy with faults of their own).
        let request = format!(
            "{method} /__faults HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut last = String::new();
        for _ in 0..3 {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port))
                .expect("connecting to the fault proxy");
            stream
                .write_all(request.as_bytes())
                .expect("writing to the fault proxy");
            let mut response = String::new();
            stream
                .read_to_string(&mut response)
                .expect("reading the fault proxy's answer");
            let json = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
            if let Ok(value) = serde_json::from_str(json) {
                return value;
            }
            eprintln!("fault proxy: unexpected answer to {method} /__faults: {response:?}");
            last = response;
        }
        panic!("the fault proxy answered {last:?}")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
