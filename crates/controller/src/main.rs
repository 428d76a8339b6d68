//! `corral-controller`: the controller as a standalone binary.

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
