//! Parsing `ScheduledJob` YAML for `raftcron-node local` and
//! `raftcronctl apply -f`, where no API server checks the objects first.
//!
//! ```text
//!  text ──parse_documents──► split at `---`
//!                              │ per document:
//!  kind / apiVersion ◄─────────┤ 1. YAML → Value
//!  typed, unknown fields ◄─────┤ 2. YAML → ScheduledJob
//!  validate_job ◄──────────────┘ 3. namespace "default"
//!  Vec<ScheduledJob> or LoadError "file:line:col: field: message"
//! ```
//!
//! Pure: the text comes in as an argument. Reading files and walking
//! directories is the node's (`raftcron_node::cli::yaml_files`), which
//! calls [`parse_located`] per file. Errors point at a line of the file,
//! not of the document: documents are split here and each one's line
//! offset is added to serde_yaml's positions. Unknown fields are refused,
//! as `kubectl apply` (strict field validation) refuses them, because a
//! misspelt optional field would otherwise be dropped in silence.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use crate::types::ScheduledJob;
use crate::validate::validate_job;

use crate::names::{API_VERSION, KIND};

/// Why a file, or one document of it, could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// The file name as given, or whatever name the caller passed.
    pub source: String,
    /// 1-based number of the document in the file; 0 for errors about the
    /// file as a whole (it cannot be read).
    pub document: usize,
    /// 1-based line in the file.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// JSON path of the offending field, e.g. `spec.concurrencyPolicy`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, ":{line}:{column}")?,
            (Some(line), None) => write!(f, ":{line}")?,
            _ if self.document > 0 => write!(f, " (document {})", self.document)?,
            _ => {}
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

// Not derived with thiserror: it would take the `source` field for the
// error's cause.
impl std::error::Error for LoadError {}

impl LoadError {
    /// A namespace/name defined a second time, at `line` of `document` in
    /// `source`; the first definition was `first_document` of `first_source`
    /// (the same file, or another one of a directory).
    pub fn defined_twice(
        source: &str,
        document: usize,
        line: usize,
        (namespace, name): (&str, &str),
        first_source: &str,
        first_document: usize,
    ) -> LoadError {
        LoadError {
            source: source.to_string(),
            document,
            line: Some(line),
            column: None,
            field: Some("metadata.name".to_string()),
            message: format!(
                "ScheduledJob {namespace}/{name} is defined twice: also in {first_source} (document {first_document})"
            ),
        }
    }
}

/// One document's text, cut out of the file so that its lines and columns
/// map back by adding `first_line`.
struct Document {
    number: usize,
    /// 0-based index of the file line where this document's text starts.
    first_line: usize,
    text: String,
}

/// A job with where it came from, for duplicate reports across files.
#[derive(Clone, Debug)]
pub struct LocatedJob {
    pub job: ScheduledJob,
    /// 1-based number of the document in its text.
    pub document: usize,
    /// 1-based line of its `metadata.name` key.
    pub line: usize,
}

impl LocatedJob {
    /// (namespace, name): what may be defined only once. The namespace is
    /// set: parsing defaults it.
    pub fn key(&self) -> (&str, &str) {
        (
            self.job.metadata.namespace.as_deref().unwrap_or_default(),
            self.job.metadata.name.as_deref().unwrap_or_default(),
        )
    }
}

/// Parses every `ScheduledJob` in a multi-document YAML text. Empty
/// documents are skipped; `namespace` defaults to `default`; every job is
/// validated. `source` names the text in errors (usually the file name).
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<ScheduledJob>, LoadError> {
    Ok(parse_located(text, source)?
        .into_iter()
        .map(|located| located.job)
        .collect())
}

/// [`parse_documents`], keeping where each job stands in the text. A
/// namespace/name defined twice in the text is an error naming both
/// documents.
pub fn parse_located(text: &str, source: &str) -> Result<Vec<LocatedJob>, LoadError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut jobs: Vec<LocatedJob> = Vec::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for document in split_documents(text) {
        let Some(job) = parse_document(&document, source)? else {
            continue;
        };
        let located = LocatedJob {
            job,
            document: document.number,
            line: key_position(&document, "metadata.name").0,
        };
        let (namespace, name) = located.key();
        if let Some(first) = seen.insert((namespace.to_string(), name.to_string()), document.number)
        {
            return Err(LoadError::defined_twice(
                source,
                located.document,
                located.line,
                located.key(),
                source,
                first,
            ));
        }
        jobs.push(located);
    }
    Ok(jobs)
}

/// Splits at `---` and `...` lines, the YAML document markers. A marker
/// line is blanked rather than dropped, so content after `--- ` keeps its
/// column and every line keeps its number relative to `first_line`.
///
/// Only a document opened by `---` or holding content gets a number: text
/// before the first `---` that is all comments is not a document.
fn split_documents(text: &str) -> Vec<Document> {
    let mut documents = Vec::new();
    let mut current = String::new();
    let mut first_line = 0;
    let mut explicit = false;
    let mut number = 0;
    let mut finish = |text: String, first_line: usize, explicit: bool| {
        if explicit || has_content(&text) {
            number += 1;
            documents.push(Document {
                number,
                first_line,
                text,
            });
        }
    };
    for (index, line) in text.lines().enumerate() {
        let marker = ["---", "..."].into_iter().find(|marker| {
            line.strip_prefix(marker)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
        });
        match marker {
            Some(marker) => {
                finish(std::mem::take(&mut current), first_line, explicit);
                first_line = index;
                explicit = marker == "---";
                current.push_str(&" ".repeat(marker.len()));
                current.push_str(&line[marker.len()..]);
            }
            None => current.push_str(line),
        }
        current.push('\n');
    }
    finish(current, first_line, explicit);
    documents
}

/// Whether a document has anything besides blank lines, comments and
/// directives.
fn has_content(text: &str) -> bool {
    text.lines().any(|line| {
        let trimmed = line.trim();
        !trimmed.is_empty() && !trimmed.starts_with('#') && !line.starts_with('%')
    })
}

/// Parses one document; `Ok(None)` for an empty one.
fn parse_document(document: &Document, source: &str) -> Result<Option<ScheduledJob>, LoadError> {
    let error =
        |field: Option<String>, message: String, position: Option<(usize, usize)>| LoadError {
            source: source.to_string(),
            document: document.number,
            line: position.map(|(line, _)| line),
            column: position.map(|(_, column)| column),
            field,
            message,
        };

    // An untyped pass first: a Deployment should be reported as the wrong
    // kind, not as a ScheduledJob missing its schedule.
    let value: serde_yaml::Value = serde_yaml::from_str(&document.text).map_err(|e| {
        let (position, message) = yaml_error_parts(&e, document.first_line, None);
        error(None, message, position)
    })?;
    let mapping = match &value {
        serde_yaml::Value::Null => return Ok(None),
        serde_yaml::Value::Mapping(mapping) => mapping,
        other => {
            return Err(error(
                None,
                format!(
                    "a document must be a {KIND} mapping, found {}",
                    describe_value(other)
                ),
                Some((start_line(document), 1)),
            ));
        }
    };
    for (key, expected) in [("kind", KIND), ("apiVersion", API_VERSION)] {
        match mapping.get(key) {
            Some(serde_yaml::Value::String(found)) if found == expected => {}
            found => {
                let found = match found {
                    None => "nothing".to_string(),
                    Some(serde_yaml::Value::String(text)) => format!("\"{text}\""),
                    Some(other) => describe_value(other),
                };
                return Err(error(
                    Some(key.to_string()),
                    format!(
                        "expected {key} {expected} (only {API_VERSION} {KIND} documents can be loaded), found {found}"
                    ),
                    Some(key_position(document, key)),
                ));
            }
        }
    }

    let mut ignored: Vec<String> = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let mut on_ignored = |path: serde_ignored::Path<'_>| ignored.push(ignored_path(&path));
    let parsed = ScheduledJob::deserialize(serde_ignored::Deserializer::new(
        serde_path_to_error::Deserializer::new(
            serde_yaml::Deserializer::from_str(&document.text),
            &mut track,
        ),
        &mut on_ignored,
    ));
    let mut job = match parsed {
        Ok(job) => job,
        Err(e) => {
            let field = track.path().to_string();
            let field = (field != ".").then_some(field);
            let (position, message) = yaml_error_parts(&e, document.first_line, field.as_deref());
            return Err(error(field, message, position));
        }
    };
    // apiVersion and kind are not fields of the Rust type; they were checked above.
    if let Some(unknown) = ignored
        .into_iter()
        .find(|path| path != "apiVersion" && path != "kind")
    {
        let name = unknown.rsplit('.').next().unwrap_or(&unknown).to_string();
        return Err(error(
            Some(unknown.clone()),
            format!("unknown field \"{name}\""),
            Some(key_position(document, &unknown)),
        ));
    }

    if job.metadata.namespace.is_none() {
        job.metadata.namespace = Some(crate::names::DEFAULT_NAMESPACE.to_string());
    }
    if let Err(errors) = validate_job(&job) {
        let mut all = errors.0.iter();
        let first = all.next().expect("validation errors are never empty");
        let mut message = first.message.clone();
        let rest: Vec<String> = all.map(ToString::to_string).collect();
        if !rest.is_empty() {
            message.push_str("; also ");
            message.push_str(&rest.join("; "));
        }
        return Err(error(
            Some(first.field.clone()),
            message,
            Some(key_position(document, &first.field)),
        ));
    }
    Ok(Some(job))
}

fn describe_value(value: &serde_yaml::Value) -> String {
    match value {
        serde_yaml::Value::Null => "null".to_string(),
        serde_yaml::Value::Bool(b) => format!("the boolean {b}"),
        serde_yaml::Value::Number(n) => format!("the number {n}"),
        serde_yaml::Value::String(s) => format!("the string \"{s}\""),
        serde_yaml::Value::Sequence(_) => "a sequence".to_string(),
        serde_yaml::Value::Mapping(_) => "a mapping".to_string(),
        serde_yaml::Value::Tagged(tagged) => format!("a value tagged {}", tagged.tag),
    }
}

/// `spec.action.http.headers[0].nmae` from serde_ignored's path.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

/// A serde_yaml error's position in the file and its message without the
/// position and path that serde_yaml writes into it, which count lines
/// from the document's start.
fn yaml_error_parts(
    error: &serde_yaml::Error,
    first_line: usize,
    field: Option<&str>,
) -> (Option<(usize, usize)>, String) {
    let mut message = error.to_string();
    let position = error.location().map(|location| {
        let own = format!(" at line {} column {}", location.line(), location.column());
        if let Some(at) = message.find(&own) {
            message.replace_range(at..at + own.len(), "");
        }
        (location.line() + first_line, location.column())
    });
    let mut message = shift_line_numbers(&message, first_line);
    if let Some(field) = field
        && let Some(rest) = message.strip_prefix(&format!("{field}: "))
    {
        message = rest.to_string();
    }
    (position, humanize_serde_message(&message))
}

/// Adds `offset` to every "line N" in a libyaml message ("…, while parsing
/// a block mapping at line 1 column 1").
fn shift_line_numbers(message: &str, offset: usize) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("line ") {
        let (before, after) = rest.split_at(at + "line ".len());
        out.push_str(before);
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        match after[..digits].parse::<usize>() {
            Ok(line) => out.push_str(&(line + offset).to_string()),
            Err(_) => out.push_str(&after[..digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// serde quotes with backticks: "unknown variant `Sometimes`, expected one
/// of `Allow`, `Forbid`". Readers of a YAML error expect the value they
/// wrote in double quotes and the choices bare.
fn humanize_serde_message(message: &str) -> String {
    let (head, tail) = match message.find(", expected ") {
        Some(at) => message.split_at(at),
        None => (message, ""),
    };
    format!("{}{}", head.replace('`', "\""), tail.replace('`', ""))
}

/// Where a field's key sits in the document (1-based line and column in
/// the file), found by walking block-style YAML by indentation. A path
/// that leads into flow style (`{…}`) or cannot be followed gives the
/// deepest key found, and nothing found gives the document's first line.
///
/// Why a hand-written locator rather than the parser's spans (checked for
/// issue 13): serde_yaml 0.9 has positions only on its errors
/// (`Error::location()`); its `Value` and `Deserializer` carry none. The
/// paths this locates come after a successful parse (validation errors),
/// or are not errors to serde_yaml at all (unknown fields, reported by
/// serde_ignored; the `kind`/`apiVersion` check; the line of
/// `metadata.name` for duplicates), so there is no span to take them from.
/// The maintained span-carrying crate, serde-saphyr 2.x (already in
/// Cargo.lock through kube-client), offers `Spanned<T>`, which would mean
/// wrapping the fields of the shared `types.rs` (the CRD's own types) in a
/// YAML type; replacing serde_yaml with it would change the libyaml error
/// texts the tests pin ("did not find expected ',' or ']', while parsing a
/// flow sequence at line 19 column 13"); and a second parse through its
/// marked event stream only for locations would still need a path walker
/// like this one, plus a dependency in a crate meant to stay small, and
/// would point flow-style paths at the inner key rather than at the block
/// key the tests and users' reports use. So this stays, tested by
/// `find_key_follows_block_mappings_and_sequences` and the position tests.
fn key_position(document: &Document, field: &str) -> (usize, usize) {
    let lines: Vec<&str> = document.text.lines().collect();
    let position =
        find_key(&lines, field).map(|(line, column)| (line + document.first_line + 1, column + 1));
    position.unwrap_or_else(|| (start_line(document), 1))
}

/// 1-based file line of a document's first content line.
fn start_line(document: &Document) -> usize {
    let first_content = document
        .text
        .lines()
        .position(|line| {
            let trimmed = line.trim();
            !trimmed.is_empty() && !trimmed.starts_with('#')
        })
        .unwrap_or(0);
    document.first_line + first_content + 1
}

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn path_steps(field: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for part in field.split('.') {
        let (key, indexes) = match part.find('[') {
            Some(at) => part.split_at(at),
            None => (part, ""),
        };
        if !key.is_empty() {
            steps.push(Step::Key(key));
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            if let Ok(index) = index.trim_end_matches(']').parse() {
                steps.push(Step::Index(index));
            }
        }
    }
    steps
}

/// A line seen by the key search: its indentation and its text after it.
/// The first line of a sequence item is seen without its `- `, two columns
/// further right, so the item's first key looks like the others.
#[derive(Clone, Copy)]
struct View<'a> {
    line: usize,
    indent: usize,
    text: &'a str,
}

fn view<'a>(lines: &[&'a str], line: usize) -> Option<View<'a>> {
    let raw = lines[line];
    let text = raw.trim_start_matches(' ');
    if text.is_empty() || text.starts_with('#') {
        return None;
    }
    Some(View {
        line,
        indent: raw.len() - text.len(),
        text,
    })
}

/// 0-based (line, column) of the deepest key of `field` found.
fn find_key(lines: &[&str], field: &str) -> Option<(usize, usize)> {
    let mut found = None;
    // The block being searched is `first` and the lines after it up to
    // `end`; `first` may be the rest of a sequence item's dash line.
    let mut first = (0..lines.len()).find_map(|l| view(lines, l))?;
    let mut end = lines.len();
    for step in path_steps(field) {
        let block: Vec<View> = std::iter::once(first)
            .chain((first.line + 1..end).filter_map(|l| view(lines, l)))
            .collect();
        let next = match step {
            Step::Key(key) => find_in_mapping(&block, key, end),
            Step::Index(index) => find_in_sequence(&block, index, end),
        };
        let Some((at, next_first, next_end)) = next else {
            break;
        };
        found = Some((at.line, at.indent));
        match next_first {
            Some(next_first) => {
                first = next_first;
                end = next_end;
            }
            None => break,
        }
    }
    found
}

/// The line of `key` in a mapping block, and the block of its value.
fn find_in_mapping<'a>(
    block: &[View<'a>],
    key: &str,
    end: usize,
) -> Option<(View<'a>, Option<View<'a>>, usize)> {
    let indent = block.first()?.indent;
    let i = block
        .iter()
        .take_while(|v| v.indent >= indent)
        .position(|v| v.indent == indent && is_key_line(v.text, key))?;
    // The value is the deeper lines, or a sequence at the key's own indentation.
    let value_end = block[i + 1..]
        .iter()
        .find(|v| v.indent < indent || (v.indent == indent && !v.text.starts_with('-')))
        .map_or(end, |v| v.line);
    let value_first = block[i + 1..].iter().find(|v| v.line < value_end).copied();
    Some((block[i], value_first, value_end))
}

/// The dash line of item `index` in a sequence block, and the block of the
/// item's content.
fn find_in_sequence<'a>(
    block: &[View<'a>],
    index: usize,
    end: usize,
) -> Option<(View<'a>, Option<View<'a>>, usize)> {
    let dash = block.first().filter(|v| v.text.starts_with('-'))?.indent;
    let items: Vec<usize> = block
        .iter()
        .enumerate()
        .take_while(|(_, v)| v.indent >= dash)
        .filter(|(_, v)| v.indent == dash && v.text.starts_with('-'))
        .map(|(i, _)| i)
        .collect();
    let &item = items.get(index)?;
    let item_view = block[item];
    let item_end = match items.get(index + 1) {
        Some(&next) => block[next].line,
        None => block[item + 1..]
            .iter()
            .find(|v| v.indent <= dash)
            .map_or(end, |v| v.line),
    };
    let after_dash = item_view.text[1..].trim_start_matches(' ');
    let content_first = if after_dash.is_empty() {
        block[item + 1..]
            .iter()
            .find(|v| v.line < item_end)
            .copied()
    } else {
        Some(View {
            line: item_view.line,
            indent: item_view.indent + (item_view.text.len() - after_dash.len()),
            text: after_dash,
        })
    };
    Some((item_view, content_first, item_end))
}

/// Whether a line (without indentation) starts the mapping key `key`,
/// bare or quoted.
fn is_key_line(text: &str, key: &str) -> bool {
    let rest = if let Some(quoted) = text.strip_prefix('"') {
        quoted.strip_prefix(key).and_then(|r| r.strip_prefix('"'))
    } else if let Some(quoted) = text.strip_prefix('\'') {
        quoted.strip_prefix(key).and_then(|r| r.strip_prefix('\''))
    } else {
        text.strip_prefix(key)
    };
    rest.and_then(|r| r.trim_start_matches(' ').strip_prefix(':'))
        .is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t']))
}

#[cfg(test)]
mod tests;
