//! Tokens of the rules language. Lexing comes first so that every error can point at a
//! whole token ("unknown protocol `tpc`"), never at a character.

use logos::Logos;

/// One token kind.
#[derive(Logos, Debug, Clone, PartialEq, Eq)]
#[logos(skip r"[ \t\r]+")]
#[logos(skip(r"#[^\n]*", allow_greedy = true))]
pub enum Tok {
    /// End of a line (statements end there, except inside braces).
    #[token("\n")]
    Newline,
    /// `{`
    #[token("{")]
    LBrace,
    /// `}`
    #[token("}")]
    RBrace,
    /// A dotted-quad IPv4 address with a prefix length: `10.0.0.0/8`.
    #[regex(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+")]
    Cidr,
    /// A dotted-quad IPv4 address.
    #[regex(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")]
    Addr,
    /// A number range: `1024-65535`.
    #[regex(r"[0-9]+-[0-9]+")]
    Range,
    /// A duration: `30s`, `2h4m`, `5d`.
    #[regex(r"([0-9]+(ms|s|m|h|d))+")]
    Duration,
    /// A decimal number.
    #[regex(r"[0-9]+")]
    Number,
    /// A quoted string (include paths).
    #[regex(r#""[^"\n]*""#)]
    Str,
    /// A keyword or name: letters, digits, `_`, `-`, `.`, `/`, `:` after a letter.
    #[regex(r"[A-Za-z_][A-Za-z0-9_.:/-]*")]
    Word,
}

/// A token with its byte span in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Kind; `None` for text that is no token at all.
    pub tok: Option<Tok>,
    /// Byte range in the source.
    pub span: core::ops::Range<usize>,
}

/// Splits `src` into tokens; text that matches no token becomes a token with `tok: None`
/// so that the parser reports it where it stands.
pub fn lex(src: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut lx = Tok::lexer(src);
    while let Some(t) = lx.next() {
        out.push(Token { tok: t.ok(), span: lx.span() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<Option<Tok>> {
        lex(s).into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn tokens() {
        use Tok::*;
        assert_eq!(
            kinds("access-list out permit tcp 10.0.0.0/8 host 1.2.3.4 range 1024-2048 # c\n"),
            vec![
                Some(Word),
                Some(Word),
                Some(Word),
                Some(Word),
                Some(Cidr),
                Some(Word),
                Some(Addr),
                Some(Word),
                Some(Range),
                Some(Newline)
            ]
        );
        assert_eq!(
            kinds("timeout udp 2h4m 30 { }"),
            vec![Some(Word), Some(Word), Some(Duration), Some(Number), Some(LBrace), Some(RBrace)]
        );
        assert_eq!(kinds(r#"include "a b.rules""#), vec![Some(Word), Some(Str)]);
        assert_eq!(kinds("eth0.100 $"), vec![Some(Word), None]);
    }
}
