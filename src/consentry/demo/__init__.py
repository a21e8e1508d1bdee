"""Demo platform generator."""
