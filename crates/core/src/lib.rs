//! Domain types of Universal Bitcoin.
//!
//! Everything here is pure data and rules: chains, payments, the statement the
//! guardians sign, the proof bundle handed to users, and the life of a validation.
//! Raw input becomes one of these types at the edge (`parse` / `new` constructors
//! that return typed errors); code inside the system never sees unchecked data.
//!
//! This crate must never do I/O, spawn tasks or depend on an async runtime.

pub mod amount;
pub mod attestation;
pub mod bundle;
pub mod chain;
pub mod payment;
pub mod statement;
pub mod time;
pub mod validation;

pub use amount::{Sats, TokenAmount};
pub use bundle::ProofBundle;
pub use chain::{ChainId, ChainKind};
pub use payment::{Payment, PaymentRef};
pub use statement::{BlockStamp, Statement, StatementMessage};
pub use time::Timestamp;
pub use validation::{ValidationId, ValidationStatus};
