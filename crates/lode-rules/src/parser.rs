//! Recursive-descent parser with Pratt precedence for expressions.
//!
//! Binding powers, loosest first: `OR` (1), `AND` (2), prefix `NOT` (3), comparisons,
//! `IS`, `IN`, `LIKE`, `BETWEEN` (4), `+ -` (5), `* / %` (6), prefix `-` (7).
//! Binary operators associate to the left.

use serde_json::{Number, Value};

use crate::ast::{ArithOp, CastType, CmpOp, Condition, Expr, Path, Segment, SelectItem};
use crate::error::ParseError;
use crate::functions::{self, FunctionDef};
use crate::lexer::{Tok, Token, tokenize};
use crate::{MAX_DEPTH, MAX_SQL_LEN};

/// A statement split into its three clauses.
#[derive(Debug)]
pub(crate) struct Statement {
    pub(crate) items: Vec<SelectItem>,
    pub(crate) topic: String,
    pub(crate) condition: Option<Condition>,
}

/// Words that cannot be bare field names or aliases (quote them to use them as names).
const RESERVED: &[&str] = &[
    "SELECT", "FROM", "WHERE", "AS", "AND", "OR", "NOT", "IN", "LIKE", "ESCAPE", "IS", "NULL",
    "TRUE", "FALSE", "BETWEEN", "CASE", "WHEN", "THEN", "ELSE", "END", "CAST",
];

fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|kw| kw.eq_ignore_ascii_case(word))
}

/// An expression and the depth of its tree, which is bounded by [`MAX_DEPTH`] so that
/// evaluating and dropping it never recurses deeply.
struct Node {
    expr: Expr,
    depth: usize,
}

impl Node {
    fn leaf(expr: Expr) -> Self {
        Self { expr, depth: 1 }
    }
}

/// Parses a whole statement.
pub(crate) fn parse(sql: &str) -> Result<Statement> {
    if sql.len() > MAX_SQL_LEN {
        let mut at = MAX_SQL_LEN;
        while !sql.is_char_boundary(at) {
            at -= 1;
        }
        return Err(ParseError::at(
            sql,
            at,
            format!("a statement of at most {MAX_SQL_LEN} bytes"),
            format!("{} bytes", sql.len()),
        ));
    }
    let mut parser = Parser {
        sql,
        tokens: tokenize(sql),
        pos: 0,
        last_end: 0,
        nesting: 0,
    };
    parser.statement()
}

struct Parser<'a> {
    sql: &'a str,
    /// Never empty: ends with `Eof` or `Error`, which are never consumed.
    tokens: Vec<Token>,
    pos: usize,
    /// End of the last consumed token.
    last_end: usize,
    /// Current recursion depth of `expr`.
    nesting: usize,
}

type Result<T> = std::result::Result<T, ParseError>;

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        self.peek_at(0)
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        let last = self.tokens.len().saturating_sub(1);
        self.tokens
            .get((self.pos + ahead).min(last))
            .map_or(&Tok::Eof, |t| &t.tok)
    }

    fn start(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map_or(self.sql.len(), |t| t.start)
    }

    fn bump(&mut self) -> Tok {
        let Some(token) = self.tokens.get(self.pos) else {
            return Tok::Eof;
        };
        let tok = token.tok.clone();
        if !matches!(tok, Tok::Eof | Tok::Error(_)) {
            self.last_end = token.end;
            self.pos += 1;
        }
        tok
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == tok {
            self.bump();
            true
        } else {
            false
        }
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.peek().is_kw(kw) {
            self.bump();
            true
        } else {
            false
        }
    }

    /// An error at the current token; a lexical error there takes precedence.
    fn error(&self, expected: impl Into<String>) -> ParseError {
        if let Tok::Error(e) = self.peek() {
            return (**e).clone();
        }
        ParseError::at(self.sql, self.start(), expected, self.peek().describe())
    }

    fn expect(&mut self, tok: &Tok, expected: &str) -> Result<()> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.error(format!("`{kw}`")))
        }
    }

    fn too_deep(&self) -> ParseError {
        ParseError::at(
            self.sql,
            self.start(),
            format!("an expression at most {MAX_DEPTH} levels deep"),
            "a deeper one",
        )
    }

    fn node(&self, expr: Expr, children: &[usize]) -> Result<Node> {
        let depth = children.iter().copied().max().unwrap_or(0) + 1;
        if depth > MAX_DEPTH {
            return Err(self.too_deep());
        }
        Ok(Node { expr, depth })
    }

    fn statement(&mut self) -> Result<Statement> {
        self.expect_kw("SELECT")?;
        let mut items = vec![self.select_item()?];
        while self.eat(&Tok::Comma) {
            items.push(self.select_item()?);
        }
        if !self.eat_kw("FROM") {
            return Err(self.error("`,` or `FROM`"));
        }
        let topic = self.topic()?;
        let condition = if self.eat_kw("WHERE") {
            let start = self.start();
            let node = self.expr(0)?;
            let text = self
                .sql
                .get(start..self.last_end)
                .unwrap_or_default()
                .to_owned();
            let mut fields = Vec::new();
            node.expr.collect_fields(&mut fields);
            Some(Condition {
                expr: node.expr,
                text,
                fields,
            })
        } else {
            None
        };
        self.eat(&Tok::Semicolon);
        if !matches!(self.peek(), Tok::Eof) {
            let expected = if condition.is_some() {
                "an operator or end of input"
            } else {
                "`WHERE` or end of input"
            };
            return Err(self.error(expected));
        }
        Ok(Statement {
            items,
            topic,
            condition,
        })
    }

    fn topic(&mut self) -> Result<String> {
        let start = self.start();
        let topic = match self.peek() {
            Tok::Str(t) | Tok::Quoted(t) => t.clone(),
            _ => return Err(self.error("a quoted topic filter")),
        };
        if !lode_mqtt::topic::valid_topic_filter(&topic) {
            return Err(ParseError::at(
                self.sql,
                start,
                "a valid topic filter (`+` and `#` as whole levels, `#` last)",
                self.peek().describe(),
            ));
        }
        self.bump();
        Ok(topic)
    }

    fn select_item(&mut self) -> Result<SelectItem> {
        if self.eat(&Tok::Star) {
            return Ok(SelectItem::All);
        }
        let start = self.start();
        let node = self.expr(0)?;
        let text = self.sql.get(start..self.last_end).unwrap_or_default();
        let alias = if self.eat_kw("AS") {
            match self.bump_name() {
                Some(name) => Some(name),
                None => return Err(self.error("an alias")),
            }
        } else if matches!(self.peek(), Tok::Word(w) if !is_reserved(w))
            || matches!(self.peek(), Tok::Quoted(_))
        {
            self.bump_name()
        } else {
            None
        };
        let name = match (alias, &node.expr) {
            (Some(alias), _) => alias,
            (None, Expr::Field(path)) => path
                .column_name()
                .map_or_else(|| text.to_owned(), str::to_owned),
            (None, _) => text.to_owned(),
        };
        Ok(SelectItem::Expr {
            expr: node.expr,
            name,
        })
    }

    /// A name for an alias: a non-reserved word, or a quoted name or string.
    fn bump_name(&mut self) -> Option<String> {
        let name = match self.peek() {
            Tok::Word(w) if !is_reserved(w) => w.clone(),
            Tok::Quoted(q) | Tok::Str(q) => q.clone(),
            _ => return None,
        };
        self.bump();
        Some(name)
    }

    fn expr(&mut self, min_bp: u8) -> Result<Node> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(self.too_deep());
        }
        let res = self.expr_inner(min_bp);
        self.nesting -= 1;
        res
    }

    fn expr_inner(&mut self, min_bp: u8) -> Result<Node> {
        let mut lhs = self.prefix()?;
        loop {
            let tok = self.peek();
            let negated = tok.is_kw("NOT")
                && ["IN", "LIKE", "BETWEEN"]
                    .iter()
                    .any(|kw| self.peek_at(1).is_kw(kw));
            let bp = match tok {
                Tok::Word(w) if w.eq_ignore_ascii_case("OR") => 1,
                Tok::Word(w) if w.eq_ignore_ascii_case("AND") => 2,
                Tok::Word(w)
                    if negated
                        || ["IS", "IN", "LIKE", "BETWEEN"]
                            .iter()
                            .any(|kw| w.eq_ignore_ascii_case(kw)) =>
                {
                    4
                }
                Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => 4,
                Tok::Plus | Tok::Minus => 5,
                Tok::Star | Tok::Slash | Tok::Percent => 6,
                _ => break,
            };
            if bp <= min_bp {
                break;
            }
            let op = self.bump();
            lhs = match op {
                Tok::Word(w) if w.eq_ignore_ascii_case("OR") || w.eq_ignore_ascii_case("AND") => {
                    let rhs = self.expr(bp)?;
                    let (a, b) = (Box::new(lhs.expr), Box::new(rhs.expr));
                    let expr = if w.eq_ignore_ascii_case("OR") {
                        Expr::Or(a, b)
                    } else {
                        Expr::And(a, b)
                    };
                    self.node(expr, &[lhs.depth, rhs.depth])?
                }
                Tok::Word(w) => self.keyword_infix(&w, lhs, negated)?,
                op => {
                    let rhs = self.expr(bp)?;
                    let (a, b) = (Box::new(lhs.expr), Box::new(rhs.expr));
                    let expr = match op {
                        Tok::Plus => Expr::Arith(ArithOp::Add, a, b),
                        Tok::Minus => Expr::Arith(ArithOp::Sub, a, b),
                        Tok::Star => Expr::Arith(ArithOp::Mul, a, b),
                        Tok::Slash => Expr::Arith(ArithOp::Div, a, b),
                        Tok::Percent => Expr::Arith(ArithOp::Rem, a, b),
                        Tok::Eq => Expr::Cmp(CmpOp::Eq, a, b),
                        Tok::Ne => Expr::Cmp(CmpOp::Ne, a, b),
                        Tok::Lt => Expr::Cmp(CmpOp::Lt, a, b),
                        Tok::Le => Expr::Cmp(CmpOp::Le, a, b),
                        Tok::Gt => Expr::Cmp(CmpOp::Gt, a, b),
                        _ => Expr::Cmp(CmpOp::Ge, a, b),
                    };
                    self.node(expr, &[lhs.depth, rhs.depth])?
                }
            };
        }
        Ok(lhs)
    }

    /// `IS [NOT] NULL`, `[NOT] IN (…)`, `[NOT] LIKE p [ESCAPE 'c']`, `[NOT] BETWEEN a AND b`;
    /// the first word is already consumed.
    fn keyword_infix(&mut self, word: &str, lhs: Node, negated: bool) -> Result<Node> {
        let word = if negated {
            match self.bump() {
                Tok::Word(w) => w,
                _ => return Err(self.error("`IN`, `LIKE` or `BETWEEN`")),
            }
        } else {
            word.to_owned()
        };
        let expr = Box::new(lhs.expr);
        if word.eq_ignore_ascii_case("IS") {
            let negated = self.eat_kw("NOT");
            if !self.eat_kw("NULL") {
                return Err(self.error(if negated {
                    "`NULL`"
                } else {
                    "`NULL` or `NOT NULL`"
                }));
            }
            return self.node(Expr::IsNull { expr, negated }, &[lhs.depth]);
        }
        if word.eq_ignore_ascii_case("IN") {
            self.expect(&Tok::LParen, "`(` and a list of values")?;
            let mut list = Vec::new();
            let mut depths = vec![lhs.depth];
            loop {
                let item = self.expr(0)?;
                depths.push(item.depth);
                list.push(item.expr);
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
            self.expect(&Tok::RParen, "`,` or `)`")?;
            return self.node(
                Expr::In {
                    expr,
                    list,
                    negated,
                },
                &depths,
            );
        }
        if word.eq_ignore_ascii_case("LIKE") {
            let pattern = self.expr(4)?;
            let escape = if self.eat_kw("ESCAPE") {
                match self.peek() {
                    Tok::Str(s) if s.chars().count() == 1 => {
                        let c = s.chars().next().unwrap_or('\\');
                        self.bump();
                        c
                    }
                    _ => return Err(self.error("a one-character string")),
                }
            } else {
                '\\'
            };
            return self.node(
                Expr::Like {
                    expr,
                    pattern: Box::new(pattern.expr),
                    escape,
                    negated,
                },
                &[lhs.depth, pattern.depth],
            );
        }
        // The binding-power table admits only IS, IN, LIKE and BETWEEN here.
        let low = self.expr(4)?;
        self.expect_kw("AND")?;
        let high = self.expr(4)?;
        self.node(
            Expr::Between {
                expr,
                low: Box::new(low.expr),
                high: Box::new(high.expr),
                negated,
            },
            &[lhs.depth, low.depth, high.depth],
        )
    }

    fn prefix(&mut self) -> Result<Node> {
        let tok = self.peek().clone();
        match tok {
            Tok::Int(i) => {
                self.bump();
                Ok(Node::leaf(Expr::Lit(Value::from(i))))
            }
            Tok::Float(f) => match Number::from_f64(f) {
                Some(n) => {
                    self.bump();
                    Ok(Node::leaf(Expr::Lit(Value::Number(n))))
                }
                None => Err(self.error("a finite number")),
            },
            Tok::Str(s) => {
                self.bump();
                Ok(Node::leaf(Expr::Lit(Value::String(s))))
            }
            Tok::Minus => {
                self.bump();
                let operand = self.expr(6)?;
                self.node(Expr::Neg(Box::new(operand.expr)), &[operand.depth])
            }
            Tok::Plus => {
                self.bump();
                self.expr(6)
            }
            Tok::LParen => {
                self.bump();
                let inner = self.expr(0)?;
                self.expect(&Tok::RParen, "`)` or an operator")?;
                Ok(inner)
            }
            Tok::Quoted(_) => self.path(),
            Tok::Word(w) => self.word(&w),
            _ => Err(self.error("an expression")),
        }
    }

    fn word(&mut self, word: &str) -> Result<Node> {
        let upper = word.to_ascii_uppercase();
        match upper.as_str() {
            "TRUE" | "FALSE" | "NULL" => {
                self.bump();
                let value = match upper.as_str() {
                    "TRUE" => Value::Bool(true),
                    "FALSE" => Value::Bool(false),
                    _ => Value::Null,
                };
                Ok(Node::leaf(Expr::Lit(value)))
            }
            "NOT" => {
                self.bump();
                let operand = self.expr(3)?;
                self.node(Expr::Not(Box::new(operand.expr)), &[operand.depth])
            }
            "CASE" => {
                self.bump();
                self.case()
            }
            "CAST" if matches!(self.peek_at(1), Tok::LParen) => {
                self.bump();
                self.cast()
            }
            _ if matches!(self.peek_at(1), Tok::LParen) => self.call(word),
            _ if is_reserved(word) => Err(self.error("an expression")),
            _ => self.path(),
        }
    }

    fn case(&mut self) -> Result<Node> {
        let mut depths = Vec::new();
        let operand = if self.peek().is_kw("WHEN") {
            None
        } else {
            let node = self.expr(0)?;
            depths.push(node.depth);
            Some(Box::new(node.expr))
        };
        let mut whens = Vec::new();
        while self.eat_kw("WHEN") {
            let when = self.expr(0)?;
            self.expect_kw("THEN")?;
            let then = self.expr(0)?;
            depths.extend([when.depth, then.depth]);
            whens.push((when.expr, then.expr));
        }
        if whens.is_empty() {
            return Err(self.error("`WHEN`"));
        }
        let otherwise = if self.eat_kw("ELSE") {
            let node = self.expr(0)?;
            depths.push(node.depth);
            Some(Box::new(node.expr))
        } else {
            None
        };
        if !self.eat_kw("END") {
            let expected = if otherwise.is_some() {
                "`END`"
            } else {
                "`WHEN`, `ELSE` or `END`"
            };
            return Err(self.error(expected));
        }
        self.node(
            Expr::Case {
                operand,
                whens,
                otherwise,
            },
            &depths,
        )
    }

    fn cast(&mut self) -> Result<Node> {
        self.expect(&Tok::LParen, "`(`")?;
        let inner = self.expr(0)?;
        self.expect_kw("AS")?;
        let ty = match self.peek() {
            Tok::Word(w) => match w.to_ascii_lowercase().as_str() {
                "int" | "integer" | "long" | "bigint" => Some(CastType::Int),
                "double" | "float" | "real" | "decimal" | "number" => Some(CastType::Double),
                "string" | "varchar" | "text" | "char" => Some(CastType::String),
                "bool" | "boolean" => Some(CastType::Bool),
                _ => None,
            },
            _ => None,
        };
        let Some(ty) = ty else {
            return Err(self.error("a type: `int`, `double`, `string` or `bool`"));
        };
        self.bump();
        self.expect(&Tok::RParen, "`)`")?;
        self.node(Expr::Cast(Box::new(inner.expr), ty), &[inner.depth])
    }

    fn call(&mut self, name: &str) -> Result<Node> {
        let name_at = self.start();
        let Some(def) = functions::lookup(name) else {
            return Err(self.error("a known function"));
        };
        self.bump();
        self.bump();
        if def.star.is_some() && matches!(self.peek(), Tok::Star) {
            self.bump();
            self.expect(&Tok::RParen, "`)`")?;
            return Ok(Node::leaf(Expr::CallStar(def)));
        }
        let mut args = Vec::new();
        let mut depths = Vec::new();
        if !self.eat(&Tok::RParen) {
            loop {
                let arg = self.expr(0)?;
                depths.push(arg.depth);
                args.push(arg.expr);
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
            self.expect(&Tok::RParen, "`,` or `)`")?;
        }
        check_arity(self.sql, name_at, def, args.len())?;
        self.node(Expr::Call(def, args), &depths)
    }

    fn path(&mut self) -> Result<Node> {
        let mut segments = vec![Segment::Key(self.name_segment()?)];
        loop {
            if self.eat(&Tok::Dot) {
                segments.push(Segment::Key(self.name_segment()?));
            } else if self.eat(&Tok::LBracket) {
                let segment = match self.peek() {
                    Tok::Int(i) => usize::try_from(*i).ok().map(Segment::Index),
                    Tok::Str(s) | Tok::Quoted(s) => Some(Segment::Key(s.clone())),
                    _ => None,
                };
                let Some(segment) = segment else {
                    return Err(self.error("an array index or a quoted key"));
                };
                self.bump();
                self.expect(&Tok::RBracket, "`]`")?;
                segments.push(segment);
            } else {
                return Ok(Node::leaf(Expr::Field(Path { segments })));
            }
        }
    }

    fn name_segment(&mut self) -> Result<String> {
        match self.peek() {
            Tok::Word(w) | Tok::Quoted(w) => {
                let name = w.clone();
                self.bump();
                Ok(name)
            }
            _ => Err(self.error("a field name")),
        }
    }
}

fn check_arity(sql: &str, at: usize, def: &FunctionDef, n_args: usize) -> Result<()> {
    if (def.min_args..=def.max_args).contains(&n_args) {
        return Ok(());
    }
    let expected = match (def.min_args, def.max_args) {
        (0, 0) => "no arguments".to_owned(),
        (1, 1) => "1 argument".to_owned(),
        (min, max) if min == max => format!("{min} arguments"),
        (min, usize::MAX) => format!("at least {min} arguments"),
        (min, max) => format!("{min} to {max} arguments"),
    };
    Err(ParseError::at(
        sql,
        at,
        format!("{expected} for `{}`", def.name),
        format!("{n_args}"),
    ))
}
