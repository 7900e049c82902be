//! Configuration: the TOML schema, its validation, and the checked model it becomes.

pub mod model;

pub use model::*;
