//! Kubernetes: a simulator of the Kubernetes API for tests and the lab (the actions come next).

pub mod sim;
