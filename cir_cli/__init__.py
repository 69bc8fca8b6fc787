"""The `cir` command: a thin dispatcher to each app's `main(argv) -> int` (outside the library)."""
