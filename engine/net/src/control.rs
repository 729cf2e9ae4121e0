//! The local control socket: a Unix socket (mode 0600) in the node's data directory speaking JSON
//! lines. A request is one object per line — `{"cmd":"status"}`, `{"cmd":"peers"}`,
//! `{"cmd":"get","key":"node/<hex>"}`, `{"cmd":"lookup","key":…}` (a get that also tells what it
//! cost: `{"found":…,"error":…,"requests":…,"successes":…,"ms":…}`),
//! `{"cmd":"holds","key":…}` (in this node's own store?),
//! `{"cmd":"provide","key":"agg/<model>"}`, and the commands the node's owner adds (see
//! [`serve_with`]: `round`, `ledger`) — and the answer one line, `{"ok": …}` or
//! `{"error": "…"}`. Lines over 4 KiB are refused.

use crate::Error;
use crate::node::Handle;
use crate::records::Key;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read as _, Write};
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt};

const MAX_LINE: usize = 4096;

/// What the node's owner answers to one of its commands.
pub type Report = std::sync::Arc<dyn Fn() -> Value + Send + Sync>;

/// Serves `handle` on a Unix socket at `path` (replacing a stale socket file) until the node
/// stops.
pub async fn serve(path: &Path, handle: Handle) -> Result<(), Error> {
    serve_with(path, handle, Vec::new()).await
}

/// [`serve`], answering `{"cmd":NAME}` with the report of that name.
pub async fn serve_with(path: &Path, handle: Handle, extra: Vec<(&'static str, Report)>) -> Result<(), Error> {
    let extra = std::sync::Arc::new(extra);
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    loop {
        let (stream, _) = listener.accept().await?;
        let h = handle.clone();
        let extra = extra.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(r.take(64 * MAX_LINE as u64)).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = if line.len() > MAX_LINE {
                    json!({"error": "request line over 4 KiB"})
                } else {
                    answer(&h, &extra, &line).await
                };
                if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn answer(h: &Handle, extra: &[(&'static str, Report)], line: &str) -> Value {
    let req: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return json!({"error": format!("not JSON: {e}")}),
    };
    let key = || -> Result<Key, String> {
        Key::parse_text(req["key"].as_str().ok_or("missing \"key\"")?).map_err(|e| e.to_string())
    };
    let r: Result<Value, String> = match req["cmd"].as_str() {
        Some("status") => h.status().await.map_err(|e| e.to_string()).map(|s| json!(s)),
        Some("peers") => h.peers().await.map_err(|e| e.to_string()).map(|p| json!(p)),
        Some("get") => match key() {
            Ok(k) => h.get(k).await.map_err(|e| e.to_string()).map(|f| json!(f)),
            Err(e) => Err(e),
        },
        Some("lookup") => match key() {
            Ok(k) => h.lookup(k).await.map_err(|e| e.to_string()).map(|(r, cost)| {
                let (found, error) = match r {
                    Ok(f) => (json!(f), Value::Null),
                    Err(e) => (Value::Null, json!(e.to_string())),
                };
                json!({"found": found, "error": error, "requests": cost.requests, "successes": cost.successes, "ms": cost.ms})
            }),
            Err(e) => Err(e),
        },
        Some("holds") => match key() {
            Ok(k) => h.holds(k).await.map_err(|e| e.to_string()).map(|b| json!(b)),
            Err(e) => Err(e),
        },
        Some("provide") => match key() {
            Ok(k) => h.provide(k).await.map_err(|e| e.to_string()).map(|()| json!(null)),
            Err(e) => Err(e),
        },
        Some(cmd) if extra.iter().any(|(n, _)| *n == cmd) => {
            Ok(extra.iter().find(|(n, _)| *n == cmd).map_or(Value::Null, |(_, f)| f()))
        }
        other => {
            let mut names = vec!["status", "peers", "get", "lookup", "holds", "provide"];
            names.extend(extra.iter().map(|(n, _)| *n));
            Err(format!("unknown cmd {other:?} ({})", names.join(", ")))
        }
    };
    match r {
        Ok(v) => json!({"ok": v}),
        Err(e) => json!({"error": e}),
    }
}

/// Sends one request to the node at `path` and returns its `ok` value.
pub fn request(path: &Path, req: &Value) -> Result<Value, Error> {
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .map_err(|source| Error::Socket { path: path.to_path_buf(), source })?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    s.write_all(format!("{req}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(&s).take(16 << 20).read_line(&mut line)?;
    ok_of(&line)
}

/// [`request`] on the tokio runtime, waiting at most `timeout` for the answer.
pub async fn ask(path: &Path, req: &Value, timeout: std::time::Duration) -> Result<Value, Error> {
    let exchange = async {
        let mut s = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|source| Error::Socket { path: path.to_path_buf(), source })?;
        s.write_all(format!("{req}\n").as_bytes()).await?;
        let mut line = String::new();
        tokio::io::BufReader::new(s).take(16 << 20).read_line(&mut line).await?;
        ok_of(&line)
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| Error::Refused {
        message: format!("{}: no answer within {} s", path.display(), timeout.as_secs_f64()),
    })?
}

/// The `ok` value of an answer line, or its error.
fn ok_of(line: &str) -> Result<Value, Error> {
    let v: Value = serde_json::from_str(line)?;
    match (v.get("ok"), v.get("error")) {
        (Some(ok), _) => Ok(ok.clone()),
        (_, Some(e)) => Err(Error::Refused { message: e.as_str().map_or_else(|| e.to_string(), str::to_string) }),
        _ => Err(Error::Refused { message: format!("an answer with neither ok nor error: {v}") }),
    }
}
