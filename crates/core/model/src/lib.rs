//! The bottom of drover's core: the step graph, the run's events, and two contracts the
//! layers above meet through — where events go to be durable ([`DurableSink`]) and what a
//! resumed run already has ([`Resume`]). Nothing here knows runbooks, the engine or files.

pub mod events;
pub mod graph;
mod resume;
mod sink;

pub use resume::Resume;
pub use sink::{DurableSink, SinkError};
