//! From a field to the line it is written on, and back: the document parsed once more keeping every key's and
//! value's span, so that the model stays plain data and every error, the parser's or a rule's, names both the field
//! and its line.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step into the document: a key of a table or an index into an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Where a field is, as the problem report spells it: `apps[1].healthcheck.interval`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    pub fn key(&self, key: &str) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        FieldPath(segs)
    }

    pub fn index(&self, i: usize) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(i));
        FieldPath(segs)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The text of a definition and, when it is valid TOML, its spans.
pub(crate) struct Located<'a> {
    text: &'a str,
    doc: Option<Spanned<DeTable<'a>>>,
}

impl<'a> Located<'a> {
    pub fn new(text: &'a str) -> Self {
        Located { text, doc: DeTable::parse(text).ok() }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }

    /// Where `path` is written: its key when the field is there, else the nearest enclosing table or array element
    /// that is (for a field that is missing, the table that lacks it).
    pub fn span_of(&self, path: &FieldPath) -> Range<usize> {
        let Some(doc) = &self.doc else { return 0..0 };
        let mut span = 0..0;
        let mut value: Option<&Spanned<DeValue<'_>>> = None;
        let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
        for seg in &path.0 {
            let next = match (seg, table, value.map(|v| v.get_ref())) {
                (Seg::Key(k), Some(t), _) => {
                    t.iter().find(|(key, _)| key.get_ref().as_ref() == k.as_str()).map(|(key, v)| (key.span(), v))
                }
                (Seg::Index(i), _, Some(DeValue::Array(items))) => items.get(*i).map(|v| (v.span(), v)),
                _ => None,
            };
            let Some((at, v)) = next else { break };
            span = at;
            value = Some(v);
            table = match v.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => None,
            };
        }
        span
    }

    /// The field whose key or value holds `offset`: where a parse error is.
    pub fn path_at(&self, offset: usize) -> FieldPath {
        let mut path = FieldPath::default();
        let Some(doc) = &self.doc else { return path };
        let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
        let mut array: Option<&[Spanned<DeValue<'_>>]> = None;
        loop {
            let next = if let Some(t) = table {
                t.iter()
                    .find(|(k, v)| k.span().contains(&offset) || contains(v, offset))
                    .map(|(k, v)| (Seg::Key(k.get_ref().to_string()), v))
            } else if let Some(items) = array {
                items.iter().enumerate().find(|(_, v)| contains(v, offset)).map(|(i, v)| (Seg::Index(i), v))
            } else {
                None
            };
            let Some((seg, v)) = next else { return path };
            path.0.push(seg);
            (table, array) = match v.get_ref() {
                DeValue::Table(t) => (Some(t), None),
                DeValue::Array(items) => (None, Some(items.as_ref())),
                _ => (None, None),
            };
        }
    }
}

/// Whether a value's text holds `offset`. A table opened by a header spans its header only, so a table also holds
/// the offsets of its entries.
fn contains(v: &Spanned<DeValue<'_>>, offset: usize) -> bool {
    if v.span().contains(&offset) {
        return true;
    }
    match v.get_ref() {
        DeValue::Table(t) => t.iter().any(|(k, v)| k.span().contains(&offset) || contains(v, offset)),
        DeValue::Array(items) => items.iter().any(|v| contains(v, offset)),
        _ => false,
    }
}
