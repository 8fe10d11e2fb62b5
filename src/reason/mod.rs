//! The reasoning runtime's pure parts: answer extraction, the vote with early
//! consensus, and budget forcing. (The decode loop over shared-prefix candidates, LoRA
//! adapters and the switcher build on these.)

pub mod answer;
pub mod budget;
pub mod vote;

pub use answer::{extract, normalize, Answer};
pub use budget::{Budget, Forcer, Next, Phase};
pub use vote::{decided, logprob_weight, tally, Ballot, Rule, Share, Tally};
