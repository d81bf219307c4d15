//! The HTTP routes, read from the contract: every method's
//! `google.api.http` annotation in the descriptor set. A new RPC gets its
//! route by its annotation alone.
//!
//! The path templates used here are the simple form of `google.api.HttpRule`:
//! literal segments, `{field}` or `{field.subfield}` variables (one segment
//! each) and an optional `:verb` at the end. A template using more (`*`,
//! `**`, `{x=…}`) is refused when the table is built, so it cannot be served
//! by a looser reading.

use std::time::Duration;

use bytes::Bytes;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor, Value};

/// The package whose services are served over HTTP.
pub const PACKAGE: &str = "mentorship.v1";

/// Where the request body goes (`HttpRule.body`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRule {
    /// No body (GET and DELETE, AIP-127).
    None,
    /// `body: "*"`: the body is the request, less the path's fields.
    Whole,
    /// `body: "field"`: the body is that field of the request.
    Field(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// A field path (`session_id`, `mentor.id`).
    Field(String),
}

/// One route: an HTTP method and path template, bound to one RPC.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: http::Method,
    /// The template as the contract writes it.
    pub template: String,
    segments: Vec<Segment>,
    verb: Option<String>,
    pub body: BodyRule,
    pub rpc: MethodDescriptor,
    /// The gRPC path the route's calls are sent to (`/pkg.Service/Method`).
    pub grpc_path: String,
}

impl Route {
    /// The request fields the path fills, in template order.
    pub fn path_fields(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Field(f) => Some(f.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// A path this route matches, with `value` for each of its variables.
    pub fn path_with(&self, value: &str) -> String {
        let mut path: String = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => format!("/{l}"),
                Segment::Field(_) => format!("/{value}"),
            })
            .collect();
        if let Some(verb) = &self.verb {
            path.push(':');
            path.push_str(verb);
        }
        path
    }

    /// The values of the path's fields, when `path` matches.
    fn captures(&self, segments: &[&str], verb: Option<&str>) -> Option<Vec<(String, String)>> {
        if segments.len() != self.segments.len() || verb != self.verb.as_deref() {
            return None;
        }
        let mut captures = Vec::new();
        for (template, actual) in self.segments.iter().zip(segments) {
            match template {
                Segment::Literal(l) if l == actual => {}
                Segment::Literal(_) => return None,
                Segment::Field(f) => {
                    let value = percent_encoding::percent_decode_str(actual).decode_utf8().ok()?;
                    if value.is_empty() {
                        return None;
                    }
                    captures.push((f.clone(), value.into_owned()));
                }
            }
        }
        Some(captures)
    }

    /// Whether some request would match both routes.
    fn overlaps(&self, other: &Route) -> bool {
        self.method == other.method
            && self.verb == other.verb
            && self.segments.len() == other.segments.len()
            && self.segments.iter().zip(&other.segments).all(|pair| match pair {
                (Segment::Literal(a), Segment::Literal(b)) => a == b,
                _ => true,
            })
    }
}

/// Every route of the served services.
#[derive(Debug, Clone)]
pub struct Table {
    routes: Vec<Route>,
}

impl Table {
    /// Reads the routes of every service of [`PACKAGE`] from `pool`. Fails on
    /// a method without a route, a template this edge does not read, or two
    /// routes one request could match.
    pub fn from_pool(pool: &DescriptorPool) -> anyhow::Result<Table> {
        let http = pool
            .get_extension_by_name("google.api.http")
            .ok_or_else(|| anyhow::anyhow!("the descriptor set lacks google.api.http"))?;
        let mut routes = Vec::new();
        for service in pool.services().filter(|s| s.package_name() == PACKAGE) {
            for rpc in service.methods() {
                let options = rpc.options();
                let rule = match options.get_extension(&http).as_ref() {
                    Value::Message(rule) if options.has_extension(&http) => rule.clone(),
                    _ => anyhow::bail!("{} has no google.api.http route", rpc.full_name()),
                };
                routes.push(route(&rule, &rpc).map_err(|e| anyhow::anyhow!("{}: {e}", rpc.full_name()))?);
            }
        }
        for (i, a) in routes.iter().enumerate() {
            if let Some(b) = routes[i + 1..].iter().find(|b| a.overlaps(b)) {
                anyhow::bail!(
                    "{} {} ({}) and {} {} ({}) match the same requests",
                    a.method,
                    a.template,
                    a.rpc.name(),
                    b.method,
                    b.template,
                    b.rpc.name()
                );
            }
        }
        Ok(Table { routes })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route of a request and its path's values, or `None`.
    pub fn find(&self, method: &http::Method, path: &str) -> Option<(&Route, Vec<(String, String)>)> {
        let (segments, verb) = split(path)?;
        self.routes
            .iter()
            .filter(|r| r.method == method)
            .find_map(|r| r.captures(&segments, verb).map(|c| (r, c)))
    }
}

/// A path's segments and its `:verb`; `None` unless it starts with `/`.
fn split(path: &str) -> Option<(Vec<&str>, Option<&str>)> {
    let path = path.strip_prefix('/')?;
    let (path, verb) = match path.rsplit_once('/') {
        Some((head, last)) => match last.split_once(':') {
            Some((last, verb)) => (&path[..head.len() + 1 + last.len()], Some(verb)),
            None => (path, None),
        },
        None => match path.split_once(':') {
            Some((only, verb)) => (only, Some(verb)),
            None => (path, None),
        },
    };
    Some((path.split('/').collect(), verb))
}

fn route(rule: &DynamicMessage, rpc: &MethodDescriptor) -> Result<Route, String> {
    let text = |name: &str| match rule.get_field_by_name(name).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let (method, template) = [
        ("get", http::Method::GET),
        ("put", http::Method::PUT),
        ("post", http::Method::POST),
        ("delete", http::Method::DELETE),
        ("patch", http::Method::PATCH),
    ]
    .into_iter()
    .map(|(field, method)| (method, text(field)))
    .find(|(_, t)| !t.is_empty())
    .ok_or("the route has no get, put, post, delete or patch pattern")?;
    let (segments, verb) = split(&template).ok_or("the template does not start with /")?;
    let segments = segments
        .into_iter()
        .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(field) if field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') => {
                field_kind(rpc, field)?;
                Ok(Segment::Field(field.to_owned()))
            }
            Some(field) => Err(format!("the variable {{{field}}} is not a plain field path")),
            None if s.is_empty() || s.contains(['*', '{', '}']) => Err(format!("the segment {s:?} is not a literal")),
            None => Ok(Segment::Literal(s.to_owned())),
        })
        .collect::<Result<Vec<_>, String>>()?;
    let body = match text("body").as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::Whole,
        field => {
            rpc.input()
                .get_field_by_name(field)
                .ok_or(format!("the body field {field} is not in the request"))?;
            BodyRule::Field(field.to_owned())
        }
    };
    if matches!(method, http::Method::GET | http::Method::DELETE) && body != BodyRule::None {
        return Err("GET and DELETE carry no body (AIP-127)".into());
    }
    Ok(Route {
        grpc_path: format!("/{}/{}", rpc.parent_service().full_name(), rpc.name()),
        method,
        segments,
        verb: verb.map(str::to_owned),
        template: template.clone(),
        body,
        rpc: rpc.clone(),
    })
}

/// Checks that a path variable names a singular string field of the request.
fn field_kind(rpc: &MethodDescriptor, path: &str) -> Result<(), String> {
    let mut message = rpc.input();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = message
            .get_field_by_name(part)
            .ok_or(format!("the path variable {path} is not a field of the request"))?;
        match (field.kind(), parts.peek()) {
            (prost_reflect::Kind::Message(m), Some(_)) if !field.is_list() => message = m,
            (prost_reflect::Kind::String, None) if !field.is_list() => return Ok(()),
            _ => return Err(format!("the path variable {path} is not a singular string field")),
        }
    }
    Err(format!("the path variable {path} is empty"))
}

/// What every request of this edge shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) table: Table,
    pub(super) status_type: MessageDescriptor,
    pub(super) openapi: Bytes,
    pub(super) keepalive: Duration,
    /// Whether an export that names no format is JSON lines (the configured
    /// default), for its download's content type.
    pub(super) exports_json_lines: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table::from_pool(&crate::rest::descriptors()).expect("the contract's routes")
    }

    /// Every RPC of the four services has a route, and no two routes match
    /// one request (`from_pool` refuses both; this checks the contract).
    #[test]
    fn every_rpc_has_one_route_and_none_overlap() {
        let table = table();
        let pool = crate::rest::descriptors();
        let rpcs: Vec<String> = pool
            .services()
            .filter(|s| s.package_name() == PACKAGE)
            .flat_map(|s| s.methods().map(|m| m.full_name().to_owned()).collect::<Vec<_>>())
            .collect();
        assert!(rpcs.len() > 40, "{rpcs:?}");
        // Each route's own requests reach it and no other.
        let id = "0190a0a0-0000-7000-8000-000000000001";
        for route in table.routes() {
            let path = route.path_with(id);
            let (found, _) = table.find(&route.method, &path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(found.rpc.full_name(), route.rpc.full_name(), "{} {path}", route.method);
        }
        let routed: Vec<String> = table.routes().iter().map(|r| r.rpc.full_name().to_owned()).collect();
        assert_eq!(rpcs, routed);
        for (i, a) in table.routes().iter().enumerate() {
            for b in &table.routes()[i + 1..] {
                assert!(!a.overlaps(b), "{} and {} overlap", a.template, b.template);
            }
        }
    }

    #[test]
    fn the_session_routes_are_the_ones_the_spec_lists() {
        let table = table();
        let id = "0190a0a0-0000-7000-8000-000000000001";
        for (method, path, rpc) in [
            ("POST", "/api/mentorship/sessions".to_owned(), "CreateSession"),
            ("GET", "/api/mentorship/sessions".to_owned(), "ListSessions"),
            ("GET", format!("/api/mentorship/sessions/{id}"), "GetSession"),
            ("POST", format!("/api/mentorship/sessions/{id}/pause"), "PauseSession"),
            ("POST", format!("/api/mentorship/sessions/{id}/resume"), "ResumeSession"),
            ("POST", format!("/api/mentorship/sessions/{id}/cancel"), "CancelSession"),
            (
                "GET",
                format!("/api/mentorship/sessions/{id}/events"),
                "ListSessionEvents",
            ),
            (
                "GET",
                format!("/api/mentorship/sessions/{id}/timeline"),
                "GetSessionTimeline",
            ),
            (
                "PUT",
                format!("/api/mentorship/sessions/{id}/config"),
                "UpdateSessionConfig",
            ),
            ("GET", "/api/mentorship/sessions:export".to_owned(), "ExportSessions"),
            ("GET", "/api/mentorship/sessions:watch".to_owned(), "WatchSessions"),
            ("GET", format!("/api/mentorship/sessions/{id}:watch"), "WatchSession"),
            ("PUT", format!("/api/mentorship/mentors/{id}"), "UpsertMentor"),
        ] {
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            let (route, captures) = table.find(&method, &path).unwrap_or_else(|| panic!("{method} {path}"));
            assert_eq!(route.rpc.name(), rpc, "{method} {path}");
            if path.contains(id) {
                assert_eq!(captures.len(), 1, "{path}");
                assert_eq!(captures[0].1, id);
            }
        }
        assert!(table.find(&http::Method::DELETE, "/api/mentorship/sessions").is_none());
        assert!(table.find(&http::Method::GET, "/api/mentorship/sessions/").is_none());
        assert!(table.find(&http::Method::GET, "/api/mentorship/nothing").is_none());
        assert!(
            table
                .find(&http::Method::GET, "/api/mentorship/sessions:frobnicate")
                .is_none()
        );
    }

    /// The README's table lists every route, as the contract writes it.
    #[test]
    fn the_readme_lists_every_route() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        for route in table().routes() {
            let row = format!("| `{} {}` | {}", route.method, route.template, route.rpc.name());
            assert!(readme.contains(&row), "README.md lacks the row {row}");
        }
    }

    #[test]
    fn paths_split_into_segments_and_a_verb() {
        assert_eq!(split("/a/b"), Some((vec!["a", "b"], None)));
        assert_eq!(split("/a/b:watch"), Some((vec!["a", "b"], Some("watch"))));
        assert_eq!(split("/a:watch"), Some((vec!["a"], Some("watch"))));
        assert_eq!(split("a"), None);
    }
}
