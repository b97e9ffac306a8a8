//! The repository stands alone: no file reads or points to anything beside the checkout.

use std::path::Path;

/// Every file under `dir`, skipping build outputs and version control.
fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if !matches!(name.as_ref(), "target" | ".git" | "corpus" | "artifacts") {
                files(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}

#[test]
fn no_file_refers_to_a_folder_beside_the_checkout() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let outside = concat!("..", "/shared");
    let mut all = Vec::new();
    files(root, &mut all);
    let offenders: Vec<String> = all
        .iter()
        .filter(|p| std::fs::read(p).is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(outside)))
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .collect();
    assert!(all.len() > 50, "walked {} files", all.len());
    assert!(offenders.is_empty(), "files that refer to {outside}: {offenders:?}");
}
