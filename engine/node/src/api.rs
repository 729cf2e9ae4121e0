//! The node's HTTP API and dashboard (`vain node --api [ADDR]`, docs/api.md).
//!
//! JSON under `/api/v1/`, the dashboard at `/`, the Prometheus exposition at `/metrics`. Reads
//! are open to whoever can reach the address (localhost by default); anything that changes
//! state needs `Authorization: Bearer <token>`, the token read from a file only its owner may
//! read (created on first start). Every error is a 4xx/5xx with a JSON body
//! `{"error": {"code": …, "message": …}}`; no request can panic a handler.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vain_core::governance::{Choice, Kind, Proposal, Vote};
use vain_core::ledger::{AuditRequest, Governed};
use vain_core::signed::Signed;
use vain_learn::model::Arch;
use vain_round::coordinator::{Link, Row};
use vain_round::store::Store;
use vain_schema::node::roles;
use vain_trust::Submit;

use crate::metrics::{Metrics, Sources};

/// Where `--api` listens when given no address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9480";
/// Largest request body taken.
const MAX_BODY: usize = 64 << 10;
/// Round rows kept for the API (the newest).
const ROUNDS_KEPT: usize = 1024;
/// Rows `GET /api/v1/rounds` returns unless `limit` says otherwise, and the most it returns.
const ROUNDS_DEFAULT: usize = 100;

/// Why a request failed (answered as JSON, never a panic).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path or query parameter is malformed.
    #[error("{name} {value:?}: expected {expected}")]
    BadParameter {
        /// The parameter.
        name: &'static str,
        /// What was sent.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// A proposal to set a ledger parameter that does not exist, or to a value it may not take.
    #[error("set_parameter: {0}")]
    Parameter(#[from] vain_core::params::Error),
    /// The body is not the JSON the route takes.
    #[error("request body: {0}")]
    BadJson(#[source] serde_json::Error),
    /// Nothing by that id.
    #[error("no {what} {id}")]
    NotFound {
        /// Kind of thing.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// More than one node matches a key prefix.
    #[error("key prefix {prefix} matches {count} nodes")]
    Ambiguous {
        /// The prefix.
        prefix: String,
        /// Nodes it matches.
        count: usize,
    },
    /// The node does not have the role that serves this.
    #[error("this node has no {role} role, which serves {what}")]
    NotServed {
        /// The role needed.
        role: &'static str,
        /// What was asked for.
        what: &'static str,
    },
    /// No route.
    #[error("no route {0}")]
    NoRoute(String),
    /// The route exists, not for this method.
    #[error("method not allowed here")]
    Method,
    /// A state-changing request without `Authorization: Bearer …`.
    #[error("this request changes state: send Authorization: Bearer <token> (the node's API token file)")]
    MissingToken,
    /// A token that is not the node's.
    #[error("wrong API token")]
    WrongToken,
    /// The control plane did not answer.
    #[error("control plane: {0}")]
    Net(#[from] vain_net::Error),
    /// A lock was poisoned by a panicked thread.
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    /// The checkpoint could not be written as safetensors.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] vain_learn::Error),
    /// This node may not propose or vote.
    #[error("this node's tier {tier} is below the ledger's voting tier {need}")]
    NotEligible {
        /// Its tier.
        tier: u8,
        /// The tier needed.
        need: u8,
    },
    /// The proposal's voting window is over.
    #[error("proposal {0} is closed (or closes before the next epoch)")]
    Closed(String),
    /// The pool of proposals and votes waiting for a report is full (for this node).
    #[error("too many proposals and votes are waiting for the next report; try after the next round")]
    PoolFull,
    /// This node already voted otherwise on the proposal (a second, different vote would be
    /// equivocation: the ledger would discard both and penalise the node).
    #[error("this node already voted {0} on this proposal")]
    AlreadyVoted(&'static str),
    /// A request for another host name than this node's loopback address (what a page on another
    /// site would send after rebinding its name to 127.0.0.1).
    #[error("host {0:?} is not this node's loopback address")]
    Host(String),
    /// The control plane refused to dial the address.
    #[error("dial: {0}")]
    Dial(#[source] vain_net::Error),
}

impl Error {
    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Error::BadParameter { .. } | Error::Parameter(_) => (StatusCode::BAD_REQUEST, "bad_parameter"),
            Error::BadJson(_) => (StatusCode::BAD_REQUEST, "bad_json"),
            Error::Ambiguous { .. } => (StatusCode::BAD_REQUEST, "ambiguous"),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Error::NotServed { .. } => (StatusCode::NOT_FOUND, "not_served"),
            Error::NoRoute(_) => (StatusCode::NOT_FOUND, "no_route"),
            Error::Method => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Error::MissingToken => (StatusCode::UNAUTHORIZED, "missing_token"),
            Error::WrongToken => (StatusCode::FORBIDDEN, "wrong_token"),
            Error::Net(_) => (StatusCode::BAD_GATEWAY, "control_plane"),
            Error::Unavailable(_) | Error::Checkpoint(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::NotEligible { .. } => (StatusCode::FORBIDDEN, "not_eligible"),
            Error::Closed(_) => (StatusCode::CONFLICT, "closed"),
            Error::PoolFull => (StatusCode::TOO_MANY_REQUESTS, "pool_full"),
            Error::AlreadyVoted(_) => (StatusCode::CONFLICT, "already_voted"),
            Error::Dial(_) => (StatusCode::BAD_REQUEST, "dial_refused"),
            Error::Host(_) => (StatusCode::FORBIDDEN, "bad_host"),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        let mut r = (status, axum::Json(json!({"error": {"code": code, "message": self.to_string()}}))).into_response();
        if matches!(self, Error::MissingToken) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The token file is readable by others.
    #[error("{path}: the API token file must not be readable by group or others (chmod 600)")]
    TokenMode {
        /// The file.
        path: PathBuf,
    },
    /// The token file holds too short a token.
    #[error("{path}: the API token must be at least 16 characters")]
    TokenShort {
        /// The file.
        path: PathBuf,
    },
    /// Reading, creating or binding failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The BLAKE3 hash of the node's API token.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl Token {
    /// Reads the token from `path`, creating the file (mode 0600, 32 random bytes as hex) when
    /// it does not exist.
    pub fn load_or_create(path: &FsPath) -> Result<Token, StartError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |what: &str| {
            let what = format!("{what} {}", path.display());
            move |source| StartError::Io { what, source }
        };
        if !path.exists() {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| StartError::Io {
                what: "the OS random source".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io("creating"))?;
            f.write_all(format!("{}\n", hex::encode(seed)).as_bytes()).map_err(io("writing"))?;
            f.sync_all().map_err(io("writing"))?;
            tracing::info!(file = %path.display(), "created the API token");
        }
        let mode = std::fs::metadata(path).map_err(io("reading"))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(StartError::TokenMode { path: path.to_path_buf() });
        }
        let text = std::fs::read_to_string(path).map_err(io("reading"))?;
        let t = text.trim();
        if t.len() < 16 {
            return Err(StartError::TokenShort { path: path.to_path_buf() });
        }
        Ok(Token(*blake3::hash(t.as_bytes()).as_bytes()))
    }

    /// Whether `headers` carry this token. Hashes are compared, so the comparison's timing
    /// tells nothing about the token's bytes.
    fn check(&self, headers: &HeaderMap) -> Result<(), Error> {
        let v = headers.get(header::AUTHORIZATION).ok_or(Error::MissingToken)?;
        // The scheme's name is case-insensitive (RFC 7235).
        let t = v
            .to_str()
            .ok()
            .and_then(|s| s.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t)
            .ok_or(Error::MissingToken)?;
        if *blake3::hash(t.trim().as_bytes()).as_bytes() == self.0 { Ok(()) } else { Err(Error::WrongToken) }
    }
}

/// The newest round rows an aggregator evaluated, by round.
#[derive(Default)]
pub struct Rounds(Mutex<BTreeMap<u64, Value>>);

impl Rounds {
    /// Starts from the rows of `rounds.jsonl` (a restarted aggregator keeps its history).
    pub fn load(path: &FsPath) -> Rounds {
        let r = Rounds::default();
        for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                r.put(v);
            }
        }
        r
    }

    /// Records an evaluated round.
    pub fn push(&self, row: &Row) {
        if let Ok(v) = serde_json::to_value(row) {
            self.put(v);
        }
    }

    fn put(&self, v: Value) {
        let Some(round) = v["round"].as_u64() else { return };
        if let Ok(mut m) = self.0.lock() {
            m.insert(round, v);
            while m.len() > ROUNDS_KEPT {
                m.pop_first();
            }
        }
    }

    fn latest(&self) -> Option<Value> {
        self.0.lock().ok()?.last_key_value().map(|(_, v)| v.clone())
    }
}

/// What the routes read.
pub struct Planes {
    /// The control plane, the ledger and the client (shared with the metrics).
    pub sources: Arc<Sources>,
    /// The metrics, served at `/metrics` too.
    pub metrics: Arc<Metrics>,
    /// The aggregator's round coordinator.
    pub link: Option<Link>,
    /// The aggregator's rounds.
    pub rounds: Arc<Rounds>,
    /// The aggregator's checkpoints.
    pub checkpoints: Option<Store>,
    /// The model.
    pub arch: Arch,
    /// Role bits.
    pub roles: u8,
    /// Per-update clip and DP noise multiplier of the aggregator's rounds.
    pub clip: Option<f32>,
    /// DP noise multiplier.
    pub noise_multiplier: Option<f32>,
    /// The API token.
    pub token: Token,
    /// The node's signing key (it signs the proposals and votes made here).
    pub key: ed25519_dalek::SigningKey,
    /// Hands a proposal or vote to the ledger's pool and the network.
    pub govern: Arc<dyn Fn(Governed) -> Option<Submit> + Send + Sync>,
}

struct Inner {
    p: Planes,
    started: Instant,
}

type Shared = State<Arc<Inner>>;

fn ledger_status(p: &Planes) -> Result<vain_trust::Status, Error> {
    p.sources.ledger.lock().map(|l| l.status()).map_err(|_| Error::Unavailable("the ledger"))
}

async fn status(State(s): Shared) -> Result<axum::Json<Value>, Error> {
    let p = &s.p;
    let net = p.sources.net.status().await?;
    let ledger = ledger_status(p)?;
    let key = ledger_key(&net.peer_id);
    let me = ledger.nodes.iter().find(|n| Some(&n.key) == key.as_ref());
    let mut v = json!({
        "node_id": net.node_id,
        "peer_id": net.peer_id,
        "version": env!("CARGO_PKG_VERSION"),
        "roles": roles::names(p.roles),
        "model": p.arch.id(),
        "uptime_s": s.started.elapsed().as_secs_f64(),
        "listen": net.listen,
        "control": {
            "known": net.known, "live": net.live, "connected": net.connected, "stale": net.stale,
            "routing": net.routing, "records": net.records, "settled": net.settled,
        },
        "ledger": {
            "digest": ledger.digest, "next_epoch": ledger.next_epoch, "nodes": ledger.nodes.len(),
            "tier": me.map(|n| n.tier), "standing": me.map(|n| n.standing),
        },
        "aggregator": null,
        "client": null,
    });
    if let Some(l) = &p.link {
        let (leading, next_round) = l.leading();
        v["aggregator"] = json!({
            "leading": leading,
            "next_round": next_round,
            "rounds": p.rounds.0.lock().map(|m| m.len()).unwrap_or(0),
            "closes_ignored": l.ignored(),
        });
    }
    if let Some(c) = &p.sources.participant {
        v["client"] = json!({"answers": c.counts()});
    }
    Ok(axum::Json(v))
}

async fn peers(State(s): Shared) -> Result<axum::Json<Value>, Error> {
    let rows = s.p.sources.net.peers().await?;
    let ledger = ledger_status(&s.p)?;
    let peers: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let key = ledger_key(&r.peer_id);
            let l = key.as_ref().and_then(|k| ledger.nodes.iter().find(|n| &n.key == k));
            let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
            v["role_names"] = json!(roles::names(r.roles));
            v["tier"] = json!(l.map(|n| n.tier));
            v["standing"] = json!(l.map(|n| n.standing));
            v
        })
        .collect();
    Ok(axum::Json(json!({"peers": peers})))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Dial {
    address: String,
}

async fn dial(State(s): Shared, headers: HeaderMap, body: Bytes) -> Result<Response, Error> {
    s.p.token.check(&headers)?;
    let d: Dial = serde_json::from_slice(&body).map_err(Error::BadJson)?;
    let addr: vain_net::Multiaddr = d.address.parse().map_err(|_| Error::BadParameter {
        name: "address",
        value: d.address.clone(),
        expected: "a multiaddr such as /ip4/192.0.2.7/tcp/4001",
    })?;
    s.p.sources.net.dial(addr).await.map_err(Error::Dial)?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"dialing": d.address}))).into_response())
}

fn query(raw: Option<&str>, name: &'static str) -> Option<String> {
    raw?.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
}

fn number(name: &'static str, v: &str, expected: &'static str) -> Result<u64, Error> {
    v.parse::<u64>().map_err(|_| Error::BadParameter { name, value: v.to_string(), expected })
}

fn aggregator_only(p: &Planes, what: &'static str) -> Result<(), Error> {
    if p.roles & roles::AGGREGATOR == 0 { Err(Error::NotServed { role: "aggregator", what }) } else { Ok(()) }
}

/// The fields of a round row the list shows (the per-client and per-update lists are in the
/// round's own route).
fn summary(v: &Value) -> Value {
    let mut s = serde_json::Map::new();
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            if k != "clients" && k != "updates" {
                s.insert(k.clone(), x.clone());
            }
        }
    }
    Value::Object(s)
}

async fn rounds(State(s): Shared, RawQuery(q): RawQuery) -> Result<axum::Json<Value>, Error> {
    aggregator_only(&s.p, "rounds")?;
    let limit = match query(q.as_deref(), "limit") {
        Some(v) => number("limit", &v, "a whole number from 1 to 1024")
            .ok()
            .filter(|n| (1..=ROUNDS_KEPT as u64).contains(n))
            .ok_or(Error::BadParameter { name: "limit", value: v, expected: "a whole number from 1 to 1024" })?
            as usize,
        None => ROUNDS_DEFAULT,
    };
    let m = s.p.rounds.0.lock().map_err(|_| Error::Unavailable("the rounds"))?;
    let mut rows: Vec<Value> = m.values().rev().take(limit).map(summary).collect();
    rows.reverse();
    Ok(axum::Json(json!({"rounds": rows})))
}

/// A path segment, or a JSON 400 when it is not valid UTF-8 after percent-decoding.
fn segment(p: Result<Path<String>, PathRejection>, name: &'static str) -> Result<String, Error> {
    p.map(|Path(s)| s).map_err(|e| Error::BadParameter { name, value: e.body_text(), expected: "a UTF-8 path segment" })
}

/// The ledger's key of a peer: its signing key, which its PeerId is (the node id is the root key,
/// which differs once a node runs on a certified key).
fn ledger_key(peer_id: &str) -> Option<String> {
    peer_id.parse::<vain_net::PeerId>().ok().and_then(|p| vain_net::keys::public_key(&p)).map(hex::encode)
}

async fn round(State(s): Shared, r: Result<Path<String>, PathRejection>) -> Result<axum::Json<Value>, Error> {
    let r = segment(r, "round")?;
    aggregator_only(&s.p, "rounds")?;
    let n = number("round", &r, "a round number")?;
    let m = s.p.rounds.0.lock().map_err(|_| Error::Unavailable("the rounds"))?;
    m.get(&n).cloned().map(axum::Json).ok_or(Error::NotFound { what: "round", id: r })
}

async fn audits(State(s): Shared) -> Result<axum::Json<Value>, Error> {
    Ok(axum::Json(json!({"audits": ledger_status(&s.p)?.audits})))
}

async fn ledger(State(s): Shared) -> Result<axum::Json<vain_trust::Status>, Error> {
    Ok(axum::Json(ledger_status(&s.p)?))
}

async fn ledger_node(
    State(s): Shared,
    k: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<vain_trust::NodeRow>, Error> {
    let k = segment(k, "node")?;
    let prefix = k.to_ascii_lowercase();
    if prefix.len() < 8 || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::BadParameter { name: "node", value: k, expected: "8 to 64 hex digits of a node key" });
    }
    let status = ledger_status(&s.p)?;
    let mut hits: Vec<vain_trust::NodeRow> = status.nodes.into_iter().filter(|n| n.key.starts_with(&prefix)).collect();
    match hits.len() {
        0 => Err(Error::NotFound { what: "node", id: k }),
        1 => Ok(axum::Json(hits.remove(0))),
        count => Err(Error::Ambiguous { prefix: k, count }),
    }
}

async fn privacy(State(s): Shared) -> Result<axum::Json<Value>, Error> {
    aggregator_only(&s.p, "the privacy budget")?;
    let p = &s.p;
    let m = p.rounds.0.lock().map_err(|_| Error::Unavailable("the rounds"))?;
    let per_round: Vec<Value> = m
        .values()
        .filter_map(|r| Some(json!({"round": r["round"].as_u64()?, "epsilon": r["epsilon"].as_f64()?})))
        .collect();
    let spent = per_round.last().and_then(|r| r["epsilon"].as_f64());
    Ok(axum::Json(json!({
        "noise_multiplier": p.noise_multiplier,
        "clip": p.clip,
        "delta": vain_learn::federation::DELTA,
        "epsilon": spent,
        "rounds": per_round,
    })))
}

/// The latest checkpoint's row and bytes.
fn latest_checkpoint(p: &Planes) -> Result<(Value, [u8; 32], Vec<u8>), Error> {
    aggregator_only(p, "checkpoints")?;
    let row = p.rounds.latest().ok_or(Error::NotFound { what: "checkpoint", id: "(no round yet)".into() })?;
    let hex_digest = row["checkpoint"].as_str().unwrap_or_default().to_string();
    let digest: [u8; 32] = hex::decode(&hex_digest)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(Error::NotFound { what: "checkpoint", id: hex_digest.clone() })?;
    let bytes = p
        .checkpoints
        .as_ref()
        .and_then(|s| s.get(&digest))
        .ok_or(Error::NotFound { what: "checkpoint", id: hex_digest })?;
    Ok((row, digest, bytes))
}

async fn checkpoint(State(s): Shared) -> Result<axum::Json<Value>, Error> {
    let (row, digest, bytes) = latest_checkpoint(&s.p)?;
    let arch = s.p.arch;
    Ok(axum::Json(json!({
        "round": row["round"],
        "digest": hex::encode(digest),
        "model": arch.id(),
        "version": arch.version(),
        "layout": hex::encode(arch.layout_digest()),
        "parameters": bytes.len() / 4,
        "bytes": bytes.len(),
        "accuracy": row["accuracy"],
        "safetensors": "/api/v1/checkpoint/safetensors",
    })))
}

async fn checkpoint_safetensors(State(s): Shared) -> Result<Response, Error> {
    let (row, _, bytes) = latest_checkpoint(&s.p)?;
    let flat: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let body = vain_learn::model::safetensors_bytes(s.p.arch, &flat)?;
    let name = format!("attachment; filename=\"{}-round-{}.safetensors\"", s.p.arch.id(), row["round"]);
    Ok(([(header::CONTENT_TYPE, "application/octet-stream".to_string()), (header::CONTENT_DISPOSITION, name)], body)
        .into_response())
}

async fn proposals(State(s): Shared) -> Result<axum::Json<Value>, Error> {
    let l = ledger_status(&s.p)?;
    Ok(axum::Json(json!({
        "next_epoch": l.next_epoch,
        "vote_from": l.vote_from,
        "pool": l.pool,
        "submits": l.submits,
        "proposals": l.proposals,
    })))
}

/// The body of `POST /api/v1/proposals`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProposal {
    kind: String,
    node: Option<String>,
    name: Option<String>,
    value: Option<f64>,
    version: Option<String>,
    epochs: Option<u64>,
}

fn key_param(v: Option<String>) -> Result<[u8; 32], Error> {
    let v = v.unwrap_or_default();
    hex::decode(&v).ok().and_then(|b| b.try_into().ok()).ok_or(Error::BadParameter {
        name: "node",
        value: v,
        expected: "a node key: 64 hex digits",
    })
}

fn text_param(name: &'static str, v: Option<String>) -> Result<String, Error> {
    match v {
        Some(t) if !t.is_empty() && t.len() <= 256 => Ok(t),
        other => {
            Err(Error::BadParameter { name, value: other.unwrap_or_default(), expected: "1 to 256 bytes of text" })
        }
    }
}

/// The HTTP answer to what the ledger's pool made of a proposal or vote.
fn submitted(outcome: Option<Submit>, id: &str) -> Result<&'static str, Error> {
    match outcome {
        Some(Submit::New) => Ok("new"),
        Some(Submit::Duplicate) => Ok("duplicate"),
        Some(Submit::Ineligible { tier, need }) => Err(Error::NotEligible { tier, need }),
        Some(Submit::UnknownProposal) => Err(Error::NotFound { what: "proposal", id: id.to_string() }),
        Some(Submit::Closed) => Err(Error::Closed(id.to_string())),
        Some(Submit::Full) => Err(Error::PoolFull),
        // This node signed it: a bad signature means its key is unusable.
        // (The API submits proposals, votes and audit requests, never testimonies or verdicts.)
        Some(Submit::BadSignature | Submit::Invalid | Submit::UnknownAudit | Submit::NotOnTeam | Submit::Untrusted)
        | None => Err(Error::Unavailable("the ledger")),
    }
}

async fn propose(State(s): Shared, headers: HeaderMap, body: Bytes) -> Result<Response, Error> {
    s.p.token.check(&headers)?;
    let b: NewProposal = serde_json::from_slice(&body).map_err(Error::BadJson)?;
    let kind = match b.kind.as_str() {
        "ban" => Kind::Ban { node: key_param(b.node)? },
        "unban" => Kind::Unban { node: key_param(b.node)? },
        "set_parameter" => Kind::SetParameter {
            name: text_param("name", b.name)?,
            value: b.value.filter(|v| v.is_finite()).ok_or(Error::BadParameter {
                name: "value",
                value: format!("{:?}", b.value),
                expected: "a finite number",
            })?,
        },
        "upgrade" => Kind::Upgrade { version: text_param("version", b.version)? },
        other => {
            return Err(Error::BadParameter {
                name: "kind",
                value: other.to_string(),
                expected: "ban, unban, set_parameter or upgrade",
            });
        }
    };
    let epochs = b.epochs.unwrap_or(3);
    if !(1..=720).contains(&epochs) {
        return Err(Error::BadParameter { name: "epochs", value: epochs.to_string(), expected: "1 to 720 epochs" });
    }
    let (next, cfg) =
        s.p.sources
            .ledger
            .lock()
            .map(|l| (l.next_epoch(), l.ledger().config().clone()))
            .map_err(|_| Error::Unavailable("the ledger"))?;
    // Every ledger would refuse a change to a parameter that does not exist, or out of its range.
    if let Kind::SetParameter { name, value } = &kind {
        cfg.clone().set(name, *value)?;
    }
    // Votes count from the next epoch (the earliest a report can carry the proposal) until the
    // epoch that tallies it.
    let proposal = Proposal {
        kind,
        opens: vain_trust::epoch_time(next),
        closes: vain_trust::epoch_time(next + epochs),
        nonce: vain_schema::clock::unix_ms(),
    };
    let signed = Signed::sign(&s.p.key, proposal);
    let id = hex::encode(signed.digest());
    let outcome = submitted((s.p.govern)(Governed::Propose(signed)), &id)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"id": id, "opens_epoch": next, "closes_epoch": next + epochs, "outcome": outcome})),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAudit {
    node: Option<String>,
    round: Option<u64>,
}

/// `POST /api/v1/audits`: this node asks for an audit of a node's update of a round; the
/// request travels to every ledger, which draws the team.
async fn request_audit(State(s): Shared, headers: HeaderMap, body: Bytes) -> Result<Response, Error> {
    s.p.token.check(&headers)?;
    let b: NewAudit = serde_json::from_slice(&body).map_err(Error::BadJson)?;
    let subject = key_param(b.node)?;
    let round = b.round.ok_or(Error::BadParameter {
        name: "round",
        value: String::new(),
        expected: "the round whose update to audit",
    })?;
    let request = AuditRequest { subject, round, nonce: vain_schema::clock::unix_ms() };
    let signed = Signed::sign(&s.p.key, request);
    let id = hex::encode(signed.digest());
    let outcome = submitted((s.p.govern)(Governed::RequestAudit(signed)), &id)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"request": id, "node": hex::encode(subject), "round": round, "outcome": outcome})),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewVote {
    choice: String,
}

async fn vote(
    State(s): Shared,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let id = segment(id, "proposal")?;
    s.p.token.check(&headers)?;
    let proposal: [u8; 32] = hex::decode(&id).ok().and_then(|b| b.try_into().ok()).ok_or(Error::BadParameter {
        name: "proposal",
        value: id.clone(),
        expected: "a proposal id: 64 hex digits",
    })?;
    let b: NewVote = serde_json::from_slice(&body).map_err(Error::BadJson)?;
    let choice = match b.choice.as_str() {
        "yes" => Choice::Yes,
        "no" => Choice::No,
        "abstain" => Choice::Abstain,
        other => {
            return Err(Error::BadParameter {
                name: "choice",
                value: other.to_string(),
                expected: "yes, no or abstain",
            });
        }
    };
    let me = s.p.key.verifying_key().to_bytes();
    let earlier = s.p.sources.ledger.lock().map_err(|_| Error::Unavailable("the ledger"))?.vote_of(&me, &proposal);
    if let Some(c) = earlier.filter(|c| *c != choice) {
        return Err(Error::AlreadyVoted(match c {
            Choice::Yes => "yes",
            Choice::No => "no",
            Choice::Abstain => "abstain",
        }));
    }
    let signed = Signed::sign(&s.p.key, Vote { proposal, choice });
    let digest = hex::encode(signed.digest());
    let outcome = submitted((s.p.govern)(Governed::Vote(signed)), &id)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"proposal": id, "choice": b.choice, "vote": digest, "outcome": outcome})),
    )
        .into_response())
}

async fn metrics(State(s): Shared) -> Response {
    let body = s.p.metrics.scrape(&s.p.sources).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

async fn no_route(uri: axum::http::Uri) -> Error {
    Error::NoRoute(uri.path().to_string())
}

/// On a loopback address, only requests naming a loopback host are served: a web page cannot
/// reach the API by rebinding its own name to 127.0.0.1 (its requests carry that name).
async fn loopback_host(req: axum::extract::Request, next: axum::middleware::Next) -> Result<Response, Error> {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default().to_string();
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    let local =
        name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if local { Ok(next.run(req).await) } else { Err(Error::Host(host)) }
}

/// The router (every route of docs/api.md).
pub fn router(p: Planes) -> Router {
    let state = Arc::new(Inner { p, started: Instant::now() });
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/peers", get(peers).post(dial))
        .route("/api/v1/rounds", get(rounds))
        .route("/api/v1/rounds/{round}", get(round))
        .route("/api/v1/ledger", get(ledger))
        .route("/api/v1/ledger/{node}", get(ledger_node))
        .route("/api/v1/privacy", get(privacy))
        .route("/api/v1/checkpoint", get(checkpoint))
        .route("/api/v1/checkpoint/safetensors", get(checkpoint_safetensors))
        .route("/api/v1/proposals", get(proposals).post(propose))
        .route("/api/v1/audits", get(audits).post(request_audit))
        .route("/api/v1/proposals/{id}/votes", axum::routing::post(vote))
        .fallback(no_route)
        .method_not_allowed_fallback(|| async { Error::Method })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Binds the API's address (before the node reports itself started, so a taken port is an
/// error at start-up).
pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Io { what: format!("binding the API to {addr}"), source })?;
    let local = listener.local_addr().map_err(|source| StartError::Io { what: "the API address".into(), source })?;
    if !local.ip().is_loopback() {
        tracing::warn!(addr = %local, "the API listens beyond loopback: reads are open to anyone who can reach it");
    }
    tracing::info!(url = %format!("http://{local}/"), "API and dashboard listening");
    Ok(listener)
}

/// Serves the API until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, p: Planes) -> std::io::Result<()> {
    let loopback = listener.local_addr()?.ip().is_loopback();
    let app = router(p);
    let app = if loopback { app.layer(axum::middleware::from_fn(loopback_host)) } else { app };
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {t}").parse().expect("header"));
        h
    }

    #[test]
    fn the_token_file_is_created_private_and_checked() {
        let d = tempfile::tempdir().expect("dir");
        let path = d.path().join("api.token");
        let token = Token::load_or_create(&path).expect("create");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.trim().len(), 64);
        assert!(token.check(&bearer(text.trim())).is_ok());
        // The same file gives the same token on the next start.
        assert!(Token::load_or_create(&path).expect("again").check(&bearer(text.trim())).is_ok());
        assert!(matches!(token.check(&bearer("x".repeat(64).as_str())), Err(Error::WrongToken)));
        assert!(matches!(token.check(&HeaderMap::new()), Err(Error::MissingToken)));
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, "Basic dXNlcjpwYXNz".parse().expect("header"));
        assert!(matches!(token.check(&basic), Err(Error::MissingToken)));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(Token::load_or_create(&path), Err(StartError::TokenMode { .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, "short\n").expect("write");
        assert!(matches!(Token::load_or_create(&path), Err(StartError::TokenShort { .. })));
    }

    #[test]
    fn rounds_keep_the_newest_and_skip_bad_lines() {
        let d = tempfile::tempdir().expect("dir");
        let path = d.path().join("rounds.jsonl");
        let mut text = String::from("not json\n{\"no_round\": 1}\n");
        for r in 0..(ROUNDS_KEPT as u64 + 10) {
            text.push_str(&format!("{{\"round\": {r}, \"accuracy\": 0.5}}\n"));
        }
        std::fs::write(&path, text).expect("write");
        let rounds = Rounds::load(&path);
        let m = rounds.0.lock().expect("lock");
        assert_eq!(m.len(), ROUNDS_KEPT);
        assert_eq!(m.first_key_value().map(|(k, _)| *k), Some(10));
        drop(m);
        assert_eq!(rounds.latest().and_then(|v| v["round"].as_u64()), Some(ROUNDS_KEPT as u64 + 9));
        assert!(Rounds::load(&d.path().join("absent")).latest().is_none());
    }
}
