"""The docs tier: every example in README.md and docs/*.md, executed (see test_examples.py)."""
