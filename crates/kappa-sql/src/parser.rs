//! Flink SQL statements on top of sqlparser. The window table-valued functions
//! (`TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND))`) are recognised in a pass
//! over the token stream and replaced by one identifier token naming a window relation, so
//! the rest of the query parses as ordinary SQL and every token keeps its source position.
//! Flink's DDL (`WATERMARK FOR`, `METADATA`, `WITH (...)` options) is parsed here with
//! sqlparser's parser primitives.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{
    DataType, DateTimeField, Expr, Ident, ObjectName, Query, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{
    Location, Span, Token, TokenWithSpan, Tokenizer, Word,
};
use kappa_stream::window::WindowKind;

/// A SQL error with its position (1-based line and column; 0 when unknown).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (line {line}, column {column})")]
pub struct SqlError {
    pub message: String,
    pub line: u64,
    pub column: u64,
}

impl SqlError {
    pub fn new(message: impl Into<String>, at: Location) -> Self {
        SqlError {
            message: message.into(),
            line: at.line,
            column: at.column,
        }
    }
    pub fn unpositioned(message: impl Into<String>) -> Self {
        SqlError {
            message: message.into(),
            line: 0,
            column: 0,
        }
    }
}

/// sqlparser reports positions inside its message ("... at Line: 4, Column: 18").
fn from_parser_error(e: ParserError, fallback: Location) -> SqlError {
    let text = match e {
        ParserError::TokenizerError(s) | ParserError::ParserError(s) => s,
        ParserError::RecursionLimitExceeded => "the statement is nested too deeply".into(),
    };
    if let Some(i) = text.rfind(" at Line: ") {
        let pos = &text[i + " at Line: ".len()..];
        let mut parts = pos.split(", Column: ");
        if let (Some(l), Some(c)) = (parts.next(), parts.next()) {
            if let (Ok(line), Ok(column)) = (l.trim().parse(), c.trim().parse()) {
                return SqlError {
                    message: text[..i].to_string(),
                    line,
                    column,
                };
            }
        }
    }
    SqlError::new(text, fallback)
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: DataType,
    pub not_null: bool,
    /// `METADATA [FROM 'key']`: the Kafka metadata key it reads.
    pub metadata: Option<String>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WatermarkDef {
    pub column: String,
    /// The expression's source text, planned against the table's columns.
    pub expr_sql: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateTable {
    pub name: String,
    pub if_not_exists: bool,
    pub or_replace: bool,
    pub columns: Vec<ColumnDef>,
    pub watermark: Option<WatermarkDef>,
    /// `PRIMARY KEY (a, b) NOT ENFORCED` (or the column form): the key's columns, in key
    /// order. As in Flink, the key is not enforced: it says which columns key the records
    /// (for `upsert-kafka`, the Kafka message key).
    pub primary_key: Option<Vec<String>>,
    /// Where the primary key was declared.
    pub primary_key_span: Option<Span>,
    pub options: BTreeMap<String, String>,
}

/// A window TVF found by the token pass.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowCall {
    /// The identifier the call was replaced by.
    pub relation: String,
    pub kind: WindowKind,
    pub input: String,
    pub time_column: String,
    pub partition_by: Vec<String>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum Statement {
    CreateTable(CreateTable),
    CreateView {
        name: String,
        if_not_exists: bool,
        or_replace: bool,
        query: Box<Query>,
        query_sql: String,
    },
    Insert {
        table: String,
        columns: Vec<String>,
        query: Box<Query>,
    },
    Select {
        query: Box<Query>,
    },
    DropTable {
        name: String,
        if_exists: bool,
    },
    DropView {
        name: String,
        if_exists: bool,
    },
    ShowTables,
    ShowViews,
    ShowPipelines,
    Set {
        key: String,
        value: String,
    },
    Describe {
        name: String,
    },
}

/// One parsed statement with its source text and the window calls it contains.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub statement: Statement,
    pub sql: String,
    pub start: Location,
    pub windows: Vec<WindowCall>,
}

pub fn dialect() -> GenericDialect {
    GenericDialect {}
}

/// Byte offsets of each line's start, to cut statements out of the script by position.
struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { text, starts }
    }
    /// Byte offset of a (1-based, column in characters) location.
    fn offset(&self, at: Location) -> usize {
        let Some(&line_start) = self.starts.get(at.line.saturating_sub(1) as usize) else {
            return self.text.len();
        };
        let line = &self.text[line_start..];
        line.char_indices()
            .nth(at.column.saturating_sub(1) as usize)
            .map_or(self.text.len(), |(i, _)| line_start + i)
    }
    /// Text from the start of `from` through the end of `to` (inclusive).
    fn slice(&self, from: Location, to_end: Location) -> &'a str {
        let a = self.offset(from);
        let b = self
            .offset(Location {
                line: to_end.line,
                column: to_end.column + 1,
            })
            .max(a);
        &self.text[a..b]
    }
}

/// Parses a script of `;`-separated statements. `counter` numbers window relations so their
/// names stay unique across the statements planned together.
pub fn parse_script(sql: &str, counter: &mut usize) -> Result<Vec<Parsed>, SqlError> {
    match parse_script_prefix(sql, counter) {
        (parsed, None) => Ok(parsed),
        (_, Some(e)) => Err(e),
    }
}

/// Parses statements until the first bad one: the good ones before it, and its error.
pub fn parse_script_prefix(sql: &str, counter: &mut usize) -> (Vec<Parsed>, Option<SqlError>) {
    let mut statements = Vec::new();
    let error = parse_into(sql, counter, &mut statements).err();
    (statements, error)
}

fn parse_into(
    sql: &str,
    counter: &mut usize,
    statements: &mut Vec<Parsed>,
) -> Result<(), SqlError> {
    let dialect = dialect();
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::new(e.message, e.location))?;
    let lines = Lines::new(sql);
    let mut current: Vec<TokenWithSpan> = Vec::new();
    for t in tokens
        .into_iter()
        .chain(std::iter::once(TokenWithSpan::new_eof()))
    {
        let end = matches!(t.token, Token::SemiColon | Token::EOF);
        if !end {
            current.push(t);
            continue;
        }
        let meaningful: Vec<&TokenWithSpan> = current
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        if let (Some(first), Some(last)) = (meaningful.first(), meaningful.last()) {
            let (start, stop) = (first.span.start, last.span.end);
            let text = lines.slice(
                start,
                Location {
                    line: stop.line,
                    column: stop.column.saturating_sub(1),
                },
            );
            let tokens = std::mem::take(&mut current);
            statements.push(parse_statement(tokens, text, start, &lines, counter)?);
        }
        current.clear();
    }
    Ok(())
}

fn parse_statement(
    tokens: Vec<TokenWithSpan>,
    text: &str,
    start: Location,
    lines: &Lines<'_>,
    counter: &mut usize,
) -> Result<Parsed, SqlError> {
    let (tokens, windows) = rewrite_window_calls(tokens, counter)?;
    let dialect = dialect();
    let mut p = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let statement = statement(&mut p, lines)?;
    let next = p.peek_token();
    if next.token != Token::EOF {
        return Err(SqlError::new(
            format!("unexpected '{}' after the end of the statement", next.token),
            next.span.start,
        ));
    }
    Ok(Parsed {
        statement,
        sql: text.to_string(),
        start,
        windows,
    })
}

fn err_at(p: &Parser<'_>, e: ParserError) -> SqlError {
    from_parser_error(e, p.peek_token().span.start)
}

fn word_is(t: &Token, name: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(name))
}

fn statement(p: &mut Parser<'_>, lines: &Lines<'_>) -> Result<Statement, SqlError> {
    let first = p.peek_token();
    if p.parse_keyword(Keyword::CREATE) {
        let or_replace = p.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
        let _ = p.parse_keyword(Keyword::TEMPORARY);
        if p.parse_keyword(Keyword::TABLE) {
            return create_table(p, or_replace, lines);
        }
        if p.parse_keyword(Keyword::VIEW) {
            let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let name = object_name(p)?;
            p.expect_keyword(Keyword::AS).map_err(|e| err_at(p, e))?;
            let q_start = p.peek_token().span.start;
            let query = p.parse_query().map_err(|e| err_at(p, e))?;
            let q_end = last_token_end(p);
            let query_sql = lines.slice(q_start, q_end).to_string();
            return Ok(Statement::CreateView {
                name,
                if_not_exists,
                or_replace,
                query,
                query_sql,
            });
        }
        let t = p.peek_token();
        return Err(SqlError::new(
            format!("expected TABLE or VIEW after CREATE, found '{}'", t.token),
            t.span.start,
        ));
    }
    if p.parse_keyword(Keyword::INSERT) {
        let _ = p.parse_keyword(Keyword::INTO);
        let table = object_name(p)?;
        let mut columns = Vec::new();
        if p.consume_token(&Token::LParen) {
            columns = p
                .parse_comma_separated(|p| p.parse_identifier())
                .map_err(|e| err_at(p, e))?
                .into_iter()
                .map(|i| i.value)
                .collect();
            p.expect_token(&Token::RParen).map_err(|e| err_at(p, e))?;
        }
        let query = p.parse_query().map_err(|e| err_at(p, e))?;
        return Ok(Statement::Insert {
            table,
            columns,
            query,
        });
    }
    if p.parse_keyword(Keyword::DROP) {
        let _ = p.parse_keyword(Keyword::TEMPORARY);
        let is_table = if p.parse_keyword(Keyword::TABLE) {
            true
        } else if p.parse_keyword(Keyword::VIEW) {
            false
        } else {
            let t = p.peek_token();
            return Err(SqlError::new(
                format!("expected TABLE or VIEW after DROP, found '{}'", t.token),
                t.span.start,
            ));
        };
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = object_name(p)?;
        return Ok(if is_table {
            Statement::DropTable { name, if_exists }
        } else {
            Statement::DropView { name, if_exists }
        });
    }
    if p.parse_keyword(Keyword::SHOW) {
        let t = p.next_token();
        return match &t.token {
            x if word_is(x, "TABLES") => Ok(Statement::ShowTables),
            x if word_is(x, "VIEWS") => Ok(Statement::ShowViews),
            x if word_is(x, "PIPELINES") || word_is(x, "JOBS") => Ok(Statement::ShowPipelines),
            _ => Err(SqlError::new(
                format!(
                    "expected TABLES, VIEWS or PIPELINES after SHOW, found '{}'",
                    t.token
                ),
                t.span.start,
            )),
        };
    }
    if p.parse_keyword(Keyword::SET) {
        let key = p.parse_literal_string().map_err(|e| err_at(p, e))?;
        p.expect_token(&Token::Eq).map_err(|e| err_at(p, e))?;
        let value = p.parse_literal_string().map_err(|e| err_at(p, e))?;
        return Ok(Statement::Set { key, value });
    }
    if p.parse_keyword(Keyword::DESCRIBE) || p.parse_keyword(Keyword::DESC) {
        return Ok(Statement::Describe {
            name: object_name(p)?,
        });
    }
    if matches!(first.token, Token::Word(ref w) if w.keyword == Keyword::SELECT || w.keyword == Keyword::WITH)
        || first.token == Token::LParen
    {
        let query = p.parse_query().map_err(|e| err_at(p, e))?;
        return Ok(Statement::Select { query });
    }
    Err(SqlError::new(
        format!(
            "unsupported statement starting with '{}': expected CREATE TABLE, CREATE VIEW, INSERT INTO, DROP, SHOW, SET or DESCRIBE",
            first.token
        ),
        first.span.start,
    ))
}

fn last_token_end(p: &Parser<'_>) -> Location {
    // the parser's index points after the last consumed token; find it, skipping whitespace
    let mut i = p.index();
    while i > 0 {
        i -= 1;
        let t = p.token_at(i);
        if !matches!(t.token, Token::Whitespace(_)) {
            return Location {
                line: t.span.end.line,
                column: t.span.end.column.saturating_sub(1),
            };
        }
    }
    Location { line: 0, column: 0 }
}

fn object_name(p: &mut Parser<'_>) -> Result<String, SqlError> {
    let at = p.peek_token().span.start;
    let name: ObjectName = p.parse_object_name(false).map_err(|e| err_at(p, e))?;
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|part| part.as_ident().map(|i| i.value.clone()))
        .collect();
    match parts.last() {
        Some(last) => Ok(last.clone()),
        None => Err(SqlError::new("expected a name", at)),
    }
}

fn create_table(
    p: &mut Parser<'_>,
    or_replace: bool,
    lines: &Lines<'_>,
) -> Result<Statement, SqlError> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(p)?;
    p.expect_token(&Token::LParen).map_err(|e| err_at(p, e))?;
    let mut columns: Vec<ColumnDef> = Vec::new();
    let mut watermark = None;
    let mut primary_key: Option<(Vec<Ident>, Span)> = None;
    loop {
        let at = p.peek_token();
        if word_is(&at.token, "WATERMARK") {
            p.next_token();
            p.expect_keyword(Keyword::FOR).map_err(|e| err_at(p, e))?;
            let column: Ident = p.parse_identifier().map_err(|e| err_at(p, e))?;
            p.expect_keyword(Keyword::AS).map_err(|e| err_at(p, e))?;
            let e_start = p.peek_token().span.start;
            let _expr: Expr = p.parse_expr().map_err(|e| err_at(p, e))?;
            let e_end = last_token_end(p);
            if watermark.is_some() {
                return Err(SqlError::new(
                    "a table can declare only one WATERMARK",
                    at.span.start,
                ));
            }
            watermark = Some(WatermarkDef {
                column: column.value,
                expr_sql: lines.slice(e_start, e_end).to_string(),
                span: at.span,
            });
        } else if matches!(&at.token, Token::Word(w) if w.quote_style.is_none()
            && (w.keyword == Keyword::PRIMARY || w.keyword == Keyword::CONSTRAINT))
        {
            let columns = primary_key_constraint(p, true)?;
            set_primary_key(&mut primary_key, columns, at.span)?;
        } else {
            let name: Ident = p.parse_identifier().map_err(|e| err_at(p, e))?;
            if matches!(p.peek_token().token, Token::Word(ref w) if w.keyword == Keyword::AS) {
                return Err(SqlError::new(
                    format!("computed column '{}' is not supported yet", name.value),
                    name.span.start,
                ));
            }
            let data_type = p.parse_data_type().map_err(|e| err_at(p, e))?;
            let mut col = ColumnDef {
                name: name.value,
                data_type,
                not_null: false,
                metadata: None,
                span: name.span,
            };
            loop {
                if p.parse_keywords(&[Keyword::NOT, Keyword::NULL]) {
                    col.not_null = true;
                } else if p.parse_keyword(Keyword::NULL) {
                } else if p.parse_keyword(Keyword::COMMENT) {
                    p.parse_literal_string().map_err(|e| err_at(p, e))?;
                } else if word_is(&p.peek_token().token, "METADATA") {
                    p.next_token();
                    let key = if p.parse_keyword(Keyword::FROM) {
                        p.parse_literal_string().map_err(|e| err_at(p, e))?
                    } else {
                        col.name.clone()
                    };
                    col.metadata = Some(key);
                    let _ = p.parse_keyword(Keyword::VIRTUAL);
                } else if matches!(&p.peek_token().token, Token::Word(w) if w.quote_style.is_none()
                    && (w.keyword == Keyword::PRIMARY || w.keyword == Keyword::CONSTRAINT))
                {
                    let pk_at = p.peek_token().span;
                    primary_key_constraint(p, false)?;
                    let column = Ident::with_span(col.span, col.name.clone());
                    set_primary_key(&mut primary_key, vec![column], pk_at)?;
                } else {
                    break;
                }
            }
            columns.push(col);
        }
        if p.consume_token(&Token::Comma) {
            continue;
        }
        p.expect_token(&Token::RParen).map_err(|e| err_at(p, e))?;
        break;
    }
    let (primary_key, primary_key_span) = match primary_key {
        Some((key, span)) => (Some(check_primary_key(&key, &mut columns)?), Some(span)),
        None => (None, None),
    };
    if p.parse_keyword(Keyword::COMMENT) {
        p.parse_literal_string().map_err(|e| err_at(p, e))?;
    }
    if p.parse_keywords(&[Keyword::PARTITIONED, Keyword::BY]) {
        p.expect_token(&Token::LParen).map_err(|e| err_at(p, e))?;
        p.parse_comma_separated(|p| p.parse_identifier())
            .map_err(|e| err_at(p, e))?;
        p.expect_token(&Token::RParen).map_err(|e| err_at(p, e))?;
    }
    let mut options = BTreeMap::new();
    if p.parse_keyword(Keyword::WITH) {
        p.expect_token(&Token::LParen).map_err(|e| err_at(p, e))?;
        loop {
            let key = p.parse_literal_string().map_err(|e| err_at(p, e))?;
            p.expect_token(&Token::Eq).map_err(|e| err_at(p, e))?;
            let value = p.parse_literal_string().map_err(|e| err_at(p, e))?;
            options.insert(key, value);
            if !p.consume_token(&Token::Comma) {
                break;
            }
        }
        p.expect_token(&Token::RParen).map_err(|e| err_at(p, e))?;
    }
    Ok(Statement::CreateTable(CreateTable {
        name,
        if_not_exists,
        or_replace,
        columns,
        watermark,
        primary_key,
        primary_key_span,
        options,
    }))
}

/// Kappa, like Flink, does not own the data, so it cannot check a key: only `NOT ENFORCED`.
const PK_ENFORCED: &str = "Kappa doesn't support ENFORCED mode for PRIMARY KEY constraint. ENFORCED/NOT ENFORCED controls if the constraint checks are performed on the incoming/outgoing data. Kappa does not own the data therefore the only supported mode is the NOT ENFORCED mode";

/// `[CONSTRAINT name] PRIMARY KEY [(a, b)] NOT ENFORCED`, the column list only in the table
/// form (`with_columns`). Returns the listed columns (empty in the column form).
fn primary_key_constraint(p: &mut Parser<'_>, with_columns: bool) -> Result<Vec<Ident>, SqlError> {
    if p.parse_keyword(Keyword::CONSTRAINT) {
        p.parse_identifier().map_err(|e| err_at(p, e))?;
    }
    let at = p.peek_token();
    if !p.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
        return Err(SqlError::new(
            format!(
                "expected PRIMARY KEY, found '{}' (PRIMARY KEY is the only supported constraint)",
                at.token
            ),
            at.span.start,
        ));
    }
    let mut key = Vec::new();
    if with_columns {
        p.expect_token(&Token::LParen).map_err(|e| err_at(p, e))?;
        key = p
            .parse_comma_separated(|p| p.parse_identifier())
            .map_err(|e| err_at(p, e))?;
        p.expect_token(&Token::RParen).map_err(|e| err_at(p, e))?;
    }
    let mode = p.peek_token();
    if p.parse_keyword(Keyword::NOT) {
        let next = p.peek_token();
        if word_is(&next.token, "ENFORCED") {
            p.next_token();
            return Ok(key);
        }
        return Err(SqlError::new(
            format!("expected ENFORCED after NOT, found '{}'", next.token),
            next.span.start,
        ));
    }
    Err(SqlError::new(PK_ENFORCED, mode.span.start))
}

fn set_primary_key(
    slot: &mut Option<(Vec<Ident>, Span)>,
    columns: Vec<Ident>,
    span: Span,
) -> Result<(), SqlError> {
    if slot.is_some() {
        return Err(SqlError::new(
            "Duplicate primary key definition: a table declares at most one PRIMARY KEY (list several columns in PRIMARY KEY (a, b) NOT ENFORCED)",
            span.start,
        ));
    }
    *slot = Some((columns, span));
    Ok(())
}

/// The key's columns must be distinct physical columns of the table. As in Flink they become
/// NOT NULL; the Arrow field stays nullable (NOT NULL is declared, not enforced).
fn check_primary_key(key: &[Ident], columns: &mut [ColumnDef]) -> Result<Vec<String>, SqlError> {
    let mut names: Vec<String> = Vec::new();
    for k in key {
        if names.contains(&k.value) {
            return Err(SqlError::new(
                format!("column '{}' appears twice in the PRIMARY KEY", k.value),
                k.span.start,
            ));
        }
        let Some(col) = columns.iter_mut().find(|c| c.name == k.value) else {
            return Err(SqlError::new(
                format!(
                    "Primary key column '{}' is not defined in the schema",
                    k.value
                ),
                k.span.start,
            ));
        };
        if col.metadata.is_some() {
            return Err(SqlError::new(
                format!(
                    "Could not create a PRIMARY KEY with column '{}': a PRIMARY KEY constraint must be declared on physical columns, not METADATA ones",
                    k.value
                ),
                k.span.start,
            ));
        }
        col.not_null = true;
        names.push(k.value.clone());
    }
    Ok(names)
}

/// Replaces each `TABLE(TUMBLE|HOP|CUMULATE|SESSION(...))` by a quoted identifier naming the
/// window relation, returning the calls found.
fn rewrite_window_calls(
    tokens: Vec<TokenWithSpan>,
    counter: &mut usize,
) -> Result<(Vec<TokenWithSpan>, Vec<WindowCall>), SqlError> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut calls = Vec::new();
    let significant = |from: usize| -> Option<usize> {
        (from..tokens.len()).find(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
    };
    let mut i = 0;
    while i < tokens.len() {
        let is_table = matches!(&tokens[i].token, Token::Word(w) if w.keyword == Keyword::TABLE);
        if is_table {
            let a = significant(i + 1);
            let b = a.and_then(|a| significant(a + 1));
            let c = b.and_then(|b| significant(b + 1));
            if let (Some(a), Some(b), Some(c)) = (a, b, c) {
                let func = match &tokens[b].token {
                    Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
                    _ => String::new(),
                };
                if tokens[a].token == Token::LParen
                    && tokens[c].token == Token::LParen
                    && matches!(func.as_str(), "TUMBLE" | "HOP" | "CUMULATE" | "SESSION")
                {
                    let inner_end = matching_paren(&tokens, c)?;
                    let outer_end = significant(inner_end + 1)
                        .filter(|&e| tokens[e].token == Token::RParen)
                        .ok_or_else(|| {
                            SqlError::new(
                                format!("expected ')' to close TABLE({func}(...))"),
                                tokens[inner_end].span.end,
                            )
                        })?;
                    *counter += 1;
                    let span = Span::new(tokens[i].span.start, tokens[outer_end].span.end);
                    let call = window_call(
                        &func,
                        &tokens[c + 1..inner_end],
                        tokens[b].span,
                        *counter,
                        span,
                    )?;
                    out.push(TokenWithSpan::new(
                        Token::Word(Word {
                            value: call.relation.clone(),
                            quote_style: Some('"'),
                            keyword: Keyword::NoKeyword,
                        }),
                        span,
                    ));
                    calls.push(call);
                    i = outer_end + 1;
                    continue;
                }
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    Ok((out, calls))
}

fn matching_paren(tokens: &[TokenWithSpan], open: usize) -> Result<usize, SqlError> {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
    }
    Err(SqlError::new(
        "unbalanced parentheses",
        tokens[open].span.start,
    ))
}

/// Splits the call's argument tokens at top-level commas.
fn split_args(tokens: &[TokenWithSpan]) -> Vec<&[TokenWithSpan]> {
    let mut args = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, t) in tokens.iter().enumerate() {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                args.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    args.push(&tokens[start..]);
    args
}

enum Arg {
    Table {
        name: String,
        partition_by: Vec<String>,
    },
    Descriptor(String),
    Interval(i64),
}

fn window_call(
    func: &str,
    args: &[TokenWithSpan],
    func_span: Span,
    n: usize,
    span: Span,
) -> Result<WindowCall, SqlError> {
    let dialect = dialect();
    let mut positional: Vec<(Arg, Location)> = Vec::new();
    let mut named: BTreeMap<String, (Arg, Location)> = BTreeMap::new();
    for raw in split_args(args) {
        let toks: Vec<TokenWithSpan> = raw
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .cloned()
            .collect();
        let Some(first) = toks.first() else {
            return Err(SqlError::new(
                format!("empty argument in {func}(...)"),
                func_span.start,
            ));
        };
        let at = first.span.start;
        let (name, body) = match (&first.token, toks.get(1).map(|t| &t.token)) {
            (Token::Word(w), Some(Token::RArrow)) => {
                (Some(w.value.to_ascii_uppercase()), toks[2..].to_vec())
            }
            _ => (None, toks.clone()),
        };
        let mut p = Parser::new(&dialect).with_tokens_with_locations(body);
        let arg = if p.parse_keyword(Keyword::TABLE) {
            let name = object_name(&mut p)?;
            let mut partition_by = Vec::new();
            if p.parse_keywords(&[Keyword::PARTITION, Keyword::BY]) {
                let paren = p.consume_token(&Token::LParen);
                partition_by = p
                    .parse_comma_separated(|p| p.parse_identifier())
                    .map_err(|e| err_at(&p, e))?
                    .into_iter()
                    .map(|i| i.value)
                    .collect();
                if paren {
                    p.expect_token(&Token::RParen).map_err(|e| err_at(&p, e))?;
                }
            }
            Arg::Table { name, partition_by }
        } else if word_is(&p.peek_token().token, "DESCRIPTOR") {
            p.next_token();
            p.expect_token(&Token::LParen).map_err(|e| err_at(&p, e))?;
            let col = p.parse_identifier().map_err(|e| err_at(&p, e))?;
            p.expect_token(&Token::RParen).map_err(|e| err_at(&p, e))?;
            Arg::Descriptor(col.value)
        } else {
            let e = p.parse_expr().map_err(|e| err_at(&p, e))?;
            Arg::Interval(interval_millis(&e).map_err(|m| SqlError::new(m, at))?)
        };
        let rest = p.peek_token();
        if rest.token != Token::EOF {
            return Err(SqlError::new(
                format!("unexpected '{}' in {func}(...)", rest.token),
                rest.span.start,
            ));
        }
        match name {
            Some(n) => {
                named.insert(n, (arg, at));
            }
            None if !named.is_empty() => {
                return Err(SqlError::new("positional argument after a named one", at));
            }
            None => positional.push((arg, at)),
        }
    }
    let params: &[&str] = match func {
        "TUMBLE" => &["DATA", "TIMECOL", "SIZE", "OFFSET"],
        "HOP" => &["DATA", "TIMECOL", "SLIDE", "SIZE", "OFFSET"],
        "CUMULATE" => &["DATA", "TIMECOL", "STEP", "SIZE", "OFFSET"],
        _ => &["DATA", "TIMECOL", "GAP"],
    };
    if positional.len() > params.len() {
        return Err(SqlError::new(
            format!("too many arguments for {func}"),
            positional[params.len()].1,
        ));
    }
    let mut by_name: BTreeMap<&str, (Arg, Location)> = BTreeMap::new();
    for (i, a) in positional.into_iter().enumerate() {
        by_name.insert(params[i], a);
    }
    for (k, v) in named {
        let Some(p) = params.iter().find(|p| **p == k) else {
            return Err(SqlError::new(format!("{func} has no parameter {k}"), v.1));
        };
        by_name.insert(p, v);
    }
    if let Some((_, at)) = by_name.get("OFFSET") {
        return Err(SqlError::new("window offsets are not supported yet", *at));
    }
    let (input, partition_by) = match by_name.remove("DATA") {
        Some((Arg::Table { name, partition_by }, _)) => (name, partition_by),
        Some((_, at)) => {
            return Err(SqlError::new(
                format!("the first argument of {func} must be TABLE <name>"),
                at,
            ))
        }
        None => {
            return Err(SqlError::new(
                format!("{func} needs a TABLE argument"),
                func_span.start,
            ))
        }
    };
    let time_column = match by_name.remove("TIMECOL") {
        Some((Arg::Descriptor(c), _)) => c,
        Some((_, at)) => {
            return Err(SqlError::new(
                format!("the time column of {func} must be DESCRIPTOR(<column>)"),
                at,
            ))
        }
        None => {
            return Err(SqlError::new(
                format!("{func} needs DESCRIPTOR(<time column>)"),
                func_span.start,
            ))
        }
    };
    let mut interval = |k: &str| -> Result<i64, SqlError> {
        match by_name.remove(k) {
            Some((Arg::Interval(ms), at)) if ms <= 0 => {
                Err(SqlError::new(format!("{func} {k} must be positive"), at))
            }
            Some((Arg::Interval(ms), _)) => Ok(ms),
            Some((_, at)) => Err(SqlError::new(format!("{func} {k} must be an INTERVAL"), at)),
            None => Err(SqlError::new(
                format!("{func} needs the {k} interval"),
                func_span.start,
            )),
        }
    };
    let kind = match func {
        "TUMBLE" => WindowKind::Tumble {
            size: interval("SIZE")?,
        },
        "HOP" => {
            let (slide, size) = (interval("SLIDE")?, interval("SIZE")?);
            if size % slide != 0 {
                return Err(SqlError::new(
                    "HOP size must be an integral multiple of slide",
                    func_span.start,
                ));
            }
            if size / slide > MAX_WINDOWS_PER_ROW {
                return Err(SqlError::new(
                    format!("HOP size / slide must be at most {MAX_WINDOWS_PER_ROW} (each row joins that many windows)"),
                    func_span.start,
                ));
            }
            WindowKind::Hop { slide, size }
        }
        "CUMULATE" => {
            let (step, size) = (interval("STEP")?, interval("SIZE")?);
            if size % step != 0 {
                return Err(SqlError::new(
                    "CUMULATE size must be an integral multiple of step",
                    func_span.start,
                ));
            }
            if size / step > MAX_WINDOWS_PER_ROW {
                return Err(SqlError::new(
                    format!("CUMULATE size / step must be at most {MAX_WINDOWS_PER_ROW}"),
                    func_span.start,
                ));
            }
            WindowKind::Cumulate { step, size }
        }
        _ => WindowKind::Session {
            gap: interval("GAP")?,
        },
    };
    if !partition_by.is_empty() && func != "SESSION" {
        return Err(SqlError::new(
            format!("PARTITION BY is only allowed in SESSION, not {func}"),
            func_span.start,
        ));
    }
    Ok(WindowCall {
        relation: format!("{func}({input})#{n}"),
        kind,
        input,
        time_column,
        partition_by,
        span,
    })
}

/// How many windows one row may belong to (HOP size/slide, CUMULATE size/step).
const MAX_WINDOWS_PER_ROW: i64 = 10_000;

/// Milliseconds of an `INTERVAL '10' SECOND` / `INTERVAL '1 minute'` literal.
pub fn interval_millis(e: &Expr) -> Result<i64, String> {
    let Expr::Interval(iv) = e else {
        return Err(format!(
            "expected an INTERVAL literal such as INTERVAL '10' SECOND, found {e}"
        ));
    };
    let text = match iv.value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.to_string(),
            other => return Err(format!("unsupported interval value {other}")),
        },
        other => return Err(format!("unsupported interval value {other}")),
    };
    let mut words = text.split_whitespace();
    let amount: f64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("bad interval value '{text}'"))?;
    let unit_word = words.next().map(|w| w.to_ascii_lowercase());
    let unit_ms = match (&iv.leading_field, unit_word.as_deref()) {
        (Some(f), None) => match f {
            DateTimeField::Millisecond | DateTimeField::Milliseconds => 1.0,
            DateTimeField::Second | DateTimeField::Seconds => 1e3,
            DateTimeField::Minute | DateTimeField::Minutes => 60e3,
            DateTimeField::Hour | DateTimeField::Hours => 3600e3,
            DateTimeField::Day | DateTimeField::Days => 86400e3,
            DateTimeField::Week(_) | DateTimeField::Weeks => 7.0 * 86400e3,
            other => return Err(format!("unsupported interval unit {other}")),
        },
        (None, Some(u)) => match u.trim_end_matches('s') {
            "millisecond" | "m" if u.starts_with("millis") || u == "ms" => 1.0,
            "ms" => 1.0,
            "second" | "sec" => 1e3,
            "minute" | "min" => 60e3,
            "hour" | "hr" => 3600e3,
            "day" => 86400e3,
            "week" => 7.0 * 86400e3,
            _ => return Err(format!("unsupported interval unit '{u}'")),
        },
        (None, None) => return Err(format!("interval '{text}' has no unit")),
        (Some(_), Some(_)) => return Err(format!("bad interval value '{text}'")),
    };
    if iv.last_field.is_some() {
        return Err(
            "interval ranges (e.g. HOUR TO SECOND) are not supported in window sizes".into(),
        );
    }
    Ok((amount * unit_ms).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Parsed {
        let mut n = 0;
        let mut v = parse_script(sql, &mut n).unwrap();
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn flink_ddl_with_watermark_metadata_and_options() {
        let p = one(
            "CREATE TABLE bids (\n  auction BIGINT, `itemName` STRING NOT NULL, price DECIMAL(10, 2),\n  ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,\n  date_time TIMESTAMP(3),\n  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND,\n  PRIMARY KEY (auction) NOT ENFORCED\n) WITH ('connector' = 'kafka', 'topic' = 'bids', 'format' = 'json')",
        );
        let Statement::CreateTable(t) = p.statement else {
            panic!()
        };
        assert_eq!(t.name, "bids");
        let names: Vec<_> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["auction", "itemName", "price", "ts", "date_time"]);
        assert!(t.columns[1].not_null);
        assert_eq!(t.columns[3].metadata.as_deref(), Some("timestamp"));
        let wm = t.watermark.unwrap();
        assert_eq!(
            (wm.column.as_str(), wm.expr_sql.as_str()),
            ("date_time", "date_time - INTERVAL '4' SECOND")
        );
        assert_eq!(t.options["topic"], "bids");
    }

    #[test]
    fn window_tvfs_become_relations_with_their_arguments() {
        let p = one(
            "INSERT INTO out SELECT window_start, COUNT(*) FROM TABLE(\n HOP(TABLE bids, DESCRIPTOR(date_time), INTERVAL '5' SECOND, INTERVAL '15' SECOND)) GROUP BY window_start, window_end",
        );
        assert_eq!(p.windows.len(), 1);
        let w = &p.windows[0];
        assert_eq!(
            w.kind,
            WindowKind::Hop {
                slide: 5000,
                size: 15000
            }
        );
        assert_eq!(
            (w.input.as_str(), w.time_column.as_str()),
            ("bids", "date_time")
        );
        assert_eq!(
            w.span.start,
            Location {
                line: 1,
                column: 52
            }
        );
        let Statement::Insert { table, .. } = p.statement else {
            panic!()
        };
        assert_eq!(table, "out");

        let p = one("SELECT * FROM TABLE(CUMULATE(DATA => TABLE t, TIMECOL => DESCRIPTOR(ts), STEP => INTERVAL '1' MINUTE, SIZE => INTERVAL '1' HOUR))");
        assert_eq!(
            p.windows[0].kind,
            WindowKind::Cumulate {
                step: 60_000,
                size: 3_600_000
            }
        );
        let p = one("SELECT * FROM TABLE(SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), INTERVAL '30' SECOND))");
        assert_eq!(p.windows[0].partition_by, vec!["k".to_string()]);
        let p = one("SELECT * FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '2 minutes'))");
        assert_eq!(p.windows[0].kind, WindowKind::Tumble { size: 120_000 });
    }

    #[test]
    fn errors_carry_the_position_of_the_bad_token() {
        let mut n = 0;
        let e = parse_script("CREATE TABLE t (a BIGINT) WITH ('topic' = 'x');\nINSERT INTO t\nSELECT a\nFROM s WHERE a > 10 10", &mut n).unwrap_err();
        assert_eq!((e.line, e.column), (4, 21), "{e}");
        let e = parse_script(
            "SELECT * FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), 10))",
            &mut n,
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (1, 53), "{e}");
        assert!(e.message.contains("INTERVAL"));
        let e = parse_script(
            "SELECT * FROM TABLE(TUMBLE(TABLE t, INTERVAL '1' SECOND))",
            &mut n,
        )
        .unwrap_err();
        assert!(e.message.contains("DESCRIPTOR"), "{e}");
        let e = parse_script("CREATE TABLE t (a BIGINT, b AS a + 1)", &mut n).unwrap_err();
        assert!(e.message.contains("computed column"), "{e}");
        let e = parse_script("SELECT 'unterminated", &mut n).unwrap_err();
        assert_eq!(e.line, 1);
    }

    fn create(sql: &str) -> CreateTable {
        match one(sql).statement {
            Statement::CreateTable(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn primary_keys_in_table_and_column_form() {
        let t = create(
            "CREATE TABLE t (a BIGINT, b STRING, c INT, PRIMARY KEY (b, a) NOT ENFORCED) WITH ('connector' = 'kafka')",
        );
        assert_eq!(t.primary_key, Some(vec!["b".to_string(), "a".to_string()]));
        let span = t.primary_key_span.unwrap();
        assert_eq!((span.start.line, span.start.column), (1, 44));
        // key columns are NOT NULL, as in Flink
        let not_null: Vec<bool> = t.columns.iter().map(|c| c.not_null).collect();
        assert_eq!(not_null, [true, true, false]);
        let t = create(
            "CREATE TABLE t (a BIGINT, CONSTRAINT pk_t PRIMARY KEY (a) NOT ENFORCED, b STRING)",
        );
        assert_eq!(t.primary_key, Some(vec!["a".to_string()]));
        let t = create("CREATE TABLE t (id BIGINT PRIMARY KEY NOT ENFORCED, v STRING)");
        assert_eq!(t.primary_key, Some(vec!["id".to_string()]));
        let t = create(
            "CREATE TABLE t (id BIGINT NOT NULL CONSTRAINT pk PRIMARY KEY NOT ENFORCED COMMENT 'k', v STRING)",
        );
        assert_eq!(t.primary_key, Some(vec!["id".to_string()]));
        let t = create("CREATE TABLE t (`Id` BIGINT, PRIMARY KEY (`Id`) NOT ENFORCED)");
        assert_eq!(t.primary_key, Some(vec!["Id".to_string()]));
        let t = create("CREATE TABLE t (a BIGINT)");
        assert_eq!((t.primary_key, t.primary_key_span), (None, None));
    }

    #[test]
    fn bad_primary_keys_are_refused_where_they_are() {
        let mut n = 0;
        let mut err = |sql: &str| parse_script(sql, &mut n).unwrap_err();
        let e = err("CREATE TABLE t (a BIGINT, PRIMARY KEY (a))");
        assert!(
            e.message.starts_with("Kappa doesn't support ENFORCED mode"),
            "{e}"
        );
        assert!(e.message.contains("NOT ENFORCED mode"), "{e}");
        assert_eq!((e.line, e.column), (1, 42), "{e}");
        let e = err("CREATE TABLE t (a BIGINT, PRIMARY KEY (a) ENFORCED)");
        assert!(e.message.contains("ENFORCED mode"), "{e}");
        assert_eq!((e.line, e.column), (1, 43), "{e}");
        let e = err("CREATE TABLE t (a BIGINT PRIMARY KEY, b INT)");
        assert!(e.message.contains("ENFORCED mode"), "{e}");
        let e = err("CREATE TABLE t (a BIGINT PRIMARY KEY NOT NULL)");
        assert!(e.message.contains("expected ENFORCED after NOT"), "{e}");
        let e = err(
            "CREATE TABLE t (a BIGINT PRIMARY KEY NOT ENFORCED,\n b INT, PRIMARY KEY (b) NOT ENFORCED)",
        );
        assert!(e.message.contains("Duplicate primary key"), "{e}");
        assert_eq!((e.line, e.column), (2, 9), "{e}");
        let e =
            err("CREATE TABLE t (a INT PRIMARY KEY NOT ENFORCED, b INT PRIMARY KEY NOT ENFORCED)");
        assert!(e.message.contains("Duplicate primary key"), "{e}");
        let e = err("CREATE TABLE t (a BIGINT,\n PRIMARY KEY (a, nope) NOT ENFORCED)");
        assert_eq!(
            e.message,
            "Primary key column 'nope' is not defined in the schema"
        );
        assert_eq!((e.line, e.column), (2, 18), "{e}");
        let e = err("CREATE TABLE t (a BIGINT, PRIMARY KEY (a, a) NOT ENFORCED)");
        assert!(e.message.contains("twice"), "{e}");
        let e = err(
            "CREATE TABLE t (a BIGINT, o BIGINT METADATA FROM 'offset', PRIMARY KEY (o) NOT ENFORCED)",
        );
        assert!(e.message.contains("physical columns"), "{e}");
        let e = err("CREATE TABLE t (a BIGINT, CONSTRAINT u UNIQUE (a))");
        assert!(
            e.message
                .contains("PRIMARY KEY is the only supported constraint"),
            "{e}"
        );
    }

    #[test]
    fn scripts_split_into_statements_with_their_text() {
        let mut n = 0;
        let v = parse_script("SET 'pipeline.name' = 'q1';\n\nCREATE VIEW v AS SELECT a FROM t WHERE a > 1;\nSHOW TABLES;", &mut n).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].sql, "CREATE VIEW v AS SELECT a FROM t WHERE a > 1");
        let Statement::CreateView { query_sql, .. } = &v[1].statement else {
            panic!()
        };
        assert_eq!(query_sql, "SELECT a FROM t WHERE a > 1");
        assert!(
            matches!(&v[0].statement, Statement::Set { key, value } if key == "pipeline.name" && value == "q1")
        );
    }
}
