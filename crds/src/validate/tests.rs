use super::*;

/// Strips the indentation of the first non-blank line from every line, so
/// fixtures can be indented with the test code.
fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .find(|line| !line.trim().is_empty())
        .map_or(0, |line| line.len() - line.trim_start().len());
    text.lines()
        .map(|line| line.get(indent..).unwrap_or(line.trim_start()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A whole ScheduledJob document around a spec fixture.
fn job(spec: &str) -> ScheduledJob {
    let spec: String = dedent(spec)
        .lines()
        .map(|line| format!("  {line}\n"))
        .collect();
    let text = format!(
        "apiVersion: raftcron.dev/v1alpha1\nkind: ScheduledJob\nmetadata:\n  name: nightly-report\n  namespace: billing\nspec:\n{spec}"
    );
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("fixture does not parse: {e}\n{text}"))
}

fn errors(spec: &str) -> Vec<FieldError> {
    match validate_spec(&job(spec).spec) {
        Ok(_) => panic!("spec was accepted:\n{spec}"),
        Err(ValidationErrors(errors)) => errors,
    }
}

/// The single error of a spec: its field and message.
fn error(spec: &str) -> (String, String) {
    let errors = errors(spec);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:?}");
    (errors[0].field.clone(), errors[0].message.clone())
}

fn assert_valid(spec: &str) -> ValidSpec {
    validate_spec(&job(spec).spec).unwrap_or_else(|e| panic!("refused: {e}\n{spec}"))
}

/// A valid HTTP spec with `extra` appended at the top level of the spec.
fn http_with(extra: &str) -> String {
    format!(
        "schedule: \"0 30 2 * * *\"\naction:\n  http:\n    url: http://billing-api.billing.svc:8080/jobs/report\n{}",
        dedent(extra)
    )
}

/// A valid spec whose HTTP action has `extra` appended to it.
fn http_action_with(extra: &str) -> String {
    let extra: String = dedent(extra)
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect();
    format!(
        "schedule: \"@every 30s\"\naction:\n  http:\n    url: http://billing-api.billing.svc:8080/jobs/report\n{extra}"
    )
}

fn exec_with(extra: &str) -> String {
    let extra: String = dedent(extra)
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect();
    format!("schedule: \"@every 30s\"\naction:\n  exec:\n{extra}")
}

const JOB_ACTION: &str = "
    schedule: \"*/10 * * * *\"
    action:
      job:
        template:
          spec:
            backoffLimit: 0
            template:
              spec:
                restartPolicy: Never
                containers:
                - name: report
                  image: busybox:1.36
                  command: [\"sh\", \"-c\", \"echo $RAFTCRON_RUN_ID\"]
";

#[test]
fn the_design_documents_example_is_valid() {
    let valid = assert_valid(
        r#"
        schedule: "0 30 2 * * *"
        timeZone: Europe/Berlin
        suspend: false
        concurrencyPolicy: Forbid
        startingDeadlineSeconds: 60
        missedRunPolicy: RunOnce
        timeoutSeconds: 300
        retry: {maxAttempts: 3, initialBackoffSeconds: 1, maxBackoffSeconds: 60, multiplier: 2.0, jitter: 0.1}
        action:
          http:
            url: http://billing-api.billing.svc:8080/jobs/report
            method: POST
            headers: [{name: Authorization, valueFrom: {secretKeyRef: {name: api, key: token}}}]
            body: '{"kind":"nightly"}'
            successCodes: [200, 202]
        successfulRunsHistoryLimit: 3
        failedRunsHistoryLimit: 3
        "#,
    );
    assert_eq!(valid.action, ActionKind::Http);
    assert_eq!(valid.schedule.expression(), "0 30 2 * * *");
    assert_eq!(valid.schedule.time_zone().name(), "Europe/Berlin");
}

#[test]
fn exec_and_job_actions_are_valid_and_reported_by_kind() {
    let exec = assert_valid(&exec_with(
        r#"
        command: ["/bin/sh", "-c", "date"]
        env: [{name: GREETING, value: hello}]
        workingDir: /tmp
        "#,
    ));
    assert_eq!(exec.action, ActionKind::Exec);
    assert_eq!(assert_valid(JOB_ACTION).action, ActionKind::Job);
}

#[test]
fn an_unparsable_schedule_is_refused_naming_spec_schedule_and_quoting_it() {
    let (field, message) = error("schedule: \"61 * * * *\"\naction: {exec: {command: [date]}}");
    assert_eq!(field, "spec.schedule");
    assert_eq!(
        message,
        "invalid cron expression \"61 * * * *\": minute field \"61\": number out of bounds"
    );
}

#[test]
fn a_seven_field_schedule_is_refused_saying_the_year_field_is_not_supported() {
    let (field, message) =
        error("schedule: \"0 0 0 1 1 * 2030\"\naction: {exec: {command: [date]}}");
    assert_eq!(field, "spec.schedule");
    assert!(message.contains("year field is not supported"), "{message}");
}

#[test]
fn a_schedule_that_can_never_fire_is_refused() {
    let (field, message) = error("schedule: \"0 0 30 2 *\"\naction: {exec: {command: [date]}}");
    assert_eq!(field, "spec.schedule");
    assert!(message.contains("never fires"), "{message}");
}

#[test]
fn an_overlong_schedule_is_refused_with_its_length() {
    let long = format!("0 0 {} * *", vec!["1"; 200].join(","));
    let (field, message) = error(&format!(
        "schedule: \"{long}\"\naction: {{exec: {{command: [date]}}}}"
    ));
    assert_eq!(field, "spec.schedule");
    assert_eq!(
        message,
        format!("is {} characters; the limit is 256", long.len())
    );
}

#[test]
fn an_unknown_time_zone_is_refused_naming_spec_time_zone() {
    let (field, message) = error(&http_with("timeZone: Mars/Base"));
    assert_eq!(field, "spec.timeZone");
    assert!(
        message.starts_with("unknown time zone \"Mars/Base\""),
        "{message}"
    );
}

#[test]
fn time_zone_names_are_case_sensitive_iana_names() {
    assert_valid(&http_with("timeZone: America/New_York"));
    assert_valid(&http_with("timeZone: UTC"));
    let (field, _) = error(&http_with("timeZone: america/new_york"));
    assert_eq!(field, "spec.timeZone");
}

#[test]
fn schedule_and_time_zone_errors_are_both_reported_joined_by_semicolons() {
    let spec = job("schedule: x\ntimeZone: Mars/Base\naction: {exec: {command: [date]}}").spec;
    let errors = validate_spec(&spec).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "spec.timeZone: unknown time zone \"Mars/Base\" (expected an IANA name such as \"Europe/Berlin\" or \"UTC\"); \
         spec.schedule: invalid cron expression \"x\": it has 1 field; expected 5 (m h dom mon dow) or 6 (s m h dom mon dow)"
    );
    assert_eq!(
        errors.first().map(|e| e.field.as_str()),
        Some("spec.timeZone")
    );
}

#[test]
fn zero_actions_are_refused_naming_spec_action() {
    let (field, message) = error("schedule: \"@hourly\"\naction: {}");
    assert_eq!(field, "spec.action");
    assert_eq!(
        message,
        "exactly one of http, exec, job, app must be set; none is"
    );
}

#[test]
fn two_actions_are_refused_naming_both() {
    let (field, message) = error(
        "schedule: \"@hourly\"\naction: {http: {url: \"https://example.com\"}, exec: {command: [date]}}",
    );
    assert_eq!(field, "spec.action");
    assert_eq!(
        message,
        "exactly one of http, exec, job, app must be set; found http and exec"
    );
}

#[test]
fn starting_deadline_seconds_must_be_positive() {
    for bad in [0, -5] {
        let (field, message) = error(&http_with(&format!("startingDeadlineSeconds: {bad}")));
        assert_eq!(field, "spec.startingDeadlineSeconds");
        assert_eq!(message, format!("must be at least 1 second, got {bad}"));
    }
    assert_valid(&http_with("startingDeadlineSeconds: 1"));
}

#[test]
fn timeout_seconds_must_be_between_one_second_and_seven_days() {
    for bad in [0, -1, 604_801] {
        let (field, message) = error(&http_with(&format!("timeoutSeconds: {bad}")));
        assert_eq!(field, "spec.timeoutSeconds");
        assert!(message.ends_with(&format!("got {bad}")), "{message}");
    }
    assert_valid(&http_with("timeoutSeconds: 1"));
    assert_valid(&http_with("timeoutSeconds: 604800"));
}

#[test]
fn retry_max_attempts_must_be_between_1_and_100() {
    for bad in [0, 101] {
        let (field, _) = error(&http_with(&format!("retry: {{maxAttempts: {bad}}}")));
        assert_eq!(field, "spec.retry.maxAttempts");
    }
    assert_valid(&http_with("retry: {maxAttempts: 1}"));
    assert_valid(&http_with("retry: {maxAttempts: 100}"));
}

#[test]
fn retry_backoffs_must_not_be_negative() {
    let (field, message) = error(&http_with("retry: {initialBackoffSeconds: -1}"));
    assert_eq!(field, "spec.retry.initialBackoffSeconds");
    assert_eq!(message, "must be a number between 0 and 86400, got -1");
    let (field, _) = error(&http_with(
        "retry: {initialBackoffSeconds: 0, maxBackoffSeconds: -0.5}",
    ));
    assert_eq!(field, "spec.retry.maxBackoffSeconds");
    assert_valid(&http_with(
        "retry: {initialBackoffSeconds: 0, maxBackoffSeconds: 0}",
    ));
}

#[test]
fn retry_initial_backoff_above_the_maximum_is_refused() {
    let (field, message) = error(&http_with(
        "retry: {initialBackoffSeconds: 90, maxBackoffSeconds: 60}",
    ));
    assert_eq!(field, "spec.retry.initialBackoffSeconds");
    assert_eq!(message, "90 is greater than maxBackoffSeconds (60)");
}

#[test]
fn retry_multiplier_below_one_is_refused() {
    let (field, _) = error(&http_with("retry: {multiplier: 0.5}"));
    assert_eq!(field, "spec.retry.multiplier");
    assert_valid(&http_with("retry: {multiplier: 1}"));
}

#[test]
fn retry_jitter_outside_zero_to_one_is_refused() {
    for bad in ["-0.1", "1.5"] {
        let (field, _) = error(&http_with(&format!("retry: {{jitter: {bad}}}")));
        assert_eq!(field, "spec.retry.jitter");
    }
    assert_valid(&http_with("retry: {jitter: 0}"));
    assert_valid(&http_with("retry: {jitter: 1}"));
}

#[test]
fn retry_numbers_that_are_not_finite_are_refused() {
    let errors = errors(&http_with(
        "retry: {initialBackoffSeconds: .nan, maxBackoffSeconds: .inf, multiplier: .nan, jitter: -.inf}",
    ));
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.retry.initialBackoffSeconds",
            "spec.retry.maxBackoffSeconds",
            "spec.retry.multiplier",
            "spec.retry.jitter"
        ]
    );
    assert!(
        errors[0].message.ends_with("got NaN"),
        "{}",
        errors[0].message
    );
}

#[test]
fn history_limits_above_100_are_refused() {
    let errors = errors(&http_with(
        "successfulRunsHistoryLimit: 101\nfailedRunsHistoryLimit: 1000",
    ));
    assert_eq!(
        errors,
        [
            FieldError::new(
                "spec.successfulRunsHistoryLimit",
                "must be at most 100, got 101"
            ),
            FieldError::new(
                "spec.failedRunsHistoryLimit",
                "must be at most 100, got 1000"
            ),
        ]
    );
    assert_valid(&http_with(
        "successfulRunsHistoryLimit: 100\nfailedRunsHistoryLimit: 0",
    ));
}

#[test]
fn http_urls_must_be_absolute_http_or_https_urls_with_a_host() {
    for (url, expected) in [
        ("/jobs/report", "relative URL without a base"),
        ("billing-api:8080/jobs", "has scheme \"billing-api\""),
        ("ftp://files.example.com/x", "has scheme \"ftp\""),
        ("http://", "empty host"),
        ("https://exa mple.com/", "invalid"),
        ("file:///etc/passwd", "has scheme \"file\""),
    ] {
        let spec = format!("schedule: \"@hourly\"\naction: {{http: {{url: \"{url}\"}}}}");
        let (field, message) = error(&spec);
        assert_eq!(field, "spec.action.http.url", "{url}");
        assert!(message.contains(expected), "{url}: {message}");
        assert!(
            message.contains(url),
            "the message quotes the URL: {message}"
        );
    }
    for url in [
        "https://example.com",
        "http://10.0.0.7:8080/hook?x=1",
        "http://[::1]:9000/",
        "http://billing-api.billing.svc.cluster.local/jobs",
    ] {
        assert_valid(&format!(
            "schedule: \"@hourly\"\naction: {{http: {{url: \"{url}\"}}}}"
        ));
    }
}

#[test]
fn http_urls_carrying_a_password_are_refused_because_specs_are_not_secret() {
    let (field, message) =
        error("schedule: \"@hourly\"\naction: {http: {url: \"https://bob:hunter2@example.com/\"}}");
    assert_eq!(field, "spec.action.http.url");
    assert!(message.contains("valueFrom.secretKeyRef"), "{message}");
    assert!(!message.contains("hunter2"), "the password is not echoed");
}

#[test]
fn http_bodies_over_64_kib_are_refused_with_their_size() {
    let at_limit = "a".repeat(65_536);
    assert_valid(&http_action_with(&format!("body: {at_limit}")));
    let (field, message) = error(&http_action_with(&format!("body: {at_limit}é")));
    assert_eq!(field, "spec.action.http.body");
    assert_eq!(message, "body is 65538 bytes; the limit is 65536");
}

#[test]
fn header_names_must_be_http_tokens() {
    for (name, bad) in [("X Trace", "' '"), ("X:Trace", "':'"), ("Ünicode", "'Ü'")] {
        let (field, message) = error(&http_action_with(&format!(
            "headers: [{{name: \"{name}\", value: v}}]"
        )));
        assert_eq!(field, "spec.action.http.headers[0].name");
        assert!(message.contains(name) && message.contains(bad), "{message}");
    }
    let (field, message) = error(&http_action_with("headers: [{name: \"\", value: v}]"));
    assert_eq!(field, "spec.action.http.headers[0].name");
    assert_eq!(message, "header name is empty");
    assert_valid(&http_action_with(
        "headers: [{name: X-Request-Source, value: raftcron}, {name: \"x_b!#$%&'*+.^`|~1\", value: v}]",
    ));
}

#[test]
fn raftcron_headers_are_reserved_in_any_letter_case() {
    for name in ["Raftcron-Run-Id", "raftcron-attempt", "RAFTCRON-Anything"] {
        let (field, message) = error(&http_action_with(&format!(
            "headers: [{{name: Accept, value: '*/*'}}, {{name: {name}, value: forged}}]"
        )));
        assert_eq!(field, "spec.action.http.headers[1].name");
        assert!(message.contains("reserved"), "{message}");
    }
    assert_valid(&http_action_with("headers: [{name: Raftcron, value: v}]"));
}

#[test]
fn a_header_needs_exactly_one_of_value_and_value_from() {
    let (field, message) = error(&http_action_with(
        "headers: [{name: Authorization, value: x, valueFrom: {secretKeyRef: {name: api, key: token}}}]",
    ));
    assert_eq!(field, "spec.action.http.headers[0]");
    assert_eq!(
        message,
        "exactly one of value and valueFrom must be set; both are"
    );
    let (field, message) = error(&http_action_with("headers: [{name: Authorization}]"));
    assert_eq!(field, "spec.action.http.headers[0]");
    assert_eq!(
        message,
        "exactly one of value and valueFrom must be set; neither is"
    );
}

#[test]
fn header_values_with_line_breaks_are_refused() {
    let (field, message) = error(&http_action_with(
        "headers: [{name: X-Note, value: \"a\\r\\nInjected: yes\"}]",
    ));
    assert_eq!(field, "spec.action.http.headers[0].value");
    assert!(message.contains("'\\r'"), "{message}");
    assert_valid(&http_action_with(
        "headers: [{name: X-Note, value: \"tab\\tok é\"}]",
    ));
}

#[test]
fn secret_references_must_name_a_valid_secret_and_key() {
    let errors = errors(&http_action_with(
        "headers: [{name: Authorization, valueFrom: {secretKeyRef: {name: Api_Token, key: \"to ken\"}}}]",
    ));
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.action.http.headers[0].valueFrom.secretKeyRef.name",
            "spec.action.http.headers[0].valueFrom.secretKeyRef.key"
        ]
    );
    assert_valid(&http_action_with(
        "headers: [{name: Authorization, valueFrom: {secretKeyRef: {name: api.tokens, key: .dockercfg_v-2}}}]",
    ));
}

#[test]
fn success_codes_must_be_http_status_codes() {
    let errors = errors(&http_action_with("successCodes: [200, 99, 600]"));
    assert_eq!(
        errors,
        [
            FieldError::new(
                "spec.action.http.successCodes[1]",
                "99 is not an HTTP status code (100 to 599)"
            ),
            FieldError::new(
                "spec.action.http.successCodes[2]",
                "600 is not an HTTP status code (100 to 599)"
            ),
        ]
    );
    assert_valid(&http_action_with("successCodes: [100, 599]"));
}

#[test]
fn too_many_headers_are_refused() {
    let headers: Vec<String> = (0..65)
        .map(|i| format!("{{name: X-{i}, value: v}}"))
        .collect();
    let (field, message) = error(&http_action_with(&format!(
        "headers: [{}]",
        headers.join(", ")
    )));
    assert_eq!(field, "spec.action.http.headers");
    assert_eq!(message, "65 headers; the limit is 64");
}

#[test]
fn an_exec_action_without_a_command_is_refused() {
    let (field, message) = error(&exec_with("command: []"));
    assert_eq!(field, "spec.action.exec.command");
    assert!(message.starts_with("command is empty"), "{message}");
}

#[test]
fn an_exec_action_with_an_empty_program_name_is_refused() {
    let (field, message) = error(&exec_with("command: [\"\", \"-c\", \"date\"]"));
    assert_eq!(field, "spec.action.exec.command[0]");
    assert_eq!(message, "the program name is empty");
}

#[test]
fn exec_arguments_with_nul_characters_are_refused() {
    let (field, _) = error(&exec_with("command: [echo, \"a\\0b\"]"));
    assert_eq!(field, "spec.action.exec.command[1]");
}

#[test]
fn exec_environment_names_must_be_non_empty_without_equals_signs() {
    let errors = errors(&exec_with(
        "command: [env]\nenv: [{name: OK, value: x}, {name: \"\", value: x}, {name: \"A=B\", value: x}]",
    ));
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.action.exec.env[1].name",
            "spec.action.exec.env[2].name"
        ]
    );
    assert_eq!(errors[0].message, "variable name is empty");
}

#[test]
fn raftcron_environment_variables_are_reserved() {
    let (field, message) = error(&exec_with(
        "command: [env]\nenv: [{name: RAFTCRON_RUN_ID, value: forged}]",
    ));
    assert_eq!(field, "spec.action.exec.env[0].name");
    assert!(message.contains("reserved"), "{message}");
}

#[test]
fn an_empty_working_directory_is_refused() {
    let (field, _) = error(&exec_with("command: [pwd]\nworkingDir: \"\""));
    assert_eq!(field, "spec.action.exec.workingDir");
}

#[test]
fn a_job_template_without_a_spec_is_refused() {
    let (field, message) =
        error("schedule: \"@daily\"\naction: {job: {template: {metadata: {labels: {a: b}}}}}");
    assert_eq!(field, "spec.action.job.template.spec");
    assert!(
        message.starts_with("the Job template needs a spec"),
        "{message}"
    );
}

#[test]
fn a_job_template_needs_containers_and_a_restart_policy_a_job_accepts() {
    let errors = errors(
        "schedule: \"@daily\"\naction: {job: {template: {spec: {template: {spec: {containers: []}}}}}}",
    );
    assert_eq!(
        errors,
        [
            FieldError::new(
                "spec.action.job.template.spec.template.spec.containers",
                "a Job needs at least one container"
            ),
            FieldError::new(
                "spec.action.job.template.spec.template.spec.restartPolicy",
                "must be Never or OnFailure for a Job, got nothing (the pod default, Always)"
            ),
        ]
    );
    let always = JOB_ACTION.replace("restartPolicy: Never", "restartPolicy: Always");
    let (field, message) = error(&always);
    assert_eq!(
        field,
        "spec.action.job.template.spec.template.spec.restartPolicy"
    );
    assert!(message.ends_with("got \"Always\""), "{message}");
}

#[test]
fn every_error_of_a_spec_is_reported_in_field_order() {
    let errors = errors(
        "schedule: \"@every 500ms\"\ntimeoutSeconds: 0\nretry: {maxAttempts: 0}\naction: {}",
    );
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.schedule",
            "spec.timeoutSeconds",
            "spec.retry.maxAttempts",
            "spec.action"
        ]
    );
}

#[test]
fn valid_names_and_namespaces_are_accepted() {
    for (namespace, name) in [
        ("default", "nightly-report"),
        ("billing-2", "report.v2"),
        ("a", "0"),
        (&*"n".repeat(63), &*"a".repeat(253)),
    ] {
        assert_eq!(validate_name(namespace, name), Ok(()), "{namespace}/{name}");
    }
}

#[test]
fn names_that_are_not_dns_subdomains_are_refused_naming_metadata_name() {
    for name in [
        "Nightly",
        "-report",
        "report-",
        "a..b",
        "a_b",
        "",
        &*"a".repeat(254),
    ] {
        let ValidationErrors(errors) = validate_name("default", name).unwrap_err();
        assert_eq!(errors.len(), 1, "{name}");
        assert_eq!(errors[0].field, "metadata.name", "{name}");
    }
}

#[test]
fn namespaces_that_are_not_dns_labels_are_refused_naming_metadata_namespace() {
    for namespace in ["Billing", "billing.eu", "", "-x", &*"n".repeat(64)] {
        let ValidationErrors(errors) = validate_name(namespace, "report").unwrap_err();
        assert_eq!(errors.len(), 1, "{namespace}");
        assert_eq!(errors[0].field, "metadata.namespace", "{namespace}");
    }
    let errors = validate_name("Billing", "Report").unwrap_err();
    assert_eq!(
        errors.to_string(),
        "metadata.namespace: \"Billing\" is not a DNS-1123 label: use lower case letters, digits and '-', starting and ending with a letter or digit; \
         metadata.name: \"Report\" is not a DNS-1123 subdomain: use lower case letters, digits, '-' and '.', starting and ending with a letter or digit"
    );
}

#[test]
fn validate_job_reports_name_and_spec_errors_together() {
    let mut bad = job("schedule: \"@hourly\"\naction: {}");
    bad.metadata.name = Some("Bad_Name".to_string());
    let ValidationErrors(errors) = validate_job(&bad).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["metadata.name", "spec.action"]);

    let mut unnamed = job(&http_with(""));
    unnamed.metadata.name = None;
    assert_eq!(
        validate_job(&unnamed).unwrap_err().to_string(),
        "metadata.name: name is required"
    );

    let mut no_namespace = job(&http_with(""));
    no_namespace.metadata.namespace = None;
    assert!(validate_job(&no_namespace).is_ok());
}

#[test]
fn an_app_action_names_its_app_and_a_path_starting_with_a_slash() {
    assert_valid("schedule: \"@hourly\"\naction: {app: {name: web, path: /jobs/report?x=1}}");
    let (field, message) = error("schedule: \"@hourly\"\naction: {app: {name: web, path: jobs}}");
    assert_eq!(field, "spec.action.app.path");
    assert!(message.contains("must start with /"), "{message}");
    let (field, _) = error("schedule: \"@hourly\"\naction: {app: {name: \"Web App\"}}");
    assert_eq!(field, "spec.action.app.name");
}

#[test]
fn an_app_action_refuses_secret_headers_naming_the_field() {
    let (field, message) = error(
        "schedule: \"@hourly\"\naction: {app: {name: web, headers: [{name: X-Token, valueFrom: {secretKeyRef: {name: s, key: k}}}]}}",
    );
    assert_eq!(field, "spec.action.app.headers[0].valueFrom");
    assert!(
        message.contains("not supported for app actions"),
        "{message}"
    );
}

#[test]
fn a_due_time_alone_is_a_one_shot_and_a_bad_one_names_the_field() {
    assert_valid(
        "dueTime: \"2030-01-01T00:00:00Z\"\naction: {http: {url: \"https://example.com\"}}",
    );
    let (field, message) =
        error("dueTime: \"tomorrow\"\naction: {http: {url: \"https://example.com\"}}");
    assert_eq!(field, "spec.dueTime");
    assert!(message.contains("RFC 3339"), "{message}");
    let (field, _) = error("action: {http: {url: \"https://example.com\"}}");
    assert_eq!(field, "spec.schedule");
}

#[test]
fn repeats_of_zero_are_refused() {
    let (field, message) =
        error("schedule: \"@hourly\"\nrepeats: 0\naction: {http: {url: \"https://example.com\"}}");
    assert_eq!(field, "spec.repeats");
    assert!(message.contains("at least 1"), "{message}");
}
