//! A fault-injecting HTTP proxy in front of the Secrets Manager emulator: a binding whose
//! `spec.source.endpoint` names it reaches the emulator through it, and a test switches it at run
//! time between passing calls through and answering them badly (throttling, HTTP 429, 5xx, slow,
//! hung). Every call is recorded with its operation (`X-Amz-Target`), its time and the fault it
//! met, so that a test can count what the operator sent while Secrets Manager was degraded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the proxy answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards every call to the emulator.
    Pass,
    /// HTTP 400 `ThrottlingException`, as Secrets Manager answers beyond its rate limit (the
    /// awsJson1_1 error shape: the code in `__type`, the SDK's retry classifies it as throttling).
    Throttle,
    /// HTTP 429 with no AWS error code (what a gateway in the path would answer).
    TooManyRequests,
    /// HTTP 5xx with Secrets Manager's `InternalServiceError` body.
    ServerError(u16),
    /// Forwards every call, after this delay.
    Slow(Duration),
    /// Reads the request and does not answer while the fault lasts (the connection stays open);
    /// when it ends, the calls still waiting are forwarded and answered late, as by an endpoint
    /// that stalled and resumed. A client that gave up on them meanwhile sees nothing of it.
    Hang,
}

impl Fault {
    pub fn label(&self) -> String {
        match self {
            Fault::Pass => "pass".into(),
            Fault::Throttle => "ThrottlingException".into(),
            Fault::TooManyRequests => "HTTP 429".into(),
            Fault::ServerError(s) => format!("HTTP {s}"),
            Fault::Slow(d) => format!("slow {d:?}"),
            Fault::Hang => "hung".into(),
        }
    }
}

/// One call the proxy received.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    /// `ListSecrets`, `BatchGetSecretValue`, … (the `X-Amz-Target` without its prefix).
    pub operation: String,
    /// The fault in force when it arrived.
    pub fault: Fault,
    /// The request body (JSON for Secrets Manager, a form for STS).
    pub body: String,
}

struct Shared {
    upstream: String,
    fault: Mutex<Fault>,
    calls: Mutex<Vec<Call>>,
}

/// The proxy, listening on a free loopback port; stopped when dropped.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (`host:port`, or an `http://host:port` URL).
    pub async fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let shared = Arc::new(Shared {
            upstream,
            fault: Mutex::new(Fault::Pass),
            calls: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fault proxy");
        });
        FaultProxy { port, shared, task }
    }

    /// The URL to give as a binding's `spec.source.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches the fault; returns when it applies to the next call.
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// Calls that arrived in `[from, to)`.
    pub fn calls_between(&self, from: Instant, to: Instant) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.at >= from && c.at < to)
            .collect()
    }

    /// Calls that met a fault (anything but [`Fault::Pass`]).
    pub fn faulted(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.fault != Fault::Pass)
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The largest number of calls in any window of `window` among `calls` (sorted by time).
pub fn peak_in(calls: &[Call], window: Duration) -> usize {
    let mut peak = 0;
    for (i, c) in calls.iter().enumerate() {
        let n = calls[i..]
            .iter()
            .take_while(|d| d.at.duration_since(c.at) < window)
            .count();
        peak = peak.max(n);
    }
    peak
}

/// The gaps between consecutive calls.
pub fn gaps(calls: &[Call]) -> Vec<Duration> {
    calls
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect()
}

/// A value of a form-encoded body (`application/x-www-form-urlencoded`), decoded.
pub fn form(body: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn aws_error(status: u16, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"__type": code, "message": message}).to_string();
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", "fault-proxy")
        .body(Body::from(body))
        .unwrap()
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .expect("read the request body");
    let text = String::from_utf8_lossy(&body).into_owned();
    // Secrets Manager names the operation in a header, STS (a query protocol) in the form.
    let operation = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.rsplit('.').next().unwrap_or(t).to_string())
        .or_else(|| form(&text, "Action"))
        .unwrap_or_default();
    let fault = *shared.fault.lock().unwrap();
    shared.calls.lock().unwrap().push(Call {
        at: Instant::now(),
        operation,
        fault,
        body: text,
    });
    match fault {
        Fault::Pass => {}
        Fault::Throttle => return aws_error(400, "ThrottlingException", "Rate exceeded"),
        Fault::TooManyRequests => {
            return Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("content-type", "application/json")
                .body(Body::from(r#"{"message":"Too Many Requests"}"#))
                .unwrap();
        }
        Fault::ServerError(status) => {
            return aws_error(
                status,
                "InternalServiceError",
                "An error occurred on the server side.",
            );
        }
        Fault::Slow(delay) => tokio::time::sleep(delay).await,
        Fault::Hang => {
            while *shared.fault.lock().unwrap() == Fault::Hang {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    forward(&shared.upstream, &parts, &body).await
}

/// Sends the request to the emulator on a connection of its own (`Connection: close`) and
/// returns its answer.
async fn forward(
    upstream: &str,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Response<Body> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\n",
        parts.method,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    for (name, value) in &parts.headers {
        if matches!(
            name.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "content-length"
        ) {
            continue;
        }
        head.push_str(&format!(
            "{}: {}\r\n",
            name,
            value.to_str().unwrap_or_default()
        ));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut conn = match tokio::net::TcpStream::connect(upstream).await {
        Ok(c) => c,
        Err(e) => {
            return Response::builder()
                .status(502)
                .body(Body::from(format!("fault proxy: upstream {upstream}: {e}")))
                .unwrap();
        }
    };
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer from the emulator");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut payload = answer[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let mut response = Response::builder().status(status);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name == "transfer-encoding" && value.trim().eq_ignore_ascii_case("chunked") {
            payload = unchunk(&payload);
            continue;
        }
        if matches!(
            name.as_str(),
            "connection" | "keep-alive" | "content-length"
        ) {
            continue;
        }
        response = response.header(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    response.body(Body::from(payload)).unwrap()
}

/// Decodes a chunked body.
fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("a chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
