use std::fs;
use std::path::Path;

use raftcron_crds::ScheduledJob;

use super::load_path;

/// A valid job named `name`, as YAML with a trailing newline (9 lines):
/// the fixture of raftcron_crds::yaml's tests, so the line numbers match.
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

fn write(dir: &Path, relative: &str, text: &str) {
    let path = dir.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn a_directory_is_loaded_recursively_in_path_order_yaml_files_only() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "b.yaml", &job_yaml("b"));
    write(dir.path(), "a.yml", &job_yaml("a"));
    write(dir.path(), "nested/c.YAML", &job_yaml("c"));
    write(dir.path(), "README.md", "not yaml");
    write(dir.path(), "notes.txt", &job_yaml("ignored"));
    let loaded = load_path(dir.path()).unwrap();
    let files: Vec<String> = loaded
        .iter()
        .map(|(path, _)| path.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    assert_eq!(files, ["a.yml", "b.yaml", "nested/c.YAML"]);
    let jobs: Vec<ScheduledJob> = loaded.into_iter().map(|(_, job)| job).collect();
    assert_eq!(names(&jobs), ["default/a", "default/b", "default/c"]);
}

#[test]
fn a_single_file_is_loaded_whatever_its_extension() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "jobs.txt", &job_yaml("one"));
    let loaded = load_path(&dir.path().join("jobs.txt")).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].0, dir.path().join("jobs.txt"));
}

#[test]
fn hidden_entries_are_skipped_so_configmap_mounts_load_each_file_once() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "..2026_01_01_00_00_00.123/job.yaml",
        &job_yaml("job"),
    );
    write(dir.path(), ".hidden.yaml", &job_yaml("hidden"));
    std::os::unix::fs::symlink(
        dir.path().join("..2026_01_01_00_00_00.123"),
        dir.path().join("..data"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("..data/job.yaml"),
        dir.path().join("job.yaml"),
    )
    .unwrap();
    let loaded = load_path(dir.path()).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].0, dir.path().join("job.yaml"));
}

#[test]
fn a_symlink_loop_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "jobs/a.yaml", &job_yaml("a"));
    std::os::unix::fs::symlink(dir.path(), dir.path().join("jobs/loop")).unwrap();
    assert_eq!(load_path(dir.path()).unwrap().len(), 1);
}

#[test]
fn the_same_job_in_two_files_is_refused_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &job_yaml("twin"));
    write(
        dir.path(),
        "b.yaml",
        &format!("{}---\n{}", job_yaml("other"), job_yaml("twin")),
    );
    let error = load_path(dir.path()).unwrap_err();
    let a = dir.path().join("a.yaml").display().to_string();
    let b = dir.path().join("b.yaml").display().to_string();
    assert_eq!(error.source, b);
    assert_eq!(error.document, 2);
    assert_eq!(error.line, Some(14));
    assert_eq!(
        error.message,
        format!("ScheduledJob default/twin is defined twice: also in {a} (document 1)")
    );
}

#[test]
fn an_error_in_a_file_names_that_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good.yaml", &job_yaml("good"));
    write(
        dir.path(),
        "sub/bad.yaml",
        &job_yaml("bad").replace("@hourly", "@sometimes"),
    );
    let error = load_path(dir.path()).unwrap_err();
    assert_eq!(
        error.source,
        dir.path().join("sub/bad.yaml").display().to_string()
    );
    assert_eq!(error.line, Some(6));
    assert_eq!(error.field.as_deref(), Some("spec.schedule"));
}

#[test]
fn a_missing_path_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let error = load_path(&missing).unwrap_err();
    assert_eq!(error.source, missing.display().to_string());
    assert_eq!(error.document, 0);
    assert!(error.to_string().contains(": cannot read: "), "{error}");
}
