//! What each operation is, stated once, by the module that owns it: its REST route and
//! its gRPC method together, who may call it, what it does as retries see it, and whether
//! it spends credential attempts. Feature modules declare their rows
//! (`modules::<name>::OPERATIONS`), the probes, metrics and docs theirs; the server joins
//! them into one [`Operations`], and the policy route layer (`middleware::policy`) marks
//! each routed request with its row ([`Identified`]). The access policy, the idempotency
//! layer and the OpenAPI document read the mark or the rows, so none of them names a
//! feature's route or method.

// aHash (keyed per process) rather than SipHash: these are looked up several times on
// every request, with keys of our own tables.
use ahash::{HashMap, HashSet};

use axum::http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed; any sent are not looked at.
    Public,
    /// Anonymous callers are served; a credential that is sent must be good.
    Optional,
    /// A good credential is required.
    Required,
}

/// What an operation does, as retries see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Changes nothing: an idempotency key means nothing to it.
    Read,
    /// Changes state: an idempotency key makes its retries safe.
    Write,
    /// Answers with credentials (access or refresh tokens, a TOTP secret, recovery
    /// codes). Its answer is never kept for replay — that would store credentials in
    /// the clear and let a copy of the request fetch them again — so a key is ignored.
    IssuesCredentials,
}

/// How the credential-attempt limits (`rate_limit.*`) see an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    /// Each call is a guess at a secret (a password, a one-time code, a refresh token)
    /// and counts against the caller's address and the account: past the limits it
    /// answers 429 with `Retry-After` / `RESOURCE_EXHAUSTED` (`RATE_LIMITED`).
    CredentialAttempt,
}

/// What kind of traffic an operation is, for the layers that run before routing (load
/// shedding, access logs), which judge it by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    Api,
    /// Probes, scrapes, gRPC health: never shed (an overloaded replica must still say
    /// so), logged at debug and not counted as API traffic.
    Probe,
    /// Documents and reflection: quiet like probes, shed like the API.
    Tooling,
}

/// One operation, on each protocol that offers it.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// `METHOD /path/{template}` (the routed path, base path stripped).
    pub rest: Option<&'static str>,
    /// `/package.Service/Method`.
    pub grpc: Option<&'static str>,
    pub access: Access,
    pub effect: Effect,
    pub limit: Limit,
    pub traffic: Traffic,
}

impl Operation {
    /// Marks a call as a guess at a secret (see [`Limit::CredentialAttempt`]).
    pub const fn credential_attempt(self) -> Self {
        Self {
            limit: Limit::CredentialAttempt,
            ..self
        }
    }

    /// Marks a probe, a scrape or a health check (see [`Traffic::Probe`]).
    pub const fn probe(self) -> Self {
        Self {
            traffic: Traffic::Probe,
            ..self
        }
    }

    /// Marks documentation or reflection (see [`Traffic::Tooling`]).
    pub const fn tooling(self) -> Self {
        Self {
            traffic: Traffic::Tooling,
            ..self
        }
    }

    /// The request paths it is served at (without a base path): the gRPC method, and
    /// the REST template, whose trailing `{*rest}` makes it a prefix.
    fn paths(&self) -> impl Iterator<Item = Path> {
        let rest =
            self.rest
                .and_then(|r| r.split_once(' '))
                .map(|(_, path)| match path.rfind('{') {
                    Some(at) if path.ends_with('}') && path[at..].starts_with("{*") => {
                        Path::Prefix(&path[..at])
                    }
                    _ => Path::Exact(path),
                });
        rest.into_iter().chain(self.grpc.map(Path::Exact))
    }

    /// The names it is found by: its REST operation and its gRPC method.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        self.rest.into_iter().chain(self.grpc)
    }
}

/// An operation on both protocols (the rows read as a table, hence free functions).
pub const fn both(
    rest: &'static str,
    grpc: &'static str,
    access: Access,
    effect: Effect,
) -> Operation {
    Operation {
        rest: Some(rest),
        grpc: Some(grpc),
        access,
        effect,
        limit: Limit::Unlimited,
        traffic: Traffic::Api,
    }
}

/// An operation only REST offers (probes, documents, a deprecated path).
pub const fn rest_only(rest: &'static str, access: Access, effect: Effect) -> Operation {
    Operation {
        rest: Some(rest),
        grpc: None,
        access,
        effect,
        limit: Limit::Unlimited,
        traffic: Traffic::Api,
    }
}

/// An operation only gRPC offers (health, reflection).
pub const fn grpc_only(grpc: &'static str, access: Access, effect: Effect) -> Operation {
    Operation {
        rest: None,
        grpc: Some(grpc),
        access,
        effect,
        limit: Limit::Unlimited,
        traffic: Traffic::Api,
    }
}

/// What a routed request calls, as the route layer found it.
#[derive(Debug, Clone, Copy)]
pub enum Identified {
    Stated(&'static Operation),
    /// A route, or a method of the descriptor set, that no table states: judged as
    /// requiring authentication, so a forgotten row fails closed.
    Unstated,
    /// A gRPC path no served service has: left to the router's UNIMPLEMENTED (there is
    /// nothing to protect, and clients probing for methods get the honest answer).
    NoSuchMethod,
}

impl Identified {
    /// The access rule: a request nobody identified is judged like an unstated one.
    pub fn access(identified: Option<&Self>) -> Option<Access> {
        match identified {
            Some(Self::Stated(op)) => Some(op.access),
            Some(Self::Unstated) | None => Some(Access::Required),
            Some(Self::NoSuchMethod) => None,
        }
    }

    pub fn operation(&self) -> Option<&'static Operation> {
        match self {
            Self::Stated(op) => Some(op),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Path {
    Exact(&'static str),
    Prefix(&'static str),
}

/// The paths of some operations, matched without allocating.
#[derive(Debug, Default)]
struct Paths {
    exact: HashSet<&'static str>,
    prefixes: Vec<&'static str>,
}

impl Paths {
    fn of<'a>(rows: impl Iterator<Item = &'a &'static Operation>) -> Self {
        let mut paths = Self::default();
        for path in rows.flat_map(|op| op.paths()) {
            match path {
                Path::Exact(p) => {
                    paths.exact.insert(p);
                }
                Path::Prefix(p) => paths.prefixes.push(p),
            }
        }
        paths
    }

    fn contains(&self, path: &str) -> bool {
        self.exact.contains(path) || self.prefixes.iter().any(|p| path.starts_with(p))
    }
}

/// Every stated operation, found by its names.
#[derive(Debug, Default)]
pub struct Operations {
    rows: Vec<&'static Operation>,
    /// Probes and tooling: logged quietly.
    quiet: Paths,
    /// Probes: never shed.
    unsheddable: Paths,
    /// Method, then route template: found without building a string per request.
    rest: HashMap<&'static str, HashMap<&'static str, &'static Operation>>,
    grpc: HashMap<&'static str, &'static Operation>,
}

impl Operations {
    pub fn new<'a>(tables: impl IntoIterator<Item = &'a &'static [Operation]>) -> Self {
        let rows: Vec<&'static Operation> = tables.into_iter().flat_map(|t| t.iter()).collect();
        let mut rest: HashMap<_, HashMap<_, _>> = HashMap::default();
        let mut grpc = HashMap::default();
        for op in &rows {
            if let Some((method, path)) = op.rest.and_then(|r| r.split_once(' ')) {
                rest.entry(method).or_default().insert(path, *op);
            }
            if let Some(method) = op.grpc {
                grpc.insert(method, *op);
            }
        }
        let quiet = Paths::of(rows.iter().filter(|op| op.traffic != Traffic::Api));
        let unsheddable = Paths::of(rows.iter().filter(|op| op.traffic == Traffic::Probe));
        Self {
            rows,
            quiet,
            unsheddable,
            rest,
            grpc,
        }
    }

    /// Every name the tables state, as often as they state it.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.rows.iter().flat_map(|op| op.names())
    }

    /// The row of a REST operation (`method`, routed path template).
    pub fn rest(&self, method: &Method, path: &str) -> Option<&'static Operation> {
        // HEAD is served by the GET route.
        let method = if method == Method::HEAD {
            "GET"
        } else {
            method.as_str()
        };
        self.rest.get(method)?.get(path).copied()
    }

    /// The row of a gRPC method (`/package.Service/Method`).
    pub fn grpc(&self, path: &str) -> Option<&'static Operation> {
        self.grpc.get(path).copied()
    }

    /// Whether a request path (base path stripped) is a probe's or tooling's: logged at
    /// debug, no span exported, not counted as API traffic.
    pub fn is_quiet(&self, path: &str) -> bool {
        self.quiet.contains(path)
    }

    /// Whether a request path is a probe's, which load shedding lets through.
    pub fn is_never_shed(&self, path: &str) -> bool {
        self.unsheddable.contains(path)
    }

    /// The access rule of a REST operation; an unstated one requires authentication.
    pub fn rest_access(&self, method: &Method, path: &str) -> Access {
        self.rest(method, path)
            .map_or(Access::Required, |op| op.access)
    }

    /// The access rule of a gRPC method; an unstated one requires authentication.
    pub fn grpc_access(&self, path: &str) -> Access {
        self.grpc(path).map_or(Access::Required, |op| op.access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static ROWS: &[Operation] = &[
        rest_only("GET /livez", Access::Public, Effect::Read).probe(),
        grpc_only("/grpc.health.v1.Health/Check", Access::Public, Effect::Read).probe(),
        rest_only("GET /api/docs/{*file}", Access::Public, Effect::Read).tooling(),
        rest_only("GET /api/articles/{slug}", Access::Optional, Effect::Read),
    ];

    #[test]
    fn probes_and_tooling_are_known_by_their_paths() {
        let operations = Operations::new([&ROWS]);
        for quiet in [
            "/livez",
            "/grpc.health.v1.Health/Check",
            "/api/docs/index.css",
        ] {
            assert!(operations.is_quiet(quiet), "{quiet}");
        }
        assert!(!operations.is_quiet("/api/articles/{slug}"));
        assert!(!operations.is_quiet("/api/articles/livez"));
        assert!(operations.is_never_shed("/livez"));
        assert!(operations.is_never_shed("/grpc.health.v1.Health/Check"));
        assert!(
            !operations.is_never_shed("/api/docs/index.css"),
            "docs are shed"
        );
        assert!(!operations.is_never_shed("/livez/x"));
    }
}
