//! Helpers shared by the round protocol's integration tests.

use vain_net::Config;

/// A control-plane node on the memory transport with fast liveness, for model `mnist-mlp`.
pub fn config(port: u64, roles: &[&str], bootstrap: Option<String>) -> Config {
    let mut c = Config {
        listen: vec![format!("/memory/{port}")],
        bootstrap: bootstrap.into_iter().collect(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        models: vec!["mnist-mlp".into()],
        ..Default::default()
    };
    c.mdns.enabled = false;
    c.beacon.enabled = false;
    c.liveness.heartbeat_interval = 0.2;
    c.liveness.stale_after = 2.0;
    c.pex.interval = 0.3;
    c
}

/// A deterministic key seed.
pub fn seed(i: u8) -> [u8; 32] {
    [i; 32]
}
