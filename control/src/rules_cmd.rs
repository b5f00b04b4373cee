//! Loading rules files from disk for the binaries (the rules crate itself does no I/O).

use std::path::Path;

/// Reads an included file.
pub fn load(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

/// Compiles the rules file at `path`.
pub fn compile_file(path: &Path) -> Result<xgw_rules::Compiled, CheckError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CheckError::Read(format!("{name}: {e}")))?;
    xgw_rules::compile(&name, &text, &load).map_err(CheckError::Invalid)
}

/// Why a rules file could not be used.
#[derive(Debug)]
pub enum CheckError {
    /// The file could not be read.
    Read(String),
    /// The file has errors (and maybe warnings).
    Invalid(Vec<xgw_rules::Diagnostic>),
}
