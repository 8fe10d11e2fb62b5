//! The reasoning runtime's pure parts: answer extraction, the vote with early
//! consensus, budget forcing, and the switcher head. (The decode loop over shared-prefix candidates, LoRA
//! adapters and the switcher build on these.)

pub mod answer;
pub mod budget;
pub mod decoder;
pub mod gpu_decoder;
pub mod runtime;
pub mod switcher;
pub mod verifier;
pub mod vote;

pub use answer::{extract, normalize, Answer};
pub use budget::{Budget, BudgetHint, Forcer, Next, Phase};
pub use decoder::{CpuDecoder, Decoder, Feed, Picked};
pub use gpu_decoder::GpuDecoder;
pub use runtime::{
    prefill_prompt, reason, reason_cpu, Event, Heads, Pooling, ReasonOptions, Stats, MAX_CANDIDATES,
};
pub use switcher::{Mode, Pooler, Route, Switcher, SwitcherConfig};
pub use verifier::{Verifier, VerifierConfig};
pub use vote::{decided, logprob_weight, tally, Ballot, Rule, Share, Tally};
