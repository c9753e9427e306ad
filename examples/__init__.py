"""Example apps for `bench.py probe`, written as users write them: run from the
repository's root as `python bench.py probe --app examples.<module>:app ...`."""
