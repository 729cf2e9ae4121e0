//! `vain audit`: checks an auditor runs on what an aggregator published.
//!
//! `vain audit noise` opens the noise secret that `vain aggregate --auditor` sealed to this node,
//! checks it against the commitment in the report, regenerates the round's noise and confirms
//! that the published aggregate is the reference aggregate (which the auditor recomputes without
//! noise from the same inputs) plus exactly that noise. Only the auditor can do this: the report
//! carries the commitment, never the secret.

use crate::aggregate::sealed_secret_aad;
use crate::identity::{Common, HsmArgs};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};
use vain_identity::hpke;
use vain_kernels::philox;
use zeroize::Zeroizing;

/// Audits.
#[derive(Subcommand)]
pub enum Command {
    /// Open a sealed noise secret and check that the aggregate is the reference plus its noise.
    Noise(NoiseArgs),
    /// Ask for an audit of a node's training work in a round, signed by the node whose API is
    /// called (it must be at the voting tier, or pre-trusted): every ledger draws the same team,
    /// which re-executes the training and votes a verdict.
    Request {
        /// The node to audit (its key, 64 hex digits).
        node: String,
        /// The round whose update is re-executed.
        #[arg(long)]
        round: u64,
        #[command(flatten)]
        api: crate::gov::Api,
    },
    /// Open audits and the last decided ones.
    List {
        #[command(flatten)]
        api: crate::gov::Api,
    },
}

/// Arguments of `vain audit noise`.
#[derive(Args)]
pub struct NoiseArgs {
    /// The published aggregate (f32 safetensors written by `vain aggregate`).
    #[arg(long)]
    aggregate: PathBuf,
    /// Its report (JSON): round, noise standard deviation and commitment.
    #[arg(long)]
    report: PathBuf,
    /// The noise secret sealed to this node (`vain aggregate --auditor`).
    #[arg(long)]
    sealed: PathBuf,
    /// The aggregate recomputed without noise from the same inputs and rule
    /// (`vain aggregate … ` with the same --rule, --clip and weights, no --noise-multiplier).
    #[arg(long)]
    reference: PathBuf,
    /// Largest accepted ‖aggregate − noise − reference‖ / ‖reference‖ (summation order may
    /// differ between backends and thread counts).
    #[arg(long, default_value_t = 1e-5)]
    tolerance: f64,
    /// Write the opened secret (64 hex digits) here, to re-run the round with
    /// `vain aggregate --noise-secret-file`. Keep it private: it removes the noise.
    #[arg(long, value_name = "FILE")]
    write_secret: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    hsm_args: HsmArgs,
}

/// Runs the command.
pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Noise(a) => noise(a),
        Command::Request { node, round, api } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let body = serde_json::json!({"node": node, "round": round});
            let v = rt.block_on(crate::gov::call(&api, reqwest::Method::POST, "/api/v1/audits", Some(body)))?;
            println!(
                "audit of {} in round {round} requested ({}): request {}",
                v["node"].as_str().unwrap_or(""),
                v["outcome"].as_str().unwrap_or(""),
                v["request"].as_str().unwrap_or("")
            );
            Ok(())
        }
        Command::List { api } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let v = rt.block_on(crate::gov::call(&api, reqwest::Method::GET, "/api/v1/audits", None))?;
            for a in v["audits"].as_array().into_iter().flatten() {
                println!(
                    "{:<16} {:<7} node {} round {} team {}",
                    a["id"].as_str().map(|s| &s[..16.min(s.len())]).unwrap_or(""),
                    a["state"].as_str().unwrap_or(""),
                    a["subject"].as_str().map(|s| &s[..16.min(s.len())]).unwrap_or(""),
                    a["round"],
                    a["team"].as_array().map_or(0, Vec::len)
                );
            }
            Ok(())
        }
    }
}

fn report_fields(path: &Path) -> Result<(u64, f32, [u8; 32])> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| format!("{}", path.display()))?;
    let round = v["round"].as_u64().with_context(|| format!("{}: no \"round\"", path.display()))?;
    let std = v["noise_std"].as_f64().with_context(|| format!("{}: no noise was added", path.display()))? as f32;
    let c = v["noise_commitment"].as_str().with_context(|| format!("{}: no \"noise_commitment\"", path.display()))?;
    // The noise must be regenerated with the stream that made it.
    match v["noise_stream"].as_u64() {
        Some(n) if n == u64::from(philox::STREAM_VERSION) => {}
        Some(n) => bail!(
            "{}: the noise was made with noise stream version {n}; this vain regenerates version {}",
            path.display(),
            philox::STREAM_VERSION
        ),
        None => bail!("{}: no \"noise_stream\" (a report from before noise streams were versioned)", path.display()),
    }
    let mut commitment = [0u8; 32];
    hex::decode_to_slice(c, &mut commitment)
        .with_context(|| format!("{}: noise_commitment is not 64 hex digits", path.display()))?;
    Ok((round, std, commitment))
}

/// Tensors of an f32 safetensors file, in the flat order `vain aggregate` uses (sorted names).
fn tensors(bytes: &[u8], path: &Path) -> Result<Vec<(String, Vec<f32>)>> {
    let st = SafeTensors::deserialize(bytes).with_context(|| format!("{}", path.display()))?;
    let mut names = st.names();
    names.sort_unstable();
    names
        .into_iter()
        .map(|n| {
            let t = st.tensor(n)?;
            if t.dtype() != Dtype::F32 {
                bail!("{}: tensor {n} is {:?}, expected F32", path.display(), t.dtype());
            }
            let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            Ok((n.to_string(), v))
        })
        .collect()
}

fn noise(a: NoiseArgs) -> Result<()> {
    let (round, std, commitment) = report_fields(&a.report)?;
    let id = crate::identity::open(&a.common, Some(&a.hsm_args))?;
    let sealed = std::fs::read(&a.sealed).with_context(|| format!("reading {}", a.sealed.display()))?;
    let plain = Zeroizing::new(hpke::open(id.x25519(), &sealed, &sealed_secret_aad(&commitment, round)).with_context(
        || format!("{} does not open for this node with the report's commitment and round", a.sealed.display()),
    )?);
    let bytes: [u8; 32] =
        plain.as_slice().try_into().with_context(|| format!("{}: a noise secret is 32 bytes", a.sealed.display()))?;
    let secret = philox::Secret::from_bytes(bytes);
    if secret.commitment() != commitment {
        bail!("the opened secret does not match the report's noise_commitment");
    }
    println!("noise secret opened; it matches the commitment {}", hex::encode(commitment));

    let agg_bytes = std::fs::read(&a.aggregate).with_context(|| format!("reading {}", a.aggregate.display()))?;
    let ref_bytes = std::fs::read(&a.reference).with_context(|| format!("reading {}", a.reference.display()))?;
    let published = tensors(&agg_bytes, &a.aggregate)?;
    let reference = tensors(&ref_bytes, &a.reference)?;
    if published.len() != reference.len()
        || published.iter().zip(&reference).any(|((n, v), (m, w))| n != m || v.len() != w.len())
    {
        bail!("{} and {} do not have the same tensors", a.aggregate.display(), a.reference.display());
    }
    let (seed, stream) = secret.stream(round);
    let (mut err2, mut ref2, mut noise2) = (0f64, 0f64, 0f64);
    let mut offset = 0u64;
    for ((_, got), (_, want)) in published.iter().zip(&reference) {
        let mut z = vec![0f32; got.len()];
        philox::add_noise(&mut z, offset, std, seed, stream);
        offset += got.len() as u64;
        for ((g, w), z) in got.iter().zip(want).zip(&z) {
            let d = f64::from(*g) - f64::from(*z) - f64::from(*w);
            err2 += d * d;
            ref2 += f64::from(*w) * f64::from(*w);
            noise2 += f64::from(*z) * f64::from(*z);
        }
    }
    let rel = err2.sqrt() / ref2.sqrt().max(f64::MIN_POSITIVE);
    let noise_rms = (noise2 / offset.max(1) as f64).sqrt();
    if let Some(path) = &a.write_secret {
        std::fs::write(path, Zeroizing::new(hex::encode(secret.expose())))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !rel.is_finite() || rel > a.tolerance {
        bail!(
            "the aggregate is not the reference plus the committed noise: relative error {rel:.3e} > {:.1e}",
            a.tolerance
        );
    }
    println!(
        "noise verified: {offset} coordinates, std {std} (measured rms {noise_rms:.6}), aggregate = reference + noise within {rel:.2e}"
    );
    Ok(())
}
