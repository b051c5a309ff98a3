//! The parts of a Harbor snapshot. Today: [`config`] (configuration files and secrets).
//! The database and registry parts plug in beside it.

pub mod api;
pub mod config;
pub mod db;
pub mod registry;
pub mod secretkey;
