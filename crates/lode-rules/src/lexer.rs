//! Tokens of the rule language with their byte spans.
//!
//! The whole statement is tokenised up front. A character that cannot start a token ends
//! the list with a [`Tok::Error`], so the parser reports it only when it gets there and
//! errors come out in text order.

use crate::error::ParseError;

/// One token. Keywords are bare words; the parser recognises them case-insensitively.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A bare word: a field name, a function name or a keyword.
    Word(String),
    /// A `"double"` or `` `back` `` quoted name.
    Quoted(String),
    /// A `'single'` quoted string constant.
    Str(String),
    Int(i64),
    Float(f64),
    Comma,
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Star,
    Plus,
    Minus,
    Slash,
    Percent,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Semicolon,
    Eof,
    /// A lexical error at this position; the parser returns it when it reaches it.
    Error(Box<ParseError>),
}

/// A token and its byte span in the statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Tok {
    /// Whether this is the keyword `kw` (given in upper case).
    pub(crate) fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    /// How the token is named in an error message.
    pub(crate) fn describe(&self) -> String {
        fn clip(s: &str) -> String {
            let mut out: String = s.chars().take(32).collect();
            if out.len() < s.len() {
                out.push('…');
            }
            out
        }
        match self {
            Tok::Word(w) => format!("`{}`", clip(w)),
            Tok::Quoted(q) => format!("\"{}\"", clip(q)),
            Tok::Str(s) => format!("'{}'", clip(s)),
            Tok::Int(i) => format!("`{i}`"),
            Tok::Float(f) => format!("`{f}`"),
            Tok::Eof => "end of input".to_owned(),
            Tok::Error(e) => e.found.clone(),
            other => format!("`{}`", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Star => "*",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::Eq => "=",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Semicolon => ";",
            _ => "?",
        }
    }
}

/// Splits `sql` into tokens. The list always ends with [`Tok::Eof`] or [`Tok::Error`].
pub(crate) fn tokenize(sql: &str) -> Vec<Token> {
    let mut lexer = Lexer {
        sql,
        bytes: sql.as_bytes(),
        pos: 0,
    };
    let mut tokens = Vec::new();
    loop {
        let token = lexer.next_token();
        let last = matches!(token.tok, Tok::Eof | Tok::Error(_));
        tokens.push(token);
        if last {
            return tokens;
        }
    }
}

struct Lexer<'a> {
    sql: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn next_token(&mut self) -> Token {
        self.skip_space_and_comments();
        let start = self.pos;
        let tok = match self.lex_one() {
            Ok(tok) => tok,
            Err(e) => Tok::Error(Box::new(e)),
        };
        Token {
            tok,
            start,
            end: self.pos,
        }
    }

    fn skip_space_and_comments(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(b), _) if b.is_ascii_whitespace() => self.pos += 1,
                // `-- comment` to the end of the line.
                (Some(b'-'), Some(b'-')) => {
                    while let Some(b) = self.peek(0) {
                        if b == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => return,
            }
        }
    }

    fn lex_one(&mut self) -> Result<Tok, ParseError> {
        let Some(b) = self.peek(0) else {
            return Ok(Tok::Eof);
        };
        let two = |lexer: &mut Self, tok: Tok| {
            lexer.pos += 2;
            Ok(tok)
        };
        let one = |lexer: &mut Self, tok: Tok| {
            lexer.pos += 1;
            Ok(tok)
        };
        match (b, self.peek(1)) {
            (b'\'', _) => self.quoted(b'\'').map(Tok::Str),
            (b'"' | b'`', _) => self.quoted(b).map(Tok::Quoted),
            (b'0'..=b'9', _) => Ok(self.number()),
            (b'!', Some(b'=')) | (b'<', Some(b'>')) => two(self, Tok::Ne),
            (b'<', Some(b'=')) => two(self, Tok::Le),
            (b'>', Some(b'=')) => two(self, Tok::Ge),
            (b'=', Some(b'=')) => two(self, Tok::Eq),
            (b',', _) => one(self, Tok::Comma),
            (b'.', _) => one(self, Tok::Dot),
            (b'(', _) => one(self, Tok::LParen),
            (b')', _) => one(self, Tok::RParen),
            (b'[', _) => one(self, Tok::LBracket),
            (b']', _) => one(self, Tok::RBracket),
            (b'*', _) => one(self, Tok::Star),
            (b'+', _) => one(self, Tok::Plus),
            (b'-', _) => one(self, Tok::Minus),
            (b'/', _) => one(self, Tok::Slash),
            (b'%', _) => one(self, Tok::Percent),
            (b'=', _) => one(self, Tok::Eq),
            (b'<', _) => one(self, Tok::Lt),
            (b'>', _) => one(self, Tok::Gt),
            (b';', _) => one(self, Tok::Semicolon),
            _ if b == b'_' || b == b'$' || b.is_ascii_alphabetic() || b >= 0x80 => Ok(self.word()),
            _ => {
                let found = self.sql.get(self.pos..).and_then(|s| s.chars().next());
                let found = found.map_or_else(|| "end of input".to_owned(), |c| format!("`{c}`"));
                Err(ParseError::at(self.sql, self.pos, "a token", found))
            }
        }
    }

    /// A word: letters, digits, `_` and `$`; any non-ASCII character counts as a letter.
    fn word(&mut self) -> Tok {
        let start = self.pos;
        while let Some(b) = self.peek(0) {
            if b == b'_' || b == b'$' || b.is_ascii_alphanumeric() || b >= 0x80 {
                self.pos += 1;
            } else {
                break;
            }
        }
        Tok::Word(self.sql.get(start..self.pos).unwrap_or_default().to_owned())
    }

    /// `123`, `1.5`, `2e3`, `1.5E-3`. Integers beyond `i64` become floats.
    fn number(&mut self) -> Tok {
        let start = self.pos;
        let mut float = false;
        self.digits();
        if self.peek(0) == Some(b'.') && self.peek(1).is_some_and(|b| b.is_ascii_digit()) {
            float = true;
            self.pos += 1;
            self.digits();
        }
        if matches!(self.peek(0), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.peek(1), Some(b'+' | b'-')));
            if self.peek(1 + sign).is_some_and(|b| b.is_ascii_digit()) {
                float = true;
                self.pos += 1 + sign;
                self.digits();
            }
        }
        let text = self.sql.get(start..self.pos).unwrap_or_default();
        if !float && let Ok(i) = text.parse::<i64>() {
            return Tok::Int(i);
        }
        // Only digits, a dot and an exponent are here, so this parses; a huge exponent
        // gives infinity, which the evaluator treats like any non-finite number (NULL).
        Tok::Float(text.parse::<f64>().unwrap_or(f64::INFINITY))
    }

    fn digits(&mut self) {
        while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    /// A quoted string or name. The quote doubled stands for itself. A backslash escapes a
    /// quote or a backslash, `\n`, `\t` and `\r` are control characters, and before any
    /// other character the backslash stays (`'a\%'` is `a\%`, ready for `LIKE`).
    fn quoted(&mut self, quote: u8) -> Result<String, ParseError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = self.sql.get(self.pos..).unwrap_or_default();
            let Some(c) = rest.chars().next() else {
                let q = char::from(quote);
                return Err(ParseError::at(
                    self.sql,
                    open,
                    format!("a closing {q} for the {q} here"),
                    "end of input",
                ));
            };
            self.pos += c.len_utf8();
            if c == char::from(quote) {
                if self.peek(0) == Some(quote) {
                    self.pos += 1;
                    out.push(c);
                    continue;
                }
                return Ok(out);
            }
            if c == '\\' {
                let rest = self.sql.get(self.pos..).unwrap_or_default();
                if let Some(next) = rest.chars().next() {
                    self.pos += next.len_utf8();
                    match next {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '\\' | '\'' | '"' | '`' => out.push(next),
                        // Kept whole, so `LIKE 'a\%'` still sees its escape.
                        other => {
                            out.push('\\');
                            out.push(other);
                        }
                    }
                    continue;
                }
            }
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(sql: &str) -> Vec<Tok> {
        tokenize(sql).into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn numbers_and_operators() {
        assert_eq!(
            toks("1 2.5 3e2 4E-1 <> != <= >= == a.b"),
            vec![
                Tok::Int(1),
                Tok::Float(2.5),
                Tok::Float(300.0),
                Tok::Float(0.4),
                Tok::Ne,
                Tok::Ne,
                Tok::Le,
                Tok::Ge,
                Tok::Eq,
                Tok::Word("a".into()),
                Tok::Dot,
                Tok::Word("b".into()),
                Tok::Eof
            ]
        );
        assert_eq!(toks("99999999999999999999")[0], Tok::Float(1e20));
        assert_eq!(toks("1.x")[..2], [Tok::Int(1), Tok::Dot]);
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(
            toks(r#"'it''s' 'a\'b' "x y" `z`"#),
            vec![
                Tok::Str("it's".into()),
                Tok::Str("a'b".into()),
                Tok::Quoted("x y".into()),
                Tok::Quoted("z".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn comments_are_skipped() {
        assert_eq!(toks("a -- note\n b"), toks("a b"));
    }

    #[test]
    fn errors_end_the_list_at_their_position() {
        let t = tokenize("a @ b");
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].start, 2);
        assert!(matches!(&t[1].tok, Tok::Error(e) if e.found == "`@`"));
        let t = tokenize("x 'open");
        assert!(matches!(&t[1].tok, Tok::Error(e) if e.offset == 2 && e.found == "end of input"));
    }
}
