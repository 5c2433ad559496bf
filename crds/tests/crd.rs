//! The generated CustomResourceDefinition: what `kubectl get sj` and
//! `kubectl explain` show, the bounds the API server enforces, and the CEL
//! rules evaluated here the way the API server would.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use raftcron_crds::ScheduledJob;
use raftcron_crds::validate::limits;
use serde_json::Value;

fn schema() -> Value {
    let crd = ScheduledJob::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("the CRD has a schema"),
    )
    .unwrap()
}

/// The schema node at a dotted path of property names (`[]` for items).
fn node<'a>(schema: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(schema, |node, part| {
        let next = if part == "[]" {
            &node["items"]
        } else {
            &node["properties"][part]
        };
        assert!(!next.is_null(), "no schema at {path} (stopped at {part})");
        next
    })
}

#[test]
fn kubectl_get_shows_schedule_suspend_last_result_last_run_next_run_and_age() {
    let crd = ScheduledJob::crd();
    let version = &crd.spec.versions[0];
    let columns: Vec<(&str, &str)> = version
        .additional_printer_columns
        .as_ref()
        .expect("printer columns")
        .iter()
        .map(|c| (c.name.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Schedule", ".spec.schedule"),
            ("Suspend", ".spec.suspend"),
            ("Last Result", ".status.lastRun.result"),
            ("Last Run", ".status.lastScheduleTime"),
            ("Next Run", ".status.nextScheduleTime"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
    for column in version.additional_printer_columns.as_ref().unwrap() {
        assert!(
            column.description.as_deref().is_some_and(|d| !d.is_empty()),
            "column {} has no description",
            column.name
        );
    }
}

#[test]
fn the_resource_is_namespaced_with_short_name_sj_category_raftcron_and_a_status_subresource() {
    let crd = ScheduledJob::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("scheduledjobs.raftcron.dev")
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["sj".to_string()]));
    assert_eq!(
        crd.spec.names.categories,
        Some(vec!["raftcron".to_string()])
    );
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.served && version.storage);
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "status subresource"
    );
}

#[test]
fn every_property_has_a_description_for_kubectl_explain() {
    fn walk(node: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(properties) = node.get("properties").and_then(Value::as_object) {
            for (name, property) in properties {
                let here = format!("{path}.{name}");
                let described = property
                    .get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| !d.trim().is_empty());
                if !described {
                    missing.push(here.clone());
                }
                walk(property, &here, missing);
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
        if let Some(additional) = node.get("additionalProperties").filter(|a| a.is_object()) {
            walk(additional, &format!("{path}{{}}"), missing);
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            for (i, sub) in node
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                walk(sub, &format!("{path}.{key}[{i}]"), missing);
            }
        }
    }
    let schema = schema();
    let mut missing = Vec::new();
    walk(&schema, "", &mut missing);
    assert!(
        missing.is_empty(),
        "properties without a description: {missing:#?}"
    );
    // The walk reaches deep into the status, so it checks what it should.
    assert!(node(&schema, "status.recentRuns.[].latenessMs")["description"].is_string());
}

#[test]
fn the_schema_bounds_match_the_validation_limits() {
    let schema = schema();
    let number = |path: &str, key: &str| -> f64 {
        node(&schema, path)[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{path} has no {key}"))
    };
    assert_eq!(
        number("spec.schedule", "maxLength"),
        limits::SCHEDULE_MAX_LEN as f64
    );
    assert_eq!(
        number("spec.timeZone", "maxLength"),
        limits::TIME_ZONE_MAX_LEN as f64
    );
    assert_eq!(number("spec.timeoutSeconds", "minimum"), 1.0);
    assert_eq!(
        number("spec.timeoutSeconds", "maximum"),
        limits::TIMEOUT_SECONDS_MAX as f64
    );
    assert_eq!(number("spec.startingDeadlineSeconds", "minimum"), 1.0);
    assert_eq!(
        number("spec.retry.maxAttempts", "maximum"),
        limits::MAX_ATTEMPTS_MAX as f64
    );
    assert_eq!(
        number("spec.retry.initialBackoffSeconds", "maximum"),
        limits::BACKOFF_SECONDS_MAX
    );
    assert_eq!(
        number("spec.retry.maxBackoffSeconds", "maximum"),
        limits::BACKOFF_SECONDS_MAX
    );
    assert_eq!(number("spec.retry.multiplier", "minimum"), 1.0);
    assert_eq!(
        number("spec.retry.multiplier", "maximum"),
        limits::MULTIPLIER_MAX
    );
    assert_eq!(number("spec.retry.jitter", "maximum"), 1.0);
    for limit in [
        "spec.successfulRunsHistoryLimit",
        "spec.failedRunsHistoryLimit",
    ] {
        assert_eq!(number(limit, "maximum"), limits::HISTORY_LIMIT_MAX as f64);
    }
    assert_eq!(
        number("spec.action.http.url", "maxLength"),
        limits::URL_MAX_LEN as f64
    );
    assert_eq!(
        number("spec.action.http.headers", "maxItems"),
        limits::HEADERS_MAX as f64
    );
    assert_eq!(
        number("spec.action.http.headers.[].name", "maxLength"),
        limits::HEADER_NAME_MAX_LEN as f64
    );
    assert_eq!(
        number("spec.action.http.headers.[].value", "maxLength"),
        limits::HEADER_VALUE_MAX_LEN as f64
    );
    assert_eq!(
        number("spec.action.http.body", "maxLength"),
        limits::BODY_MAX_BYTES as f64
    );
    assert_eq!(
        number("spec.action.http.successCodes", "maxItems"),
        limits::SUCCESS_CODES_MAX as f64
    );
    assert_eq!(
        number("spec.action.exec.command", "maxItems"),
        limits::COMMAND_MAX as f64
    );
    assert_eq!(
        number("spec.action.exec.env", "maxItems"),
        limits::ENV_MAX as f64
    );
    assert_eq!(
        number("spec.action.exec.env.[].name", "maxLength"),
        limits::ENV_NAME_MAX_LEN as f64
    );
}

/// Every schema node of the CRD, with its path, depth first.
fn walk<'a>(node: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    out.push((path.clone(), node));
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            walk(property, format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = node.get("items") {
        walk(items, format!("{path}[]"), out);
    }
    if let Some(additional) = node.get("additionalProperties").filter(|a| a.is_object()) {
        walk(additional, format!("{path}{{}}"), out);
    }
    if let Some(not) = node.get("not") {
        walk(not, format!("{path}.not"), out);
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for (i, sub) in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            walk(sub, format!("{path}.{key}[{i}]"), out);
        }
    }
}

/// Whether the Kubernetes API server knows `format` on a value of `kind`:
/// apiextensions-apiserver's `GetUnrecognizedFormats` (its
/// `pkg/apiserver/validation/formats.go`), written out again here rather
/// than shared with the transform that produces the schema.
fn kubernetes_knows(kind: &str, format: &str) -> bool {
    const STRING_FORMATS: &[&str] = &[
        "bsonobjectid",
        "uri",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "cidr",
        "mac",
        "uuid",
        "uuid3",
        "uuid4",
        "uuid5",
        "isbn",
        "isbn10",
        "isbn13",
        "creditcard",
        "ssn",
        "hexcolor",
        "rgbcolor",
        "byte",
        "password",
        "date",
        "duration",
        "datetime",
        "quantity",
    ];
    match kind {
        // go-openapi normalises format names by dropping dashes.
        "" | "string" => STRING_FORMATS.contains(&format.replace('-', "").as_str()),
        "integer" => format == "int32" || format == "int64",
        "number" => format == "float" || format == "double",
        _ => false,
    }
}

#[test]
fn the_schema_carries_only_formats_the_kubernetes_api_server_knows() {
    let schema = schema();
    let mut nodes = Vec::new();
    walk(&schema, String::new(), &mut nodes);
    let mut formats = Vec::new();
    let mut unknown = Vec::new();
    for (path, node) in &nodes {
        let Some(format) = node.get("format") else {
            continue;
        };
        let kind = node.get("type").and_then(Value::as_str).unwrap_or_default();
        let format = format
            .as_str()
            .unwrap_or_else(|| panic!("{path}: format {format}"));
        formats.push(format);
        if !kubernetes_knows(kind, format) {
            unknown.push(format!("{path}: type {kind:?}, format {format:?}"));
        }
    }
    assert!(
        unknown.is_empty(),
        "formats the API server warns about: {unknown:#?}"
    );
    // The walk reaches the formats that were unknown before: u32 and u16
    // fields, now int64 and int32.
    assert_eq!(node(&schema, "spec.retry.maxAttempts")["format"], "int64");
    assert_eq!(
        node(&schema, "spec.action.http.successCodes.[]")["format"],
        "int32"
    );
    assert!(formats.contains(&"date-time"), "{formats:?}");
}

#[test]
fn status_timestamps_are_date_times() {
    let schema = schema();
    for path in [
        "status.nextScheduleTime",
        "status.lastScheduleTime",
        "status.lastSuccessfulTime",
        "status.lastRun.scheduledTime",
        "status.lastRun.startTime",
        "status.lastRun.completionTime",
        "status.active.[].scheduledTime",
        "status.recentRuns.[].completionTime",
        "status.conditions.[].lastTransitionTime",
    ] {
        let field = node(&schema, path);
        assert_eq!(field["type"], "string", "{path}");
        assert_eq!(field["format"], "date-time", "{path}");
    }
}

#[test]
fn status_conditions_are_a_list_map_keyed_by_type() {
    let schema = schema();
    let conditions = node(&schema, "status.conditions");
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
    // The API server refuses a map key that is neither required nor defaulted.
    let required = conditions["items"]["required"]
        .as_array()
        .expect("condition items list their required fields");
    assert!(required.contains(&Value::from("type")), "{required:?}");
    // The other lists stay atomic: one field manager writes each whole.
    for path in ["status.active", "status.recentRuns"] {
        assert!(
            node(&schema, path).get("x-kubernetes-list-type").is_none(),
            "{path}"
        );
    }
}

#[test]
fn status_lists_are_bounded_consistently_with_the_history_limits() {
    let schema = schema();
    let max_items = |path: &str| node(&schema, path)["maxItems"].as_u64();
    assert_eq!(
        max_items("status.recentRuns"),
        Some(2 * u64::from(limits::HISTORY_LIMIT_MAX))
    );
    assert_eq!(
        max_items("status.recentRuns"),
        Some(limits::STATUS_RECENT_RUNS_MAX as u64)
    );
    assert_eq!(
        max_items("status.active"),
        Some(limits::STATUS_ACTIVE_MAX as u64)
    );
    assert_eq!(
        max_items("status.conditions"),
        Some(limits::STATUS_CONDITIONS_MAX as u64)
    );
}

#[test]
fn crdgen_prints_the_same_crd_as_yaml() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_crdgen"))
        .output()
        .expect("crdgen runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: CustomResourceDefinition =
        serde_yaml::from_slice(&output.stdout).expect("crdgen prints a CRD");
    assert_eq!(printed, ScheduledJob::crd());
}

/// The x-kubernetes-validations rules, evaluated by kube's CEL
/// implementation against whole objects, as the API server would on create.
mod cel {
    use super::*;
    use kube::core::cel::validate_cel;

    fn job(action: &str) -> ScheduledJob {
        serde_yaml::from_str(&format!(
            "apiVersion: raftcron.dev/v1alpha1
kind: ScheduledJob
metadata: {{name: cel, namespace: default}}
spec:
  schedule: '@hourly'
  action: {action}
"
        ))
        .unwrap()
    }

    fn failures(action: &str) -> Vec<String> {
        match validate_cel(&job(action)) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
        }
    }

    const ONE_ACTION: &str =
        "exactly one of action.http, action.exec, action.job, action.app must be set";
    const ONE_VALUE: &str = "exactly one of value and valueFrom must be set";

    #[test]
    fn exactly_one_action_passes() {
        assert_eq!(
            failures("{http: {url: 'https://example.com'}}"),
            Vec::<String>::new()
        );
        assert_eq!(failures("{exec: {command: [date]}}"), Vec::<String>::new());
        assert_eq!(failures("{app: {name: web}}"), Vec::<String>::new());
    }

    #[test]
    fn no_action_is_refused_by_the_rule() {
        assert_eq!(failures("{}"), [ONE_ACTION]);
    }

    #[test]
    fn two_actions_are_refused_by_the_rule() {
        assert_eq!(
            failures("{http: {url: 'https://example.com'}, exec: {command: [date]}}"),
            [ONE_ACTION]
        );
        assert_eq!(
            failures("{http: {url: 'https://example.com'}, app: {name: web}}"),
            [ONE_ACTION]
        );
    }

    #[test]
    fn a_header_with_value_or_value_from_passes() {
        assert_eq!(
            failures(
                "{http: {url: 'https://example.com', headers: [{name: A, value: x}, {name: B, valueFrom: {secretKeyRef: {name: s, key: k}}}]}}"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_header_with_both_value_and_value_from_is_refused_by_the_rule() {
        assert_eq!(
            failures(
                "{http: {url: 'https://example.com', headers: [{name: A, value: x, valueFrom: {secretKeyRef: {name: s, key: k}}}]}}"
            ),
            [ONE_VALUE]
        );
    }

    #[test]
    fn a_header_with_neither_value_nor_value_from_is_refused_by_the_rule() {
        assert_eq!(
            failures("{http: {url: 'https://example.com', headers: [{name: A}]}}"),
            [ONE_VALUE]
        );
    }

    #[test]
    fn a_url_without_an_http_scheme_is_refused_by_the_rule() {
        assert_eq!(
            failures("{http: {url: 'ftp://example.com'}}"),
            ["url must start with http:// or https://"]
        );
    }
}
