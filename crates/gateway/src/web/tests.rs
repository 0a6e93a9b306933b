use super::*;

#[test]
fn only_files_under_the_root_are_served() {
    let root = Path::new("/srv/app");
    assert_eq!(
        resolve(root, "app/index.html"),
        Some(PathBuf::from("/srv/app/app/index.html"))
    );
    for hostile in ["../secret", "app/../../x", "/etc/passwd", "", "./app.js"] {
        assert_eq!(resolve(root, hostile), None, "{hostile}");
    }
    assert_eq!(
        content_type(Path::new("a/b.js")),
        "text/javascript; charset=utf-8"
    );
}
