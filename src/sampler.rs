//! Picking the next token from logits: greedy, or temperature with top-k / top-p,
//! with an optional repetition penalty, reproducible from a seed.

use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Sampling settings. `temperature == 0` means greedy (argmax).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplerConfig {
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p` (1.0 = all).
    pub top_p: f32,
    /// Divides positive (multiplies negative) logits of recently seen tokens; 1.0 = off.
    pub repetition_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repetition_window: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.0,
            repetition_window: 64,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// Whether every step takes the most likely token (so a backend may pick it).
    pub fn is_greedy(&self) -> bool {
        (self.temperature == 0.0 || self.top_k == 1) && self.repetition_penalty == 1.0
    }

    /// Rejects settings that make no sense, with what to use instead.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "temperature {} must be >= 0 (0 = greedy)",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidArgument(format!(
                "top_p {} must be in (0, 1]",
                self.top_p
            )));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "repetition_penalty {} must be > 0 (1 = off)",
                self.repetition_penalty
            )));
        }
        Ok(())
    }
}

/// The largest `top_k` a backend that samples on its own device takes (the GPU's
/// `sample.wgsl` keeps this many candidates in workgroup memory).
pub const DEVICE_TOP_K: usize = 64;

/// One step's sampling, for a backend that picks the token on its device from the
/// logits it holds: the settings and the step's uniform draw. `temperature == 0` is
/// greedy. The layout is the GPU's (`SampleParams` in sample.wgsl).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Draw {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    /// Uniform in [0, 1): where in the kept probability mass the token falls.
    pub u: f32,
}

impl Draw {
    /// The most likely token.
    pub const GREEDY: Draw = Draw {
        temperature: 0.0,
        top_k: 1,
        top_p: 1.0,
        u: 0.0,
    };
}

/// A sampler with its own random state (one per sequence).
pub struct Sampler {
    config: SamplerConfig,
    rng: SmallRng,
}

/// Index of the largest value (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Sampler {
            config,
            rng: SmallRng::seed_from_u64(config.seed),
        })
    }

    /// Picks the next token given the logits (vocab) and the tokens seen so far.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let c = self.config;
        if c.repetition_penalty != 1.0 {
            let start = history.len().saturating_sub(c.repetition_window);
            let mut seen: Vec<u32> = history[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / c.repetition_penalty
                    } else {
                        *l * c.repetition_penalty
                    };
                }
            }
        }
        if c.temperature == 0.0 {
            return argmax(logits);
        }
        let u = self.rng.random::<f32>();
        pick(logits, c.temperature, c.top_k, c.top_p, u)
    }

    /// This step's [`Draw`] for a backend that samples on its device (advancing the
    /// random state exactly as [`Sampler::sample`] would), or `None` when these
    /// settings need the whole logits here: a repetition penalty, or `top_k` 0 (all)
    /// or above [`DEVICE_TOP_K`].
    pub fn device_draw(&mut self) -> Option<Draw> {
        let c = self.config;
        if c.repetition_penalty != 1.0 {
            return None;
        }
        if c.temperature == 0.0 {
            return Some(Draw::GREEDY);
        }
        if c.top_k == 0 || c.top_k > DEVICE_TOP_K {
            return None;
        }
        Some(Draw {
            temperature: c.temperature,
            top_k: c.top_k as u32,
            top_p: c.top_p,
            u: self.rng.random::<f32>(),
        })
    }
}

/// The token that uniform draw `u` picks: candidates sorted by logit (ties: lower id
/// first), cut to `top_k` (0 = all), softmax at `temperature`, cut to the smallest
/// prefix whose probability reaches `top_p`, then `u` walks the kept mass.
pub fn pick(logits: &[f32], temperature: f32, top_k: usize, top_p: f32, u: f32) -> u32 {
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = if top_k == 0 {
        idx.len()
    } else {
        top_k.min(idx.len())
    };
    let by_logit_desc = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, by_logit_desc);
        idx.truncate(k);
    }
    idx.sort_unstable_by(by_logit_desc);
    let max = logits[idx[0] as usize];
    let mut probs: Vec<f32> = idx
        .iter()
        .map(|&i| ((logits[i as usize] - max) / temperature).exp())
        .collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    let mut cum = 0.0;
    let mut keep = probs.len();
    for (i, p) in probs.iter().enumerate() {
        cum += p;
        if cum >= top_p {
            keep = i + 1;
            break;
        }
    }
    let mass: f32 = probs[..keep].iter().sum();
    let mut r = u * mass;
    for (i, p) in probs[..keep].iter().enumerate() {
        if r < *p {
            return idx[i];
        }
        r -= p;
    }
    idx[keep - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_k,
            top_p,
            seed,
            ..SamplerConfig::default()
        }
    }

    #[test]
    fn greedy_picks_argmax() {
        let mut s = Sampler::new(cfg(0.0, 0, 1.0, 0)).unwrap();
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let mut s = Sampler::new(cfg(5.0, 1, 1.0, 9)).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.1, 3.0, 2.9, -1.0], &[]), 1);
        }
    }

    #[test]
    fn top_p_excludes_the_tail() {
        // probs ~ [0.84, 0.11, 0.04, ...]: top_p 0.9 keeps the first two only.
        let mut s = Sampler::new(cfg(1.0, 0, 0.9, 1)).unwrap();
        for _ in 0..200 {
            let t = s.sample(&mut [4.0, 2.0, 1.0, 0.0, -1.0], &[]);
            assert!(t < 2, "sampled tail token {t}");
        }
    }

    #[test]
    fn same_seed_same_tokens_and_distribution_follows_probabilities() {
        let draw = |seed| {
            let mut s = Sampler::new(cfg(1.0, 0, 1.0, seed)).unwrap();
            (0..2000)
                .map(|_| s.sample(&mut [0.0, (3.0f32).ln()], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        let ones = draw(5).iter().filter(|&&t| t == 1).count() as f32 / 2000.0;
        assert!((ones - 0.75).abs() < 0.04, "P(1) = {ones}, want 0.75");
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut s = Sampler::new(SamplerConfig {
            repetition_penalty: 2.0,
            ..cfg(0.0, 0, 1.0, 0)
        })
        .unwrap();
        assert_eq!(s.sample(&mut [3.0, 2.0], &[0]), 1);
    }

    #[test]
    fn a_device_draw_picks_what_sample_picks_with_the_same_seed() {
        let config = cfg(0.9, 40, 0.95, 11);
        let (mut here, mut device) = (Sampler::new(config).unwrap(), Sampler::new(config).unwrap());
        let logits: Vec<f32> = (0..100)
            .map(|i| ((i * 37 % 101) as f32).sin() * 3.0)
            .collect();
        for step in 0..50 {
            let d = device
                .device_draw()
                .expect("top_k 40 samples on the device");
            let on_device = pick(&logits, d.temperature, d.top_k as usize, d.top_p, d.u);
            assert_eq!(
                on_device,
                here.sample(&mut logits.clone(), &[]),
                "step {step}"
            );
        }
    }

    #[test]
    fn settings_a_device_cannot_sample_need_the_logits() {
        let draw = |c: SamplerConfig| Sampler::new(c).unwrap().device_draw();
        assert_eq!(draw(cfg(0.0, 0, 1.0, 0)), Some(Draw::GREEDY));
        assert_eq!(
            draw(cfg(1.0, 0, 0.9, 0)),
            None,
            "top_k 0 is the whole vocabulary"
        );
        assert_eq!(draw(cfg(1.0, DEVICE_TOP_K + 1, 0.9, 0)), None);
        let penalized = SamplerConfig {
            repetition_penalty: 1.1,
            ..cfg(0.0, 40, 1.0, 0)
        };
        assert_eq!(draw(penalized), None, "the penalty needs the history");
    }

    #[test]
    fn bad_settings_are_rejected() {
        assert!(Sampler::new(cfg(-1.0, 0, 1.0, 0)).is_err());
        assert!(Sampler::new(cfg(1.0, 0, 0.0, 0)).is_err());
    }
}
