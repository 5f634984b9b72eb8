//! Hostile Velero tarballs: the reader must refuse them with a clear error, never panic, never
//! follow a link, never write outside its memory bounds. A corpus of crafted archives, then
//! property tests over random and mutated archives.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use proptest::prelude::*;
use serde_json::json;

use drover_kube::velero::{Limits, read_tarball};

/// A gzipped tar built entry by entry.
struct Archive(tar::Builder<GzEncoder<Vec<u8>>>);

impl Archive {
    fn new() -> Archive {
        let mut a = Archive(tar::Builder::new(GzEncoder::new(vec![], Compression::fast())));
        a.file("metadata/version", b"1\n");
        a
    }

    fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    /// A header whose name is written raw (tar's builder refuses `..` and absolute paths).
    fn raw_name(&mut self, name: &[u8], data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn link(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap().finish().unwrap()
    }
}

fn object(name: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name, "namespace": "shop" } }),
    )
    .unwrap()
}

fn read(bytes: &[u8], limits: Limits) -> Result<usize, String> {
    let mut items = 0;
    read_tarball(bytes, "s3://b/backup.tar.gz", limits, |_| {
        items += 1;
        Ok(())
    })
    .map(|_| items)
    .map_err(|e| e.message)
}

#[test]
fn a_good_archive_reads() {
    let mut a = Archive::new();
    a.file("resources/configmaps/namespaces/shop/settings.json", &object("settings"));
    assert_eq!(read(&a.bytes(), Limits::default()), Ok(1));
}

#[test]
fn path_traversal_and_absolute_paths_are_refused() {
    for name in [&b"../../etc/cron.d/x"[..], b"/etc/passwd", b"resources/../../x.json"] {
        let mut a = Archive::new();
        a.raw_name(name, &object("x"));
        let err = read(&a.bytes(), Limits::default()).unwrap_err();
        assert!(err.contains("escapes the archive root"), "{}: {err}", String::from_utf8_lossy(name));
    }
}

#[test]
fn links_are_never_followed() {
    let mut a = Archive::new();
    a.link("resources/configmaps/namespaces/shop/passwd.json", "/etc/passwd");
    a.link("resources/secrets/namespaces/shop/up.json", "../../../../etc/shadow");
    a.file("resources/configmaps/namespaces/shop/settings.json", &object("settings"));
    assert_eq!(read(&a.bytes(), Limits::default()), Ok(1), "links are skipped, the real file is read");
}

#[test]
fn an_oversized_entry_is_refused_before_it_is_read() {
    let mut a = Archive::new();
    a.file("resources/configmaps/namespaces/shop/big.json", &vec![b' '; 2 << 20]);
    let err = read(&a.bytes(), Limits { entry_bytes: 1 << 20, ..Limits::default() }).unwrap_err();
    assert!(err.contains("more than any Kubernetes object"), "{err}");
}

#[test]
fn a_gzip_bomb_stops_at_the_ratio_limit() {
    // 80 MiB of zeros in one entry compress to ~80 KiB: 1000:1.
    let mut a = Archive::new();
    a.file("resources/configmaps/namespaces/shop/bomb.json", &vec![0u8; 80 << 20]);
    let bytes = a.bytes();
    assert!(bytes.len() < 1 << 20, "{}", bytes.len());
    let err = read(&bytes, Limits { entry_bytes: 1 << 30, ..Limits::default() }).unwrap_err();
    assert!(err.contains("decompression bomb"), "{err}");
}

#[test]
fn a_huge_long_name_header_is_bounded_too() {
    // A GNU long-name entry tar would read whole into memory: 80 MiB of name.
    let mut a = Archive::new();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(80 << 20);
    h.set_cksum();
    a.0.append(&h, std::io::repeat(b'a').take(80 << 20)).unwrap();
    let err = read(&a.bytes(), Limits::default()).unwrap_err();
    assert!(err.contains("decompression bomb"), "{err}");
}

#[test]
fn too_many_entries_are_refused() {
    let mut a = Archive::new();
    for i in 0..20 {
        a.file(&format!("resources/configmaps/namespaces/shop/c{i}.json"), &object(&format!("c{i}")));
    }
    let err = read(&a.bytes(), Limits { entries: 10, ..Limits::default() }).unwrap_err();
    assert!(err.contains("more than 10 entries"), "{err}");
}

fn sample() -> Vec<u8> {
    let mut a = Archive::new();
    for i in 0..3 {
        a.file(&format!("resources/configmaps/namespaces/shop/c{i}.json"), &object(&format!("c{i}")));
    }
    a.bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = read(&bytes, Limits::default());
    }

    #[test]
    fn mutated_archives_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16)) {
        let mut bytes = sample();
        for (at, value) in flips {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        let _ = read(&bytes, Limits::default());
    }

    #[test]
    fn mutated_tar_inside_good_gzip_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16)) {
        // Damage the tar, not the gzip framing, so the tar parser sees the damage.
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        let data = object("c0");
        h.set_size(data.len() as u64);
        h.set_cksum();
        tar.append_data(&mut h, "resources/configmaps/namespaces/shop/c0.json", &data[..]).unwrap();
        let mut raw = tar.into_inner().unwrap();
        for (at, value) in flips {
            let i = at % raw.len();
            raw[i] = value;
        }
        let mut gz = GzEncoder::new(vec![], Compression::fast());
        gz.write_all(&raw).unwrap();
        let _ = read(&gz.finish().unwrap(), Limits::default());
    }
}
