//! The token a pod's container was given: a literal `JUPYTER_TOKEN`, or `--ServerApp.token` and
//! its older names on the command line. Jupyter prints `?token=...` for these.

use k8s_openapi::api::core::v1::Container;

use super::container::words;
use crate::jupyter::token::Token;

/// The environment variable Jupyter reads the token from.
const TOKEN_ENV: &str = "JUPYTER_TOKEN";
/// Command-line options that set the token.
const TOKEN_FLAGS: &[&str] = &[
    "--IdentityProvider.token",
    "--ServerApp.token",
    "--NotebookApp.token",
];

/// The container's literal `JUPYTER_TOKEN` (a `valueFrom` secret is not readable here).
pub fn token_from_env(container: &Container) -> Option<Token> {
    container
        .env
        .iter()
        .flatten()
        .rfind(|e| e.name == TOKEN_ENV)
        .and_then(|e| Token::new(e.value.as_deref()?))
}

/// The token set on the container's command line (`--ServerApp.token=…` and its older names).
pub fn token_from_args(container: &Container) -> Option<Token> {
    let words = words(container);
    let mut found = None;
    for (i, word) in words.iter().enumerate() {
        for flag in TOKEN_FLAGS {
            let value = match word.strip_prefix(flag) {
                Some("") => words.get(i + 1).map(String::as_str),
                Some(rest) => rest.strip_prefix('='),
                None => None,
            };
            if let Some(value) = value {
                found = Token::new(value.trim_matches(|c| c == '"' || c == '\''));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::discover::fixtures::container;
    use serde_json::json;
    #[test]
    fn masked_token_comes_from_env_or_args() {
        let c = container(json!({"name": "nb", "env": [
            {"name": "OTHER", "value": "x"},
            {"name": "JUPYTER_TOKEN", "value": "s3cr3t"}]}));
        assert_eq!(
            token_from_env(&c)
                .map(|t| t.expose().to_string())
                .as_deref(),
            Some("s3cr3t")
        );
        let secret = container(json!({"name": "nb", "env": [{"name": "JUPYTER_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}}]}));
        assert_eq!(token_from_env(&secret), None);
        let odd =
            container(json!({"name": "nb", "env": [{"name": "JUPYTER_TOKEN", "value": "a b&c"}]}));
        assert_eq!(token_from_env(&odd), None);
        for args in [
            json!(["start-notebook.py", "--IdentityProvider.token=fromargs"]),
            json!(["jupyter", "lab", "--ServerApp.token", "fromargs"]),
            json!([
                "sh",
                "-c",
                "jupyter notebook --NotebookApp.token='fromargs'"
            ]),
        ] {
            let c = container(json!({"name": "nb", "args": args}));
            assert_eq!(
                token_from_args(&c)
                    .map(|t| t.expose().to_string())
                    .as_deref(),
                Some("fromargs"),
                "{args}"
            );
        }
        let none = container(json!({"name": "nb", "args": ["--ServerApp.token="]}));
        assert_eq!(token_from_args(&none), None);
    }
}
