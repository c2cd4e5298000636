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
    /// A mix of reads and writes, one drawn per request (REST or gRPC).
    Mix(Arc<Mix>),
}

/// The mixed workload: reads — 40% a list of 20, 30% a single article, 20% a feed, 10%
/// the tags; half of the lists and articles signed in — and a share of favourite /
/// unfavourite writes by random users on random articles. Drawn from the request's
/// sequence number, so every target gets the same sequence.
pub struct Mix {
    /// Writes per thousand requests.
    pub writes_per_mille: u64,
    pub tokens: Vec<String>,
    pub slugs: Vec<String>,
    pub grpc: bool,
}

/// What one mixed request is.
enum Drawn<'m> {
    List(Option<&'m str>),
    Article(Option<&'m str>, &'m str),
    Feed(&'m str),
    Tags,
    Favorite(&'m str, &'m str, bool),
}

/// splitmix64: a well-spread hash of the sequence number.
fn spread(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Mix {
    fn draw(&self, n: u64) -> Drawn<'_> {
        let r = spread(n);
        let pick = |salt: u64, len: usize| (spread(r ^ salt) % len as u64) as usize;
        let user = self.tokens[pick(1, self.tokens.len())].as_str();
        let slug = self.slugs[pick(2, self.slugs.len())].as_str();
        let signed_in = (spread(r ^ 3) & 1 == 1).then_some(user);
        if r % 1000 < self.writes_per_mille {
            return Drawn::Favorite(user, slug, spread(r ^ 4) & 1 == 1);
        }
        match (r / 1000) % 100 {
            0..40 => Drawn::List(signed_in),
            40..70 => Drawn::Article(signed_in, slug),
            70..90 => Drawn::Feed(user),
            _ => Drawn::Tags,
        }
    }
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
    /// A list page as a viewer (or anonymously).
    ListAs {
        token: Option<String>,
        size: i32,
    },
    GetAs {
        token: Option<String>,
        slug: String,
    },
    SetFavorite {
        token: String,
        slug: String,
        on: bool,
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
    let grpc = match call {
        Call::Rest { .. } => false,
        Call::Grpc(_) => true,
        Call::Mix(mix) => mix.grpc,
    };
    Ok(match grpc {
        false => {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            Client::Rest(sender)
        }
        true => {
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
        GrpcCall::ListAs { token, size } => (
            "/conduit.v1.ArticleService/ListArticles",
            token.as_deref(),
            framed(pb::ListArticlesRequest {
                page_size: *size,
                ..Default::default()
            }),
        ),
        GrpcCall::GetAs { token, slug } => (
            "/conduit.v1.ArticleService/GetArticle",
            token.as_deref(),
            framed(pb::GetArticleRequest { slug: slug.clone() }),
        ),
        GrpcCall::SetFavorite { token, slug, on } => {
            if *on {
                (
                    "/conduit.v1.ArticleService/FavoriteArticle",
                    Some(token),
                    framed(pb::FavoriteArticleRequest { slug: slug.clone() }),
                )
            } else {
                (
                    "/conduit.v1.ArticleService/UnfavoriteArticle",
                    Some(token),
                    framed(pb::UnfavoriteArticleRequest { slug: slug.clone() }),
                )
            }
        }
    }
}

/// The request `n` of a mix, as a plain call.
fn drawn_call(mix: &Mix, n: u64) -> Call {
    let token = |t: Option<&str>| t.map(str::to_string);
    match (mix.draw(n), mix.grpc) {
        (Drawn::List(viewer), false) => Call::get("/api/articles?limit=20", viewer),
        (Drawn::Article(viewer, slug), false) => Call::get(format!("/api/articles/{slug}"), viewer),
        (Drawn::Feed(user), false) => Call::get("/api/articles/feed?limit=20", Some(user)),
        (Drawn::Tags, false) => Call::get("/api/tags", None),
        (Drawn::Favorite(user, slug, on), false) => {
            let path = format!("/api/articles/{slug}/favorite");
            Call::Rest {
                method: if on { Method::POST } else { Method::DELETE },
                path: Arc::new(move |_| path.clone()),
                body: None,
                token: Some(user.to_string()),
            }
        }
        (Drawn::List(viewer), true) => Call::Grpc(GrpcCall::ListAs {
            token: token(viewer),
            size: 20,
        }),
        (Drawn::Article(viewer, slug), true) => Call::Grpc(GrpcCall::GetAs {
            token: token(viewer),
            slug: slug.to_string(),
        }),
        (Drawn::Feed(user), true) => Call::Grpc(GrpcCall::Feed {
            token: user.to_string(),
            size: 20,
        }),
        (Drawn::Tags, true) => Call::Grpc(GrpcCall::Tags),
        (Drawn::Favorite(user, slug, on), true) => Call::Grpc(GrpcCall::SetFavorite {
            token: user.to_string(),
            slug: slug.to_string(),
            on,
        }),
    }
}

/// Sends one request; true when it succeeded.
async fn send(client: &mut Client, call: &Call, n: u64, authority: &str) -> bool {
    if let Call::Mix(mix) = call {
        let drawn = drawn_call(mix, n);
        return Box::pin(send(client, &drawn, n, authority)).await;
    }
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
    run_on(&[addr], call, connections, grpc_streams, duration).await
}

/// [`run`] with the connections spread over several servers (replicas), round robin.
pub async fn run_on(
    addrs: &[SocketAddr],
    call: Call,
    connections: usize,
    grpc_streams: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let warm_up = Duration::from_secs(1);
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + warm_up;
    let end = measure_from + duration;
    let mut workers = Vec::with_capacity(connections);
    let mut shared: Option<http2::SendRequest<Full<Bytes>>> = None;
    for worker in 0..connections {
        // Streams that share a connection share its server too.
        let addr = addrs[(worker / grpc_streams.max(1)) % addrs.len()];
        let authority = addr.to_string();
        let mut client = match (&shared, worker % grpc_streams.max(1)) {
            (Some(sender), i) if i > 0 => Client::Grpc(sender.clone()),
            _ => connect(addr, &call).await?,
        };
        shared = match &client {
            Client::Grpc(sender) => Some(sender.clone()),
            Client::Rest(_) => None,
        };
        let call = call.clone();
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
