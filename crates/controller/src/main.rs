//! `corral-controller`: the controller as a standalone binary.

/// mimalloc: the relays allocate message copies that the hub and the database writer
/// free on their own threads, which glibc's allocator makes costly (W9 profile).
/// `corral._core` (the controller started from Python) uses it too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let code = match corral_controller::main_with_args(std::env::args().skip(1)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("corral controller: {e}");
            1
        }
    };
    std::process::exit(code);
}
