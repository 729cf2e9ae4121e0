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

/// A `mnist-mlp` client training on `items` of the first `of` embedded digits: two SGD steps of
/// 16 with momentum, keeping its state in `dir`.
pub fn trainer(
    items: std::ops::Range<usize>,
    of: usize,
    seed: u64,
    dir: std::path::PathBuf,
) -> vain_round::participant::Config {
    use vain_learn::train;
    vain_round::participant::Config {
        arch: vain_learn::model::Arch::MnistMlp,
        items: items.collect(),
        data: vain_learn::data::Mnist::embedded().train.subset(&(0..of).collect::<Vec<_>>()),
        train: train::Config {
            optim: train::Optim::Sgd { momentum: 0.9 },
            lr: 0.05,
            schedule: train::Schedule::Constant,
            batch: 16,
            steps: 2,
        },
        attack: None,
        seed,
        dir,
        kept_out: None,
        region: String::new(),
        experience: None,
        held: Vec::new(),
        personal_steps: 0,
    }
}
