//! The options of `inspect pptp`, checked as they are read.

use xgw_dataplane::config::InvalidPolicy;

use crate::diag::did_you_mean;
use crate::lexer::Tok;

use super::*;

impl Parser<'_> {
    /// The value of `inspect pptp` option `name` (the cursor is after the name), checked.
    pub(super) fn inspect_option(&mut self, name: &Spanned<String>) -> PResult<Spanned<InspectOption>> {
        let start = self.here();
        let count = |p: &mut Self, max: u64| -> PResult<u64> {
            let span = p.here();
            let text = p.peek().filter(|t| t.tok == Some(Tok::Number)).map(|t| p.text(t).to_string());
            match text.as_deref().map(str::parse::<u64>) {
                Some(Ok(n)) if (1..=max).contains(&n) => {
                    p.pos += 1;
                    Ok(n)
                }
                _ => {
                    let shown = p.peek().map(|t| p.text(t).to_string()).unwrap_or_default();
                    p.error(
                        span,
                        format!("`{shown}` is not a valid value for {}", name.v),
                        &format!("a number from 1 to {max}"),
                        None,
                    );
                    Err(())
                }
            }
        };
        let v = match name.v.as_str() {
            "max-calls-per-session" => InspectOption::MaxCallsPerSession(count(self, 255)?),
            "max-calls-per-host" => InspectOption::MaxCallsPerHost(count(self, 65535)?),
            "max-calls" => InspectOption::MaxCalls(count(self, 1 << 20)?),
            "on-invalid" => {
                let w = self.word("`drop`, `log` or `reset`")?;
                InspectOption::OnInvalid(match w.v.as_str() {
                    "drop" => InvalidPolicy::Drop,
                    "log" => InvalidPolicy::Log,
                    "reset" => InvalidPolicy::Reset,
                    other => {
                        let h = did_you_mean(other, ["drop", "log", "reset"]).map(|s| format!("did you mean `{s}`?"));
                        self.error(w.span, format!("unknown policy `{other}`"), "`drop`, `log` or `reset`", h);
                        return Err(());
                    }
                })
            }
            _ => {
                let d = self.duration()?;
                if d.v.is_zero() {
                    self.error(d.span, "a duration of zero", "a duration such as 5s", None);
                    return Err(());
                }
                if name.v == "grace" {
                    InspectOption::Grace(d.v)
                } else {
                    InspectOption::Quarantine(d.v)
                }
            }
        };
        let end = self.toks.get(self.pos.saturating_sub(1)).map_or(start.end, |t| t.span.end);
        Ok(Spanned { v, span: start.start..end })
    }
}
