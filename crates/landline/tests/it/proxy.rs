//! A fault-injecting HTTP/1.1 proxy between landline and a real S3 server, on loopback TCP.
//!
//! A test starts a [`Proxy`] in front of one of the servers of [`crate::s3`] and gives landline
//! [`Proxy::env`], whose `AWS_ENDPOINT_URL` is the proxy. The proxy relays each request to the
//! server byte for byte, the `Host` header included: requests are SigV4-signed over the `Host`
//! the client used, and the server checks that same header, so signatures stay valid.
//!
//! It knows as much HTTP/1.1 as relaying keep-alive connections needs: a request head, then a
//! `Content-Length` or chunked body (an `Expect: 100-continue` is answered at once); a response
//! head (interim `1xx` responses skipped), then a `Content-Length`, chunked or read-to-close body.
//! Each request is relayed on a fresh connection to the server, which keeps the server side
//! simple (moto closes after each response anyway).
//!
//! Each request is classified as an S3 [`Op`]; [`Rule`]s, set per proxy, pick requests by
//! operation, part number and occurrence, and inject a [`Fault`] a given number of times:
//! an error status with an S3 XML body instead of forwarding, a connection reset in the middle
//! of the request body, a delayed response, or a reset after the server has answered. The
//! proxy counts requests per operation and per part, so tests can assert the retries.
//!
//! Bounded and self-stopping: every loop ends at end of stream, on an error, at an idle timeout
//! or at a size limit, and dropping the [`Proxy`] aborts its accept task, which owns (and so
//! aborts) every connection task.

// Each test uses part of this module; `pub` is for readability.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::s3::S3Server;

/// The largest request or response head.
const MAX_HEAD: usize = 64 * 1024;
/// The largest body relayed (parts in the tests are 5 MiB).
const MAX_BODY: usize = 128 * 1024 * 1024;
/// The largest chunk-size or trailer line.
const MAX_LINE: usize = 8 * 1024;
/// A client connection idle this long between requests is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Limit for one whole exchange with the server (connect, send, read the response).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections accepted before the proxy stops accepting.
const MAX_CONNECTIONS: usize = 10_000;

/// The S3 operations the proxy tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `POST /bucket/key?uploads`.
    CreateMultipartUpload,
    /// `PUT /bucket/key?partNumber=N&uploadId=ID`.
    UploadPart,
    /// `POST /bucket/key?uploadId=ID`.
    CompleteMultipartUpload,
    /// `DELETE /bucket/key?uploadId=ID`.
    AbortMultipartUpload,
    /// Anything else.
    Other,
}

/// What the proxy does to a request a [`Rule`] picked.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Reads the whole request, then answers this status with an S3 XML error body instead of
    /// forwarding it; the connection stays open.
    Status(u16),
    /// Reads this many bytes of the request body (or all of it, if shorter), then resets the
    /// connection (`SO_LINGER` 0, so the client sees `ECONNRESET`). Nothing is forwarded.
    ResetMidRequest {
        /// Body bytes read before the reset.
        after_bytes: usize,
    },
    /// Forwards the request, reads the server's response, and relays it only after this long.
    Delay(Duration),
    /// Forwards the request and reads the server's response, then resets the client's
    /// connection instead of relaying it: the request took effect but its answer is lost.
    ResetAfterForward,
    /// Flips one bit in the middle of the request body and forwards it, its length
    /// unchanged: bytes damaged on the way, as TCP's checksum can let through.
    CorruptBody,
}

/// Picks requests and says which fault they get.
///
/// A rule counts the requests it matches (its operation and, if set, part number), and acts
/// on matches `from`, `from + 1`, … for `times` of them. For each request the first rule, in
/// the order given, that matches and wants to act wins; requests no rule acts on are relayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The operation.
    pub op: Op,
    /// Only `UploadPart` requests of this part number, if set.
    pub part: Option<u32>,
    /// The first match acted on, from 1.
    pub from: u32,
    /// How many matches are acted on.
    pub times: u32,
    /// What happens to them.
    pub fault: Fault,
}

impl Rule {
    /// A rule acting once, on the first request of `op`.
    pub fn new(op: Op, fault: Fault) -> Rule {
        Rule {
            op,
            part: None,
            from: 1,
            times: 1,
            fault,
        }
    }

    /// Only `UploadPart` requests of part `number`.
    pub fn part(mut self, number: u32) -> Rule {
        self.part = Some(number);
        self
    }

    /// Acts on `times` matches.
    pub fn times(mut self, times: u32) -> Rule {
        self.times = times;
        self
    }

    /// Acts on every match.
    pub fn always(self) -> Rule {
        self.times(u32::MAX)
    }

    /// Starts acting at the `nth` match (from 1).
    pub fn from(mut self, nth: u32) -> Rule {
        self.from = nth.max(1);
        self
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its operation.
    pub op: Op,
    /// Its part number (`UploadPart`).
    pub part: Option<u32>,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
    /// The status the server answered, if the request was forwarded and answered.
    pub status: Option<u16>,
}

#[derive(Debug, Default)]
struct State {
    /// The rules, with how many requests each matched and acted on.
    rules: Vec<(Rule, u32, u32)>,
    counts: HashMap<Op, u32>,
    part_attempts: HashMap<u32, u32>,
    events: Vec<Event>,
    /// The proxy's own failures (server unreachable, malformed HTTP), for test messages.
    errors: Vec<String>,
}

impl State {
    /// Counts the request and returns its index in `events` and the fault to inject, if any.
    fn decide(&mut self, op: Op, part: Option<u32>) -> (usize, Option<Fault>) {
        *self.counts.entry(op).or_default() += 1;
        if let Some(n) = part {
            *self.part_attempts.entry(n).or_default() += 1;
        }
        let mut chosen = None;
        for (rule, matched, acted) in &mut self.rules {
            if rule.op != op || (rule.part.is_some() && rule.part != part) {
                continue;
            }
            *matched += 1;
            if chosen.is_none() && *matched >= rule.from && *acted < rule.times {
                *acted += 1;
                chosen = Some(rule.fault.clone());
            }
        }
        self.events.push(Event {
            op,
            part,
            fault: chosen.clone(),
            status: None,
        });
        (self.events.len() - 1, chosen)
    }
}

/// A running proxy. Dropping it stops it and every connection it serves.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts a proxy on a free port of 127.0.0.1 in front of `server`, with `rules`.
    pub async fn start(server: &S3Server, rules: Vec<Rule>) -> Proxy {
        let upstream = server
            .endpoint
            .socket_addrs(|| None)
            .ok()
            .and_then(|addrs| addrs.into_iter().next())
            .unwrap_or_else(|| panic!("{}: no address in {}", server.name, server.endpoint));
        Proxy::start_to(upstream, rules).await
    }

    /// Starts a proxy on a free port of 127.0.0.1 in front of `upstream`, with `rules`.
    pub async fn start_to(upstream: SocketAddr, rules: Vec<Rule>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(Mutex::new(State {
            rules: rules.into_iter().map(|r| (r, 0, 0)).collect(),
            ..State::default()
        }));
        let task = tokio::spawn(accept_loop(listener, upstream, Arc::clone(&state)));
        Proxy {
            addr,
            upstream,
            state,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing `/`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address requests are relayed to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `server.env()` with `AWS_ENDPOINT_URL` pointing at the proxy.
    pub fn env(&self, server: &S3Server) -> Vec<(String, String)> {
        let mut env = server.env();
        for (name, value) in &mut env {
            if name == "AWS_ENDPOINT_URL" {
                *value = self.endpoint();
            }
        }
        env
    }

    /// `server` reached through the proxy, for the test's own S3 requests.
    pub fn server(&self, server: &S3Server) -> S3Server {
        S3Server {
            endpoint: format!("{}/", self.endpoint())
                .parse()
                .expect("a valid endpoint"),
            ..server.clone()
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters that are still worth reading.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests of `op` received so far, faulted ones included.
    pub fn count(&self, op: Op) -> u32 {
        self.state().counts.get(&op).copied().unwrap_or(0)
    }

    /// `UploadPart` requests of part `number` received so far (attempts).
    pub fn part_attempts(&self, number: u32) -> u32 {
        self.state()
            .part_attempts
            .get(&number)
            .copied()
            .unwrap_or(0)
    }

    /// The highest part number seen.
    pub fn max_part(&self) -> u32 {
        self.state()
            .part_attempts
            .keys()
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// Faults injected so far.
    pub fn faults_injected(&self) -> usize {
        self.state()
            .events
            .iter()
            .filter(|e| e.fault.is_some())
            .count()
    }

    /// Every request seen, in order.
    pub fn events(&self) -> Vec<Event> {
        self.state().events.clone()
    }

    /// What the server answered to each request of `op`, in order: `None` for a request
    /// that was not forwarded, or whose answer did not come.
    pub fn statuses(&self, op: Op) -> Vec<Option<u16>> {
        self.state()
            .events
            .iter()
            .filter(|e| e.op == op)
            .map(|e| e.status)
            .collect()
    }

    /// The proxy's own failures, if any (it should have none).
    pub fn errors(&self) -> Vec<String> {
        self.state().errors.clone()
    }

    /// A one-line summary for assertion messages.
    pub fn summary(&self) -> String {
        let state = self.state();
        let mut parts: Vec<_> = state.part_attempts.iter().collect();
        parts.sort();
        format!(
            "requests {:?}; UploadPart attempts by part {:?}; faults {:?}; \
             server errors {:?}; proxy errors {:?}",
            state.counts,
            parts,
            state
                .events
                .iter()
                .filter_map(|e| e.fault.as_ref().map(|f| (e.op, e.part, f)))
                .collect::<Vec<_>>(),
            state
                .events
                .iter()
                .filter_map(|e| e.status.filter(|s| *s >= 300).map(|s| (e.op, e.part, s)))
                .collect::<Vec<_>>(),
            state.errors,
        )
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Arc<Mutex<State>>) {
    // Owned here, so aborting this task aborts every connection.
    let mut connections = JoinSet::new();
    let mut accepted = 0;
    while accepted < MAX_CONNECTIONS {
        tokio::select! {
            accept = listener.accept() => match accept {
                Ok((client, _)) => {
                    accepted += 1;
                    let state = Arc::clone(&state);
                    connections.spawn(async move {
                        if let Err(Stop::Problem(e)) = serve(client, upstream, &state).await {
                            lock(&state).errors.push(e);
                        }
                    });
                }
                Err(e) => {
                    lock(&state).errors.push(format!("accept: {e}"));
                    break;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Let the open connections finish; they end at their idle timeout at the latest.
    while connections.join_next().await.is_some() {}
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A socket with a read buffer, reading HTTP/1.1 framing.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more into the buffer; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Takes the first `n` buffered bytes.
    fn take(&mut self, n: usize) -> Vec<u8> {
        let rest = self.buf.split_off(n);
        std::mem::replace(&mut self.buf, rest)
    }

    /// Reads up to and including the first `delimiter`, at most `max` bytes. `None` at a
    /// clean end of stream (nothing buffered).
    async fn read_through(&mut self, delimiter: &[u8], max: usize) -> io::Result<Option<Vec<u8>>> {
        let mut searched = 0;
        loop {
            if let Some(i) = find(&self.buf[searched..], delimiter) {
                return Ok(Some(self.take(searched + i + delimiter.len())));
            }
            searched = self.buf.len().saturating_sub(delimiter.len() - 1);
            if self.buf.len() > max {
                return Err(invalid(format!("a line or head longer than {max} bytes")));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    /// Reads exactly `n` bytes.
    async fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.take(n))
    }

    /// Reads a whole chunked body, framing and trailers included, as it came.
    async fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let line = self.line().await?;
            let text = String::from_utf8_lossy(&line);
            let size = text.trim().split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size line {text:?}")))?;
            out.extend_from_slice(&line);
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let line = self.line().await?;
                    out.extend_from_slice(&line);
                    if line == b"\r\n" {
                        return Ok(out);
                    }
                    if out.len() > MAX_BODY {
                        return Err(invalid("trailers too long".into()));
                    }
                }
            }
            if out.len() + size > MAX_BODY {
                return Err(invalid(format!("a body over {MAX_BODY} bytes")));
            }
            out.extend_from_slice(&self.read_exact(size + 2).await?);
        }
    }

    async fn line(&mut self) -> io::Result<Vec<u8>> {
        self.read_through(b"\r\n", MAX_LINE)
            .await?
            .ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
    }

    /// Reads to the end of the stream.
    async fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        while self.fill().await? > 0 {
            if self.buf.len() > MAX_BODY {
                return Err(invalid(format!("a body over {MAX_BODY} bytes")));
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// Resets the connection: `SO_LINGER` 0, then close, so the peer gets an RST.
    fn reset(self) {
        // If setting the option fails the close is a FIN: still an error for the client.
        let _ = self.stream.set_zero_linger();
        drop(self.stream);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A parsed message head; `raw` is relayed unchanged.
#[derive(Debug)]
struct Head {
    raw: Vec<u8>,
    /// Request: method and target. Response: version and status.
    first: (String, String),
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(raw: Vec<u8>) -> io::Result<Head> {
        let text = String::from_utf8_lossy(&raw).into_owned();
        let mut lines = text.split("\r\n");
        let start = lines.next().unwrap_or_default();
        let mut words = start.split(' ');
        let (Some(a), Some(b)) = (words.next(), words.next()) else {
            return Err(invalid(format!("bad start line {start:?}")));
        };
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(':').unwrap_or((l, ""));
                (name.trim().to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        Ok(Head {
            first: (a.to_owned(), b.to_owned()),
            raw,
            headers,
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn chunked(&self) -> bool {
        self.has_token("transfer-encoding", "chunked")
    }

    fn content_length(&self) -> io::Result<Option<usize>> {
        match self.header("content-length") {
            None => Ok(None),
            Some(v) => {
                let n: usize = v
                    .parse()
                    .map_err(|_| invalid(format!("bad Content-Length {v:?}")))?;
                if n > MAX_BODY {
                    return Err(invalid(format!("a body over {MAX_BODY} bytes")));
                }
                Ok(Some(n))
            }
        }
    }

    /// The status of a response head.
    fn status(&self) -> io::Result<u16> {
        self.first
            .1
            .parse()
            .map_err(|_| invalid(format!("bad status {:?}", self.first.1)))
    }
}

/// Classifies a request by method and query.
fn classify(method: &str, target: &str) -> (Op, Option<u32>) {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let mut uploads = false;
    let mut upload_id = false;
    let mut part = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "uploads" => uploads = true,
            "uploadId" => upload_id = true,
            "partNumber" => part = value.parse().ok(),
            _ => {}
        }
    }
    match method {
        "POST" if uploads => (Op::CreateMultipartUpload, None),
        "PUT" if upload_id && part.is_some() => (Op::UploadPart, part),
        "POST" if upload_id => (Op::CompleteMultipartUpload, None),
        "DELETE" if upload_id => (Op::AbortMultipartUpload, None),
        _ => (Op::Other, None),
    }
}

/// An S3-style error response.
fn error_response(status: u16, close: bool) -> Vec<u8> {
    let (reason, code, message) = match status {
        500 => (
            "Internal Server Error",
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
        503 => (
            "Service Unavailable",
            "SlowDown",
            "Please reduce your request rate.",
        ),
        _ => (
            "Error",
            "InjectedFault",
            "Fault injected by the test proxy.",
        ),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>landline-test-proxy</RequestId></Error>"
    );
    let connection = if close { "close" } else { "keep-alive" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nx-amz-request-id: landline-test-proxy\r\n\
         Connection: {connection}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Why a connection ended early.
enum Stop {
    /// The client went away (closed, reset): normal, e.g. when landline aborts a part.
    ClientGone,
    /// Something the proxy should not meet: malformed HTTP, or the server failing.
    Problem(String),
}

/// Classifies an error on the client's side of the connection.
fn from_client(e: io::Error) -> Stop {
    if e.kind() == io::ErrorKind::InvalidData {
        Stop::Problem(format!("from the client: {e}"))
    } else {
        Stop::ClientGone
    }
}

/// Serves one client connection, request after request, until it closes.
async fn serve(client: TcpStream, upstream: SocketAddr, state: &Mutex<State>) -> Result<(), Stop> {
    let mut client = Wire::new(client);
    loop {
        let Ok(head) =
            tokio::time::timeout(IDLE_TIMEOUT, client.read_through(b"\r\n\r\n", MAX_HEAD)).await
        else {
            return Ok(());
        };
        let Some(head) = head.map_err(from_client)? else {
            return Ok(());
        };
        let request = Head::parse(head).map_err(from_client)?;
        let (method, target) = request.first.clone();
        let (op, part) = classify(&method, &target);
        let (event, fault) = lock(state).decide(op, part);
        let close = request.has_token("connection", "close");

        if request.has_token("expect", "100-continue") {
            client
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(from_client)?;
        }
        let length = if request.chunked() {
            None
        } else {
            Some(request.content_length().map_err(from_client)?.unwrap_or(0))
        };

        if let Some(Fault::ResetMidRequest { after_bytes }) = fault {
            let want = length.map_or(after_bytes, |n| n.min(after_bytes));
            // Reading into the buffer is enough: the bytes are dropped with the socket.
            while client.buf.len() < want {
                if client.fill().await.map_err(from_client)? == 0 {
                    break;
                }
            }
            client.reset();
            return Ok(());
        }

        let mut body = match length {
            Some(n) => client.read_exact(n).await,
            None => client.read_chunked().await,
        }
        .map_err(from_client)?;
        if fault == Some(Fault::CorruptBody) {
            let middle = body.len() / 2;
            if let Some(byte) = body.get_mut(middle) {
                *byte ^= 0x10;
            }
        }

        if let Some(Fault::Status(status)) = fault {
            client
                .stream
                .write_all(&error_response(status, close))
                .await
                .map_err(from_client)?;
            if close {
                return Ok(());
            }
            continue;
        }

        let (response, response_body, server_closed) = tokio::time::timeout(
            UPSTREAM_TIMEOUT,
            relay_upstream(upstream, &method, &request, &body),
        )
        .await
        .map_err(|_| Stop::Problem(format!("{method} {target}: the server did not answer")))?
        .map_err(|e| Stop::Problem(format!("{method} {target}: server: {e}")))?;
        if let Some(seen) = lock(state).events.get_mut(event) {
            seen.status = response.status().ok();
        }

        match fault {
            Some(Fault::ResetAfterForward) => {
                client.reset();
                return Ok(());
            }
            Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
            _ => {}
        }
        client
            .stream
            .write_all(&response.raw)
            .await
            .map_err(from_client)?;
        client
            .stream
            .write_all(&response_body)
            .await
            .map_err(from_client)?;
        if close || server_closed || response.has_token("connection", "close") {
            return Ok(());
        }
    }
}

/// Sends one request to the server on a fresh connection and reads its final response:
/// the head, the body, and whether the body ran to the end of the stream.
async fn relay_upstream(
    upstream: SocketAddr,
    method: &str,
    request: &Head,
    body: &[u8],
) -> io::Result<(Head, Vec<u8>, bool)> {
    let mut server = Wire::new(TcpStream::connect(upstream).await?);
    server.stream.write_all(&request.raw).await?;
    server.stream.write_all(body).await?;
    let response = loop {
        let head = server
            .read_through(b"\r\n\r\n", MAX_HEAD)
            .await?
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let head = Head::parse(head)?;
        // Interim responses (100 Continue for an `Expect` the client sent) are not relayed:
        // the client had its 100 from the proxy.
        if !(100..200).contains(&head.status()?) {
            break head;
        }
    };
    let status = response.status()?;
    if method == "HEAD" || status == 204 || status == 304 {
        return Ok((response, Vec::new(), false));
    }
    if response.chunked() {
        let body = server.read_chunked().await?;
        return Ok((response, body, false));
    }
    match response.content_length()? {
        Some(n) => {
            let body = server.read_exact(n).await?;
            Ok((response, body, false))
        }
        None => {
            let body = server.read_to_end().await?;
            Ok((response, body, true))
        }
    }
}

#[cfg(test)]
mod tests {
    //! The proxy itself: framing against a scripted server, and signatures against the real ones.

    use super::*;
    use crate::s3;

    /// A server that answers each request read from one connection with the next of
    /// `responses`, and records the requests as received.
    async fn scripted_server(
        responses: Vec<&'static [u8]>,
    ) -> (SocketAddr, JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for response in responses {
                let (stream, _) = listener.accept().await.expect("accept");
                let mut wire = Wire::new(stream);
                let (head, body) = read_message(&mut wire).await;
                let mut request = head.raw.clone();
                request.extend_from_slice(&body);
                seen.push(request);
                wire.stream.write_all(response).await.expect("write");
            }
            seen
        });
        (addr, task)
    }

    /// One request or response without interim answers: its head and its body.
    async fn read_message(wire: &mut Wire) -> (Head, Vec<u8>) {
        let head = wire
            .read_through(b"\r\n\r\n", MAX_HEAD)
            .await
            .expect("read")
            .expect("a message");
        let head = Head::parse(head).expect("head");
        let body = if head.chunked() {
            wire.read_chunked().await.expect("chunked")
        } else {
            let n = head.content_length().expect("length").unwrap_or(0);
            wire.read_exact(n).await.expect("body")
        };
        (head, body)
    }

    #[test]
    fn classifies_s3_requests() {
        let cases = [
            ("POST", "/b/k?uploads", (Op::CreateMultipartUpload, None)),
            ("POST", "/b/k?uploads=", (Op::CreateMultipartUpload, None)),
            (
                "PUT",
                "/b/k?partNumber=2&uploadId=abc",
                (Op::UploadPart, Some(2)),
            ),
            (
                "PUT",
                "/b/k?uploadId=abc&partNumber=10",
                (Op::UploadPart, Some(10)),
            ),
            (
                "POST",
                "/b/k?uploadId=abc",
                (Op::CompleteMultipartUpload, None),
            ),
            (
                "DELETE",
                "/b/k?uploadId=abc",
                (Op::AbortMultipartUpload, None),
            ),
            ("PUT", "/b/k", (Op::Other, None)),
            ("GET", "/b?list-type=2&prefix=x", (Op::Other, None)),
            ("GET", "/b?uploads&prefix=x", (Op::Other, None)),
        ];
        for (method, target, want) in cases {
            assert_eq!(classify(method, target), want, "{method} {target}");
        }
    }

    #[test]
    fn rules_act_in_order_on_their_occurrences() {
        let mut state = State {
            rules: vec![
                Rule::new(Op::UploadPart, Fault::Status(500)).part(2),
                Rule::new(Op::UploadPart, Fault::Status(503))
                    .part(2)
                    .times(2),
                Rule::new(Op::CompleteMultipartUpload, Fault::ResetAfterForward).from(2),
            ]
            .into_iter()
            .map(|r| (r, 0, 0))
            .collect(),
            ..State::default()
        };
        assert_eq!(state.decide(Op::UploadPart, Some(1)).1, None);
        assert_eq!(
            state.decide(Op::UploadPart, Some(2)).1,
            Some(Fault::Status(500))
        );
        assert_eq!(
            state.decide(Op::UploadPart, Some(2)).1,
            Some(Fault::Status(503))
        );
        assert_eq!(
            state.decide(Op::UploadPart, Some(2)).1,
            Some(Fault::Status(503))
        );
        assert_eq!(state.decide(Op::UploadPart, Some(2)).1, None);
        assert_eq!(state.decide(Op::CompleteMultipartUpload, None).1, None);
        assert_eq!(
            state.decide(Op::CompleteMultipartUpload, None).1,
            Some(Fault::ResetAfterForward)
        );
        assert_eq!(state.decide(Op::CompleteMultipartUpload, None).1, None);
        assert_eq!(state.counts[&Op::UploadPart], 5);
        assert_eq!(state.part_attempts[&2], 4);
    }

    /// Keep-alive: three requests on one client connection (Content-Length with
    /// `Expect: 100-continue`, chunked, none), answered with Content-Length, chunked and
    /// read-to-close bodies, relayed unchanged; an injected 503 in between keeps it open.
    #[tokio::test]
    async fn relays_keep_alive_framing_unchanged() {
        let (upstream, server) = scripted_server(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end",
        ])
        .await;
        let proxy = Proxy::start_to(
            upstream,
            vec![Rule::new(Op::UploadPart, Fault::Status(503)).part(7)],
        )
        .await;
        let host = format!("Host: {}\r\n", proxy.addr);
        let mut client = Wire::new(TcpStream::connect(proxy.addr).await.expect("connect"));

        let first = format!(
            "PUT /b/k?partNumber=1&uploadId=u HTTP/1.1\r\n{host}Content-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        );
        client.stream.write_all(first.as_bytes()).await.expect("w");
        let (interim, _) = read_message(&mut client).await;
        assert_eq!(interim.status().expect("status"), 100);
        client.stream.write_all(b"body").await.expect("w");
        let (head, body) = read_message(&mut client).await;
        assert_eq!(head.status().expect("status"), 200);
        assert_eq!(head.header("etag"), Some("\"x\""));
        assert_eq!(body, b"hello");

        let faulted = format!(
            "PUT /b/k?partNumber=7&uploadId=u HTTP/1.1\r\n{host}Content-Length: 3\r\n\r\nabc"
        );
        client
            .stream
            .write_all(faulted.as_bytes())
            .await
            .expect("w");
        let (head, body) = read_message(&mut client).await;
        assert_eq!(head.status().expect("status"), 503);
        assert!(String::from_utf8_lossy(&body).contains("<Code>SlowDown</Code>"));

        let chunked = format!(
            "POST /b/k?uploadId=u HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n4\r\n<a/>\r\n0\r\n\r\n"
        );
        client
            .stream
            .write_all(chunked.as_bytes())
            .await
            .expect("w");
        let (head, body) = read_message(&mut client).await;
        assert!(head.chunked());
        assert_eq!(body, b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-T: 1\r\n\r\n");

        let last = format!("GET /b?list-type=2 HTTP/1.1\r\n{host}\r\n");
        client.stream.write_all(last.as_bytes()).await.expect("w");
        let head = client
            .read_through(b"\r\n\r\n", MAX_HEAD)
            .await
            .expect("read")
            .expect("head");
        assert!(String::from_utf8_lossy(&head).contains("Connection: close"));
        assert_eq!(client.read_to_end().await.expect("body"), b"to the end");

        let seen = server.await.expect("server");
        assert_eq!(
            seen[0],
            format!(
                "PUT /b/k?partNumber=1&uploadId=u HTTP/1.1\r\n{host}Content-Length: 4\r\nExpect: 100-continue\r\n\r\nbody"
            )
            .into_bytes(),
            "forwarded unchanged, Host included"
        );
        assert!(seen[1].ends_with(b"4\r\n<a/>\r\n0\r\n\r\n"));
        assert_eq!(proxy.count(Op::UploadPart), 2);
        assert_eq!(proxy.count(Op::CompleteMultipartUpload), 1);
        assert_eq!(proxy.count(Op::Other), 1);
        assert_eq!(proxy.faults_injected(), 1);
        assert!(proxy.errors().is_empty(), "{:?}", proxy.errors());
    }

    /// A reset mid-request is a connection error for the client, not an HTTP answer.
    #[tokio::test]
    async fn resets_mid_request() {
        let proxy = Proxy::start_to(
            "127.0.0.1:9".parse().expect("addr"),
            vec![Rule::new(
                Op::UploadPart,
                Fault::ResetMidRequest { after_bytes: 1000 },
            )],
        )
        .await;
        let result = reqwest::Client::new()
            .put(format!("{}/b/k?partNumber=1&uploadId=u", proxy.endpoint()))
            .body(vec![7u8; 4 * 1024 * 1024])
            .send()
            .await;
        let err = result.expect_err("a reset");
        assert!(!err.is_status(), "{err}");
        assert_eq!(proxy.part_attempts(1), 1);
    }

    /// Signed requests through the proxy are accepted by both servers (the `Host` header is
    /// the proxy's, and that is what was signed), and keep-alive works with them.
    #[tokio::test]
    async fn signed_requests_pass_through_to_both_servers() {
        for server in s3::servers() {
            let proxy = Proxy::start(&server, vec![]).await;
            let via = proxy.server(&server);
            let key = format!("{}/object.bin", server.unique_prefix("proxy-pass"));
            let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
            via.put_object(&key, bytes.clone()).await;
            assert_eq!(
                via.get_object(&key).await,
                Some(bytes.clone()),
                "{}",
                server.name
            );
            assert_eq!(
                server.get_object(&key).await,
                Some(bytes),
                "{}",
                server.name
            );
            assert_eq!(via.list_keys(&key).await, [key.as_str()], "{}", server.name);
            assert_eq!(proxy.count(Op::Other), 3, "{}", server.name);
            assert!(
                proxy.errors().is_empty(),
                "{}: {}",
                server.name,
                proxy.summary()
            );
        }
    }
}
