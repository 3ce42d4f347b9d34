//! Continue tokens of chunked LISTs: what the apiserver hands out and what it accepts back.
//!
//! A token is URL-safe base64 (no padding) of JSON `{"v","rv","start"}` (SEMANTICS.md section 3);
//! decoding refuses the tokens the apiserver refuses. Pure functions: no I/O, no store access.

use base64::Engine;
use serde::{Deserialize, Serialize};

const TOKEN_VERSION: &str = "meta.k8s.io/v1";

/// The decoded form of a continue token.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Token {
    v: String,
    rv: i64,
    start: String,
}

/// Encodes a continue token for listing the keys under `prefix` after `last_key` at `rv`.
pub fn encode_continue(prefix: &str, last_key: &str, rv: i64) -> String {
    let start = last_key.strip_prefix(prefix).unwrap_or(last_key);
    let token = Token {
        v: TOKEN_VERSION.into(),
        rv,
        start: format!("{start}\u{0}"),
    };
    let json = serde_json::to_vec(&token).expect("a token always serialises");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a continue token for keys under `prefix` into (full start key, rv), refusing the
/// tokens the apiserver refuses.
pub fn decode_continue(prefix: &str, token: &str) -> Result<(String, i64), String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|e| format!("continue key is not valid: {e}"))?;
    let t: Token =
        serde_json::from_slice(&bytes).map_err(|e| format!("continue key is not valid: {e}"))?;
    if t.v != TOKEN_VERSION {
        return Err(format!(
            "continue key is not valid: server does not recognize this encoded key version {:?}",
            t.v
        ));
    }
    if t.rv == 0 {
        return Err("continue key is not valid: incorrect encoded start resourceVersion".into());
    }
    if t.start.is_empty() {
        return Err("continue key is not valid: encoded start key empty".into());
    }
    // A start key must stay inside the resource: a cleaned path equal to itself.
    let rooted = if t.start.starts_with('/') {
        t.start.clone()
    } else {
        format!("/{}", t.start)
    };
    if clean_path(&rooted) != rooted {
        return Err(format!("continue key is not valid: {}", t.start));
    }
    Ok((format!("{prefix}{}", &rooted[1..]), t.rv))
}

/// Lexical path cleaning as Go's `path.Clean` does it, for rooted paths.
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::{list_prefix, resource_prefix};

    #[test]
    fn a_token_round_trips_and_starts_after_the_last_key() {
        let prefix = list_prefix("widgets", Some("seed"));
        let t = encode_continue(&prefix, "/registry/widgets/seed/obj-0039", 17);
        assert!(
            !t.contains('=') && !t.contains('+') && !t.contains('/'),
            "{t}"
        );
        assert_eq!(
            decode_continue(&prefix, &t).unwrap(),
            ("/registry/widgets/seed/obj-0039\0".to_string(), 17)
        );
    }

    fn token(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let p = resource_prefix("widgets");
        for (bad, why) in [
            ("not base64 at all!", "continue key is not valid"),
            (
                &token(r#"{"v":"meta.k8s.io/v1","rv":0,"start":"a"}"#),
                "resourceVersion",
            ),
            (
                &token(r#"{"v":"meta.k8s.io/v1","rv":5,"start":""}"#),
                "start key empty",
            ),
            (
                &token(r#"{"v":"meta.k8s.io/v1","rv":5,"start":"../secrets/x"}"#),
                "not valid",
            ),
            (&token(r#"{"v":"v2","rv":5,"start":"a"}"#), "version"),
        ] {
            let e = decode_continue(&p, bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(decode_continue(
            &p,
            &token(r#"{"v":"meta.k8s.io/v1","rv":-1,"start":"ns/a\u0000"}"#)
        )
        .is_ok());
    }
}
