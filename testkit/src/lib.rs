//! Tests never skip silently.
//!
//! A test that needs something the machine may lack calls [`unavailable`] when it is missing.
//! The capability is *required* when `VAIN_REQUIRE` names it (comma-separated, or `all` for
//! everything but the GPU) or when `CI=true` (everything but the GPU): then the call panics and the
//! test fails. Otherwise the skip is appended to the file `VAIN_SKIP_LOG` names (one line:
//! capability, test, reason), which `scripts/test.sh` counts and prints at the end of the run,
//! and the test returns.

use std::fmt::Display;
use std::io::Write as _;

/// Something a test may need from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// io_uring with ≥ 512 KiB of lockable memory (glommio).
    IoUring,
    /// Root, for network namespaces.
    Root,
    /// The NVRTC library (CUDA kernels compiled at run time).
    Nvrtc,
    /// SoftHSM2's PKCS#11 module.
    SoftHsm,
    /// Headless Chromium (`chromium` on the PATH), for the dashboard's browser test.
    Chromium,
    /// The Prometheus project's OpenMetrics parser (PyPI `prometheus-client`).
    OpenMetricsParser,
    /// Node.js with the js-libp2p interop client's packages (tests/interop-js).
    JsLibp2p,
    /// The contracts' npm packages (solcjs, OpenZeppelin, anvil; contracts/node_modules).
    Contracts,
    /// The FlatBuffers compiler at the version the committed code was generated with.
    Flatc,
    /// A CUDA driver and GPU.
    Gpu,
}

impl Need {
    /// The name used in `VAIN_REQUIRE` and the skip log.
    pub fn name(self) -> &'static str {
        match self {
            Need::IoUring => "io_uring",
            Need::Root => "root",
            Need::Nvrtc => "nvrtc",
            Need::SoftHsm => "softhsm",
            Need::Chromium => "chromium",
            Need::OpenMetricsParser => "openmetrics-parser",
            Need::JsLibp2p => "js-libp2p",
            Need::Contracts => "contracts",
            Need::Flatc => "flatc",
            Need::Gpu => "gpu",
        }
    }

    /// Whether this run requires it (see the crate docs).
    pub fn required(self) -> bool {
        required_by(self, std::env::var("VAIN_REQUIRE").ok().as_deref(), std::env::var("CI").ok().as_deref())
    }
}

fn required_by(need: Need, require: Option<&str>, ci: Option<&str>) -> bool {
    if need != Need::Gpu && ci == Some("true") {
        return true;
    }
    require.is_some_and(|r| r.split(',').map(str::trim).any(|w| w == need.name() || (w == "all" && need != Need::Gpu)))
}

/// The test `test` cannot run because `need` is missing (`why`): panics when it is required,
/// records and prints the skip otherwise. Call it and return.
pub fn unavailable(need: Need, test: &str, why: impl Display) {
    let line = format!("{}\t{test}\t{why}", need.name());
    assert!(!need.required(), "{test} needs {} ({why}), which this run requires (VAIN_REQUIRE / CI)", need.name());
    eprintln!("skipped: {test}: needs {} ({why})", need.name());
    if let Some(path) = std::env::var_os("VAIN_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path)
    {
        // One write per line, so concurrent test threads do not interleave within a line.
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

/// Whether this process runs as root (network namespaces need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_requires_everything_but_the_gpu_and_the_list_is_honoured() {
        assert!(required_by(Need::IoUring, None, Some("true")));
        assert!(!required_by(Need::Gpu, None, Some("true")));
        assert!(!required_by(Need::Root, None, None));
        assert!(required_by(Need::Root, Some("io_uring, root"), None));
        assert!(!required_by(Need::Nvrtc, Some("io_uring,root"), Some("false")));
        assert!(required_by(Need::SoftHsm, Some("all"), None));
        assert!(!required_by(Need::Gpu, Some("all"), None));
        assert!(required_by(Need::Gpu, Some("gpu"), None));
    }
}
