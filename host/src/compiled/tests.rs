//! Tests of the code cache: authentication, private files, damage, leftovers.
use super::*;

fn cache_in(dir: &Path) -> CodeCache {
    CodeCache::new(dir.join("code"), dir.join("keys").join("code-cache.key"))
}

#[test]
fn cached_code_is_reused_and_a_damaged_file_is_replaced() {
    let engine = Engine::default();
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path());
    let bytes = EMBEDDED_COMPONENT;
    load_component(&engine, bytes, Some(&cache)).unwrap();
    let path = cache.directory.join(file_name(&identity(&engine, bytes)));
    let written = fs::read(&path).unwrap();
    assert!(written.starts_with(MAGIC));
    load_component(&engine, bytes, Some(&cache)).unwrap();
    fs::write(&path, b"not native code").unwrap();
    load_component(&engine, bytes, Some(&cache)).unwrap();
    assert_eq!(fs::read(&path).unwrap(), written, "rewritten after damage");
}

/// True if `component` is the cache guest (exports the cache interface).
fn is_guest(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with("pcache:cache/cache"))
}

fn leftover_temps(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.contains(".tmp"))
        .collect()
}

#[test]
fn another_components_valid_code_under_the_guests_name_is_not_loaded() {
    let engine = Engine::default();
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path());
    let probe = fs::read(persistent_cache_tests::PROBE_PLUGIN).unwrap();
    let loaded = load_component(&engine, &probe, Some(&cache)).unwrap();
    assert!(!is_guest(&engine, &loaded));
    let probe_file = cache.directory.join(file_name(&identity(&engine, &probe)));
    let guest_file = cache
        .directory
        .join(file_name(&identity(&engine, EMBEDDED_COMPONENT)));
    // A file this user's key signed, but for another component, put under the guest's name.
    fs::copy(&probe_file, &guest_file).unwrap();
    let loaded = load_component(&engine, EMBEDDED_COMPONENT, Some(&cache)).unwrap();
    assert!(
        is_guest(&engine, &loaded),
        "the probe's code was loaded as the guest"
    );
    // Replaced by the guest's own code, which now loads from the file.
    assert_ne!(
        fs::read(&guest_file).unwrap(),
        fs::read(&probe_file).unwrap()
    );
    let loaded = load_component(&engine, EMBEDDED_COMPONENT, Some(&cache)).unwrap();
    assert!(is_guest(&engine, &loaded));
}

#[test]
fn code_signed_with_another_key_is_refused() {
    let engine = Engine::default();
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path());
    let path = cache
        .directory
        .join(file_name(&identity(&engine, EMBEDDED_COMPONENT)));
    // An attacker who can write the directory but not read the key: real native code for
    // the probe, with a MAC made under a key of their own.
    ensure_private_dir(&cache.directory).unwrap();
    let probe = fs::read(persistent_cache_tests::PROBE_PLUGIN).unwrap();
    let code = Component::new(&engine, &probe)
        .unwrap()
        .serialize()
        .unwrap();
    let their_key = [7u8; KEY_LEN];
    let id = identity(&engine, EMBEDDED_COMPONENT);
    let mut forged = MAGIC.to_vec();
    forged.extend_from_slice(&mac(&their_key, &id, &code));
    forged.extend_from_slice(&code);
    fs::write(&path, &forged).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let key = load_or_create_key(&cache.key_file).unwrap();
    assert!(
        read_verified(&path, &key, &id).is_err(),
        "forged MAC accepted"
    );
    let loaded = load_component(&engine, EMBEDDED_COMPONENT, Some(&cache)).unwrap();
    assert!(is_guest(&engine, &loaded));
    assert_ne!(
        fs::read(&path).unwrap(),
        forged,
        "the forged file was replaced"
    );
}

#[test]
fn a_directory_of_another_user_or_a_symlink_is_not_used() {
    let engine = Engine::default();
    let dir = tempfile::tempdir().unwrap();
    // Owned by someone else (the tests may run as root, who can hand it over).
    let foreign = dir.path().join("foreign");
    fs::create_dir(&foreign).unwrap();
    fs::set_permissions(&foreign, fs::Permissions::from_mode(0o700)).unwrap();
    if euid() == 0 {
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        let cache = CodeCache::new(&foreign, dir.path().join("k1"));
        assert!(prepare(&cache).is_err());
        load_component(&engine, EMBEDDED_COMPONENT, Some(&cache)).unwrap();
        assert_eq!(fs::read_dir(&foreign).unwrap().count(), 0, "wrote into it");
    }
    // A symlink to a private directory is not followed.
    let real = dir.path().join("real");
    fs::DirBuilder::new().mode(0o700).create(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let cache = CodeCache::new(&link, dir.path().join("k2"));
    let err = prepare(&cache).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    load_component(&engine, EMBEDDED_COMPONENT, Some(&cache)).unwrap();
    assert_eq!(
        fs::read_dir(&real).unwrap().count(),
        0,
        "wrote through the link"
    );
    // Our own directory left open by an older version is closed, then used.
    let open = dir.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let cache = CodeCache::new(&open, dir.path().join("keys/k3"));
    load_component(&engine, EMBEDDED_COMPONENT, Some(&cache)).unwrap();
    assert_eq!(fs::metadata(&open).unwrap().mode() & 0o777, 0o700);
    assert_eq!(fs::read_dir(&open).unwrap().count(), 1);
    let key_mode = fs::metadata(dir.path().join("keys/k3")).unwrap().mode();
    assert_eq!(key_mode & 0o777, 0o600);
}

#[test]
fn a_symlinked_code_file_is_not_followed_and_a_readable_key_is_replaced() {
    let engine = Engine::default();
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path());
    load_component(&engine, EMBEDDED_COMPONENT, Some(&cache)).unwrap();
    let path = cache
        .directory
        .join(file_name(&identity(&engine, EMBEDDED_COMPONENT)));
    let elsewhere = dir.path().join("elsewhere.cwasm");
    fs::rename(&path, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    let key = load_or_create_key(&cache.key_file).unwrap();
    let id = identity(&engine, EMBEDDED_COMPONENT);
    assert!(
        read_verified(&path, &key, &id).is_err(),
        "followed the symlink"
    );
    // A key others can read is replaced, so code it signed no longer loads.
    fs::set_permissions(&cache.key_file, fs::Permissions::from_mode(0o644)).unwrap();
    let new_key = load_or_create_key(&cache.key_file).unwrap();
    assert_ne!(new_key, key);
    assert!(read_verified(&elsewhere, &new_key, &id).is_err());
}

#[test]
fn a_failed_store_leaves_no_temp_file_and_old_leftovers_go() {
    let engine = Engine::default();
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_in(dir.path());
    ensure_private_dir(&cache.directory).unwrap();
    // The rename cannot replace a non-empty directory under the file's name.
    let path = cache
        .directory
        .join(file_name(&identity(&engine, EMBEDDED_COMPONENT)));
    fs::create_dir(&path).unwrap();
    fs::write(path.join("x"), b"x").unwrap();
    for _ in 0..3 {
        load_component(&engine, EMBEDDED_COMPONENT, Some(&cache)).unwrap();
    }
    assert_eq!(leftover_temps(&cache.directory), Vec::<String>::new());
    fs::remove_dir_all(&path).unwrap();
    // What version 0.1 left: unauthenticated code and a temp file of a killed process.
    fs::write(cache.directory.join("guest-0123456789abcdef.cwasm"), b"old").unwrap();
    fs::write(cache.directory.join("guest-0123456789abcdef.tmp42"), b"old").unwrap();
    load_component(&engine, EMBEDDED_COMPONENT, Some(&cache)).unwrap();
    let mut names: Vec<String> = fs::read_dir(&cache.directory)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [file_name(&identity(&engine, EMBEDDED_COMPONENT))]);
}

#[test]
fn the_embedded_digest_is_the_components_sha256() {
    let computed: [u8; 32] = Sha256::digest(EMBEDDED_COMPONENT).into();
    assert_eq!(component_digest(EMBEDDED_COMPONENT), computed);
    // A copy of the same bytes elsewhere in memory is hashed, with the same result.
    let copy: Vec<u8> = EMBEDDED_COMPONENT.into();
    assert_eq!(component_digest(&copy), computed);
}

#[test]
fn reading_a_component_is_bounded() {
    let err = read_bounded(File::open("/dev/zero").unwrap(), 1 << 20, "a component").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("1 MiB"), "{err}");
}
