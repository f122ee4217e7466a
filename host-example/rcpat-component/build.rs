//! Builds the rcpat component for hosts to embed, the way wasmtime's
//! `crates/test-programs/artifacts/build.rs` builds its guests: a nested cargo
//! build of the root package for wasm32-unknown-unknown into OUT_DIR, then
//! `wit_component::ComponentEncoder` turns the core module into a component.
//!
//! Two toolchain routes (see ../shared notes and scripts/provision-wasm.sh):
//! rustup's wasm32 target when installed, otherwise Debian's `rustc-web` with
//! the standard library built from `rust-web-src` and linked by `wasm-ld-19`.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_STD_SRC: &str = "/usr/lib/rustlib/src/rust/library";
const DEBIAN_WASM_LD: &str = "/usr/lib/llvm-19/bin/wasm-ld";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    // host-example/rcpat-component -> the repository's root.
    let root = manifest.parent().unwrap().parent().unwrap().to_path_buf();
    let hostile = std::env::var_os("CARGO_FEATURE_HOSTILE_GUEST").is_some();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target_dir = out.join("wasm-target");
    for p in [
        "src",
        "wit",
        "Cargo.toml",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=RCPAT_WASM_ROUTE");
    println!("cargo:rerun-if-env-changed=RCPAT_WASM_OPT");

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let route = std::env::var("RCPAT_WASM_ROUTE").unwrap_or_else(|_| {
        if rustup_has_wasm_std(&rustc) {
            "rustup".into()
        } else {
            "debian".into()
        }
    });

    // getrandom (pulled in by bcrypt) needs its custom backend on this target;
    // setting the flags here replaces .cargo/config.toml's, so repeat them.
    // A 64 KiB shadow stack instead of Rust's 1 MiB default, and 128 KiB of
    // initial memory that the component's bump allocator (src/alloc.rs) uses
    // before it ever grows memory: an instance stays within what the pool
    // keeps resident (runtime.rs). The deepest stack use, JSON nesting, is
    // bounded by serde_json's recursion limit.
    let rustflags = "--cfg\x1fgetrandom_backend=\"custom\"\x1f-Clink-arg=-zstack-size=65536\x1f-Clink-arg=--initial-memory=131072";
    // The component (and the hostile test guest, with that feature), in
    // the workspace's `wasm` profile.
    let mut build_args = vec!["build", "--lib", "-p", "rcpat"];
    if hostile {
        build_args.extend(["-p", "hostile-guest"]);
    }
    build_args.extend(["--profile", "wasm", "--target", TARGET]);
    let mut cmd;
    match route.as_str() {
        "rustup" => {
            cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.args(&build_args);
        }
        "debian" => {
            for p in [DEBIAN_RUSTC, DEBIAN_CARGO, DEBIAN_STD_SRC, DEBIAN_WASM_LD] {
                if !Path::new(p).exists() {
                    panic!(
                        "no wasm32 toolchain: neither rustup's {TARGET} target nor Debian's \
                         rustc-web route ({p} is missing). Run `./dev provision` first."
                    );
                }
            }
            cmd = Command::new(DEBIAN_CARGO);
            cmd.args(&build_args);
            cmd.args(["-Zbuild-std=std,panic_abort"]);
            cmd.env("RUSTC", DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", DEBIAN_WASM_LD);
        }
        other => panic!("RCPAT_WASM_ROUTE must be rustup or debian, not {other}"),
    }
    cmd.current_dir(&root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_PROFILE_RELEASE_DEBUG");
    let status = cmd
        .status()
        .expect("failed to run the nested cargo build of the component");
    assert!(
        status.success(),
        "building the rcpat component for {TARGET} ({route} route) failed"
    );

    let artifacts = target_dir.join(TARGET).join("wasm");
    let guests: &[(&str, &str)] = if hostile {
        &[("rcpat", "rcpat.wasm"), ("hostile_guest", "hostile.wasm")]
    } else {
        &[("rcpat", "rcpat.wasm")]
    };
    for &(core, component) in guests {
        emit_rerun_from_depinfo(&artifacts.join(format!("{core}.d")));
        let mut module = std::fs::read(artifacts.join(format!("{core}.wasm")))
            .expect("the core module was not built");
        if core == "rcpat" {
            module = shrink(module, &out);
        }
        let encoded = wit_component::ComponentEncoder::default()
            .module(&module)
            .and_then(|e| e.validate(true).encode())
            .unwrap_or_else(|e| panic!("encoding the {core} component failed: {e:?}"));
        let encoded = without_custom_section(&encoded, "component-name");
        if core == "rcpat" {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(&encoded);
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            println!("cargo:rustc-env=RCPAT_COMPONENT_SHA256={hex}");
        }
        std::fs::write(out.join(component), encoded).unwrap();
    }
    println!("cargo:rustc-env=RCPAT_WASM_ROUTE_USED={route}");
}

/// binaryen's `wasm-opt -Oz` on the core module before it becomes a
/// component (issue 10: 36 KB smaller; per call no change was measurable).
/// `./dev provision` installs binaryen; without it the module is used as
/// rustc left it, with a cargo warning. `RCPAT_WASM_OPT=off` skips the step
/// (no warning); any other value names the wasm-opt binary.
fn shrink(module: Vec<u8>, out: &Path) -> Vec<u8> {
    let tool = std::env::var("RCPAT_WASM_OPT").unwrap_or_else(|_| "wasm-opt".into());
    if tool == "off" {
        println!("cargo:rustc-env=RCPAT_WASM_OPT_USED=none (RCPAT_WASM_OPT=off)");
        return module;
    }
    watch_tool(&tool);
    let (input, output) = (out.join("rcpat.core.wasm"), out.join("rcpat.opt.wasm"));
    std::fs::write(&input, &module).unwrap();
    // The features rustc's wasm32-unknown-unknown target enables by default;
    // the custom section that carries the WIT world survives (only debug
    // information and names are stripped).
    let status = Command::new(&tool)
        .args([
            "-Oz",
            "--enable-bulk-memory",
            "--enable-sign-ext",
            "--enable-mutable-globals",
            "--enable-nontrapping-float-to-int",
            "--enable-multivalue",
            "--enable-reference-types",
            "--strip-debug",
            "--strip-producers",
        ])
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .status();
    match status {
        Ok(s) if s.success() => {
            println!("cargo:rustc-env=RCPAT_WASM_OPT_USED=wasm-opt -Oz");
            std::fs::read(&output).unwrap()
        }
        other => {
            println!(
                "cargo:warning=wasm-opt ({tool}) unavailable or failed ({other:?}): the component \
                 is not size-optimised; run ./dev provision to install binaryen"
            );
            println!("cargo:rustc-env=RCPAT_WASM_OPT_USED=none");
            module
        }
    }
}

/// Makes cargo run this script again when `tool` changes: the binary itself
/// when it is found, otherwise every folder on `PATH`, so that installing
/// binaryen after a first build without it gives the optimised component on
/// the next build instead of keeping the unoptimised one.
fn watch_tool(tool: &str) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = if tool.contains('/') {
        Some(PathBuf::from(tool)).filter(|p| p.is_file())
    } else {
        std::env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    };
    match found {
        Some(binary) => println!("cargo:rerun-if-changed={}", binary.display()),
        None => {
            for dir in std::env::split_paths(&path).filter(|d| d.is_dir()) {
                println!("cargo:rerun-if-changed={}", dir.display());
            }
        }
    }
}

/// `component` without its top-level custom section `name`. wit-component
/// always writes a `component-name` section (debug names of the component's
/// own items, about 4 KB here); wasmtime never reads it (issue 10: size).
fn without_custom_section(component: &[u8], name: &str) -> Vec<u8> {
    fn leb(bytes: &[u8], at: &mut usize) -> usize {
        let (mut value, mut shift) = (0usize, 0);
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= usize::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return value;
            }
            shift += 7;
        }
    }
    // The 8-byte preamble, then sections: an id byte, a LEB128 size, the body.
    let mut out = component[..8].to_vec();
    let mut at = 8;
    while at < component.len() {
        let start = at;
        let id = component[at];
        at += 1;
        let size = leb(component, &mut at);
        let body = at;
        at += size;
        let is_named = id == 0 && {
            let mut p = body;
            let len = leb(component, &mut p);
            &component[p..p + len] == name.as_bytes()
        };
        if !is_named {
            out.extend_from_slice(&component[start..at]);
        }
    }
    out
}

/// rustup's standard library for the target is installed when its libdir holds libstd.
fn rustup_has_wasm_std(rustc: &str) -> bool {
    let Ok(out) = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
    else {
        return false;
    };
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        })
        .unwrap_or(false)
}

/// Re-run when any source the nested build read changes (its dep-info lists them).
fn emit_rerun_from_depinfo(depinfo: &Path) {
    let Ok(text) = std::fs::read_to_string(depinfo) else {
        return;
    };
    for line in text.lines() {
        if let Some((_, deps)) = line.split_once(": ") {
            for dep in deps.split_whitespace() {
                println!("cargo:rerun-if-changed={dep}");
            }
        }
    }
}
