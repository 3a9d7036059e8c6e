//! The wait-page template language: `{{ variable }}` placeholders (spaces
//! inside the braces optional) compiled once into [`Template`], and the
//! escaping that makes every substituted value safe in HTML text, in
//! attribute values and inside inline script string literals.
//!
//! Only the known variables ([`Var`]) are accepted; an unknown one is an error
//! naming its line, so a typo in a user theme is caught by `autostop check`
//! instead of showing up as raw braces to visitors. Text such as `{{{` or
//! `{{ a.b }}` that is not a placeholder at all is kept verbatim, so themes
//! may contain ordinary code with double braces.

use std::fmt::Write as _;

/// What can be wrong with a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A placeholder names a variable the agent does not provide.
    #[error("line {line}: unknown variable {{{{ {name} }}}} (known: serviceName, estimatedTime, elapsed, status, error, progress, stepsDone, stepsTotal)")]
    UnknownVariable {
        /// 1-based line of the placeholder, for the operator's editor.
        line: usize,
        /// The variable name as written.
        name: String,
    },
}

/// The variables a theme may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `{{ serviceName }}`: the service's configured name.
    ServiceName,
    /// `{{ estimatedTime }}`: expected start duration, whole seconds.
    EstimatedTime,
    /// `{{ elapsed }}`: seconds since the start began.
    Elapsed,
    /// `{{ status }}`: `stopped`, `starting`, `ready` or `failed`.
    Status,
    /// `{{ error }}`: why the start failed; empty otherwise.
    Error,
    /// `{{ progress }}`: the start's steps on one line (`container 1 of 2:
    /// healthy · container 2 of 2: starting`); empty before any is known.
    Progress,
    /// `{{ stepsDone }}`: how many steps are done.
    StepsDone,
    /// `{{ stepsTotal }}`: how many steps the start has (0 before any is
    /// known).
    StepsTotal,
}

/// The name of every variable a theme may use (themes/README.md documents
/// each; a unit test holds the README to this list).
pub const VARIABLES: [&str; 8] = [
    "serviceName",
    "estimatedTime",
    "elapsed",
    "status",
    "error",
    "progress",
    "stepsDone",
    "stepsTotal",
];

impl Var {
    /// The variable called `name` in templates.
    pub fn from_name(name: &str) -> Option<Var> {
        Some(match name {
            "serviceName" => Var::ServiceName,
            "estimatedTime" => Var::EstimatedTime,
            "elapsed" => Var::Elapsed,
            "status" => Var::Status,
            "error" => Var::Error,
            "progress" => Var::Progress,
            "stepsDone" => Var::StepsDone,
            "stepsTotal" => Var::StepsTotal,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Var(Var),
}

/// A compiled theme: literal text interleaved with variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
    /// Size of the literal text, to size the output buffer in one go.
    text_len: usize,
}

impl Template {
    /// Compiles `src`, rejecting unknown variables.
    pub fn compile(src: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut text = String::new();
        let mut rest = src;
        // Line number at the start of `rest` (a placeholder spans no line
        // break, so only literal text moves it).
        let mut line = 1usize;
        while let Some((before, after)) = rest.split_once("{{") {
            line = line.saturating_add(before.matches('\n').count());
            text.push_str(before);
            match placeholder(after) {
                Some((name, tail)) => {
                    let Some(var) = Var::from_name(name) else {
                        return Err(TemplateError::UnknownVariable {
                            line,
                            name: name.to_string(),
                        });
                    };
                    if !text.is_empty() {
                        segments.push(Segment::Text(std::mem::take(&mut text)));
                    }
                    segments.push(Segment::Var(var));
                    rest = tail;
                }
                None => {
                    // Not a placeholder: keep one brace and look again from
                    // the next one, so `{{{name}}}` still finds `{{name}}`.
                    text.push('{');
                    rest = rest
                        .get(before.len().saturating_add(1)..)
                        .unwrap_or_default();
                }
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            segments.push(Segment::Text(text));
        }
        let text_len = segments
            .iter()
            .map(|s| match s {
                Segment::Text(t) => t.len(),
                Segment::Var(_) => 0,
            })
            .fold(0usize, usize::saturating_add);
        Ok(Template { segments, text_len })
    }

    /// Fills the template; `value` gives the raw (unescaped) text of each
    /// variable, which is escaped here so no caller can forget to.
    pub fn render(&self, value: impl Fn(Var) -> String) -> String {
        let mut out = String::with_capacity(self.text_len.saturating_add(256));
        for seg in &self.segments {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Var(v) => escape_into(&mut out, &value(*v)),
            }
        }
        out
    }
}

/// If `after` (the text just past `{{`) starts a placeholder, returns the
/// variable name and the text after the placeholder's `}}`.
fn placeholder(after: &str) -> Option<(&str, &str)> {
    let trimmed = after.trim_start_matches([' ', '\t']);
    let name_len = trimmed
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit())))
        .map_or(trimmed.len(), |(i, _)| i);
    let (name, tail) = trimmed.split_at_checked(name_len)?;
    if name.is_empty() {
        return None;
    }
    let rest = tail.trim_start_matches([' ', '\t']).strip_prefix("}}")?;
    Some((name, rest))
}

/// HTML-escapes `value`: `& < > " '` as the HTML spec asks, plus `\` and
/// `` ` `` so a value placed inside an inline script's string literal can
/// neither end the string nor start a template expression. The output
/// contains no `<`, so it can never close a `<script>` element either.
pub fn escape_html(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    escape_into(&mut out, value);
    out
}

fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\\' => out.push_str("&#92;"),
            '`' => out.push_str("&#96;"),
            // Line breaks would end a JS string literal early; the numeric
            // reference keeps them visible in text and attributes.
            '\n' | '\r' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "&#{};", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]
mod tests {
    use super::*;

    fn fill(src: &str) -> String {
        Template::compile(src)
            .expect("compile")
            .render(|v| match v {
                Var::ServiceName => "svc".into(),
                Var::EstimatedTime => "42".into(),
                Var::Elapsed => "7".into(),
                Var::Status => "starting".into(),
                Var::Error => "a<b".into(),
                Var::Progress => "container 1 of 1: <ok>".into(),
                Var::StepsDone => "1".into(),
                Var::StepsTotal => "2".into(),
            })
    }

    #[test]
    fn spaces_inside_braces_are_optional() {
        let out = fill("{{serviceName}}|{{ estimatedTime }}|{{\telapsed  }}|{{status }}|{{error}}");
        assert_eq!(out, "svc|42|7|starting|a&lt;b");
        let out = fill("{{ progress }}|{{stepsDone}}/{{ stepsTotal }}");
        assert_eq!(out, "container 1 of 1: &lt;ok&gt;|1/2");
    }

    #[test]
    fn non_placeholders_are_kept_verbatim() {
        let src = "a {{{ x {{ a.b }} {{}} {{ 9x }} {{ x y }} }} {{";
        assert_eq!(fill(src), src);
        assert_eq!(fill("{{{serviceName}}}"), "{svc}");
    }

    #[test]
    fn unknown_variable_names_its_line() {
        let err = Template::compile("<p>\n{{ serviceName }}\n\n  {{ serviceNmae }}</p>")
            .expect_err("unknown variable");
        assert_eq!(
            err,
            TemplateError::UnknownVariable {
                line: 4,
                name: "serviceNmae".into()
            }
        );
        assert!(err
            .to_string()
            .starts_with("line 4: unknown variable {{ serviceNmae }}"));
    }

    #[test]
    fn escaping_covers_html_and_script_string_breakers() {
        assert_eq!(
            escape_html("&<>\"'\\`\n x"),
            "&amp;&lt;&gt;&quot;&#39;&#92;&#96;&#10; x"
        );
        assert_eq!(escape_html("ragflow-2_é"), "ragflow-2_é");
    }
}
