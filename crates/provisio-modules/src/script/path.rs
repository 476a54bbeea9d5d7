//! Resolving a server's `executable` setting to a file inside the modules directory.
//!
//! Server settings come from API callers, so the path is untrusted: it must not reach a
//! program outside the directory the operator set aside for modules, whether by an absolute
//! path, `..` or a symbolic link.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use provisio_core::module::ModuleError;

/// Where an executable is and where it runs, both canonical.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub dir: PathBuf,
    pub program: PathBuf,
}

/// The canonical path of `executable` (relative to `modules_dir`), or a permanent error
/// naming what is wrong with it.
pub(crate) fn resolve_executable(
    modules_dir: &Path,
    executable: &str,
) -> Result<Resolved, ModuleError> {
    let resolved = resolve_file(modules_dir, executable)?;
    let meta = std::fs::metadata(&resolved.program).map_err(|e| {
        ModuleError::permanent(format!("executable {executable:?} is not readable: {e}"))
    })?;
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(ModuleError::permanent(format!(
            "executable {executable:?} is not executable (chmod +x it)"
        )));
    }
    Ok(resolved)
}

/// The canonical path of a regular file `executable` inside `modules_dir`, under the same
/// rules but without the execute bit: files an interpreter reads (a WHMCS module's PHP)
/// need none.
pub(crate) fn resolve_file(modules_dir: &Path, executable: &str) -> Result<Resolved, ModuleError> {
    let relative = Path::new(executable);
    if executable.is_empty() {
        return Err(ModuleError::permanent("the executable setting is empty"));
    }
    if relative.is_absolute() {
        return Err(ModuleError::permanent(format!(
            "executable {executable:?} is an absolute path; it must be relative to the modules directory"
        )));
    }
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(ModuleError::permanent(format!(
            "executable {executable:?} contains `..`; it must stay inside the modules directory"
        )));
    }

    let dir = modules_dir.canonicalize().map_err(|e| {
        ModuleError::permanent(format!(
            "modules directory {} is not usable: {e}",
            modules_dir.display()
        ))
    })?;
    let path = dir.join(relative).canonicalize().map_err(|e| {
        ModuleError::permanent(format!(
            "executable {executable:?} not found in the modules directory {}: {e}",
            dir.display()
        ))
    })?;
    // Checked after canonicalisation so that a symbolic link inside the directory cannot
    // point at a program outside it.
    if !path.starts_with(&dir) {
        return Err(ModuleError::permanent(format!(
            "executable {executable:?} resolves to {}, outside the modules directory {}",
            path.display(),
            dir.display()
        )));
    }

    let meta = std::fs::metadata(&path).map_err(|e| {
        ModuleError::permanent(format!("executable {executable:?} is not readable: {e}"))
    })?;
    if !meta.is_file() {
        return Err(ModuleError::permanent(format!(
            "executable {executable:?} is not a regular file"
        )));
    }
    Ok(Resolved { dir, program: path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_script() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("ok.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn a_plain_relative_path_resolves_inside_the_directory() {
        let dir = dir_with_script();
        let resolved = resolve_executable(dir.path(), "./ok.sh").unwrap();
        assert_eq!(resolved.dir, dir.path().canonicalize().unwrap());
        assert_eq!(resolved.program, resolved.dir.join("ok.sh"));
    }

    #[test]
    fn absolute_parent_and_empty_paths_are_refused_before_touching_the_disk() {
        let missing = Path::new("/nonexistent-provisio-modules");
        for (exe, needle) in [
            ("/bin/sh", "absolute"),
            ("../ok.sh", "`..`"),
            ("a/../../ok.sh", "`..`"),
            ("", "empty"),
        ] {
            let err = resolve_executable(missing, exe).unwrap_err();
            assert_eq!(
                err.kind,
                provisio_core::module::ErrorKind::Permanent,
                "{exe}"
            );
            assert!(err.message.contains(needle), "{exe}: {}", err.message);
        }
    }

    #[test]
    fn directories_and_files_without_an_execute_bit_are_refused() {
        let dir = dir_with_script();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("plain.txt"), "").unwrap();
        let err = resolve_executable(dir.path(), "sub").unwrap_err();
        assert!(
            err.message.contains("not a regular file"),
            "{}",
            err.message
        );
        let err = resolve_executable(dir.path(), "plain.txt").unwrap_err();
        assert!(err.message.contains("not executable"), "{}", err.message);
    }
}
