//! Builds libzmq 4.3.4 from source (zeromq-src), with CURVE when libsodium is found.
//!
//! Changed for corral (see CORRAL.md): upstream calls `.with_libsodium(None)`, which builds
//! libzmq without CurveZMQ. This script looks for an installed libsodium (its static
//! library, which zeromq-src links) and passes it on; without one it builds as upstream
//! does and says how to get CURVE.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a libsodium was found: the folder holding `libsodium.a` and the one holding
/// `sodium.h`.
struct Sodium {
    lib_dir: PathBuf,
    include_dir: PathBuf,
    found_by: &'static str,
}

fn has_sodium(lib_dir: &Path, include_dir: &Path) -> bool {
    lib_dir.join("libsodium.a").is_file() && include_dir.join("sodium.h").is_file()
}

/// `SODIUM_LIB_DIR` and `SODIUM_INCLUDE_DIR`, when both are set.
fn from_env() -> Option<Sodium> {
    let lib_dir = PathBuf::from(env::var_os("SODIUM_LIB_DIR")?);
    let include_dir = PathBuf::from(env::var_os("SODIUM_INCLUDE_DIR")?);
    if !has_sodium(&lib_dir, &include_dir) {
        println!(
            "cargo:warning=SODIUM_LIB_DIR/SODIUM_INCLUDE_DIR do not hold libsodium.a and sodium.h"
        );
        return None;
    }
    Some(Sodium {
        lib_dir,
        include_dir,
        found_by: "SODIUM_LIB_DIR/SODIUM_INCLUDE_DIR",
    })
}

fn pkg_config_variable(name: &str) -> Option<PathBuf> {
    let out = Command::new("pkg-config")
        .args(["--variable", name, "libsodium"])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| PathBuf::from(text))
}

/// What `pkg-config libsodium` says.
fn from_pkg_config() -> Option<Sodium> {
    let lib_dir = pkg_config_variable("libdir")?;
    let include_dir = pkg_config_variable("includedir")?;
    has_sodium(&lib_dir, &include_dir).then_some(Sodium {
        lib_dir,
        include_dir,
        found_by: "pkg-config",
    })
}

/// Debian's multiarch folder (`libsodium-dev`), then the usual prefixes.
fn from_standard_paths() -> Option<Sodium> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env_abi = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let multiarch = format!("/usr/lib/{arch}-{os}-{env_abi}");
    let candidates = [
        (multiarch.as_str(), "/usr/include"),
        ("/usr/lib64", "/usr/include"),
        ("/usr/lib", "/usr/include"),
        ("/usr/local/lib", "/usr/local/include"),
    ];
    candidates.iter().find_map(|(lib, inc)| {
        let (lib_dir, include_dir) = (PathBuf::from(lib), PathBuf::from(inc));
        has_sodium(&lib_dir, &include_dir).then_some(Sodium {
            lib_dir,
            include_dir,
            found_by: "a standard path",
        })
    })
}

pub fn configure() {
    println!("cargo:rerun-if-changed=build/main.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");
    println!("cargo:rerun-if-env-changed=SODIUM_LIB_DIR");
    println!("cargo:rerun-if-env-changed=SODIUM_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let sodium = from_env()
        .or_else(from_pkg_config)
        .or_else(from_standard_paths);
    let mut build = zeromq_src::Build::new();
    match sodium {
        Some(s) => {
            // zeromq-src prints this search path Debug-quoted, which the linker cannot
            // use; say it plainly so `static=sodium` is found.
            println!("cargo:rustc-link-search=native={}", s.lib_dir.display());
            // Rebuild when the library found is replaced (e.g. upgraded).
            println!(
                "cargo:rerun-if-changed={}",
                s.lib_dir.join("libsodium.a").display()
            );
            eprintln!(
                "libsodium found by {} in {} (CURVE enabled)",
                s.found_by,
                s.lib_dir.display()
            );
            build.with_libsodium(Some(zeromq_src::LibLocation::new(
                s.lib_dir,
                s.include_dir,
            )));
        }
        None => {
            println!(
                "cargo:warning=libsodium not found: libzmq is built WITHOUT CurveZMQ \
                 (corral's --enable-curve will be refused). Install it (Debian/Ubuntu: \
                 `apt-get install libsodium-dev`, or `make sodium`), or point \
                 SODIUM_LIB_DIR/SODIUM_INCLUDE_DIR at it, then `cargo clean -p zmq-sys`."
            );
            build.with_libsodium(None);
        }
    }
    // libzmq's own C++ warnings are not corral's to fix, and cargo shows a path
    // dependency's build warnings on every fresh build: compile it quietly unless the
    // user set their own flags.
    println!("cargo:rerun-if-env-changed=CXXFLAGS");
    let mut flags = env::var("CXXFLAGS").unwrap_or_else(|_| "-w".to_string());
    // zeromq-src defines none of what libzmq's own build detects on Linux, so its
    // threads wake each other through a socketpair (a `sendto` and a kernel buffer per
    // wake-up) instead of an eventfd, and its I/O threads go unnamed.
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        for feature in LINUX_FEATURES {
            flags.push_str(&format!(" -D{feature}=1"));
        }
    }
    env::set_var("CXXFLAGS", flags);
    build.build();
}

/// What libzmq's CMake build finds on any Linux with glibc 2.12 or later.
const LINUX_FEATURES: &[&str] = &[
    "ZMQ_HAVE_EVENTFD",
    "ZMQ_HAVE_EVENTFD_CLOEXEC",
    "ZMQ_HAVE_SOCK_CLOEXEC",
    "ZMQ_HAVE_PTHREAD_SETNAME_2",
];

fn main() {
    configure()
}
