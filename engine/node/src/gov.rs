//! `vain gov`: the network's governance from the command line — list, show, propose and vote
//! through a running node's HTTP API (`vain node --api`), which signs with the node's key and
//! sends the proposal or vote to every node (docs/api.md, docs/protocol.md §10.5).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Which node, and its API token.
#[derive(Args, Clone, Debug)]
pub struct Api {
    /// The node's API address.
    #[arg(long, default_value = "127.0.0.1:9480")]
    api: SocketAddr,
    /// The node's API token file (changes need it).
    #[arg(long, default_value = ".vain/api.token")]
    token_file: PathBuf,
}

impl Api {
    /// The API at `api`, with the token in `token_file`.
    pub(crate) fn new(api: SocketAddr, token_file: PathBuf) -> Api {
        Api { api, token_file }
    }
}

/// `vain gov …`.
#[derive(Subcommand)]
pub enum Command {
    /// Proposals: open, pending, and the last closed ones, with their tallies.
    List {
        #[command(flatten)]
        api: Api,
    },
    /// One proposal (id or a unique prefix) with its votes and tally.
    Show {
        /// Proposal id or prefix.
        id: String,
        #[command(flatten)]
        api: Api,
    },
    /// Propose, signed by the node: a ban, an unban, a parameter or an upgrade.
    Propose {
        #[command(flatten)]
        api: Api,
        /// Ban this node (key, hex).
        #[arg(long, group = "action")]
        ban: Option<String>,
        /// Lift this node's ban.
        #[arg(long, group = "action")]
        unban: Option<String>,
        /// Set a parameter: NAME=VALUE.
        #[arg(long, group = "action")]
        set: Option<String>,
        /// Adopt a version.
        #[arg(long, group = "action")]
        upgrade: Option<String>,
        /// Voting window in epochs, from the next one.
        #[arg(long, default_value_t = 3)]
        epochs: u64,
    },
    /// Vote, signed by the node.
    Vote {
        /// Proposal id (64 hex digits).
        id: String,
        /// yes, no or abstain.
        #[arg(long)]
        choice: String,
        #[command(flatten)]
        api: Api,
    },
}

fn token(api: &Api) -> Result<String> {
    let t = std::fs::read_to_string(&api.token_file)
        .with_context(|| format!("reading the API token {}", api.token_file.display()))?;
    Ok(t.trim().to_string())
}

/// Calls the node's API; a 4xx/5xx answer is an error with its code and message.
pub(crate) async fn call(api: &Api, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
    let url = format!("http://{}{path}", api.api);
    let client = reqwest::Client::new();
    let mut req = client.request(method, &url);
    if let Some(b) = body {
        req = req.bearer_auth(token(api)?).header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().await.with_context(|| format!("{url}: is the node running with --api {}?", api.api))?;
    let status = resp.status();
    let text = resp.text().await.with_context(|| format!("{url}: reading the answer"))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{url}: not JSON ({status})"))?;
    if !status.is_success() {
        let code = v["error"]["code"].as_str().unwrap_or("error");
        let message = v["error"]["message"].as_str().unwrap_or("");
        bail!("{status} {code}: {message}");
    }
    Ok(v)
}

fn action(p: &Value) -> String {
    let a = &p["action"];
    match a["kind"].as_str().unwrap_or("") {
        "ban" | "unban" => format!("{} {}", a["kind"].as_str().unwrap_or(""), a["node"].as_str().unwrap_or("")),
        "set_parameter" => format!("set {} = {}", a["name"].as_str().unwrap_or(""), a["value"]),
        "upgrade" => format!("upgrade to {}", a["version"].as_str().unwrap_or("")),
        other => other.to_string(),
    }
}

fn row(p: &Value) -> String {
    let t = &p["tally"];
    format!(
        "{:<16} {:<10} epochs {:>4}–{:<4} yes {:.2} no {:.2} abstain {:.2} of {:.2}  {}",
        p["id"].as_str().map(|s| &s[..16.min(s.len())]).unwrap_or(""),
        p["state"].as_str().unwrap_or(""),
        p["opens_epoch"],
        p["closes_epoch"],
        t["yes"].as_f64().unwrap_or(0.0),
        t["no"].as_f64().unwrap_or(0.0),
        t["abstain"].as_f64().unwrap_or(0.0),
        t["eligible"].as_f64().unwrap_or(0.0),
        action(p),
    )
}

/// Runs the command.
pub fn run(cmd: Command) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        match cmd {
            Command::List { api } => {
                let v = call(&api, reqwest::Method::GET, "/api/v1/proposals", None).await?;
                println!("epoch {} · votes from tier {}", v["next_epoch"], v["vote_from"]);
                for p in v["proposals"].as_array().into_iter().flatten() {
                    println!("{}", row(p));
                }
                Ok(())
            }
            Command::Show { id, api } => {
                let v = call(&api, reqwest::Method::GET, "/api/v1/proposals", None).await?;
                let all: Vec<&Value> = v["proposals"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["id"].as_str().is_some_and(|i| i.starts_with(&id.to_lowercase())))
                    .collect();
                match all.as_slice() {
                    [p] => println!("{}", serde_json::to_string_pretty(p)?),
                    [] => bail!("no proposal {id} on this node"),
                    _ => bail!("{id} names {} proposals: give more digits", all.len()),
                }
                Ok(())
            }
            Command::Propose { api, ban, unban, set, upgrade, epochs } => {
                let body = match (ban, unban, set, upgrade) {
                    (Some(n), ..) => json!({"kind": "ban", "node": n, "epochs": epochs}),
                    (_, Some(n), ..) => json!({"kind": "unban", "node": n, "epochs": epochs}),
                    (_, _, Some(kv), _) => {
                        let (name, value) = kv.split_once('=').context("--set NAME=VALUE")?;
                        let value: f64 =
                            value.trim().parse().with_context(|| format!("--set {name}: {value:?} is not a number"))?;
                        json!({"kind": "set_parameter", "name": name.trim(), "value": value, "epochs": epochs})
                    }
                    (_, _, _, Some(v)) => json!({"kind": "upgrade", "version": v, "epochs": epochs}),
                    _ => bail!("give --ban, --unban, --set or --upgrade"),
                };
                let v = call(&api, reqwest::Method::POST, "/api/v1/proposals", Some(body)).await?;
                println!(
                    "proposal {} ({}), votes in epochs {}–{}",
                    v["id"].as_str().unwrap_or(""),
                    v["outcome"].as_str().unwrap_or(""),
                    v["opens_epoch"],
                    v["closes_epoch"]
                );
                Ok(())
            }
            Command::Vote { id, choice, api } => {
                if !matches!(choice.as_str(), "yes" | "no" | "abstain") {
                    bail!("--choice {choice:?} (yes, no, abstain)");
                }
                let path = format!("/api/v1/proposals/{id}/votes");
                let v = call(&api, reqwest::Method::POST, &path, Some(json!({"choice": choice}))).await?;
                println!("voted {} on {} ({})", choice, id, v["outcome"].as_str().unwrap_or(""));
                Ok(())
            }
        }
    })
}
