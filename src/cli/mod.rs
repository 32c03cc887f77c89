//! One module per subcommand: argument structs (clap) and the glue that runs them.
