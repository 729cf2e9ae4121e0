//! One client's work in a round, shared by the in-process federation and the networked node:
//! train from the global model on its own items (label-flip and backdoor clients on poisoned
//! data), take `local − global`, and let an attacker transform the result.

use crate::Error;
use crate::attack::{self, Attack};
use crate::data::Dataset;
use crate::model::Model;
use crate::train::{self, same_label, same_pixels};
use rand_chacha::ChaCha20Rng;

/// Trains `model` (set to `global` first) on `items` and returns the update `local − global`
/// and the examples seen. Free riders do not train (their update is zeros, or whatever
/// [`poison`] makes of it).
#[allow(clippy::too_many_arguments)]
pub fn local_update(
    model: &Model,
    global: &[f32],
    data: &Dataset,
    items: &[usize],
    cfg: &train::Config,
    round: u64,
    rng: &mut ChaCha20Rng,
    attack: Option<Attack>,
) -> Result<(Vec<f32>, usize), Error> {
    model.set_flat(global)?;
    let stats = match attack {
        Some(Attack::LabelFlip) => {
            train::train(model, data, items, cfg, round, rng, &|_, l| attack::flip_label(l), &same_pixels)?
        }
        Some(Attack::Backdoor) => {
            // Half of the items, chosen by index parity, carry the trigger and the target.
            let poisoned = |i: usize| i.is_multiple_of(2);
            train::train(
                model,
                data,
                items,
                cfg,
                round,
                rng,
                &|i, l| if poisoned(i) { attack::BACKDOOR_TARGET } else { l },
                &|i, px| {
                    if poisoned(i) {
                        attack::stamp_trigger(px)
                    }
                },
            )?
        }
        Some(Attack::FreeRide { .. }) => train::Stats::default(),
        _ => train::train(model, data, items, cfg, round, rng, &same_label, &same_pixels)?,
    };
    let local = model.flat()?;
    Ok((local.iter().zip(global).map(|(l, g)| l - g).collect(), stats.samples))
}

/// What an attacker knows when it shapes its update.
#[derive(Debug, Clone, Copy)]
pub struct Knowledge<'a> {
    /// Coordinate-wise mean and standard deviation of benign updates (ALIE, IPM); empty when
    /// unknown, and those attacks then send their honest update.
    pub mean: &'a [f32],
    /// See `mean`.
    pub std: &'a [f32],
    /// ALIE's z for the round's participants and attackers.
    pub z_alie: f64,
    /// The last global step (stale free riders replay it).
    pub last_step: &'a [f32],
    /// Model replacement's boost for backdoor clients.
    pub boost: f32,
}

/// Applies `attack` to an honest-shaped update `u`.
pub fn poison(attack: Attack, u: &mut Vec<f32>, k: &Knowledge<'_>, rng: &mut ChaCha20Rng) -> Result<(), Error> {
    match attack {
        Attack::SignFlip => u.iter_mut().for_each(|v| *v = -*v),
        Attack::Scale(l) => u.iter_mut().for_each(|v| *v *= l),
        Attack::Noise(s) => *u = attack::gaussian(u.len(), s, rng)?,
        Attack::FreeRide { stale: false } => u.iter_mut().for_each(|v| *v = 0.0),
        Attack::FreeRide { stale: true } => {
            if k.last_step.len() == u.len() {
                u.copy_from_slice(k.last_step)
            } else {
                u.iter_mut().for_each(|v| *v = 0.0)
            }
        }
        Attack::Alie if k.mean.len() == u.len() => *u = attack::alie(k.mean, k.std, k.z_alie),
        Attack::Ipm(e) if k.mean.len() == u.len() => *u = attack::ipm(k.mean, e),
        Attack::Backdoor => u.iter_mut().for_each(|v| *v *= k.boost),
        Attack::LabelFlip | Attack::Alie | Attack::Ipm(_) => {}
    }
    Ok(())
}

/// An attacker on a network sees no one else's update: it estimates the benign mean and
/// spread from `parts` honest updates trained on disjoint slices of its own items (the
/// estimate ALIE's paper allows when attackers hold benign data).
#[allow(clippy::too_many_arguments)]
pub fn estimate_benign(
    model: &Model,
    global: &[f32],
    data: &Dataset,
    items: &[usize],
    cfg: &train::Config,
    round: u64,
    rng: &mut ChaCha20Rng,
    parts: usize,
) -> Result<(Vec<f32>, Vec<f32>), Error> {
    let parts = parts.clamp(2, items.len().max(2));
    let chunk = items.len().div_ceil(parts).max(1);
    let mut ups = Vec::with_capacity(parts);
    for slice in items.chunks(chunk) {
        ups.push(local_update(model, global, data, slice, cfg, round, rng, None)?.0);
    }
    let refs: Vec<&[f32]> = ups.iter().map(Vec::as_slice).collect();
    Ok(attack::mean_std(&refs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn poisoned(attack: Attack, u: &[f32], k: &Knowledge<'_>) -> Vec<f32> {
        let mut v = u.to_vec();
        poison(attack, &mut v, k, &mut ChaCha20Rng::seed_from_u64(1)).expect("poison");
        v
    }

    #[test]
    fn each_attack_shapes_the_update_by_its_definition() {
        let u = [1.0f32, -2.0, 0.5, 4.0];
        let (mean, std, last) = ([2.0f32, 0.0, -1.0, 1.0], [1.0f32, 2.0, 0.5, 0.0], [0.25f32, 0.5, -0.5, 1.0]);
        let k = Knowledge { mean: &mean, std: &std, z_alie: 1.5, last_step: &last, boost: 5.0 };
        // Sign flipping: −u. Scaling: λ·u. The backdoor's model replacement: boost · u (its
        // update was trained on triggered data; the boost is participants ÷ attackers).
        assert_eq!(poisoned(Attack::SignFlip, &u, &k), vec![-1.0, 2.0, -0.5, -4.0]);
        assert_eq!(poisoned(Attack::Scale(100.0), &u, &k), vec![100.0, -200.0, 50.0, 400.0]);
        assert_eq!(poisoned(Attack::Backdoor, &u, &k), vec![5.0, -10.0, 2.5, 20.0]);
        // Free riding: nothing, or the last global step replayed.
        assert_eq!(poisoned(Attack::FreeRide { stale: false }, &u, &k), vec![0.0; 4]);
        assert_eq!(poisoned(Attack::FreeRide { stale: true }, &u, &k), last.to_vec());
        // ALIE: mean − z·σ per coordinate; IPM: −ε · mean. Both replace the honest update.
        assert_eq!(poisoned(Attack::Alie, &u, &k), vec![0.5, -3.0, -1.75, 1.0]);
        assert_eq!(poisoned(Attack::Ipm(0.5), &u, &k), vec![-1.0, 0.0, 0.5, -0.5]);
        // Noise: N(0, σ²) in place of the update, the same draw for the same seed.
        let noise = poisoned(Attack::Noise(2.0), &u, &k);
        assert_eq!(noise, attack::gaussian(4, 2.0, &mut ChaCha20Rng::seed_from_u64(1)).expect("noise"));
        assert_ne!(noise, u.to_vec());
        // Label flipping acts on the data, not the update; without the benign statistics (a
        // lone attacker that could not estimate them) ALIE and IPM send the honest update, and
        // a stale free rider with no last step sends nothing.
        let blind = Knowledge { mean: &[], std: &[], z_alie: 1.5, last_step: &[], boost: 1.0 };
        for a in [Attack::LabelFlip, Attack::Alie, Attack::Ipm(0.5)] {
            assert_eq!(poisoned(a, &u, &blind), u.to_vec(), "{a}");
        }
        assert_eq!(poisoned(Attack::FreeRide { stale: true }, &u, &blind), vec![0.0; 4]);
    }
}
