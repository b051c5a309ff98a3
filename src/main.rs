fn main() {
    std::process::exit(drydock::cli::main());
}
