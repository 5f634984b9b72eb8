//! What drover's simulators share, so that each models only its API: faults injected into
//! answers ([`fault`]), the loop that serves HTTP and HTTPS connections ([`serve`]), and a
//! clock that tests move by hand instead of sleeping on the real one ([`clock`]).
//!
//! Tests and the lab only: nothing here is in the production binary.

pub mod clock;
pub mod fault;
pub mod serve;

pub use clock::Clock;
pub use fault::Fault;
