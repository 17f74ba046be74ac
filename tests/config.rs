//! Configuration errors: start from the shipped config, break one thing, and check the
//! message and its place; `llmhub check` and `llmhub models` as a user runs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use llmhub::hub::load_registry;

/// A copy of the shipped hub.toml and providers.d/ in a temp dir.
struct Shipped {
    dir: tempfile::TempDir,
}

impl Shipped {
    fn new() -> Shipped {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(root.join("hub.toml"), dir.path().join("hub.toml")).expect("copy hub");
        for sub in ["providers.d", "tools.d", "servers.d"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
            for entry in std::fs::read_dir(root.join(sub)).expect("read dir") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|e| e == "toml") {
                    std::fs::copy(
                        &path,
                        dir.path().join(sub).join(path.file_name().expect("name")),
                    )
                    .expect("copy");
                }
            }
        }
        Shipped { dir }
    }

    fn hub(&self) -> PathBuf {
        self.dir.path().join("hub.toml")
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel)).expect("read")
    }

    /// Replaces `from` (which must be there) with `to` in one file.
    fn edit(&self, rel: &str, from: &str, to: &str) -> &Self {
        let text = self.read(rel);
        assert!(text.contains(from), "{rel} has no {from:?}");
        std::fs::write(self.dir.path().join(rel), text.replacen(from, to, 1)).expect("write");
        self
    }

    fn write(&self, rel: &str, text: &str) -> &Self {
        std::fs::write(self.dir.path().join(rel), text).expect("write");
        self
    }

    /// Every error, rendered as `llmhub check` prints it, with the temp dir stripped.
    fn errors(&self) -> Vec<String> {
        match load_registry(&self.hub(), 1) {
            Ok(_) => Vec::new(),
            Err(errors) => {
                let prefix = format!("{}/", self.dir.path().display());
                errors
                    .iter()
                    .map(|e| e.to_string().replace(&prefix, ""))
                    .collect()
            }
        }
    }

    fn one_error(&self) -> String {
        let errors = self.errors();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors[0].clone()
    }
}

/// 1-based line and column of the first occurrence of `needle` in a shipped file.
fn place(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).unwrap_or_else(|| panic!("no {needle:?}"));
    llmhub::config::line_col(text, at)
}

#[test]
fn the_shipped_config_is_valid() {
    assert_eq!(Shipped::new().errors(), Vec::<String>::new());
}

#[test]
fn an_unknown_key_is_named_with_its_place_and_the_expected_keys() {
    let s = Shipped::new();
    s.edit("providers.d/mistral.toml", "env_key =", "env_kye =");
    let (line, col) = place(&s.read("providers.d/mistral.toml"), "env_kye");
    let err = s.one_error();
    assert!(
        err.starts_with(&format!("providers.d/mistral.toml:{line}:{col}: env_kye: unknown field `env_kye`, expected one of")),
        "{err}"
    );
    assert!(err.contains("`env_key`"), "{err}");
}

#[test]
fn a_wrong_type_is_reported_at_the_value() {
    let s = Shipped::new();
    s.edit("hub.toml", "timeout_s = 60", "timeout_s = \"sixty\"");
    let (line, col) = place(&s.read("hub.toml"), "\"sixty\"");
    let err = s.one_error();
    assert_eq!(
        err,
        format!(
            "hub.toml:{line}:{col}: routing.timeout_s: invalid type: string \"sixty\", expected f64"
        )
    );
}

#[test]
fn a_bad_url_is_reported() {
    let s = Shipped::new();
    s.edit(
        "providers.d/groq.toml",
        "https://api.groq.com/openai/v1",
        "ftp://api.groq.com",
    );
    let (line, col) = place(&s.read("providers.d/groq.toml"), "\"ftp://");
    let err = s.one_error();
    assert_eq!(
        err,
        format!(
            "providers.d/groq.toml:{line}:{col}: base_url: expected an http or https URL, found scheme `ftp` in \"ftp://api.groq.com\""
        )
    );
    s.edit("providers.d/groq.toml", "ftp://api.groq.com", "not a url");
    assert!(
        s.one_error()
            .contains("expected an http or https URL, found \"not a url\"")
    );
}

#[test]
fn an_unknown_fallback_is_reported_with_what_exists() {
    let s = Shipped::new();
    s.edit(
        "providers.d/mistral.toml",
        "fallback_to = \"openai\"",
        "fallback_to = \"opneai\"",
    );
    let (line, col) = place(&s.read("providers.d/mistral.toml"), "\"opneai\"");
    let err = s.one_error();
    assert!(
        err.starts_with(&format!("providers.d/mistral.toml:{line}:{col}: fallback_to: unknown provider `opneai`; expected one of: anthropic, deepseek, echo,")),
        "{err}"
    );
}

#[test]
fn a_fallback_cycle_is_reported_once_with_its_path() {
    let s = Shipped::new();
    let openai = s.read("providers.d/openai.toml");
    s.write(
        "providers.d/openai.toml",
        &format!("fallback_to = \"groq\"\n{openai}"),
    );
    s.edit(
        "providers.d/groq.toml",
        "env_key",
        "fallback_to = \"mistral\"\nenv_key",
    );
    let (line, col) = place(&s.read("providers.d/groq.toml"), "\"mistral\"");
    let err = s.one_error();
    assert_eq!(
        err,
        format!(
            "providers.d/groq.toml:{line}:{col}: fallback_to: fallback_to forms a cycle: groq → mistral → openai → groq"
        )
    );
}

#[test]
fn a_group_naming_an_unknown_model_is_reported_at_the_entry() {
    let s = Shipped::new();
    s.edit("hub.toml", "\"openai/gpt-4.1\"", "\"xia/grok-3\"");
    let (line, col) = place(&s.read("hub.toml"), "\"xia/grok-3\"");
    let err = s.one_error();
    assert!(
        err.starts_with(&format!(
            "hub.toml:{line}:{col}: groups.smart.1: model `xia/grok-3` names provider `xia`, which does not exist; providers: anthropic, deepseek, echo,"
        )),
        "{err}"
    );
}

#[test]
fn a_template_syntax_error_is_reported() {
    let s = Shipped::new();
    s.edit(
        "providers.d/xai.toml",
        "default_model",
        "system_prompt = \"Today is {{ today }\"\ndefault_model",
    );
    let (line, col) = place(&s.read("providers.d/xai.toml"), "\"Today is");
    let err = s.one_error();
    assert!(
        err.starts_with(&format!(
            "providers.d/xai.toml:{line}:{col}: system_prompt: template syntax:"
        )),
        "{err}"
    );
    s.edit("providers.d/xai.toml", "{{ today }", "{{ tomorrow }}");
    let err = s.one_error();
    assert!(
        err.contains("undeclared variable tomorrow; available: model, provider, today"),
        "{err}"
    );
}

#[test]
fn invalid_toml_is_reported_with_its_place() {
    let s = Shipped::new();
    // An unterminated string breaks the TOML on its own line.
    s.edit(
        "providers.d/deepseek.toml",
        "default_model = \"deepseek-chat\"",
        "default_model = \"deepseek-chat",
    );
    let (line, _) = place(&s.read("providers.d/deepseek.toml"), "default_model");
    let err = s.one_error();
    assert!(
        err.starts_with(&format!("providers.d/deepseek.toml:{line}:")),
        "{err}"
    );
    assert!(err.contains("invalid TOML"), "{err}");
}

#[test]
fn every_error_across_files_is_reported_and_broken_files_cause_no_echoes() {
    let s = Shipped::new();
    s.edit(
        "hub.toml",
        "max_body_bytes = 4_194_304",
        "max_body_bytes = -1",
    );
    s.edit("providers.d/xai.toml", "base_url", "bsae_url");
    s.edit(
        "providers.d/together.toml",
        "default_model",
        "defualt_model",
    );
    // openai is broken below; mistral's fallback_to and the groups name it, but
    // those references must not add errors of their own.
    s.edit(
        "providers.d/openai.toml",
        "timeout_s = 60",
        "timeout_s = [60]",
    );
    s.write("providers.d/broken.toml", "base_url = \n");
    let at = |file: &str, needle: &str| {
        let (l, c) = place(&s.read(file), needle);
        format!("{file}:{l}:{c}")
    };
    let (xai, together, openai) = (
        at("providers.d/xai.toml", "bsae_url"),
        at("providers.d/together.toml", "defualt_model"),
        at("providers.d/openai.toml", "[60]"),
    );
    let errors = s.errors();
    let joined = errors.join("\n");
    assert!(
        joined.contains("hub.toml:7:18: server.max_body_bytes: invalid value: integer `-1`"),
        "{joined}"
    );
    assert!(
        joined.contains(&format!("{xai}: bsae_url: unknown field `bsae_url`")),
        "{joined}"
    );
    assert!(
        joined.contains("providers.d/xai.toml: missing key `base_url`")
            || joined.contains("bsae_url"),
        "{joined}"
    );
    assert!(
        joined.contains(&format!("{together}: defualt_model: unknown field")),
        "{joined}"
    );
    assert!(
        joined.contains(&format!("{openai}: timeout_s: invalid type: sequence")),
        "{joined}"
    );
    assert!(joined.contains("providers.d/broken.toml:1:"), "{joined}");
    assert!(!joined.contains("unknown provider `openai`"), "{joined}");
    assert!(
        !joined.contains("`openai/gpt-4o-mini` does not exist"),
        "{joined}"
    );
    assert_eq!(errors.len(), 5, "{joined}");
}

#[test]
fn a_gateway_key_variable_that_is_not_set_is_an_error() {
    let s = Shipped::new();
    s.edit(
        "hub.toml",
        "# api_keys_env = [\"LLMHUB_API_KEY\"]",
        "api_keys_env = [\"LLMHUB_TEST_NEVER_SET\"]",
    );
    let err = s.one_error();
    assert!(
        err.contains(
            "server.api_keys_env.0: environment variable LLMHUB_TEST_NEVER_SET is not set"
        ),
        "{err}"
    );
}

fn llmhub(args: &[&str], hub: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_llmhub"))
        .args(args)
        .arg("--config")
        .arg(hub)
        .env_remove("LLMHUB_CONFIG")
        .env_remove("MISTRAL_API_KEY")
        .output()
        .expect("run llmhub");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_exits_zero_with_a_summary_or_one_with_every_error() {
    let s = Shipped::new();
    let (code, out, _) = llmhub(&["check"], &s.hub());
    assert_eq!(code, 0);
    assert!(
        out.trim_end().ends_with(
            "ok: 11 providers (2 active), 27 models, 3 groups, 7 tools, 2 backends (0 active)"
        ),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");

    s.edit("providers.d/xai.toml", "base_url", "bsae_url");
    s.edit("providers.d/groq.toml", "https://", "ftp://");
    let (xl, xc) = place(&s.read("providers.d/xai.toml"), "bsae_url");
    let (gl, gc) = place(&s.read("providers.d/groq.toml"), "\"ftp://");
    let (code, _, err) = llmhub(&["check"], &s.hub());
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("xai.toml:{xl}:{xc}: bsae_url: unknown field")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "groq.toml:{gl}:{gc}: base_url: expected an http or https URL"
        )),
        "{err}"
    );
    assert!(
        err.contains("error: 2 problems in the configuration"),
        "{err}"
    );
}

#[test]
fn models_lists_each_provider_active_or_not_and_why() {
    let s = Shipped::new();
    let (code, out, _) = llmhub(&["models"], &s.hub());
    assert_eq!(code, 0);
    assert!(out.contains("echo (echo adapter) active"), "{out}");
    assert!(
        out.contains("mistral (openai adapter) inactive: MISTRAL_API_KEY is not set"),
        "{out}"
    );
    assert!(
        out.contains("  mistral/mistral-large-latest  [default]  aliases: mistral-large"),
        "{out}"
    );
    assert!(out.contains("ollama (openai adapter) active"), "{out}");
    assert!(
        out.contains(
            "group fast: groq/llama-3.1-8b-instant → gemini/gemini-2.5-flash → openai/gpt-4o-mini"
        ),
        "{out}"
    );

    // With the key set (through .env beside hub.toml), mistral is active.
    s.write(".env", "MISTRAL_API_KEY=sk-test-mistral\n");
    let (_, out, _) = llmhub(&["models"], &s.hub());
    assert!(out.contains("mistral (openai adapter) active"), "{out}");
    assert!(!out.contains("sk-test-mistral"));
}

#[test]
fn init_writes_a_starter_config_that_checks_clean_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("conf");
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_llmhub"))
            .args(args)
            .env_remove("LLMHUB_CONFIG")
            .output()
            .expect("run llmhub")
    };
    let out = run(&["init".as_ref(), target.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hub = target.join("hub.toml");
    let (code, out, err) = llmhub(&["check"], &hub);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok: 11 providers"), "{out}");
    let again = run(&["init".as_ref(), target.as_os_str()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already; nothing was written"));
}

#[test]
fn a_tool_template_reading_an_undeclared_variable_is_reported() {
    let s = Shipped::new();
    s.edit(
        "tools.d/translate.toml",
        "{{ target_language }}",
        "{{ target_lang }}",
    );
    let err = s.one_error();
    assert!(
        err.starts_with("tools.d/translate.toml:4:10: prompt: template reads undeclared variable target_lang; available: target_language, text, tone"),
        "{err}"
    );
    assert!(
        err.ends_with("(declare it under [input.properties])"),
        "{err}"
    );
}

#[test]
fn an_invalid_tool_schema_is_reported_at_the_bad_keyword() {
    let s = Shipped::new();
    s.edit(
        "tools.d/summarize.toml",
        "properties.text = { type = \"string\"",
        "properties.text = { type = \"strng\"",
    );
    let (line, col) = place(&s.read("tools.d/summarize.toml"), "\"strng\"");
    let err = s.one_error();
    assert!(
        err.starts_with(&format!(
            "tools.d/summarize.toml:{line}:{col}: input.properties.text.type: invalid JSON Schema:"
        )),
        "{err}"
    );
    let s = Shipped::new();
    s.edit(
        "tools.d/extract_entities.toml",
        "required = [\"entities\"]",
        "required = \"entities\"",
    );
    let err = s.one_error();
    assert!(
        err.contains("tools.d/extract_entities.toml:")
            && err.contains("output.required: invalid JSON Schema"),
        "{err}"
    );
}

#[test]
fn a_tool_naming_an_unknown_model_is_reported() {
    let s = Shipped::new();
    s.edit(
        "tools.d/extract_entities.toml",
        "model = \"smart\"",
        "model = \"smrat\"",
    );
    let (line, col) = place(&s.read("tools.d/extract_entities.toml"), "\"smrat\"");
    let err = s.one_error();
    assert!(
        err.starts_with(&format!(
            "tools.d/extract_entities.toml:{line}:{col}: model: model `smrat` does not exist"
        )),
        "{err}"
    );
}

#[test]
fn a_tool_without_description_or_prompt_and_with_a_builtin_name_is_reported() {
    let s = Shipped::new();
    s.write("tools.d/health_check.toml", "temperature = 3\n");
    let errors = s.errors().join("\n");
    assert!(
        errors.contains(
            "tools.d/health_check.toml: `health_check` is a built-in tool; rename the file"
        ),
        "{errors}"
    );
    assert!(
        errors.contains("tools.d/health_check.toml: missing key `description`"),
        "{errors}"
    );
    assert!(
        errors.contains("tools.d/health_check.toml: missing key `prompt`"),
        "{errors}"
    );
    assert!(
        errors.contains(
            "tools.d/health_check.toml:1:15: temperature: expected a number from 0 to 2, found 3"
        ),
        "{errors}"
    );
}

#[test]
fn a_default_model_missing_from_models_is_reported() {
    let s = Shipped::new();
    s.write(
        "providers.d/local.toml",
        "base_url = \"http://127.0.0.1:11434/v1\"\ndefault_model = \"llama9\"\nmodels = [\"llama3\", \"qwen\"]\n",
    );
    let err = s.one_error();
    assert!(
        err.starts_with("providers.d/local.toml:2:17: default_model: default_model `llama9` is not in this provider's models; expected one of: llama3, qwen"),
        "{err}"
    );
}

#[test]
fn a_missing_providers_folder_is_one_error_that_says_so() {
    let s = Shipped::new();
    std::fs::remove_dir_all(s.dir.path().join("providers.d")).expect("rm");
    let err = s.one_error();
    assert!(err.starts_with("providers.d:"), "{err}");
    assert!(err.contains("missing or holds no .toml files"), "{err}");
}

#[test]
fn an_unknown_key_suggests_the_nearest_one() {
    let s = Shipped::new();
    s.edit("providers.d/mistral.toml", "env_key =", "env_kye =");
    assert!(s.one_error().ends_with("; did you mean `env_key`?"));
    let s = Shipped::new();
    s.edit("providers.d/mistral.toml", "env_key =", "completely_else =");
    assert!(!s.one_error().contains("did you mean"));
}

#[test]
fn an_undeclared_variable_in_a_tool_without_arguments_says_none_are_declared() {
    let s = Shipped::new();
    s.write(
        "tools.d/bare.toml",
        "description = \"d\"\nprompt = \"Hello {{ name }}\"\n",
    );
    let err = s.one_error();
    assert!(
        err.contains("undeclared variable name; no variables are declared"),
        "{err}"
    );
}

#[test]
fn a_prefix_collision_is_placed_at_the_prefix() {
    let s = Shipped::new();
    s.write(
        "servers.d/one.toml",
        "url = \"http://127.0.0.1:9/mcp\"\nprefix = \"same\"\n",
    );
    s.write(
        "servers.d/two.toml",
        "url = \"http://127.0.0.1:9/mcp\"\nprefix = \"same\"\n",
    );
    let err = s.one_error();
    assert!(err.starts_with("servers.d/two.toml:2:10: prefix:"), "{err}");
}

#[test]
fn the_readme_reference_hub_toml_checks_clean() {
    let readme = include_str!("../README.md");
    let section = readme
        .split("### hub.toml\n")
        .nth(1)
        .expect("a hub.toml section");
    let toml = section
        .split("```toml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a toml block");
    let s = Shipped::new();
    s.write("hub.toml", toml);
    assert_eq!(s.errors(), Vec::<String>::new());
}

#[test]
fn the_cli_finds_hub_toml_in_a_folder_and_suggests_init_without_one() {
    let s = Shipped::new();
    let (code, out, err) = llmhub(&["check"], s.dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok:"), "{out}");
    let empty = tempfile::tempdir().expect("tempdir");
    for cmd in ["check", "serve", "mcp", "models"] {
        let (code, _, err) = llmhub(&[cmd], empty.path());
        assert_eq!(code, 1, "{cmd}");
        assert!(err.contains("llmhub init"), "{cmd}: {err}");
        assert!(err.contains("no configuration at"), "{cmd}: {err}");
    }
}

#[test]
fn init_force_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = dir.path().join("hub.toml");
    std::fs::write(&hub, "# mine\n").expect("write");
    let run = |force: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmhub"));
        cmd.arg("init").arg(dir.path());
        if force {
            cmd.arg("--force");
        }
        cmd.output().expect("run")
    };
    assert_eq!(run(false).status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&hub).expect("read"), "# mine\n");
    assert!(run(true).status.success());
    assert_ne!(std::fs::read_to_string(&hub).expect("read"), "# mine\n");
}

#[test]
fn serve_listen_overrides_hub_toml() {
    use std::io::{BufRead, BufReader};
    let s = Shipped::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_llmhub"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(s.hub())
        .env_remove("LLMHUB_CONFIG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let serving = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("llmhub serving"))
        .expect("a serving line");
    assert!(serving.contains(&format!("127.0.0.1:{port}")), "{serving}");
    let connected = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    assert!(connected);
}
