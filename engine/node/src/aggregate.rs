//! `vain aggregate`: the offline aggregator. Client updates come as safetensors files with the
//! same tensors (names, shapes; f32, f16 or bf16), the aggregate goes out as an f32 safetensors
//! file with the same names and shapes, and the anomaly report as JSON.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vain_identity::hpke;
use vain_kernels::aggregate::{Config, Noise, Outcome, Round, Rule};
use vain_kernels::backend::{Backend, Segment, Update};
use vain_kernels::cpu::CpuBackend;
use vain_kernels::decode::Encoding;
use vain_kernels::philox;
use vain_schema::Limits;
use vain_schema::node::Announcement;

/// Which backend runs the math.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The CPU backend (always available).
    Cpu,
    /// The CUDA backend; an error if this build or this machine has none.
    Cuda,
    /// CUDA when a driver is present, otherwise CPU (one log line says which).
    Auto,
}

/// Opens the chosen backend. `threads` sizes the CPU backend (0 = all cores).
pub fn open_backend(choice: BackendChoice, threads: usize) -> Result<Box<dyn Backend>> {
    let cpu = || -> Box<dyn Backend> {
        if threads == 0 { Box::new(CpuBackend::default()) } else { Box::new(CpuBackend::new(threads)) }
    };
    match choice {
        BackendChoice::Cpu => Ok(cpu()),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => Ok(Box::new(vain_kernels::cuda::CudaBackend::new(0)?)),
        #[cfg(feature = "cuda")]
        BackendChoice::Auto => match vain_kernels::cuda::CudaBackend::new(0) {
            Ok(b) => Ok(Box::new(b)),
            Err(e) => {
                tracing::warn!(error = %e, "CUDA backend unavailable; using the CPU backend");
                Ok(cpu())
            }
        },
        #[cfg(not(feature = "cuda"))]
        BackendChoice::Cuda => bail!("this build of vain has no CUDA backend (build with `--features cuda`)"),
        #[cfg(not(feature = "cuda"))]
        BackendChoice::Auto => {
            tracing::info!("this build has no CUDA backend; using the CPU backend");
            Ok(cpu())
        }
    }
}

/// Aggregate client updates stored as safetensors files.
#[derive(Args)]
pub struct AggregateArgs {
    /// Client update files (safetensors), all with the same tensor names, shapes and dtypes.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Where to write the aggregate (f32 safetensors, same tensor names and shapes).
    #[arg(short, long)]
    output: PathBuf,
    /// Where to write the anomaly report (JSON). Default: OUTPUT with extension .report.json.
    #[arg(long)]
    report: Option<PathBuf>,
    /// fedavg | median | trimmed-mean:β | multi-krum:f,m | bulyan:f | centered-clip:τ,iters | clipped-mean:C
    #[arg(long, default_value = "fedavg")]
    rule: Rule,
    /// Pre-aggregation steps before the rule: nnm:f | bucketing:s | arc:f, joined by +.
    #[arg(long, default_value = "none")]
    pre: String,
    /// Per-update weights (FedAvg, clipped mean), one per input, comma-separated.
    #[arg(long, value_delimiter = ',')]
    weights: Option<Vec<f32>>,
    /// safetensors metadata key holding each update's weight when --weights is not given.
    #[arg(long, default_value = "num_examples")]
    weight_key: String,
    /// Clip every update to this L2 norm before aggregating (needed for noise).
    #[arg(long)]
    clip: Option<f32>,
    /// Gaussian noise multiplier σ: noise std = σ × clip × sensitivity scale.
    #[arg(long)]
    noise_multiplier: Option<f32>,
    /// Seal the noise secret to this auditor (their announcement file, verified), so that they
    /// and only they can later check the noise with `vain audit noise`.
    #[arg(long, value_name = "ANNOUNCEMENT", conflicts_with = "auditor_key")]
    auditor: Option<PathBuf>,
    /// Seal the noise secret to this X25519 public key (hex) instead of an announcement's.
    #[arg(long, value_name = "HEX")]
    auditor_key: Option<String>,
    /// Where to write the sealed noise secret. Default: OUTPUT with extension .noise.sealed.
    #[arg(long, value_name = "FILE")]
    sealed_secret: Option<PathBuf>,
    /// Take the noise secret from this file (64 hex digits) instead of the OS random generator:
    /// for an auditor re-running a round with the secret they opened. Never publish the file.
    #[arg(long, value_name = "FILE")]
    noise_secret_file: Option<PathBuf>,
    /// Round number, which selects the noise stream together with the noise secret.
    #[arg(long, default_value_t = 0)]
    round: u64,
    /// Backend.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Store every update even for a streaming rule (FedAvg, clipped mean), so the report has
    /// each update's cosine to the coordinate median and its largest similarity to another:
    /// memory then grows with the number of inputs (N × parameters × 4 bytes). The robust
    /// rules store every update anyway and always report both.
    #[arg(long)]
    full_report: bool,
    /// Most bytes of dense update storage the robust rules may use.
    #[arg(long, default_value_t = 16 << 30)]
    memory_limit: u64,
}

/// One tensor of the common layout.
struct Slot {
    name: String,
    shape: Vec<usize>,
    dtype: Dtype,
    offset: usize,
    numel: usize,
}

fn encoding(dtype: Dtype) -> Option<Encoding> {
    match dtype {
        Dtype::F32 => Some(Encoding::DenseF32),
        Dtype::F16 => Some(Encoding::DenseF16),
        Dtype::BF16 => Some(Encoding::DenseBf16),
        _ => None,
    }
}

fn layout(st: &SafeTensors<'_>, path: &Path) -> Result<Vec<Slot>> {
    let mut names: Vec<&str> = st.names();
    names.sort_unstable();
    let mut offset = 0usize;
    let mut slots = Vec::with_capacity(names.len());
    for name in names {
        let t = st.tensor(name)?;
        if encoding(t.dtype()).is_none() {
            bail!(
                "{}: tensor {name} has dtype {:?}; only F32, F16 and BF16 can be aggregated",
                path.display(),
                t.dtype()
            );
        }
        let numel: usize = t.shape().iter().product();
        slots.push(Slot { name: name.to_string(), shape: t.shape().to_vec(), dtype: t.dtype(), offset, numel });
        offset += numel;
    }
    if slots.is_empty() {
        bail!("{}: no tensors", path.display());
    }
    Ok(slots)
}

fn weight_from_metadata(bytes: &[u8], key: &str, path: &Path) -> Result<Option<f32>> {
    let (_, meta) = SafeTensors::read_metadata(bytes)?;
    let Some(v) = meta.metadata().as_ref().and_then(|m| m.get(key)) else { return Ok(None) };
    let w: f32 =
        v.trim().parse().with_context(|| format!("{}: metadata {key} = {v:?} is not a number", path.display()))?;
    Ok(Some(w))
}

/// An input's bytes: mapped when it is a regular file, read otherwise (a pipe, a FIFO,
/// `<(zstdcat …)`), which cannot be mapped.
enum Input {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for Input {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Input::Mapped(m) => m,
            Input::Read(v) => v,
        }
    }
}

/// Opens an input: a regular file is mapped read-only, its pages faulted in at once (one pass
/// through the page cache instead of a fault per page as the kernels read it); anything else
/// is read whole.
fn map(path: &Path) -> Result<Input> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    if !file.metadata().with_context(|| format!("opening {}", path.display()))?.is_file() {
        use std::io::Read;
        let mut v = Vec::new();
        (&file).read_to_end(&mut v).with_context(|| format!("reading {}", path.display()))?;
        return Ok(Input::Read(v));
    }
    // SAFETY: the map is read-only and private to this process, and it lives only while this
    // file is parsed and ingested. Another process truncating or rewriting the file meanwhile
    // would show up as changed bytes or SIGBUS (the usual terms of mapping safetensors, which
    // the format is made for); the inputs are the operator's own files, not the network's.
    #[allow(unsafe_code)]
    let m = unsafe { memmap2::MmapOptions::new().populate().map(&file) };
    Ok(Input::Mapped(m.with_context(|| format!("mapping {}", path.display()))?))
}

/// Runs the command.
pub fn run(args: AggregateArgs) -> Result<()> {
    let pre = vain_kernels::aggregate::parse_pre(&args.pre)?;
    let n = args.inputs.len();
    if let Some(w) = &args.weights
        && w.len() != n
    {
        bail!("--weights has {} values for {n} inputs", w.len());
    }
    if args.noise_multiplier.is_some() && args.clip.is_none() {
        bail!("--noise-multiplier needs --clip (the noise is scaled to the clip bound)");
    }
    if args.noise_multiplier.is_none()
        && (args.auditor.is_some() || args.auditor_key.is_some() || args.noise_secret_file.is_some())
    {
        bail!("--auditor, --auditor-key and --noise-secret-file only apply with --noise-multiplier");
    }
    let auditor = auditor_key(args.auditor.as_deref(), args.auditor_key.as_deref())?;
    let secret = match (args.noise_multiplier, &args.noise_secret_file) {
        (None, _) => None,
        (Some(_), Some(f)) => Some(read_secret(f)?),
        (Some(_), None) => Some(philox::Secret::generate().map_err(|e| anyhow::anyhow!("OS random generator: {e}"))?),
    };
    let mut backend = open_backend(args.backend, args.threads)?;

    // The first file fixes the layout; every other must match it.
    let first = map(&args.inputs[0])?;
    let slots = {
        let st = SafeTensors::deserialize(&first).with_context(|| format!("{}", args.inputs[0].display()))?;
        layout(&st, &args.inputs[0])?
    };
    let dim: usize = slots.iter().map(|s| s.numel).sum();
    let cfg = Config {
        clip: args.clip,
        noise: args.noise_multiplier.zip(secret.clone()).map(|(multiplier, secret)| Noise { multiplier, secret }),
        round: args.round,
        max_updates: n,
        memory_limit: args.memory_limit,
        full_report: args.full_report || args.rule.needs_rows() || !pre.is_empty(),
        pre,
        ..Config::new(dim, args.rule)
    };
    if args.full_report && cfg.storage_bytes() > cfg.memory_limit {
        bail!(
            "--full-report stores every update: {} bytes, over --memory-limit {}",
            cfg.storage_bytes(),
            cfg.memory_limit
        );
    }
    let mut round = Round::new(backend.as_mut(), cfg.clone())?;
    let mut ingest_file = |i: usize, path: &Path, bytes: &[u8]| -> Result<()> {
        let st = SafeTensors::deserialize(bytes).with_context(|| format!("{}", path.display()))?;
        let mut segs = Vec::with_capacity(slots.len());
        let names = st.names();
        if names.len() != slots.len() {
            bail!("{}: {} tensors, {} has {}", path.display(), names.len(), args.inputs[0].display(), slots.len());
        }
        for s in &slots {
            let t = st.tensor(&s.name).with_context(|| format!("{}: tensor {}", path.display(), s.name))?;
            if t.shape() != s.shape.as_slice() || t.dtype() != s.dtype {
                bail!(
                    "{}: tensor {} is {:?} {:?}, expected {:?} {:?} as in {}",
                    path.display(),
                    s.name,
                    t.dtype(),
                    t.shape(),
                    s.dtype,
                    s.shape,
                    args.inputs[0].display()
                );
            }
            let enc = encoding(s.dtype).context("dtype checked in layout")?;
            segs.push(Segment { offset: s.offset, numel: s.numel, encoding: enc, bytes: t.data() });
        }
        let w = match &args.weights {
            Some(w) => w[i],
            None => weight_from_metadata(bytes, &args.weight_key, path)?.unwrap_or(1.0),
        };
        round.ingest(&Update { segments: &segs }, w).with_context(|| format!("{}", path.display()))?;
        Ok(())
    };
    // Each file is mapped, ingested and unmapped: a streaming rule adds it to the accumulator
    // straight from the page cache, and memory is the accumulator (and the rows a robust rule
    // keeps), not N files. (Mapping the next file on a second thread meanwhile was measured:
    // no faster, since the kernel's page-table work and the accumulate share the memory bus.)
    ingest_file(0, &args.inputs[0], &first)?;
    drop(first);
    for (i, path) in args.inputs.iter().enumerate().skip(1) {
        ingest_file(i, path, &map(path)?)?;
    }
    let outcome = round.finish()?;
    let kind = outcome.report.backend;
    write_output(&args.output, &slots, &outcome, &cfg)?;
    let report_path = args.report.clone().unwrap_or_else(|| args.output.with_extension("report.json"));
    // The secret leaves this process only sealed to the auditor; otherwise it is dropped (and
    // zeroed) here, and nobody, this operator included, can regenerate the noise.
    let sealed = match (&secret, auditor) {
        (Some(secret), Some(to)) => {
            let path = args.sealed_secret.clone().unwrap_or_else(|| args.output.with_extension("noise.sealed"));
            let sealed = hpke::seal(&to, secret.expose(), &sealed_secret_aad(&secret.commitment(), args.round))?;
            std::fs::write(&path, sealed).with_context(|| format!("writing {}", path.display()))?;
            Some((path, to))
        }
        _ => None,
    };
    drop(secret);
    let report = report_json(&outcome, &args.inputs, args.round, sealed.as_ref());
    std::fs::write(&report_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!(
        "aggregated {n} updates of {dim} parameters with {} on {kind}: {} written, report {}",
        cfg.rule,
        args.output.display(),
        report_path.display()
    );
    match (&sealed, outcome.report.noise_std) {
        (Some((path, _)), Some(_)) => println!("noise secret sealed to the auditor in {}", path.display()),
        (None, Some(_)) if args.noise_secret_file.is_none() => {
            println!("noise secret discarded: nobody can audit this noise (give --auditor to seal it to an auditor)")
        }
        _ => {}
    }
    let flagged: Vec<usize> = outcome.report.updates.iter().filter(|u| u.norm_z.abs() > 3.5).map(|u| u.index).collect();
    if !flagged.is_empty() {
        println!("updates with |norm z| > 3.5: {flagged:?}");
    }
    Ok(())
}

fn write_output(path: &Path, slots: &[Slot], outcome: &Outcome, cfg: &Config) -> Result<()> {
    // f32 little-endian is what safetensors stores: on a little-endian machine the aggregate's
    // own bytes, without a 4-bytes-per-parameter copy.
    #[cfg(target_endian = "little")]
    let bytes: &[u8] = bytemuck::cast_slice(&outcome.aggregate);
    #[cfg(not(target_endian = "little"))]
    let owned: Vec<u8> = outcome.aggregate.iter().flat_map(|v| v.to_le_bytes()).collect();
    #[cfg(not(target_endian = "little"))]
    let bytes: &[u8] = &owned;
    let mut views = Vec::with_capacity(slots.len());
    for s in slots {
        let data = &bytes[4 * s.offset..4 * (s.offset + s.numel)];
        views.push((s.name.clone(), TensorView::new(Dtype::F32, s.shape.clone(), data)?));
    }
    let mut meta = HashMap::new();
    meta.insert("vain.rule".to_string(), cfg.rule.to_string());
    meta.insert("vain.updates".to_string(), outcome.report.updates.len().to_string());
    meta.insert("vain.backend".to_string(), outcome.report.backend.to_string());
    safetensors::serialize_to_file(views, Some(meta), path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Associated data of a sealed noise secret: binds it to its commitment and round, so a sealed
/// secret cannot be passed off as another round's.
pub fn sealed_secret_aad(commitment: &[u8; 32], round: u64) -> Vec<u8> {
    [&b"vain/noise-secret/v1"[..], commitment, &round.to_le_bytes()].concat()
}

/// The auditor's X25519 key, from a verified announcement or given in hex.
fn auditor_key(announcement: Option<&Path>, hex_key: Option<&str>) -> Result<Option<[u8; 32]>> {
    match (announcement, hex_key) {
        (Some(a), _) => {
            let bytes = std::fs::read(a).with_context(|| format!("reading {}", a.display()))?;
            let ann = Announcement::open(&bytes, &Limits::default(), crate::identity::now_ms())
                .with_context(|| format!("auditor announcement {} does not verify", a.display()))?;
            Ok(Some(ann.x25519_key))
        }
        (None, Some(h)) => Ok(Some(crate::identity::parse_hex(h, "--auditor-key")?)),
        (None, None) => Ok(None),
    }
}

/// Reads a noise secret written as 64 hex digits.
pub fn read_secret(path: &Path) -> Result<philox::Secret> {
    let text =
        zeroize::Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
    let mut b = zeroize::Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), b.as_mut())
        .with_context(|| format!("{}: a noise secret is 64 hex digits", path.display()))?;
    Ok(philox::Secret::from_bytes(*b))
}

fn report_json(
    outcome: &Outcome,
    inputs: &[PathBuf],
    round: u64,
    sealed: Option<&(PathBuf, [u8; 32])>,
) -> serde_json::Value {
    let r = &outcome.report;
    json!({
        "rule": r.rule.to_string(),
        "backend": r.backend.to_string(),
        "dim": r.dim,
        "round": round,
        "storage_bytes": r.storage_bytes,
        "fraction_clipped": r.fraction_clipped,
        "noise_std": r.noise_std,
        "noise_commitment": r.noise_commitment.map(hex::encode),
        "noise_stream": r.noise_commitment.map(|_| philox::STREAM_VERSION),
        "noise_sealed_to": sealed.map(|(_, k)| hex::encode(k)),
        "noise_sealed_file": sealed.map(|(p, _)| p.display().to_string()),
        "updates": r.updates.iter().map(|u| json!({
            "index": u.index,
            "file": inputs.get(u.index).map(|p| p.display().to_string()),
            "weight": u.weight,
            "norm": u.norm,
            "norm_z": u.norm_z,
            "clip_factor": u.clip_factor,
            "cosine_to_median": u.cosine,
            "krum_score": u.krum_score,
            "max_similarity": u.max_similarity,
            "selected": u.selected,
        })).collect::<Vec<_>>(),
    })
}
