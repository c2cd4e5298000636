//! A closed-loop load generator: `connections` workers, each on its own connection (an
//! HTTP/1.1 keep-alive connection for REST, an HTTP/2 connection for gRPC, as wrk and
//! h2load would use), each sending its next request when the previous one is answered.
//! A warm-up second is not recorded; then every answer's latency is.
//!
//! gRPC calls are sent as h2load sends them: the protobuf message encoded and framed by
//! the harness, posted on a bare HTTP/2 connection, the outcome read from `grpc-status`.
//! A full gRPC client stack (tonic's channel buffers each call through a task of its own)
//! would cost the shared CPU more than the server it measures, and REST's client is a
//! bare HTTP/1.1 connection too.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use conduit::proto::conduit::v1 as pb;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request,
    client::conn::{http1::SendRequest, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use serde::Serialize;
use tokio::net::TcpStream;

type PathFn = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// One kind of request, sent over and over; `u64` is the request's sequence number, for
/// calls that vary (which slug, a unique title).
#[derive(Clone)]
pub enum Call {
    Rest {
        method: Method,
        path: PathFn,
        body: Option<PathFn>,
        token: Option<String>,
    },
    Grpc(GrpcCall),
}

#[derive(Clone)]
pub enum GrpcCall {
    Tags,
    List {
        tag: Option<String>,
        size: i32,
    },
    Feed {
        token: String,
        size: i32,
    },
    Get {
        slugs: Arc<Vec<String>>,
    },
    Create {
        token: String,
    },
    Favorite {
        token: String,
        slugs: Arc<Vec<String>>,
    },
}

impl Call {
    pub fn get(path: impl Into<String>, token: Option<&str>) -> Call {
        let path = path.into();
        Call::Rest {
            method: Method::GET,
            path: Arc::new(move |_| path.clone()),
            body: None,
            token: token.map(str::to_string),
        }
    }

    pub fn get_with(path: PathFn, token: Option<&str>) -> Call {
        Call::Rest {
            method: Method::GET,
            path,
            body: None,
            token: token.map(str::to_string),
        }
    }

    pub fn post(path: PathFn, body: PathFn, token: &str) -> Call {
        Call::Rest {
            method: Method::POST,
            path,
            body: Some(body),
            token: Some(token.to_string()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// Answers that were not a success (non-2xx, a gRPC error, a transport error).
    pub errors: u64,
}

enum Client {
    Rest(SendRequest<Full<Bytes>>),
    Grpc(http2::SendRequest<Full<Bytes>>),
}

async fn connect(addr: SocketAddr, call: &Call) -> anyhow::Result<Client> {
    Ok(match call {
        Call::Rest { .. } => {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            Client::Rest(sender)
        }
        Call::Grpc(_) => {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            Client::Grpc(sender)
        }
    })
}

/// The gRPC method, the caller's token and the length-prefixed message of call `n`.
fn grpc_request(call: &GrpcCall, n: u64) -> (&'static str, Option<&str>, Bytes) {
    fn framed(message: impl Message) -> Bytes {
        let mut frame = Vec::with_capacity(5 + message.encoded_len());
        frame.push(0);
        frame.extend_from_slice(&(message.encoded_len() as u32).to_be_bytes());
        message.encode(&mut frame).expect("a Vec grows as needed");
        Bytes::from(frame)
    }
    match call {
        GrpcCall::Tags => (
            "/conduit.v1.TagService/ListTags",
            None,
            framed(pb::ListTagsRequest {}),
        ),
        GrpcCall::List { tag, size } => (
            "/conduit.v1.ArticleService/ListArticles",
            None,
            framed(pb::ListArticlesRequest {
                tag: tag.clone(),
                page_size: *size,
                ..Default::default()
            }),
        ),
        GrpcCall::Feed { token, size } => (
            "/conduit.v1.ArticleService/FeedArticles",
            Some(token),
            framed(pb::FeedArticlesRequest {
                page_size: *size,
                ..Default::default()
            }),
        ),
        GrpcCall::Get { slugs } => (
            "/conduit.v1.ArticleService/GetArticle",
            None,
            framed(pb::GetArticleRequest {
                slug: slugs[n as usize % slugs.len()].clone(),
            }),
        ),
        GrpcCall::Create { token } => (
            "/conduit.v1.ArticleService/CreateArticle",
            Some(token),
            framed(pb::CreateArticleRequest {
                title: format!("gRPC bench {n} {}", std::process::id()),
                description: "Written by the benchmark".into(),
                body: "A body of moderate length, as articles have.".repeat(8),
                tag_list: vec!["bench".into(), format!("tag{}", n % 50)],
            }),
        ),
        GrpcCall::Favorite { token, slugs } => (
            "/conduit.v1.ArticleService/FavoriteArticle",
            Some(token),
            framed(pb::FavoriteArticleRequest {
                slug: slugs[n as usize % slugs.len()].clone(),
            }),
        ),
    }
}

/// Sends one request; true when it succeeded.
async fn send(client: &mut Client, call: &Call, n: u64, authority: &str) -> bool {
    match (client, call) {
        (
            Client::Rest(sender),
            Call::Rest {
                method,
                path,
                body,
                token,
            },
        ) => {
            let mut request = Request::builder()
                .method(method.clone())
                .uri(path(n))
                .header("host", authority);
            if let Some(token) = token {
                request = request.header("authorization", format!("Token {token}"));
            }
            let body = match body {
                Some(body) => {
                    request = request.header("content-type", "application/json");
                    Full::new(Bytes::from(body(n)))
                }
                None => Full::new(Bytes::new()),
            };
            let Ok(request) = request.body(body) else {
                return false;
            };
            if sender.ready().await.is_err() {
                return false;
            }
            match sender.send_request(request).await {
                Ok(response) => {
                    let ok = response.status().is_success();
                    response.into_body().collect().await.is_ok() && ok
                }
                Err(_) => false,
            }
        }
        (Client::Grpc(sender), Call::Grpc(call)) => {
            let (method, token, body) = grpc_request(call, n);
            let mut request = Request::builder()
                .method(Method::POST)
                .uri(format!("http://{authority}{method}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers");
            if let Some(token) = token {
                request = request.header("authorization", format!("Token {token}"));
            }
            let Ok(request) = request.body(Full::new(body)) else {
                return false;
            };
            if sender.ready().await.is_err() {
                return false;
            }
            let Ok(response) = sender.send_request(request).await else {
                return false;
            };
            let trailers_only = response.headers().get("grpc-status").cloned();
            match response.into_body().collect().await {
                Ok(body) => {
                    let status = trailers_only
                        .or_else(|| body.trailers().and_then(|t| t.get("grpc-status").cloned()));
                    status.is_some_and(|s| s == "0")
                }
                Err(_) => false,
            }
        }
        _ => false,
    }
}

/// Drives `call` at `addr` from `connections` workers for a warm-up second plus
/// `duration`, and reports what the measured part saw. gRPC workers share one HTTP/2
/// connection `grpc_streams` at a time, as calls on one gRPC channel do (1: a connection
/// each, like REST's).
pub async fn run(
    addr: SocketAddr,
    call: Call,
    connections: usize,
    grpc_streams: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let warm_up = Duration::from_secs(1);
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + warm_up;
    let end = measure_from + duration;
    let authority = addr.to_string();
    let mut workers = Vec::with_capacity(connections);
    let mut shared: Option<http2::SendRequest<Full<Bytes>>> = None;
    for worker in 0..connections {
        let mut client = match (&shared, worker % grpc_streams.max(1)) {
            (Some(sender), i) if i > 0 => Client::Grpc(sender.clone()),
            _ => connect(addr, &call).await?,
        };
        shared = match &client {
            Client::Grpc(sender) => Some(sender.clone()),
            Client::Rest(_) => None,
        };
        let call = call.clone();
        let authority = authority.clone();
        workers.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let mut latencies = Vec::with_capacity(64 * 1024);
            let mut errors = 0u64;
            let mut n = worker as u64;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let ok = send(&mut client, &call, n, &authority).await;
                n += connections as u64;
                let done = Instant::now();
                if began >= measure_from && done <= end {
                    latencies.push(done.duration_since(began).as_micros() as u32);
                    if !ok {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker.await?;
        latencies.extend(l);
        errors += e;
    }
    Ok(Outcome::of(latencies, errors, duration))
}

impl Outcome {
    /// Throughput and percentiles of the latencies (µs) recorded over `duration`.
    pub fn of(mut latencies: Vec<u32>, errors: u64, duration: Duration) -> Outcome {
        latencies.sort_unstable();
        let at = |q: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[i] as f64 / 1000.0
        };
        Outcome {
            requests_per_second: latencies.len() as f64 / duration.as_secs_f64(),
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            requests: latencies.len() as u64,
            errors,
        }
    }
}
