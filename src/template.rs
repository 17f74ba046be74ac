//! Compiled minijinja templates for provider system prompts and prompt tools.
//!
//! Templates are compiled once, at load, in a strict, fuel-limited environment with
//! no filesystem loader; rendering is bounded in steps and in output size.

use std::collections::BTreeSet;
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};

/// Rendering steps allowed per template; enough for prompts, stops runaway loops.
const FUEL: u64 = 50_000;
const RECURSION_LIMIT: usize = 32;
/// Rendered text larger than this is refused: fuel bounds steps, not memory.
pub const MAX_RENDERED_BYTES: usize = 1 << 20;
const NAME: &str = "template";

/// One compiled template (its own environment, so names never clash between files).
#[derive(Clone)]
pub struct Template {
    env: Arc<Environment<'static>>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Template")
    }
}

/// Why a template was rejected at load: a message and, for syntax errors, the line within the template.
#[derive(Debug)]
pub struct TemplateError {
    pub line: Option<usize>,
    pub message: String,
}

impl Template {
    /// Compiles `source` and checks that it reads only the `allowed` variables; every
    /// variable is always defined when it renders, so any undefined use is an error.
    pub fn compile(source: &str, allowed: &BTreeSet<String>) -> Result<Self, TemplateError> {
        Self::compile_with(source, allowed, UndefinedBehavior::Strict)
    }

    /// For templates over optional arguments: an absent one may be tested with `if` or
    /// given a `default`, but printing or iterating it is still an error.
    pub fn compile_optional(
        source: &str,
        allowed: &BTreeSet<String>,
    ) -> Result<Self, TemplateError> {
        Self::compile_with(source, allowed, UndefinedBehavior::SemiStrict)
    }

    fn compile_with(
        source: &str,
        allowed: &BTreeSet<String>,
        undefined: UndefinedBehavior,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(undefined);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| TemplateError {
                line: e.line(),
                message: format!(
                    "template syntax: {}",
                    e.detail().unwrap_or("invalid template")
                ),
            })?;
        let template = env.get_template(NAME).map_err(|e| TemplateError {
            line: e.line(),
            message: e.to_string(),
        })?;
        let mut unknown: Vec<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !allowed.contains(v) && env.globals().all(|(g, _)| g != v.as_str()))
            .collect();
        if !unknown.is_empty() {
            unknown.sort();
            return Err(TemplateError {
                line: None,
                message: format!(
                    "template reads undeclared variable{} {}; {}",
                    if unknown.len() > 1 { "s" } else { "" },
                    unknown.join(", "),
                    if allowed.is_empty() {
                        "no variables are declared".to_string()
                    } else {
                        format!(
                            "available: {}",
                            allowed.iter().cloned().collect::<Vec<_>>().join(", ")
                        )
                    }
                ),
            });
        }
        Ok(Self { env: Arc::new(env) })
    }

    pub fn render<S: serde::Serialize>(&self, context: &S) -> Result<String, String> {
        let template = self.env.get_template(NAME).map_err(|e| e.to_string())?;
        let out = template
            .render(minijinja::value::Serde(context))
            .map_err(|e| match e.detail() {
                Some(detail) => format!("{}: {detail}", e.kind()),
                None => e.to_string(),
            })?;
        if out.len() > MAX_RENDERED_BYTES {
            return Err(format!(
                "rendered text is {} bytes, over the limit of {MAX_RENDERED_BYTES}",
                out.len()
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn renders_with_strict_variables() {
        let t = Template::compile("Hi {{ model }} on {{ today }}", &vars(&["model", "today"]))
            .expect("compiles");
        let out = t
            .render(&serde_json::json!({"model": "m", "today": "2026-01-01"}))
            .expect("renders");
        assert_eq!(out, "Hi m on 2026-01-01");
        assert!(t.render(&serde_json::json!({"model": "m"})).is_err());
    }

    #[test]
    fn rejects_unknown_variables_and_bad_syntax() {
        let err = Template::compile("{{ modle }}", &vars(&["model"])).expect_err("unknown var");
        assert!(err.message.contains("modle"), "{}", err.message);
        let err = Template::compile("a\n{% if %}", &vars(&[])).expect_err("syntax");
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn runaway_loops_run_out_of_fuel() {
        let t = Template::compile(
            "{% for i in range(100000) %}{{ i }}{% endfor %}",
            &vars(&[]),
        )
        .expect("compiles");
        assert!(t.render(&serde_json::json!({})).is_err());
    }
}
