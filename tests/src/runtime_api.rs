//! A stub of the AWS Lambda Runtime API on loopback, for running the real function
//! binaries (`lambda_runtime` 1.x) outside Lambda: in tests, and in the cold-start bench.
//!
//! One thread accepts connections and one thread serves each connection, HTTP/1.1 with
//! keep-alive (hyper reuses its connection for every call), `Content-Length` or chunked
//! bodies. `GET /2018-06-01/runtime/invocation/next` long-polls until an invocation is
//! queued with [`RuntimeApi::push`]; the function's answer (`.../response` or `.../error`)
//! and an init failure (`/runtime/init/error`) are recorded for the test to wait on. No
//! dependencies beyond std and serde_json.
//!
//! ```no_run
//! use rejectwatch_tests::runtime_api::{Outcome, RuntimeApi, function_binary};
//! use std::time::Duration;
//!
//! let api = RuntimeApi::start();
//! let mut child = api
//!     .command(function_binary("ingest-flow-logs"), "ingest-flow-logs")
//!     .env("COUNTERS_TABLE_NAME", "counters")
//!     .spawn()
//!     .unwrap();
//! let event = serde_json::json!({"awslogs": {"data": "..."}});
//! api.push("request-1", event, RuntimeApi::deadline_after(Duration::from_secs(30)));
//! let outcome = api.wait_outcome("request-1", Duration::from_secs(30));
//! assert!(matches!(outcome, Some(Outcome::Response(_))));
//! child.kill().unwrap();
//! ```

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// What the function answered for one invocation, or reported when its init failed.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// `POST .../invocation/{id}/response`: the body as JSON (a JSON string when the body
    /// is not JSON).
    Response(Value),
    /// `POST .../invocation/{id}/error` or `/runtime/init/error`: the runtime's
    /// `Diagnostic` (`errorType`, `errorMessage`).
    Error {
        error_type: String,
        error_message: String,
    },
}

/// The function ARN sent with every invocation.
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:rejectwatch-test";

/// A running stub; the server threads stop accepting when it drops, and a runtime waiting
/// for an invocation then sees its connection close.
pub struct RuntimeApi {
    address: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Invocation>,
    outcomes: HashMap<String, Outcome>,
    init_error: Option<Outcome>,
    first_poll: Option<Instant>,
    polls: u64,
    stopped: bool,
}

struct Invocation {
    request_id: String,
    event: Value,
    deadline_ms: u64,
}

impl RuntimeApi {
    /// Binds `127.0.0.1:0` and starts serving.
    pub fn start() -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let address = listener.local_addr().expect("a bound address");
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        thread::Builder::new()
            .name("runtime-api-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accepting.lock().stopped {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let serving = Arc::clone(&accepting);
                    let _ = thread::Builder::new()
                        .name("runtime-api-conn".into())
                        .spawn(move || serve_connection(stream, &serving));
                }
            })
            .expect("starting the runtime API thread");
        RuntimeApi { address, shared }
    }

    /// `127.0.0.1:PORT`: the value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Unix milliseconds `after` from now, for [`RuntimeApi::push`].
    pub fn deadline_after(after: Duration) -> u64 {
        unix_millis() + after.as_millis() as u64
    }

    /// Queues an invocation. `deadline_ms` is unix milliseconds, as Lambda sends it in
    /// `Lambda-Runtime-Deadline-Ms`.
    pub fn push(&self, request_id: &str, event: Value, deadline_ms: u64) {
        let mut state = self.shared.lock();
        state.queue.push_back(Invocation {
            request_id: request_id.to_owned(),
            event,
            deadline_ms,
        });
        self.shared.changed.notify_all();
    }

    /// Waits for the function's answer to `request_id`; `None` when `timeout` passes first.
    pub fn wait_outcome(&self, request_id: &str, timeout: Duration) -> Option<Outcome> {
        self.wait(timeout, |state| state.outcomes.get(request_id).cloned())
    }

    /// [`RuntimeApi::wait_outcome`], removing the answer: for invocations retried under
    /// the same request id, as Lambda retries asynchronous invocations.
    pub fn take_outcome(&self, request_id: &str, timeout: Duration) -> Option<Outcome> {
        let outcome = self.wait_outcome(request_id, timeout)?;
        self.shared.lock().outcomes.remove(request_id);
        Some(outcome)
    }

    /// When the runtime first asked for an invocation, that is when the function's init
    /// (everything before `lambda_runtime::run` polls) finished; `None` after `timeout`.
    pub fn wait_first_poll(&self, timeout: Duration) -> Option<Instant> {
        self.wait(timeout, |state| state.first_poll)
    }

    /// What the runtime reported to `/runtime/init/error`, if it did within `timeout`.
    /// (A `main` that returns an error before calling `lambda_runtime::run` reports
    /// nothing: the process exits non-zero with the error on stderr.)
    pub fn wait_init_error(&self, timeout: Duration) -> Option<Outcome> {
        self.wait(timeout, |state| state.init_error.clone())
    }

    /// How many `GET .../invocation/next` requests arrived so far.
    pub fn polls(&self) -> u64 {
        self.shared.lock().polls
    }

    /// A command for `program` with the environment Lambda gives a function: the variables
    /// `lambda_runtime` requires (`AWS_LAMBDA_RUNTIME_API`, `AWS_LAMBDA_FUNCTION_NAME`,
    /// `_MEMORY_SIZE`, `_VERSION`, `AWS_LAMBDA_LOG_STREAM_NAME`, `_LOG_GROUP_NAME`), a region
    /// and dummy credentials (so the SDK never asks an instance metadata service). The
    /// caller adds the function's own settings and `AWS_ENDPOINT_URL`.
    pub fn command(&self, program: impl AsRef<OsStr>, function_name: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("AWS_LAMBDA_RUNTIME_API", self.address())
            .env("AWS_LAMBDA_FUNCTION_NAME", function_name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/12/04/[$LATEST]stub")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{function_name}"),
            )
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_SESSION_TOKEN", "test")
            .env_remove("AWS_PROFILE");
        command
    }

    fn wait<T>(&self, timeout: Duration, mut found: impl FnMut(&State) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if let Some(value) = found(&state) {
                return Some(value);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.changed.notify_all();
        // Wakes the accept loop so that it sees `stopped`.
        let _ = TcpStream::connect(self.address);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The path of a workspace binary (`ingest-flow-logs`, `evaluate-rejects`, `rejectwatch`)
/// in the profile these tests were built with, built first (a no-op when up to date) so
/// that a test never runs a stale binary. All the workspace's binaries are built together,
/// with the features `cargo test --workspace` and the benches unify, so that nothing the
/// test run compiled is compiled again with other features.
pub fn function_binary(name: &str) -> PathBuf {
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|deps| deps.to_path_buf()))
        .map(|deps| {
            if deps.ends_with("deps") {
                deps.parent().map_or(deps.clone(), |dir| dir.to_path_buf())
            } else {
                deps
            }
        })
        .expect("the test binary's directory");
    let release = profile_dir.ends_with("release");
    let target_dir = profile_dir.parent().expect("a target directory");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--workspace", "--bins", "--target-dir"])
        .arg(target_dir);
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .unwrap_or_else(|error| panic!("running cargo build --workspace --bins: {error}"));
    assert!(status.success(), "cargo build --workspace --bins failed");
    let binary = profile_dir.join(name);
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) body: Vec<u8>,
}

fn serve_connection(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut writer = writer;
    while let Ok(Some(request)) = read_request(&mut reader) {
        let answered = match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/2018-06-01/runtime/invocation/next") => next_invocation(shared)
                .map(|invocation| {
                    let body = invocation.event.to_string();
                    let headers = [
                        ("Lambda-Runtime-Aws-Request-Id", invocation.request_id),
                        (
                            "Lambda-Runtime-Deadline-Ms",
                            invocation.deadline_ms.to_string(),
                        ),
                        ("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN.into()),
                        (
                            "Lambda-Runtime-Trace-Id",
                            "Root=1-67890abc-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=0"
                                .into(),
                        ),
                    ];
                    write_response(&mut writer, "200 OK", &headers, body.as_bytes())
                }),
            ("POST", "/2018-06-01/runtime/init/error") => {
                record(shared, None, &request.body);
                Some(write_accepted(&mut writer))
            }
            ("POST", path) => match invocation_answer(path) {
                Some((request_id, kind)) => {
                    record(shared, Some((request_id, kind)), &request.body);
                    Some(write_accepted(&mut writer))
                }
                None => Some(write_response(&mut writer, "404 Not Found", &[], b"{}")),
            },
            _ => Some(write_response(&mut writer, "404 Not Found", &[], b"{}")),
        };
        // `None`: the stub stopped while the runtime waited; closing the connection ends it.
        match answered {
            Some(Ok(())) => {}
            _ => return,
        }
    }
}

/// Long-polls the queue; `None` once the stub stops.
fn next_invocation(shared: &Shared) -> Option<Invocation> {
    let mut state = shared.lock();
    state.polls += 1;
    if state.first_poll.is_none() {
        state.first_poll = Some(Instant::now());
        shared.changed.notify_all();
    }
    loop {
        if state.stopped {
            return None;
        }
        if let Some(invocation) = state.queue.pop_front() {
            return Some(invocation);
        }
        state = shared
            .changed
            .wait(state)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
    }
}

#[derive(Clone, Copy)]
enum AnswerKind {
    Response,
    Error,
}

/// `/2018-06-01/runtime/invocation/{id}/response` or `/error`.
fn invocation_answer(path: &str) -> Option<(String, AnswerKind)> {
    let rest = path.strip_prefix("/2018-06-01/runtime/invocation/")?;
    let (request_id, kind) = rest.rsplit_once('/')?;
    let kind = match kind {
        "response" => AnswerKind::Response,
        "error" => AnswerKind::Error,
        _ => return None,
    };
    Some((request_id.to_owned(), kind))
}

/// Records an invocation's answer, or an init error when `answer` is `None`.
fn record(shared: &Shared, answer: Option<(String, AnswerKind)>, body: &[u8]) {
    let json: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    let as_error = |json: &Value| {
        let field = |name: &str| {
            json.get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Outcome::Error {
            error_type: field("errorType"),
            error_message: field("errorMessage"),
        }
    };
    let mut state = shared.lock();
    match answer {
        Some((request_id, AnswerKind::Response)) => {
            state.outcomes.insert(request_id, Outcome::Response(json));
        }
        Some((request_id, AnswerKind::Error)) => {
            let outcome = as_error(&json);
            state.outcomes.insert(request_id, outcome);
        }
        None => state.init_error = Some(as_error(&json)),
    }
    shared.changed.notify_all();
}

/// Reads one request; `Ok(None)` when the client closed the connection between requests.
pub(crate) fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut content_length = 0usize;
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value
                    .parse()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "content-length"))?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
    }
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body)?;
        body
    };
    Ok(Some(Request { method, path, body }))
}

/// A chunked body (streaming responses), trailers read and dropped.
fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size_text = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
        if size == 0 {
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_line(&mut line)?;
    }
}

fn write_accepted(writer: &mut impl Write) -> io::Result<()> {
    write_response(writer, "202 Accepted", &[], br#"{"status":"OK"}"#)
}

pub(crate) fn write_response(
    writer: &mut impl Write,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    writer.write_all(&message)?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::process::Stdio;

    const CONTROL_MESSAGE: &str = include_str!("../../events/cloudwatch-logs-control-message.json");
    const WAIT: Duration = Duration::from_secs(60);

    #[test]
    fn ingest_binary_answers_a_control_message_through_the_stub() {
        let api = RuntimeApi::start();
        let mut child = api
            .command(function_binary("ingest-flow-logs"), "ingest-flow-logs")
            .env("COUNTERS_TABLE_NAME", "rejectwatch-counters")
            // Nothing listens here: a control message needs no AWS call.
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ingest-flow-logs");
        let first_poll = api.wait_first_poll(WAIT);
        let event: Value = serde_json::from_str(CONTROL_MESSAGE).expect("the fixture is JSON");
        api.push("control-1", event, RuntimeApi::deadline_after(WAIT));
        let outcome = api.wait_outcome("control-1", WAIT);
        let _ = child.kill();
        let _ = child.wait();
        assert!(first_poll.is_some(), "the runtime never polled");
        match outcome {
            Some(Outcome::Response(response)) => assert!(response.is_object(), "{response}"),
            other => panic!("expected a response, got {other:?}"),
        }
        assert!(api.polls() >= 1);
    }

    #[test]
    fn handler_errors_and_responses_are_told_apart() {
        let api = RuntimeApi::start();
        let mut child = api
            .command(function_binary("ingest-flow-logs"), "ingest-flow-logs")
            .env("COUNTERS_TABLE_NAME", "rejectwatch-counters")
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ingest-flow-logs");
        // Neither a CloudWatch Logs nor an S3 nor an SQS payload: the handler refuses it.
        api.push(
            "bad-1",
            serde_json::json!({"neither": "shape"}),
            RuntimeApi::deadline_after(WAIT),
        );
        let outcome = api.wait_outcome("bad-1", WAIT);
        let _ = child.kill();
        let _ = child.wait();
        match outcome {
            Some(Outcome::Error {
                error_type,
                error_message,
            }) => assert!(
                !error_type.is_empty() && !error_message.is_empty(),
                "{error_type}: {error_message}"
            ),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn keep_alive_requests_and_chunked_bodies_are_served() {
        let api = RuntimeApi::start();
        api.push("r1", serde_json::json!({"n": 1}), 42);
        let mut stream = TcpStream::connect(api.address()).unwrap();
        stream
            .write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let head = read_head(&mut reader);
        assert!(
            head.contains("Lambda-Runtime-Aws-Request-Id: r1\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Lambda-Runtime-Deadline-Ms: 42\r\n"),
            "{head}"
        );
        let mut body = vec![0; 7];
        reader.read_exact(&mut body).unwrap();
        assert_eq!(body, br#"{"n":1}"#);
        stream
            .write_all(
                b"POST /2018-06-01/runtime/invocation/r1/response HTTP/1.1\r\n\
                  Transfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:2}\r\n0\r\n\r\n",
            )
            .unwrap();
        assert!(read_head(&mut reader).starts_with("HTTP/1.1 202"));
        assert_eq!(
            api.wait_outcome("r1", WAIT),
            Some(Outcome::Response(serde_json::json!({"a": 2})))
        );
    }

    fn read_head(reader: &mut impl BufRead) -> String {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            head.push_str(&line);
            if line == "\r\n" {
                return head;
            }
        }
    }
}
