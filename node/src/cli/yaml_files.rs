//! Reading `ScheduledJob` YAML files for `raftcron-node local` and
//! `raftcronctl apply -f`: the file system half of loading. Parsing and
//! validation are pure and live in `raftcron_crds::yaml`.
//!
//! ```text
//!  file or directory ──load_path──► each *.yaml / *.yml, in path order
//!                                     └─► raftcron_crds::yaml::parse_located(text, file name)
//!  Vec<(file, ScheduledJob)> or LoadError "file:line:col: field: message"
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use raftcron_crds::ScheduledJob;
use raftcron_crds::yaml::{LoadError, parse_located};

/// Reads a file, or every `*.yaml` / `*.yml` file under a directory
/// (recursively, in path order, skipping names that start with `.`), and
/// parses each. A namespace/name defined twice, in one file or across files,
/// is an error naming both places.
///
/// Hidden entries are skipped because a ConfigMap mounted as a directory
/// holds every file twice: as `name.yaml` and inside `..<timestamp>/`.
pub fn load_path(path: &Path) -> Result<Vec<(PathBuf, ScheduledJob)>, LoadError> {
    let files = if std::fs::metadata(path)
        .map_err(|e| io_error(path, &e))?
        .is_dir()
    {
        let mut files = Vec::new();
        collect_yaml_files(path, &mut Vec::new(), &mut files)?;
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };

    let mut jobs = Vec::new();
    let mut seen: HashMap<(String, String), (String, usize)> = HashMap::new();
    for file in files {
        let source = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|e| io_error(&file, &e))?;
        for located in parse_located(&text, &source)? {
            let (namespace, name) = located.key();
            let key = (namespace.to_string(), name.to_string());
            if let Some((first_source, first_document)) =
                seen.insert(key, (source.clone(), located.document))
            {
                return Err(LoadError::defined_twice(
                    &source,
                    located.document,
                    located.line,
                    located.key(),
                    &first_source,
                    first_document,
                ));
            }
            jobs.push((file.clone(), located.job));
        }
    }
    Ok(jobs)
}

fn collect_yaml_files(
    dir: &Path,
    visited: &mut Vec<PathBuf>,
    files: &mut Vec<PathBuf>,
) -> Result<(), LoadError> {
    // Symlinked directories are followed, so a loop must end somewhere.
    let canonical = std::fs::canonicalize(dir).map_err(|e| io_error(dir, &e))?;
    if visited.contains(&canonical) {
        return Ok(());
    }
    visited.push(canonical);
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, &e))? {
        let entry = entry.map_err(|e| io_error(dir, &e))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let metadata = std::fs::metadata(&path).map_err(|e| io_error(&path, &e))?;
        if metadata.is_dir() {
            collect_yaml_files(&path, visited, files)?;
        } else if path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml"))
        {
            files.push(path);
        }
    }
    Ok(())
}

fn io_error(path: &Path, error: &std::io::Error) -> LoadError {
    LoadError {
        source: path.display().to_string(),
        document: 0,
        line: None,
        column: None,
        field: None,
        message: format!("cannot read: {error}"),
    }
}

#[cfg(test)]
mod tests;
