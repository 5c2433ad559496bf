use super::*;

/// A valid job named `name`, as YAML with a trailing newline (9 lines).
fn job_yaml(name: &str) -> String {
    format!(
        "apiVersion: raftcron.dev/v1alpha1
kind: ScheduledJob
metadata:
  name: {name}
spec:
  schedule: \"@hourly\"
  action:
    http:
      url: http://billing-api.billing.svc:8080/jobs/report
"
    )
}

fn load_error(text: &str) -> LoadError {
    match parse_documents(text, "examples/x.yaml") {
        Ok(jobs) => panic!("accepted {} jobs:\n{text}", jobs.len()),
        Err(error) => error,
    }
}

fn names(jobs: &[ScheduledJob]) -> Vec<String> {
    jobs.iter()
        .map(|job| {
            format!(
                "{}/{}",
                job.metadata.namespace.as_deref().unwrap_or("?"),
                job.metadata.name.as_deref().unwrap_or("?")
            )
        })
        .collect()
}

#[test]
fn every_document_of_a_multi_document_file_is_loaded_in_order() {
    let text = format!(
        "{}---\n{}---\n{}",
        job_yaml("first"),
        job_yaml("second").replace("metadata:\n", "metadata:\n  namespace: billing\n"),
        job_yaml("third")
    );
    let jobs = parse_documents(&text, "jobs.yaml").unwrap();
    assert_eq!(
        names(&jobs),
        ["default/first", "billing/second", "default/third"]
    );
    assert_eq!(jobs[0].spec.schedule, "@hourly");
}

#[test]
fn the_namespace_defaults_to_default() {
    let jobs = parse_documents(&job_yaml("report"), "jobs.yaml").unwrap();
    assert_eq!(jobs[0].metadata.namespace.as_deref(), Some("default"));
}

#[test]
fn empty_documents_comments_and_document_end_markers_are_skipped() {
    let text = format!(
        "# jobs for the billing team\n---\n---\n# nothing here\n---\n{}...\n---\n~\n",
        job_yaml("only")
    );
    assert_eq!(
        names(&parse_documents(&text, "jobs.yaml").unwrap()),
        ["default/only"]
    );
    assert!(parse_documents("", "empty.yaml").unwrap().is_empty());
    assert!(
        parse_documents("# just a comment\n", "c.yaml")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_byte_order_mark_and_windows_line_endings_are_accepted() {
    let text = format!("\u{feff}{}", job_yaml("bom")).replace('\n', "\r\n");
    assert_eq!(
        names(&parse_documents(&text, "w.yaml").unwrap()),
        ["default/bom"]
    );
}

#[test]
fn a_bad_variant_is_reported_at_its_line_and_column_in_the_file() {
    // Document 2 starts after line 10's `---`; line 15 is its `spec:`.
    let second = job_yaml("second").replace("spec:\n", "spec:\n  concurrencyPolicy: Sometimes\n");
    let error = load_error(&format!("{}---\n{second}", job_yaml("first")));
    assert_eq!(
        error.to_string(),
        "examples/x.yaml:16:22: spec.concurrencyPolicy: unknown variant \"Sometimes\", expected one of Allow, Forbid, Replace"
    );
    assert_eq!(error.document, 2);
    assert_eq!(error.field.as_deref(), Some("spec.concurrencyPolicy"));
}

#[test]
fn a_wrong_type_is_reported_with_the_field_path_and_line() {
    let text = job_yaml("t").replace("spec:\n", "spec:\n  timeoutSeconds: five minutes\n");
    let error = load_error(&text);
    assert_eq!(error.line, Some(6));
    assert_eq!(error.field.as_deref(), Some("spec.timeoutSeconds"));
    assert_eq!(
        error.message,
        "invalid type: string \"five minutes\", expected i64"
    );
}

#[test]
fn a_missing_required_field_is_named() {
    // `schedule` may be left out for a one-shot (`dueTime`), so validation,
    // not the YAML decoder, says it is missing.
    let text = job_yaml("m").replace("  schedule: \"@hourly\"\n", "");
    let error = load_error(&text);
    assert_eq!(error.field.as_deref(), Some("spec.schedule"));
    assert_eq!(
        error.message,
        "required, unless spec.dueTime is set (a one-shot)"
    );
    assert_eq!(error.document, 1);
}

#[test]
fn a_yaml_syntax_error_is_reported_at_its_line_in_the_file_not_in_the_document() {
    let broken = job_yaml("b").replace("      url:", "      body: [unclosed\n      url:");
    let error = load_error(&format!("{}---\n{broken}", job_yaml("a")));
    assert_eq!(error.document, 2);
    assert_eq!(error.field, None);
    // The flow sequence opens on line 19 of the file (line 9 of the second
    // document) and the parser notices on the next line; both numbers count
    // from the top of the file.
    assert_eq!(
        error.to_string(),
        "examples/x.yaml:20:10: did not find expected ',' or ']', while parsing a flow sequence at line 19 column 13"
    );
}

#[test]
fn unknown_fields_are_refused_with_their_path_and_line() {
    let text = job_yaml("u").replace(
        "      url: http://billing-api.billing.svc:8080/jobs/report\n",
        "      url: http://billing-api.billing.svc:8080/jobs/report
      headers:
      - name: Accept
        value: '*/*'
      - name: X-Token
        valeu: abc
",
    );
    let error = load_error(&text);
    assert_eq!(
        error.to_string(),
        "examples/x.yaml:14:9: spec.action.http.headers[1].valeu: unknown field \"valeu\""
    );
}

#[test]
fn a_misspelt_optional_spec_field_is_refused_instead_of_ignored() {
    let text = job_yaml("typo").replace("spec:\n", "spec:\n  concurrencypolicy: Forbid\n");
    let error = load_error(&text);
    assert_eq!(error.field.as_deref(), Some("spec.concurrencypolicy"));
    assert_eq!(error.line, Some(6));
}

#[test]
fn documents_of_another_kind_are_refused_naming_the_kind() {
    let text = format!(
        "{}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\n",
        job_yaml("a")
    );
    let error = load_error(&text);
    assert_eq!(error.document, 2);
    assert_eq!(error.line, Some(12));
    assert_eq!(error.field.as_deref(), Some("kind"));
    assert!(error.message.contains("found \"Deployment\""), "{error}");
}

#[test]
fn documents_of_another_api_version_are_refused() {
    let text = job_yaml("v").replace("raftcron.dev/v1alpha1", "raftcron.dev/v1");
    let error = load_error(&text);
    assert_eq!(error.field.as_deref(), Some("apiVersion"));
    assert_eq!(error.line, Some(1));
    assert!(
        error.message.contains("found \"raftcron.dev/v1\""),
        "{error}"
    );
}

#[test]
fn a_document_without_kind_is_refused() {
    let error = load_error("metadata: {name: x}\nspec: {}\n");
    assert_eq!(error.field.as_deref(), Some("kind"));
    assert!(error.message.ends_with("found nothing"), "{error}");
}

#[test]
fn a_document_that_is_not_a_mapping_is_refused() {
    let error = load_error(&format!("{}---\n- a\n- b\n", job_yaml("a")));
    assert_eq!(error.document, 2);
    assert_eq!(error.line, Some(11));
    assert_eq!(
        error.message,
        "a document must be a ScheduledJob mapping, found a sequence"
    );
}

#[test]
fn validation_errors_point_at_the_offending_key() {
    let text = format!(
        "{}---\n{}",
        job_yaml("a"),
        job_yaml("b").replace("\"@hourly\"", "\"0 0 30 2 *\"")
    );
    let error = load_error(&text);
    assert_eq!(error.document, 2);
    assert_eq!(error.line, Some(16));
    assert_eq!(error.column, Some(3));
    assert_eq!(error.field.as_deref(), Some("spec.schedule"));
}

#[test]
fn validation_errors_inside_sequences_point_at_the_item() {
    let text = job_yaml("s").replace(
        "      url: http://billing-api.billing.svc:8080/jobs/report\n",
        "      url: http://billing-api.billing.svc:8080/jobs/report
      headers:
        - name: Accept
          value: '*/*'
        -   name: Raftcron-Run-Id
            value: forged
",
    );
    let error = load_error(&text);
    assert_eq!(
        error.field.as_deref(),
        Some("spec.action.http.headers[1].name")
    );
    assert_eq!((error.line, error.column), (Some(13), Some(13)));
}

#[test]
fn every_validation_error_of_a_document_is_in_the_message() {
    let text = job_yaml("e")
        .replace("\"@hourly\"", "x")
        .replace("spec:\n", "spec:\n  timeZone: Mars/Base\n");
    let error = load_error(&text);
    assert_eq!(
        error.to_string(),
        "examples/x.yaml:6:3: spec.timeZone: unknown time zone \"Mars/Base\" (expected an IANA name such as \"Europe/Berlin\" or \"UTC\"); \
         also spec.schedule: invalid cron expression \"x\": it has 1 field; expected 5 (m h dom mon dow) or 6 (s m h dom mon dow)"
    );
}

#[test]
fn flow_style_errors_fall_back_to_the_deepest_key_found() {
    let text = "apiVersion: raftcron.dev/v1alpha1
kind: ScheduledJob
metadata: {name: flow}
spec:
  schedule: '@daily'
  action: {http: {url: 'ftp://example.com'}}
";
    let error = load_error(text);
    assert_eq!(error.field.as_deref(), Some("spec.action.http.url"));
    assert_eq!((error.line, error.column), (Some(6), Some(3)));
}

#[test]
fn invalid_names_are_refused() {
    let error = load_error(&job_yaml("Nightly_Report"));
    assert_eq!(error.field.as_deref(), Some("metadata.name"));
    assert_eq!(error.line, Some(4));
}

#[test]
fn the_same_job_twice_in_one_file_is_refused_naming_both_documents() {
    let error = load_error(&format!("{}---\n{}", job_yaml("twin"), job_yaml("twin")));
    assert_eq!(
        error.to_string(),
        "examples/x.yaml:14: metadata.name: ScheduledJob default/twin is defined twice: also in examples/x.yaml (document 1)"
    );
}

#[test]
fn the_same_name_in_two_namespaces_is_two_jobs() {
    let text = format!(
        "{}---\n{}",
        job_yaml("twin"),
        job_yaml("twin").replace("metadata:\n", "metadata:\n  namespace: other\n")
    );
    assert_eq!(parse_documents(&text, "x.yaml").unwrap().len(), 2);
}

#[test]
fn load_error_display_without_a_line_names_the_document() {
    let error = LoadError {
        source: "a.yaml".to_string(),
        document: 3,
        line: None,
        column: None,
        field: None,
        message: "boom".to_string(),
    };
    assert_eq!(error.to_string(), "a.yaml (document 3): boom");
}

#[test]
fn find_key_follows_block_mappings_and_sequences() {
    let text = "a:
  b:
    - x: 1
    - y: 2
      z:
        - 1
        - 2
  c: 3
d:
- e: 1
";
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(find_key(&lines, "a.c"), Some((7, 2)));
    assert_eq!(find_key(&lines, "a.b[1].z[1]"), Some((6, 8)));
    assert_eq!(find_key(&lines, "a.b[1].y"), Some((3, 6)));
    assert_eq!(find_key(&lines, "d[0].e"), Some((9, 2)));
    assert_eq!(find_key(&lines, "a.b[5]"), Some((1, 2)));
    assert_eq!(find_key(&lines, "missing"), None);
}
