//! xgw's rules language: the whole policy of a gateway in one text file (interfaces, NAT,
//! forwards, inspection, timeouts, limits, object groups, access lists and their bindings).
//!
//! It owns lexing ([`lexer`]), the syntax tree ([`ast`]), the names it knows ([`names`]),
//! parsing with every error collected ([`parse`]), diagnostics
//! with source, caret and hints ([`diag`]) and compilation into the engine's configuration
//! and an immutable first-match access-list matcher ([`compile`], [`acl`]). The compiler does
//! no I/O: included files are read through a loader the caller passes in ([`file`] is that
//! loader for the binaries). [`import`] writes a rules file from a PIX/ASA configuration.
#![forbid(unsafe_code)]

pub mod acl;
pub mod ast;
pub mod compile;
pub mod diag;
pub mod file;
pub mod import;
pub mod lexer;
pub mod names;
pub mod parse;

pub use compile::{compile, Compiled};
pub use diag::{Diagnostic, Severity};
