//! A stand-in for AWS Lambda's Invoke API on loopback, for tests of clients that invoke a
//! function synchronously (`rejectwatch replay --function`) through the real Lambda SDK
//! client: `POST /2015-03-31/functions/{name}/invocations` is answered by a Rust function
//! the test supplies (such as the ingest handler, run in-process against moto).
//!
//! Answers as Lambda does: 200 with the function's JSON, or 200 with
//! `X-Amz-Function-Error: Unhandled` and `{"errorType", "errorMessage"}` when the function
//! fails; 404 `ResourceNotFoundException` for any other path. The HTTP reading and writing
//! are the Runtime API stub's; the serving threads live as long as the test process.

use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use serde_json::{Value, json};

use crate::runtime_api::{read_request, write_response};

/// What the stand-in runs for an invocation: the function name and the payload in; the
/// function's answer, or its error as (`errorType`, `errorMessage`), out.
pub type Function = dyn Fn(&str, Value) -> Result<Value, (String, String)> + Send + Sync;

/// A running stand-in.
pub struct InvokeApi {
    address: SocketAddr,
    invocations: Arc<AtomicU64>,
}

impl InvokeApi {
    /// Binds `127.0.0.1:0` and serves every connection on a thread of its own.
    pub fn start(
        function: impl Fn(&str, Value) -> Result<Value, (String, String)> + Send + Sync + 'static,
    ) -> InvokeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let address = listener.local_addr().expect("a bound address");
        let function: Arc<Function> = Arc::new(function);
        let invocations = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&invocations);
        thread::Builder::new()
            .name("lambda-invoke-accept".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let function = Arc::clone(&function);
                    let counter = Arc::clone(&counter);
                    let _ = thread::Builder::new()
                        .name("lambda-invoke-conn".into())
                        .spawn(move || serve(stream, function.as_ref(), &counter));
                }
            })
            .expect("starting the invoke API thread");
        InvokeApi {
            address,
            invocations,
        }
    }

    /// `http://127.0.0.1:PORT`: the value for `AWS_ENDPOINT_URL_LAMBDA`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// How many invocations it has answered.
    pub fn invocations(&self) -> u64 {
        self.invocations.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, function: &Function, invocations: &AtomicU64) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Ok(Some(request)) = read_request(&mut reader) {
        let name = request
            .path
            .strip_prefix("/2015-03-31/functions/")
            .and_then(|rest| rest.split('?').next())
            .and_then(|rest| rest.strip_suffix("/invocations"))
            .filter(|_| request.method == "POST");
        let written = match name {
            Some(name) => {
                let payload = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
                let answer = function(name, payload);
                invocations.fetch_add(1, Ordering::SeqCst);
                let version = ("X-Amz-Executed-Version", "$LATEST".to_owned());
                match answer {
                    Ok(body) => write_response(
                        &mut writer,
                        "200 OK",
                        &[version],
                        body.to_string().as_bytes(),
                    ),
                    Err((error_type, error_message)) => write_response(
                        &mut writer,
                        "200 OK",
                        &[version, ("X-Amz-Function-Error", "Unhandled".into())],
                        json!({"errorType": error_type, "errorMessage": error_message})
                            .to_string()
                            .as_bytes(),
                    ),
                }
            }
            None => write_response(
                &mut writer,
                "404 Not Found",
                &[("x-amzn-ErrorType", "ResourceNotFoundException".into())],
                json!({"Type": "User", "message": format!("no function at {}", request.path)})
                    .to_string()
                    .as_bytes(),
            ),
        };
        if written.is_err() {
            return;
        }
    }
}
