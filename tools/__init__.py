"""What only tests, benchmarks and the chaos run use; not part of the installed package."""
