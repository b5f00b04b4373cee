//! Rules files from disk, for the binaries: the one place this crate reads files (the
//! compiler itself takes a loader, so tests and fuzzers need no file system).

use std::path::Path;

/// Reads an included file.
pub fn load(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

/// Compiles the rules file at `path`.
pub fn compile_file(path: &Path) -> Result<crate::Compiled, CheckError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CheckError::Read(format!("{name}: {e}")))?;
    crate::compile(&name, &text, &load).map_err(CheckError::Invalid)
}

/// Why a rules file could not be used.
#[derive(Debug)]
pub enum CheckError {
    /// The file could not be read.
    Read(String),
    /// The file has errors (and maybe warnings).
    Invalid(Vec<crate::Diagnostic>),
}
