//! Architecture search over the NASNet space: the controller's decision encoding
//! ([`space`]), the paper's LSTM controller trained with PPO ([`controller`]), random search
//! and regularized evolution ([`strategy`]), child evaluators ([`evaluator`]), the durable
//! journal ([`journal`]) and the search loop that ties them together ([`run`]).

pub mod controller;
pub mod evaluator;
pub mod journal;
pub mod run;
pub mod space;
pub mod strategy;
