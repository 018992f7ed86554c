"""One module per `jaxsr` subcommand: register(subparsers) and run(args) -> int."""
