//! Diagnostics: every problem as `file:line:col: error: message`, the source line, a caret
//! under the offending token, what was expected, and a "did you mean" hint.

use serde::Serialize;

/// How bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file is refused.
    Error,
    /// The file is accepted; something in it is probably not what was meant.
    Warning,
    /// The file is accepted as written; how xgw reads a line (a Cisco spelling, say).
    Note,
}

/// One source file.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Name as given (shown in diagnostics).
    pub name: String,
    /// Contents.
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// A file named `name` holding `text`.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> SourceFile {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile { name: name.into(), text, line_starts }
    }

    /// 1-based line and column (in characters) of byte offset `at`.
    pub fn position(&self, at: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= at).max(1);
        let start = self.line_starts[line - 1];
        let col = self.text.get(start..at.min(self.text.len())).map_or(0, |s| s.chars().count()) + 1;
        (line, col)
    }

    /// The text of 1-based line `n`, without its newline.
    pub fn line(&self, n: usize) -> &str {
        let start = self.line_starts.get(n.saturating_sub(1)).copied().unwrap_or(self.text.len());
        let end = self.line_starts.get(n).map_or(self.text.len(), |e| e - 1);
        self.text.get(start..end.max(start)).unwrap_or("")
    }
}

/// One problem found in a rules file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// File name.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// Width of the offending text in characters (at least 1).
    pub width: usize,
    /// What is wrong.
    pub message: String,
    /// What would have been accepted there.
    pub expected: Option<String>,
    /// A suggestion.
    pub hint: Option<String>,
    /// The source line.
    pub source_line: String,
}

impl Diagnostic {
    /// Builds a diagnostic for bytes `span` of `file`.
    pub fn at(
        file: &SourceFile,
        span: core::ops::Range<usize>,
        severity: Severity,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, col) = file.position(span.start);
        let width = file.text.get(span.clone()).map_or(1, |s| s.chars().count().max(1));
        Diagnostic {
            severity,
            file: file.name.clone(),
            line,
            col,
            width,
            message: message.into(),
            expected: None,
            hint: None,
            source_line: file.line(line).to_string(),
        }
    }

    /// Adds what was expected.
    pub fn expected(mut self, e: impl Into<String>) -> Diagnostic {
        self.expected = Some(e.into());
        self
    }

    /// Adds a hint.
    pub fn hint(mut self, h: impl Into<String>) -> Diagnostic {
        self.hint = Some(h.into());
        self
    }

    /// The human form: location line, source line, caret, expected, hint.
    pub fn render(&self) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        let num = self.line.to_string();
        let pad = " ".repeat(num.len());
        let mut s = format!("{}:{}:{}: {sev}: {}\n", self.file, self.line, self.col, self.message);
        s.push_str(&format!("{pad} |\n{num} | {}\n", self.source_line));
        let caret = format!("{}{}", " ".repeat(self.col - 1), "^".repeat(self.width));
        match &self.expected {
            Some(e) => s.push_str(&format!("{pad} | {caret} expected {e}\n")),
            None => s.push_str(&format!("{pad} | {caret}\n")),
        }
        if let Some(h) = &self.hint {
            s.push_str(&format!("{pad} = hint: {h}\n"));
        }
        s
    }
}

/// Renders all diagnostics, errors and warnings in file order.
pub fn render_all(ds: &[Diagnostic]) -> String {
    ds.iter().map(Diagnostic::render).collect::<Vec<_>>().join("\n")
}

/// The closest of `candidates` to `word`, if close enough to suggest.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 1.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_render() {
        let f = SourceFile::new("r.xgw", "interface lan\naccess-list x permit tpc any any\n");
        let at = f.text.find("tpc").expect("present");
        let d = Diagnostic::at(&f, at..at + 3, Severity::Error, "unknown protocol `tpc`")
            .expected("a protocol")
            .hint("did you mean `tcp`?");
        assert_eq!((d.line, d.col, d.width), (2, 22, 3));
        assert_eq!(
            d.render(),
            "r.xgw:2:22: error: unknown protocol `tpc`\n  |\n2 | access-list x permit tpc any any\n  |                      ^^^ expected a protocol\n  = hint: did you mean `tcp`?\n"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("tpc", ["tcp", "udp", "icmp"]), Some("tcp"));
        assert_eq!(did_you_mean("permt", ["permit", "deny"]), Some("permit"));
        assert_eq!(did_you_mean("zzzzzz", ["tcp", "udp"]), None);
    }
}
