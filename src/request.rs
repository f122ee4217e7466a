//! Strict reading of the request: the headers that matter and the JSON body.

use std::collections::BTreeMap;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::model::Request;
use crate::reply::{ApiError, MAX_TOKEN_NAME_CHARS};

/// The headers the endpoints read, each present at most once and valid UTF-8.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Headers {
    pub auth_token: Option<String>,
    pub user_id: Option<String>,
    pub two_factor_code: Option<String>,
    pub two_factor_method: Option<String>,
    pub user_agent: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Reads the headers that matter; a duplicate or non-UTF-8 one is a 400
/// (a proxy joining two auth headers must not turn into a guess).
pub fn headers(req: &Request) -> Result<Headers, ApiError> {
    let mut h = Headers::default();
    for header in &req.headers {
        let name = header.name.to_ascii_lowercase();
        let slot = match name.as_str() {
            "x-auth-token" => &mut h.auth_token,
            "x-user-id" => &mut h.user_id,
            "x-2fa-code" => &mut h.two_factor_code,
            "x-2fa-method" => &mut h.two_factor_method,
            "user-agent" => &mut h.user_agent,
            "idempotency-key" => &mut h.idempotency_key,
            _ => continue,
        };
        if slot.is_some() {
            return Err(ApiError::InvalidHeader(format!(
                "The '{name}' header was sent more than once"
            )));
        }
        let value = std::str::from_utf8(&header.value).map_err(|_| {
            ApiError::InvalidHeader(format!("The '{name}' header is not valid UTF-8"))
        })?;
        // HTTP's optional whitespace around a field value is not part of it.
        *slot = Some(value.trim_matches([' ', '\t']).to_string());
    }
    Ok(h)
}

/// A JSON object body's top-level fields, without duplicates. A B-tree, not
/// a hash map: finding duplicates stays O(n log n) whatever keys a client
/// chooses (a hash map with fixed keys, as std has on wasm32, can be flooded).
#[derive(Debug, Default)]
pub struct Body(BTreeMap<String, Value>);

impl Body {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Body;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            // Anything but an object is refused with our own text, so serde's
            // type-mismatch messages (and the float formatting they pull into
            // the component) are never linked.
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Body, E> {
                Err(E::custom(NOT_OBJECT))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Body, E> {
                Err(E::custom(NOT_OBJECT))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Body, E> {
                Err(E::custom(NOT_OBJECT))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Body, E> {
                Err(E::custom(NOT_OBJECT))
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Body, E> {
                Err(E::custom(NOT_OBJECT))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Body, E> {
                Err(E::custom(NOT_OBJECT))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Body, A::Error> {
                Err(serde::de::Error::custom(NOT_OBJECT))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
                let mut fields = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if fields.insert(k, v).is_some() {
                        return Err(serde::de::Error::custom(DUPLICATE_KEY));
                    }
                }
                Ok(Body(fields))
            }
        }
        d.deserialize_any(V)
    }
}

const DUPLICATE_KEY: &str = "duplicate key";
const NOT_OBJECT: &str = "not an object";

/// Parses a POST body of at most `limit` bytes (413 beyond, before any
/// parsing). Empty means `{}` (clients that send no body get the `tokenName`
/// error, as in Rocket.Chat).
pub fn body(bytes: &[u8], limit: usize) -> Result<Body, ApiError> {
    if bytes.len() > limit {
        return Err(ApiError::BodyTooLarge(limit));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Body::default());
    }
    serde_json::from_slice::<Body>(bytes).map_err(|e| {
        ApiError::InvalidBody(match e.classify() {
            serde_json::error::Category::Data if e.to_string().starts_with(DUPLICATE_KEY) => {
                "The request body has a duplicated key"
            }
            serde_json::error::Category::Data if e.to_string().starts_with(NOT_OBJECT) => {
                "The request body must be a JSON object"
            }
            serde_json::error::Category::Data => "The request body is not valid JSON",
            _ => "The request body is not valid JSON",
        })
    })
}

/// `tokenName`: Rocket.Chat's "required" error for anything falsy (missing,
/// null, false, 0, ""); any other non-string is refused before it can reach
/// storage; strings are bounded.
pub fn token_name(body: &Body) -> Result<String, ApiError> {
    match body.get("tokenName") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Err(ApiError::TokenNameRequired),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Err(ApiError::TokenNameRequired),
        Some(Value::String(s)) if s.is_empty() => Err(ApiError::TokenNameRequired),
        Some(Value::String(s)) if s.chars().count() > MAX_TOKEN_NAME_CHARS => {
            Err(ApiError::InvalidParam(format!(
                "The 'tokenName' param must be at most {MAX_TOKEN_NAME_CHARS} characters"
            )))
        }
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::InvalidParam(
            "The 'tokenName' param must be a string".into(),
        )),
    }
}

/// `tokenName` for a new token: as `token_name`, and without control
/// characters (stricter than Rocket.Chat: an ESC or CR/LF in a name would
/// reach terminals and mail headers that print it). Names stored before
/// this rule still name their tokens on the other routes.
pub fn new_token_name(body: &Body) -> Result<String, ApiError> {
    let name = token_name(body)?;
    if name.chars().any(char::is_control) {
        return Err(ApiError::InvalidParam(
            "The 'tokenName' param must not contain control characters".into(),
        ));
    }
    Ok(name)
}

/// `bypassTwoFactor` on generate: optional boolean, `false` when absent or null.
pub fn bypass_two_factor(body: &Body) -> Result<bool, ApiError> {
    match body.get("bypassTwoFactor") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::InvalidParam(
            "The 'bypassTwoFactor' param must be a boolean".into(),
        )),
    }
}

/// `expiresAt` on generate: optional; a string in ISO 8601 (see
/// `time::parse_iso8601`) when present.
pub fn expires_at(body: &Body) -> Result<Option<crate::model::TimestampMs>, ApiError> {
    match body.get("expiresAt") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => crate::time::parse_iso8601(s).map(Some).ok_or_else(|| {
            ApiError::InvalidParam(
                "The 'expiresAt' param must be a date: YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS.sssZ"
                    .into(),
            )
        }),
        Some(_) => Err(ApiError::InvalidParam(
            "The 'expiresAt' param must be a string".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Header;

    use crate::reply::MAX_BODY_BYTES;

    fn name_of(json: &str) -> Result<String, ApiError> {
        token_name(&body(json.as_bytes(), MAX_BODY_BYTES)?)
    }

    #[test]
    fn token_name_rules() {
        assert_eq!(name_of(r#"{"tokenName":"a"}"#), Ok("a".into()));
        for falsy in [
            r#"{}"#,
            "",
            r#"{"tokenName":null}"#,
            r#"{"tokenName":false}"#,
            r#"{"tokenName":0}"#,
            r#"{"tokenName":""}"#,
        ] {
            assert_eq!(name_of(falsy), Err(ApiError::TokenNameRequired), "{falsy}");
        }
        for bad in [
            r#"{"tokenName":1}"#,
            r#"{"tokenName":true}"#,
            r#"{"tokenName":{"$ne":null}}"#,
            r#"{"tokenName":["a"]}"#,
        ] {
            assert!(
                matches!(name_of(bad), Err(ApiError::InvalidParam(_))),
                "{bad}"
            );
        }
        let long = format!(r#"{{"tokenName":"{}"}}"#, "é".repeat(201));
        assert!(matches!(name_of(&long), Err(ApiError::InvalidParam(_))));
        let ok = format!(r#"{{"tokenName":"{}"}}"#, "é".repeat(200));
        assert!(name_of(&ok).is_ok());
    }

    #[test]
    fn bodies_are_strict() {
        let err = |s: &[u8]| body(s, MAX_BODY_BYTES).unwrap_err();
        assert_eq!(
            err(b"{"),
            ApiError::InvalidBody("The request body is not valid JSON")
        );
        assert_eq!(
            err(b"[1]"),
            ApiError::InvalidBody("The request body must be a JSON object")
        );
        assert_eq!(
            err(b"\"x\""),
            ApiError::InvalidBody("The request body must be a JSON object")
        );
        assert_eq!(
            err(br#"{"tokenName":"a","tokenName":"b"}"#),
            ApiError::InvalidBody("The request body has a duplicated key")
        );
        assert_eq!(
            err(b"{\"tokenName\":\"\xff\"}"),
            ApiError::InvalidBody("The request body is not valid JSON")
        );
        assert_eq!(
            err(&vec![b' '; MAX_BODY_BYTES + 1]),
            ApiError::BodyTooLarge(MAX_BODY_BYTES)
        );
        let deep = "[".repeat(10_000);
        assert!(matches!(err(deep.as_bytes()), ApiError::InvalidBody(_)));
    }

    #[test]
    fn headers_are_strict() {
        let req = Request::new(
            &[
                ("X-Auth-Token", " t "),
                ("x-user-id", "u"),
                ("Other", "x"),
                ("other", "y"),
            ],
            b"",
        );
        let h = headers(&req).unwrap();
        assert_eq!(h.auth_token.as_deref(), Some("t"));
        assert_eq!(h.user_id.as_deref(), Some("u"));
        let dup = Request::new(&[("x-auth-token", "a"), ("X-AUTH-TOKEN", "b")], b"");
        assert!(matches!(headers(&dup), Err(ApiError::InvalidHeader(_))));
        let mut bad = Request::default();
        bad.headers.push(Header {
            name: "x-2fa-code".into(),
            value: vec![0xff, 0xfe],
        });
        assert!(matches!(headers(&bad), Err(ApiError::InvalidHeader(_))));
    }
}
