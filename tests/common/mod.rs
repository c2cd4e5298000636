//! Black-box harness: runs the real `conduit` binary on port 0 against a fresh database
//! and hands out real clients (reqwest for REST, tonic for gRPC) for its one port.
//!
//! The database is a new SQLite file per server, or, when `CONDUIT_TEST_DATABASE_URL`
//! names a Postgres server, a new database created on it per server and dropped after.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use conduit::proto::conduit::v1::{
    self as pb, article_service_client::ArticleServiceClient,
    comment_service_client::CommentServiceClient, profile_service_client::ProfileServiceClient,
    user_service_client::UserServiceClient,
};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_conduit");

pub struct TestDb {
    pub url: String,
    admin: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        match std::env::var("CONDUIT_TEST_DATABASE_URL") {
            Ok(admin_url) if admin_url.starts_with("postgres") => {
                let name = format!("conduit_t_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("connect to the Postgres test server");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(b, _)| b)
                    .unwrap_or(&admin_url);
                TestDb {
                    url: format!("{base}/{name}"),
                    admin: Some((admin_url.clone(), name)),
                    _dir: dir,
                }
            }
            _ => TestDb {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("conduit.db").display()
                ),
                admin: None,
                _dir: dir,
            },
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.admin.is_some()
    }

    /// The same database for a second server (a replica); only the original drops it.
    pub fn share(&self) -> TestDb {
        TestDb {
            url: self.url.clone(),
            admin: None,
            _dir: tempfile::tempdir().expect("tempdir"),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.admin.take() else {
            return;
        };
        // Drop runs outside any runtime guarantee: use a private one on a plain thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin = Database::connect(&admin_url).await.ok()?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok();
                admin.close().await.ok()
            })
        })
        .join();
    }
}

/// Environment every test server gets: an isolated working directory (no repo config/ or
/// .env), JSON logs so the harness can read them, port 0.
fn base_command(db_url: &str, workdir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(workdir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", "local")
        .env("CONDUIT__SERVER__ADDR", "127.0.0.1:0")
        .env("CONDUIT__DATABASE__URL", db_url)
        .env("CONDUIT__TELEMETRY__LOG_FORMAT", "json")
        .env("CONDUIT__TELEMETRY__LOG_LEVEL", "info")
        // Tests register and log in far more often than a person: attempt limits are off
        // unless a test turns them on (tests/hardening.rs).
        .env("CONDUIT__RATE_LIMIT__PER_IP_PER_MINUTE", "0")
        .env("CONDUIT__RATE_LIMIT__PER_ACCOUNT_PER_MINUTE", "0")
        .env("CONDUIT__RATE_LIMIT__PER_ACCOUNT_TOTAL_PER_MINUTE", "0");
    // `.ci/run` runs the protocol suites again in the other layout (`multi`).
    if let Ok(runtime) = std::env::var("CONDUIT_TEST_RUNTIME") {
        cmd.env("CONDUIT__SERVER__RUNTIME", runtime);
    }
    cmd
}

pub struct TestServer {
    pub addr: SocketAddr,
    child: Child,
    logs: Arc<Mutex<Vec<Value>>>,
    pub db: TestDb,
    workdir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(&[]).await
    }

    pub async fn start_with(env: &[(&str, &str)]) -> TestServer {
        Self::start_on(TestDb::new().await, env).await
    }

    /// A server on a database the test prepared (e.g. reached through a relay).
    pub async fn start_on(db: TestDb, env: &[(&str, &str)]) -> TestServer {
        // reqwest is built with rustls but no provider of its own (the server's choice);
        // every test starts a server before it builds a client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let workdir = tempfile::tempdir().expect("workdir");
        let mut cmd = base_command(&db.url, workdir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn conduit");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    panic!("log line is not JSON: {line}");
                };
                // Kept before the address is reported: a test reading the logs as soon
                // as the server is up finds the line that said so.
                let listening = (event["message"] == "listening")
                    .then(|| event["addr"].as_str().unwrap_or_default().to_string());
                sink.lock().expect("logs").push(event);
                if let Some(addr) = listening {
                    let _ = tx.send(addr);
                }
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("conduit stderr: {line}");
            }
        });
        // A guard against a server that never comes up, not a performance expectation.
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("server did not report its address")
            .parse()
            .expect("addr");
        TestServer {
            addr,
            child,
            logs,
            db,
            workdir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url(""))
            .expect("uri")
            .connect()
            .await
            .expect("grpc connect")
    }

    /// The Prometheus exposition from `/metrics` on the API port, on a new connection.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("exposition text")
    }

    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().expect("logs").clone()
    }

    /// Sends SIGTERM, as Kubernetes does.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// SIGKILL: the process dies where it stands (no drain, no lease released).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's process id, for reading its resource use from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait")
    }

    pub fn workdir(&self) -> PathBuf {
        self.workdir.path().to_path_buf()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with a command (e.g. `config check`) to completion.
pub fn run_cli(args: &[&str], env: &[(&str, &str)], db_url: &str) -> std::process::Output {
    let workdir = tempfile::tempdir().expect("workdir");
    let mut cmd = base_command(db_url, workdir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("run conduit")
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Authorization metadata / header value for a token.
pub fn token_header(token: &str) -> String {
    format!("Token {token}")
}

pub fn grpc_request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", token_header(t).parse().expect("metadata"));
    }
    request
}

/// A thin REST client: JSON in, status and JSON out (`Null` for empty bodies).
pub struct Rest {
    base: String,
    http: reqwest::Client,
}

impl Rest {
    pub fn new(server: &TestServer) -> Rest {
        Rest {
            base: server.url(""),
            http: reqwest::Client::new(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (reqwest::StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            request = request.header("authorization", token_header(t));
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        let bytes = response.bytes().await.expect("body");
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {bytes:?}"))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (reqwest::StatusCode, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (reqwest::StatusCode, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    pub async fn put(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (reqwest::StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, token, Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (reqwest::StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, token, None).await
    }

    /// Registers `username` (201; email derived, password "password123"); returns the answer.
    async fn registered(&self, username: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/users",
                None,
                json!({"user": {"username": username, "email": format!("{username}@example.com"), "password": "password123"}}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
        body
    }

    /// Registers `username` (201; email derived) and returns its token.
    pub async fn register(&self, username: &str) -> String {
        let body = self.registered(username).await;
        body["user"]["token"].as_str().expect("token").to_string()
    }

    /// Registers `username` (201; email derived); returns its access and refresh tokens.
    pub async fn register_session(&self, username: &str) -> (String, String) {
        tokens_of(&self.registered(username).await)
    }

    /// Logs in with `email` and `password` (200); returns the access and refresh tokens.
    pub async fn login(&self, email: &str, password: &str) -> (String, String) {
        let credentials = json!({"user": {"email": email, "password": password}});
        let (status, body) = self.post("/api/users/login", None, credentials).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        tokens_of(&body)
    }

    /// The token's user as GET /api/user answers it (200).
    pub async fn current_user(&self, token: &str) -> Value {
        let (status, body) = self.get("/api/user", Some(token)).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        body["user"].clone()
    }

    /// Sets the fields of `user` on the token's user (200); returns the user as answered.
    pub async fn update_user(&self, token: &str, user: Value) -> Value {
        let (status, body) = self
            .put("/api/user", Some(token), json!({ "user": user }))
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        body["user"].clone()
    }

    /// Ends the token's session (204).
    pub async fn logout(&self, token: &str) {
        let (status, body) = self.post("/api/users/logout", Some(token), json!({})).await;
        assert_eq!(status, reqwest::StatusCode::NO_CONTENT, "{body}");
    }

    /// Turns TOTP on for the token's user: enrols, confirms with the current code (200 each).
    pub async fn enable_totp(&self, token: &str) -> Totp {
        let (status, body) = self.post("/api/user/totp", Some(token), json!({})).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        let secret = body["secret"].as_str().expect("secret").to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let code = conduit::auth::otp::code_at(&secret, now).expect("code");
        let (status, body) = self
            .post(
                "/api/user/totp/confirm",
                Some(token),
                json!({ "code": code }),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        let recovery_codes = body["recoveryCodes"]
            .as_array()
            .expect("recoveryCodes")
            .iter()
            .map(|c| c.as_str().expect("recovery code").to_string())
            .collect();
        Totp {
            secret,
            spent_code: code,
            recovery_codes,
        }
    }

    /// The profile of `username` as the token's user (or an anonymous reader) sees it (200).
    pub async fn profile(&self, username: &str, token: Option<&str>) -> Value {
        let (status, body) = self.get(&format!("/api/profiles/{username}"), token).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        body["profile"].clone()
    }

    /// Publishes an article titled `title` with `tags` as the token's user (201) and
    /// returns its slug.
    pub async fn publish(&self, token: &str, title: &str, tags: &[&str]) -> String {
        let (status, body) = self
            .post(
                "/api/articles",
                Some(token),
                json!({"article": {"title": title, "description": "d", "body": "b", "tagList": tags}}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
        body["article"]["slug"].as_str().expect("slug").to_string()
    }

    /// The token's user follows `username` (200), and the profile says so.
    pub async fn follow(&self, token: &str, username: &str) {
        let (status, body) = self
            .post(
                &format!("/api/profiles/{username}/follow"),
                Some(token),
                json!({}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        assert_eq!(body["profile"]["following"], true, "{body}");
    }

    /// The token's user favourites `slug` (200); returns the article as answered.
    pub async fn favorite(&self, token: &str, slug: &str) -> Value {
        let (status, body) = self
            .post(
                &format!("/api/articles/{slug}/favorite"),
                Some(token),
                json!({}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        body["article"].clone()
    }

    /// Comments `body` on `slug` as the token's user (201); returns the comment as answered.
    pub async fn comment(&self, token: &str, slug: &str, body: &str) -> Value {
        let (status, answer) = self
            .post(
                &format!("/api/articles/{slug}/comments"),
                Some(token),
                json!({"comment": {"body": body}}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{answer}");
        answer["comment"].clone()
    }

    /// The comments on `slug` as an anonymous reader sees them (200), newest first.
    pub async fn comments(&self, slug: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/api/articles/{slug}/comments"), None)
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        body["comments"].as_array().expect("comments").clone()
    }
}

/// The access and refresh tokens of an answer that opened or refreshed a session.
pub fn tokens_of(body: &Value) -> (String, String) {
    (
        body["user"]["token"].as_str().expect("token").to_string(),
        body["user"]["refreshToken"]
            .as_str()
            .expect("refreshToken")
            .to_string(),
    )
}

/// A second factor just turned on.
pub struct Totp {
    pub secret: String,
    /// The code the confirmation used: spent, so a login with it is a replay.
    pub spent_code: String,
    pub recovery_codes: Vec<String>,
}

/// A gRPC caller on the server's one port for the setup steps tests share: each step
/// panics with the call's status unless it succeeds.
pub struct Grpc {
    channel: Channel,
}

impl Grpc {
    /// Connects to `server`.
    pub async fn new(server: &TestServer) -> Grpc {
        Grpc {
            channel: server.channel().await,
        }
    }

    /// The connection, for the clients of the calls under test.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Registers `username` with `email` (password "password123"): the token, or the refusal.
    pub async fn try_register(&self, username: &str, email: &str) -> Result<String, tonic::Status> {
        let registration = pb::RegisterRequest {
            username: username.into(),
            email: email.into(),
            password: "password123".into(),
        };
        let answer = UserServiceClient::new(self.channel())
            .register(registration)
            .await?;
        Ok(answer.into_inner().user.expect("user").token)
    }

    /// Registers `username` (OK; email derived, password "password123"); returns its token.
    pub async fn register(&self, username: &str) -> String {
        self.try_register(username, &format!("{username}@example.com"))
            .await
            .unwrap_or_else(|status| panic!("register {username}: {status:?}"))
    }

    /// The token's user as GetCurrentUser answers it (OK).
    pub async fn current_user(&self, token: &str) -> pb::User {
        let request = grpc_request(pb::GetCurrentUserRequest {}, Some(token));
        let answer = UserServiceClient::new(self.channel())
            .get_current_user(request)
            .await;
        succeeded("current user", answer).user.expect("user")
    }

    /// Publishes `title` with `tags` as the token's user (OK); returns its slug.
    pub async fn publish(&self, token: &str, title: &str, tags: &[&str]) -> String {
        let article = pb::CreateArticleRequest {
            title: title.into(),
            description: "d".into(),
            body: "b".into(),
            tag_list: tags.iter().map(|t| t.to_string()).collect(),
        };
        let answer = ArticleServiceClient::new(self.channel())
            .create_article(grpc_request(article, Some(token)))
            .await;
        succeeded("publish", answer).article.expect("article").slug
    }

    /// The token's user follows `username` (OK), and the answer says so.
    pub async fn follow(&self, token: &str, username: &str) {
        let username = username.to_string();
        let request = grpc_request(pb::FollowUserRequest { username }, Some(token));
        let answer = ProfileServiceClient::new(self.channel())
            .follow_user(request)
            .await;
        let profile = succeeded("follow", answer).profile.expect("profile");
        assert!(profile.following, "{profile:?}");
    }

    /// The token's user favourites `slug` (OK); returns the article as answered.
    pub async fn favorite(&self, token: &str, slug: &str) -> pb::Article {
        let slug = slug.to_string();
        let request = grpc_request(pb::FavoriteArticleRequest { slug }, Some(token));
        let answer = ArticleServiceClient::new(self.channel())
            .favorite_article(request)
            .await;
        succeeded("favorite", answer).article.expect("article")
    }

    /// Comments `body` on `slug` as the token's user (OK); returns the comment.
    pub async fn comment(&self, token: &str, slug: &str, body: &str) -> pb::Comment {
        let (slug, body) = (slug.to_string(), body.to_string());
        let request = grpc_request(pb::AddCommentRequest { slug, body }, Some(token));
        let answer = CommentServiceClient::new(self.channel())
            .add_comment(request)
            .await;
        succeeded("comment", answer).comment.expect("comment")
    }
}

/// The message of a setup call that must succeed; panics with `what` and the status.
fn succeeded<T>(what: &str, answer: Result<tonic::Response<T>, tonic::Status>) -> T {
    answer
        .unwrap_or_else(|status| panic!("{what}: {status:?}"))
        .into_inner()
}

/// RFC 3339 with milliseconds and `Z`, as RealWorld clients parse it.
pub fn is_realworld_timestamp(value: &Value) -> bool {
    let Some(s) = value.as_str() else {
        return false;
    };
    let bytes = s.as_bytes();
    s.len() == 24
        && s.ends_with('Z')
        && bytes[10] == b'T'
        && bytes[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

impl TestServer {
    /// The address logged under `message` (e.g. "admin listening"), waiting for the line.
    pub async fn logged_addr(&self, message: &str) -> Option<SocketAddr> {
        for _ in 0..250 {
            let found = self
                .logs()
                .iter()
                .find(|l| l["message"] == message)
                .and_then(|l| l["addr"].as_str()?.parse().ok());
            if found.is_some() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl TestServer {
    /// Polls `/readyz` until it answers `status`; false if it never does (a guard of about
    /// 15 s against hanging, not a timing expectation).
    pub async fn wait_for_readyz(&self, status: reqwest::StatusCode) -> bool {
        let http = reqwest::Client::new();
        for _ in 0..150 {
            if let Ok(response) = http.get(self.url("/readyz")).send().await
                && response.status() == status
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

/// Length-prefixed message framing, shared by gRPC and gRPC-Web.
pub fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// A TCP relay on loopback that delays every chunk by `latency` in each direction: a
/// database "across the network", so a request cancelled mid-statement is likely to be
/// cancelled while a round trip is in flight. Returns the relay's address.
pub async fn latency_proxy(target: SocketAddr, latency: Duration) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        latency: Duration,
    ) {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            tokio::time::sleep(latency).await;
            if to.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind relay");
    let addr = listener.local_addr().expect("relay addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (upstream_read, upstream_write) = upstream.into_split();
            tokio::spawn(pump(client_read, upstream_write, latency));
            tokio::spawn(pump(upstream_read, client_write, latency));
        }
    });
    addr
}

impl TestDb {
    /// `host:port` of the Postgres server this database lives on (Postgres only).
    fn postgres_authority(&self) -> Option<&str> {
        self.admin.as_ref()?;
        self.url.split('@').nth(1)?.split('/').next()
    }

    pub fn postgres_addr(&self) -> Option<SocketAddr> {
        std::net::ToSocketAddrs::to_socket_addrs(self.postgres_authority()?)
            .ok()?
            .next()
    }

    /// The same database's URL, reached through `relay` (Postgres only).
    pub fn url_via(&self, relay: SocketAddr) -> Option<String> {
        let authority = self.postgres_authority()?;
        Some(self.url.replacen(authority, &relay.to_string(), 1))
    }
}

/// An OTLP/gRPC collector on a loopback port that keeps every span it is sent.
#[derive(Clone, Default)]
pub struct Collector(pub Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>);

impl Collector {
    /// Starts one; returns it and the endpoint to give `telemetry.otlp_endpoint`.
    pub async fn start() -> (Collector, String) {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        (collector, format!("http://{addr}"))
    }
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.0.lock().expect("spans").extend(spans);
        Ok(tonic::Response::new(
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse {
                partial_success: None,
            },
        ))
    }
}

/// A TCP relay on loopback that can be stalled: while stalled it moves no bytes in either
/// direction (a dead NAT or a paused network), on connections it already relays and on
/// new ones. Returns the relay's address and its switch (`true`: stalled).
pub async fn stallable_proxy(
    target: SocketAddr,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        stalled: Arc<AtomicBool>,
    ) {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            while stalled.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if to.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind relay");
    let addr = listener.local_addr().expect("relay addr");
    let stalled = Arc::new(AtomicBool::new(false));
    let switch = stalled.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (upstream_read, upstream_write) = upstream.into_split();
            tokio::spawn(pump(client_read, upstream_write, stalled.clone()));
            tokio::spawn(pump(upstream_read, client_write, stalled.clone()));
        }
    });
    (addr, switch)
}

/// PgBouncer (Debian's package) in transaction pooling on a loopback port, in front of
/// the test Postgres server, run as the `postgres` user (it refuses root); stopped when
/// dropped. `None` when the binary is missing (`.ci/run` installs it).
pub struct PgBouncer {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl PgBouncer {
    pub fn start(postgres: SocketAddr) -> Option<PgBouncer> {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = std::env::temp_dir().join(format!("conduit-pgbouncer-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).ok()?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).ok()?;
        let ini = format!(
            "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {dir}/users.txt\npool_mode = transaction\n\
             server_reset_query = DISCARD ALL\nserver_reset_query_always = 1\n\
             ignore_startup_parameters = extra_float_digits\nmax_client_conn = 500\n\
             default_pool_size = 20\nlogfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
            postgres.ip(),
            postgres.port(),
            dir = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).ok()?;
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").ok()?;
        for file in ["pgbouncer.ini", "users.txt"] {
            std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644))
                .ok()?;
        }
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--", binary])
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // A guard against a pooler that never comes up, not a timing expectation.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(PgBouncer { port, child, dir });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // Runs as postgres under runuser: signal the pooler itself through its pid file.
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestDb {
    /// The same database's URL through `relay` or a pooler on `port` (Postgres only).
    pub fn url_via_port(&self, port: u16) -> Option<String> {
        let authority = self.postgres_authority()?;
        let host = authority.split(':').next()?;
        let url = self.url.replacen(authority, &format!("{host}:{port}"), 1);
        Some(if url.contains('?') {
            format!("{url}&sslmode=disable")
        } else {
            format!("{url}?sslmode=disable")
        })
    }

    /// The database's name on its Postgres server (Postgres only).
    pub fn postgres_name(&self) -> Option<&str> {
        self.admin.as_ref().map(|(_, name)| name.as_str())
    }
}
