use super::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(im_events::testing::property_cases()))]

    /// Store URIs from the environment never panic the parser, in any
    /// shape (the fuzzing of issue 13).
    #[test]
    fn hostile_store_uris_never_panic(
        scheme in prop::sample::select(vec!["scylla://", "sqlite://", "", "SCYLLA://", "scylla:/"]),
        rest in "\\PC{0,80}",
        query in "[a-z=&%?0-9_]{0,40}",
    ) {
        let uri = format!("{scheme}{rest}?{query}");
        let _ = StoreUri::parse(Some(&uri), Path::new("./data"));
        let _ = StoreUri::parse(Some(&format!("{scheme}{rest}")), Path::new("./data"));
    }
}

#[test]
fn store_uris_select_the_backend() {
    let data = Path::new("./data");
    assert_eq!(
        StoreUri::parse(None, data).unwrap(),
        StoreUri::Sqlite(data.into())
    );
    assert_eq!(
        StoreUri::parse(Some(""), data).unwrap(),
        StoreUri::Sqlite(data.into())
    );
    assert_eq!(
        StoreUri::parse(Some("sqlite:///var/lib/im"), data).unwrap(),
        StoreUri::Sqlite("/var/lib/im".into())
    );
    #[cfg(feature = "scylla")]
    match StoreUri::parse(Some("scylla://a,b/im"), data).unwrap() {
        StoreUri::Scylla(config) => assert_eq!(config.keyspace, "im"),
        other => panic!("{other:?}"),
    }
    #[cfg(not(feature = "scylla"))]
    assert!(StoreUri::parse(Some("scylla://a,b/im"), data)
        .unwrap_err()
        .to_string()
        .contains("no ScyllaDB backend"));
    assert!(StoreUri::parse(Some("postgres://x"), data).is_err());
    assert!(StoreUri::parse(Some("sqlite://"), data).is_err());
    assert!(StoreUri::parse(Some("scylla://h"), data).is_err());
}

#[test]
fn the_embedded_backend_opens_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::new(StoreUri::parse(None, dir.path()).unwrap());
    let conversations = stores.conversations(Some(Durability::Normal)).unwrap();
    assert!(conversations.conversation("g:x").unwrap().is_none());
    stores.users(None).unwrap();
    stores.notifications(None).unwrap();
    assert!(dir.path().join(sqlite::CONVERSATIONS_FILE).exists());
}
