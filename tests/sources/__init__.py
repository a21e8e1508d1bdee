"""Tests of consentry.sources."""
