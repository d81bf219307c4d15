//! The OpenAPI 3.1 document of the HTTP API, generated from the same
//! descriptors and routes the edge serves: one operation per route, one
//! schema per message and enum, in their canonical JSON forms (timestamps
//! as RFC 3339 strings, durations as `"7200s"`, 64-bit integers as
//! strings, enums by name), the fields marked `REQUIRED`
//! (`google.api.field_behavior`, which a test holds to what the server
//! refuses), no property outside the contract, a bearer
//! security scheme and `google.rpc.Status` as every error's body.
//!
//! Committed at `docs/openapi.json`; a test fails when the two differ
//! (`MENTORSHIP_WRITE_OPENAPI=1 cargo test --lib openapi` rewrites it).

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Value, json};

use super::routes::{BodyRule, Route, Table};

/// The document, as pretty JSON with a final newline.
pub fn document_bytes(pool: &DescriptorPool, table: &Table) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(&document(pool, table)).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The document.
pub fn document(pool: &DescriptorPool, table: &Table) -> Value {
    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for route in table.routes() {
        let operation = operation(route, &mut schemas);
        paths
            .entry(route.template.replace('.', "_"))
            .or_default()
            .insert(route.method.as_str().to_ascii_lowercase(), operation);
    }
    if let Some(status) = pool.get_message_by_name("google.rpc.Status") {
        schemas.message(&status);
    }
    // The details an error can carry, so each `@type` has its schema.
    for name in [
        "ErrorInfo",
        "BadRequest",
        "PreconditionFailure",
        "ResourceInfo",
        "RetryInfo",
        "QuotaFailure",
        "Help",
    ] {
        if let Some(m) = pool.get_message_by_name(&format!("google.rpc.{name}")) {
            schemas.message(&m);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mentorship",
            "version": "v1",
            "description": "The mentorship service's HTTP/JSON API: the gRPC contract in proto/ \
                transcoded (google.api.http). Every error's body is a google.rpc.Status.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": schemas.done,
            "responses": {
                "Error": {
                    "description": "The call failed: a google.rpc.Status with its details.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}}
                }
            }
        }
    })
}

fn operation(route: &Route, schemas: &mut Schemas) -> Value {
    let input = route.rpc.input();
    let path_fields: BTreeSet<&str> = route.path_fields().collect();
    let mut parameters: Vec<Value> = route
        .path_fields()
        .map(|f| {
            // `{mentor.id}` is written `{mentor_id}`: tools read templates
            // with dots in them as attribute lookups.
            json!({
                "name": f.replace('.', "_"),
                "in": "path",
                "required": true,
                "description": format!("The request's {f}."),
                "schema": {"type": "string", "format": "uuid"},
            })
        })
        .collect();
    let query_fields: Vec<FieldDescriptor> = match &route.body {
        BodyRule::Whole => Vec::new(),
        BodyRule::None => input.fields().collect(),
        BodyRule::Field(body) => input.fields().filter(|f| f.name() != body).collect(),
    };
    for field in query_fields {
        if path_fields.contains(field.name()) || !queryable(&field) {
            continue;
        }
        parameters.push(json!({
            "name": field.json_name(),
            "in": "query",
            "schema": schemas.field(&field),
        }));
    }
    let mut header = |name: &str, description: &str, schema: Value| {
        parameters.push(json!({"name": name, "in": "header", "description": description, "schema": schema}));
    };
    if input.get_field_by_name("request_id").is_some() {
        header(
            "Idempotency-Key",
            "The request_id: a UUID; a retry with the same key answers the first outcome.",
            json!({"type": "string", "format": "uuid"}),
        );
    }
    if takes_etag(route) {
        header(
            "If-Match",
            "The etag the change needs, as a strong entity tag (\"3\") or *; a stale one answers 412.",
            json!({"type": "string"}),
        );
    }
    if route.rpc.is_server_streaming() {
        header(
            "Last-Event-ID",
            "Resume after this event (an event stream's id).",
            json!({"type": "string"}),
        );
    }
    header(
        "Request-Timeout",
        "The call's deadline, in seconds.",
        json!({"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"}),
    );
    let output = route.rpc.output();
    let ok = if !route.rpc.is_server_streaming() {
        json!({"application/json": {"schema": schemas.reference(&output)}})
    } else if output.get_field_by_name("chunk").is_some() {
        json!({
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        })
    } else {
        schemas.message(&output);
        json!({"text/event-stream": {"schema": {"type": "string"}, "x-event-schema": schemas.reference(&output)}})
    };
    let service = route.rpc.parent_service().name();
    // The statuses a call can answer besides 200 (grpc-gateway's table of
    // the codes this service returns), listed so that an undocumented one
    // fails a conformance check.
    let mut responses = serde_json::Map::new();
    responses.insert("200".into(), json!({"description": "OK", "content": ok}));
    let mut codes = vec!["400", "401", "403", "404", "409", "429", "500", "503", "504"];
    if takes_etag(route) {
        codes.push("412");
    }
    if route.body != BodyRule::None {
        codes.push("413");
    }
    codes.sort_unstable();
    for code in codes {
        responses.insert(code.into(), json!({"$ref": "#/components/responses/Error"}));
    }
    let mut op = json!({
        "operationId": format!("{service}_{}", route.rpc.name()),
        "tags": [service],
        "summary": route.rpc.name(),
        "parameters": parameters,
        "responses": responses,
    });
    let body_schema = match &route.body {
        BodyRule::None => None,
        BodyRule::Whole => Some(schemas.reference(&input)),
        BodyRule::Field(f) => input.get_field_by_name(f).map(|f| schemas.field(&f)),
    };
    if let Some(schema) = body_schema {
        op["requestBody"] = json!({"content": {"application/json": {"schema": schema}}});
    }
    op
}

/// Whether a route's request takes an etag, so that `If-Match` applies.
fn takes_etag(route: &Route) -> bool {
    route.rpc.input().get_field_by_name("etag").is_some()
}

/// Whether a field can be a query parameter: a scalar, an enum, a
/// well-known type written as one string, or a list of those.
fn queryable(field: &FieldDescriptor) -> bool {
    !field.is_map()
        && match field.kind() {
            Kind::Message(m) => scalar_message(&m).is_some(),
            _ => true,
        }
}

/// The schema of a well-known type written as a JSON scalar.
fn scalar_message(m: &MessageDescriptor) -> Option<Value> {
    Some(match m.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"}),
        "google.protobuf.FieldMask" => json!({"type": "string", "description": "Comma-separated field paths."}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.Int32Value" => json!({"type": "integer", "format": "int32"}),
        "google.protobuf.Int64Value" => json!({"type": "string", "format": "int64"}),
        _ => return None,
    })
}

/// The component schemas, added as they are referred to.
#[derive(Default)]
struct Schemas {
    done: BTreeMap<String, Value>,
}

impl Schemas {
    fn reference(&mut self, m: &MessageDescriptor) -> Value {
        if let Some(schema) = scalar_message(m) {
            return schema;
        }
        match m.full_name() {
            "google.protobuf.Struct" => return json!({"type": "object"}),
            "google.protobuf.Value" => return json!({}),
            "google.protobuf.ListValue" => return json!({"type": "array"}),
            "google.protobuf.Empty" => return json!({"type": "object", "additionalProperties": false}),
            "google.protobuf.Any" => {
                return json!({
                    "type": "object",
                    "properties": {"@type": {"type": "string"}},
                    "required": ["@type"],
                });
            }
            _ => {}
        }
        self.message(m);
        json!({"$ref": format!("#/components/schemas/{}", name(m.full_name()))})
    }

    fn message(&mut self, m: &MessageDescriptor) {
        let key = name(m.full_name());
        if self.done.contains_key(&key) {
            return;
        }
        self.done.insert(key.clone(), Value::Null);
        let mut properties = serde_json::Map::new();
        for field in m.fields() {
            properties.insert(field.json_name().to_owned(), self.field(&field));
        }
        let mut schema = json!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        });
        let required: Vec<String> = m
            .fields()
            .filter(is_required)
            .map(|f| f.json_name().to_owned())
            .collect();
        if !required.is_empty() {
            schema["required"] = json!(required);
        }
        self.done.insert(key, schema);
    }

    fn field(&mut self, field: &FieldDescriptor) -> Value {
        let one = if is_uuid(field) {
            json!({"type": "string", "format": "uuid"})
        } else {
            self.kind(&field.kind())
        };
        if field.is_map() {
            let value = match field.kind() {
                Kind::Message(entry) => entry
                    .get_field_by_name("value")
                    .map(|v| self.kind(&v.kind()))
                    .unwrap_or(json!({})),
                _ => json!({}),
            };
            json!({"type": "object", "additionalProperties": value})
        } else if field.is_list() {
            json!({"type": "array", "items": one})
        } else {
            one
        }
    }

    fn kind(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double | Kind::Float => json!({"type": "number"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
            Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int64", "minimum": 0}),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"})
            }
            Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "format": "byte"}),
            Kind::Enum(e) => {
                let key = name(e.full_name());
                if !self.done.contains_key(&key) {
                    let values: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                    self.done.insert(key.clone(), json!({"type": "string", "enum": values}));
                }
                json!({"$ref": format!("#/components/schemas/{key}")})
            }
            Kind::Message(m) => self.reference(m),
        }
    }
}

/// Whether a string field holds a UUID: every `id` and `…_id` of the
/// contract but the configuration templates', which are names.
fn is_uuid(field: &FieldDescriptor) -> bool {
    let name = field.name();
    field.kind() == Kind::String
        && (name == "id" || name.ends_with("_id"))
        && name != "template_id"
        && field.parent_message().name() != "ConfigTemplate"
}

/// The paths of a message's `REQUIRED` fields (`google.api.field_behavior`):
/// a required message with required fields of its own contributes those
/// (`mentor.user_id`), any other required field itself.
pub fn required_paths(message: &MessageDescriptor) -> Vec<String> {
    let mut out = Vec::new();
    for field in message.fields().filter(is_required) {
        let nested = match field.kind() {
            Kind::Message(m) if !field.is_list() && !field.is_map() => required_paths(&m),
            _ => Vec::new(),
        };
        if nested.is_empty() {
            out.push(field.name().to_owned());
        } else {
            out.extend(nested.into_iter().map(|n| format!("{}.{n}", field.name())));
        }
    }
    out
}

/// Whether a field is marked `REQUIRED`.
pub fn is_required(field: &FieldDescriptor) -> bool {
    const REQUIRED: i32 = 2;
    let Some(behavior) = field.parent_pool().get_extension_by_name("google.api.field_behavior") else {
        return false;
    };
    let options = field.options();
    if !options.has_extension(&behavior) {
        return false;
    }
    match options.get_extension(&behavior).as_ref() {
        prost_reflect::Value::List(values) => values.iter().any(|v| v.as_enum_number() == Some(REQUIRED)),
        _ => false,
    }
}

/// A schema's name: the full name, less this package's prefix.
fn name(full: &str) -> String {
    full.strip_prefix("mentorship.v1.").unwrap_or(full).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is what the build generates.
    #[test]
    fn the_committed_openapi_document_is_current() {
        let pool = crate::rest::descriptors();
        let table = Table::from_pool(&pool).unwrap();
        let generated = document_bytes(&pool, &table);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
        if std::env::var_os("MENTORSHIP_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json differs from the contract's; regenerate it with \
             MENTORSHIP_WRITE_OPENAPI=1 cargo test --lib openapi"
        );
    }

    #[test]
    fn schemas_use_the_canonical_json_forms() {
        let pool = crate::rest::descriptors();
        let table = Table::from_pool(&pool).unwrap();
        let doc = document(&pool, &table);
        let session = &doc["components"]["schemas"]["Session"]["properties"];
        assert_eq!(session["startTime"]["format"], "date-time", "{session}");
        assert_eq!(doc["components"]["schemas"]["Session"]["additionalProperties"], false);
        assert_eq!(
            doc["components"]["schemas"]["SessionStatus"]["enum"][1],
            "SESSION_STATUS_SCHEDULED"
        );
        let event = &doc["components"]["schemas"]["SessionEvent"]["properties"];
        assert_eq!(event["seq"]["type"], "string", "{event}");
        assert_eq!(session["mentorId"]["format"], "uuid");
        let booking = &doc["components"]["schemas"]["CreateBookingRequest"];
        assert_eq!(
            booking["required"],
            serde_json::json!(["listingId", "startTime", "endTime"])
        );
        assert!(doc["components"]["schemas"]["Session"].get("required").is_none());
        let template = &doc["components"]["schemas"]["ConfigTemplate"]["properties"];
        assert_eq!(template["id"]["type"], "string");
        assert!(template["id"].get("format").is_none(), "template ids are names");
        assert!(doc["paths"].get("/api/mentorship/mentors/{mentor_id}").is_some());
        let get = &doc["paths"]["/api/mentorship/sessions/{session_id}"]["get"];
        assert_eq!(get["operationId"], "SessionService_GetSession");
        assert_eq!(get["parameters"][0]["in"], "path");
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    }
}
